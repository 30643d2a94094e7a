"""Times the reference ADM UNet (training/adm.py) in PyTorch and ONNX Runtime, on request.

The Swift `diffusion-bench` executable starts one of these servers per Python (Debian's
torch 1.13 with ONNX Runtime; PyPI's torch 2.x) and interleaves its timing requests with the
engine's, so every runtime is timed under the same machine load, round after round. Start-up
builds every runtime asked for and warms it at every batch size (torch.compile compiles here),
then prints one line {"ready": true, "versions": {...}, "runtimes": [...]} (or {"error": ...} for a
runtime that cannot run). Each request line {"runtime": ID, "batch": N, "seconds": S} gets one
line {"runtime": ID, "batch": N, "best_s": ..., "median_s": ..., "calls": K}: the fastest and the
median of K calls (at least 3, at least S seconds) after one warm-up call.

Runtimes: pytorch-eager, pytorch-compile (torch.compile, default settings), pytorch-eager-bf16,
pytorch-compile-bf16 (torch.autocast("cpu", torch.bfloat16): convolutions and matrix products in
bf16, as PyTorch's CPU autocast chooses), onnxruntime (fp32; the model exported from training/adm.py).

    training/.venv/bin/python training/bench_torch.py --bundle models/fashion-mnist \\
        --runtimes pytorch-eager,pytorch-compile --batches 1,16,64,256 --threads 2
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import adm  # noqa: E402
from common import load_safetensors  # noqa: E402

RUNTIMES = ["pytorch-eager", "pytorch-compile", "pytorch-eager-bf16", "pytorch-compile-bf16", "onnxruntime"]


def timed(fn, min_seconds, min_reps=3):
    """Best and median wall time of fn() after one warm-up call, and the number of calls."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), len(times)


def inputs(arch, batch):
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, arch["in_channels"], arch["image_size"], arch["image_size"], generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    y = torch.randint(0, arch["num_classes"], (batch,), generator=gen) if arch.get("num_classes") else None
    return x, t, y


def torch_call(module, x, t, y, bf16):
    def call():
        with torch.no_grad(), (torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()):
            return module(x, t, y)
    return call


def onnx_session(model, arch, threads, tmp):
    import onnxruntime as ort
    path = os.path.join(tmp, "unet.onnx")
    x, t, y = inputs(arch, 2)
    names = ["x", "t"] + (["y"] if y is not None else [])
    example = (x, t, y) if y is not None else (x, t)
    torch.onnx.export(model, example, path, input_names=names, output_names=["out"], opset_version=14,
                      dynamic_axes={n: {0: "batch"} for n in names + ["out"]})
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]), ort.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", help="architecture JSON object (model.json 'architecture')")
    ap.add_argument("--bundle", help="bundle folder (architecture and weights from it)")
    ap.add_argument("--runtimes", default="pytorch-eager,onnxruntime", help=f"comma-separated, of {', '.join(RUNTIMES)}")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    if args.bundle:
        with open(os.path.join(args.bundle, "model.json")) as f:
            arch = json.load(f)["architecture"]
    else:
        arch = json.loads(args.arch)
    torch.set_num_threads(args.threads)
    model = adm.unet_from_architecture(arch).eval()
    if args.bundle:
        model.load_state_dict({k: torch.as_tensor(v) for k, v in
                               load_safetensors(os.path.join(args.bundle, "model.safetensors")).items()})
    batches = [int(b) for b in args.batches.split(",")]
    data = {b: inputs(arch, b) for b in batches}
    calls = {}          # (runtime, batch) -> callable
    versions = {"torch": torch.__version__}
    errors = {}
    compiled = None
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in args.runtimes.split(","):
            if runtime not in RUNTIMES:
                errors[runtime] = f"unknown runtime (known: {', '.join(RUNTIMES)})"
                continue
            try:
                if runtime == "onnxruntime":
                    session, versions["onnxruntime"] = onnx_session(model, arch, args.threads, tmp)
                    for b in batches:
                        x, t, y = data[b]
                        feed = {"x": x.numpy(), "t": t.numpy(), **({"y": y.numpy()} if y is not None else {})}
                        calls[runtime, b] = (lambda s=session, f=feed: s.run(None, f))
                else:
                    module = model
                    if "compile" in runtime:
                        if compiled is None:       # one compiled module; autocast gets its own graphs
                            compiled = torch.compile(model)
                        module = compiled
                    for b in batches:
                        calls[runtime, b] = torch_call(module, *data[b], bf16=runtime.endswith("bf16"))
                started = time.perf_counter()
                for b in batches:      # warm-up: compiles, allocator, ONNX Runtime's first-run planning
                    calls[runtime, b]()
                print(f"# {runtime}: ready in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
            except Exception as e:  # noqa: BLE001 - reported to the caller by name
                errors[runtime] = f"{type(e).__name__}: {e}"
                for b in batches:
                    calls.pop((runtime, b), None)
        ready = sorted({r for r, _ in calls})
        print(json.dumps({"ready": True, "versions": versions, "runtimes": ready, "errors": errors}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            key = (request["runtime"], request["batch"])
            if key not in calls:
                print(json.dumps({**request, "error": "not prepared"}), flush=True)
                continue
            best, median, count = timed(calls[key], request.get("seconds", 1.0))
            print(json.dumps({**request, "best_s": best, "median_s": median, "calls": count}), flush=True)


if __name__ == "__main__":
    main()
