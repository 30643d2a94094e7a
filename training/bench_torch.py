"""Times the reference ADM UNet (training/adm.py) in PyTorch and ONNX Runtime.

Used by the Swift `diffusion-bench` executable, which runs it right after timing the
engine so the numbers are taken under the same machine load. Prints one JSON object per
line: {"engine": "pytorch" | "onnxruntime", "batch": N, "best_s": ..., "median_s": ...}.

    /usr/bin/python3 training/bench_torch.py --arch '{"type": "adm-unet", ...}' --batches 1,16,64
    /usr/bin/python3 training/bench_torch.py --bundle models/fashion-mnist --onnx
"""
import argparse
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


def timed(fn, min_seconds, min_reps):
    """Best and median wall time of fn() after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def inputs(arch, batch, gen):
    x = torch.randn(batch, arch["in_channels"], arch["image_size"], arch["image_size"], generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    y = torch.randint(0, arch["num_classes"], (batch,), generator=gen) if arch.get("num_classes") else None
    return x, t, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", help="architecture JSON object (model.json 'architecture')")
    ap.add_argument("--bundle", help="bundle folder (architecture and weights from it)")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum timing time per batch size")
    ap.add_argument("--reps", type=int, default=3, help="minimum repetitions per batch size")
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (needs onnxruntime)")
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
    gen = torch.Generator().manual_seed(0)
    batches = [int(b) for b in args.batches.split(",")]

    with torch.no_grad():
        for b in batches:
            x, t, y = inputs(arch, b, gen)
            best, median = timed(lambda: model(x, t, y), args.seconds, args.reps)
            print(json.dumps({"engine": "pytorch", "version": torch.__version__, "batch": b,
                              "best_s": best, "median_s": median}), flush=True)

    if not args.onnx:
        return
    try:
        import onnxruntime as ort
    except ImportError as e:
        print(json.dumps({"engine": "onnxruntime", "error": f"not installed: {e}"}), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unet.onnx")
        x, t, y = inputs(arch, 2, gen)
        names = ["x", "t"] + (["y"] if y is not None else [])
        example = (x, t, y) if y is not None else (x, t)
        torch.onnx.export(model, example, path, input_names=names, output_names=["out"], opset_version=14,
                          dynamic_axes={n: {0: "batch"} for n in names + ["out"]})
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for b in batches:
            x, t, y = inputs(arch, b, gen)
            feed = {"x": x.numpy(), "t": t.numpy()}
            if y is not None:
                feed["y"] = y.numpy()
            best, median = timed(lambda: session.run(None, feed), args.seconds, args.reps)
            print(json.dumps({"engine": "onnxruntime", "version": ort.__version__, "batch": b,
                              "best_s": best, "median_s": median}), flush=True)


if __name__ == "__main__":
    main()
