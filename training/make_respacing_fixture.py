"""Writes Tests/Fixtures/respacing/diffusers-trailing-T1000.tsv: diffusers'
"trailing" timestep spacing at T = 1000 for every N in 1..1000, computed the
way diffusers' DDIMScheduler / DDPMScheduler.set_timesteps compute it:

    step_ratio = T / N
    timesteps = np.round(np.arange(T, 0, -step_ratio)).astype(np.int64) - 1

One line per N: N, the number of entries numpy returns (N, or N + 1 with a
final -1), the FNV-1a 64 hash of the little-endian float64 bit patterns of
np.arange(T, 0, -step_ratio) (so the float values themselves are checked, not
only their rounding), and the timesteps in diffusers' order (descending).

Needs only numpy: /usr/bin/python3 training/make_respacing_fixture.py
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "respacing", "diffusers-trailing-T1000.tsv")
T = 1000


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main() -> None:
    lines = [f"# diffusers timestep_spacing=trailing, T = {T}, numpy {np.__version__}",
             "# N\tentries\tarange_fnv1a64\ttimesteps (descending)"]
    for n in range(1, T + 1):
        step_ratio = T / n
        values = np.arange(T, 0, -step_ratio)
        timesteps = np.round(values).astype(np.int64) - 1
        digest = fnv1a64(values.astype("<f8").tobytes())
        lines.append(f"{n}\t{len(timesteps)}\t{digest:016x}\t" + ",".join(str(int(t)) for t in timesteps))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
