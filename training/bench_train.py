"""Times training steps of the shipped UNet recipe in each toolchain variant (fp32, bf16 autocast,
bf16 + torch.compile) on this CPU, interleaved, and prints one JSON line per variant with the
median s/step. Used for the table in training/README.md.

    training/.venv/bin/python training/bench_train.py --variants fp32,bf16,bf16-compile --steps 12
    /usr/bin/python3 training/bench_train.py --variants fp32          # Debian's torch 1.13
"""
import argparse
import contextlib
import json
import platform
import statistics
import time

import numpy as np
import torch

import adm
import common
import configs
from diffusion import GaussianDiffusion, betas_for


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variants", default="fp32,bf16,bf16-compile")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = common.load_split("train")
    data, labels = common.to_model_range(images[:4096]), torch.from_numpy(labels[:4096])
    diffusion = GaussianDiffusion(betas_for(configs.DIFFUSION["schedule"], configs.DIFFUSION["steps"]))
    rng = np.random.default_rng(0)
    runs = {}
    for name in args.variants.split(","):
        torch.manual_seed(0)
        model = adm.unet_from_architecture(configs.UNET)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        net = torch.compile(model) if "compile" in name else model
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in name else contextlib.nullcontext

        def forward(xt, t, y, net=net, ctx=ctx):
            with ctx():
                return net(xt, t, y)

        def step(model=model, opt=opt, forward=forward):
            idx = torch.from_numpy(rng.integers(0, len(data), size=args.batch))
            t = torch.from_numpy(rng.integers(0, diffusion.T, size=args.batch))
            loss, _, _ = diffusion.training_losses(forward, data[idx], t, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()

        t0 = time.perf_counter()
        step()  # warm-up (and compilation)
        runs[name] = {"step": step, "first_s": time.perf_counter() - t0, "times": []}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                run["step"]()
                run["times"].append(time.perf_counter() - t0)
    for name, run in runs.items():
        ts = run["times"]
        print(json.dumps({"variant": name, "torch": torch.__version__, "cpu": cpu_name(), "threads": args.threads,
                          "batch": args.batch, "median_s_per_step": round(statistics.median(ts), 4),
                          "min_s": round(min(ts), 4), "max_s": round(max(ts), 4),
                          "first_step_s": round(run["first_s"], 1)}), flush=True)


if __name__ == "__main__":
    main()
