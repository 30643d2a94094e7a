#!/usr/bin/env python3
"""Draws the plots of BENCHMARKS.md from docs/bench/results.json (matplotlib, PNG).

    /usr/bin/python3 scripts/bench_plots.py [--results docs/bench/results.json] [--out docs/bench]

Writes, when their stage has a result:
  throughput.png                  images/s of the engine, PyTorch and ONNX Runtime by batch size
  daemon.png                      the 256-image job: engine alone against the daemon
  fid_vs_nfe.png                  FID against network evaluations per image, one line per sampler
  guidance_precision_recall.png   precision against recall along the guidance scale
  guidance_accuracy_fid.png       class accuracy and FID against the guidance scale
  scale_out.png                   speed-up of diffusiond workers sharing one store against their number
A plot whose data is missing (e.g. quality metrics not measured) is removed rather than left stale.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

QUALITY_PLOTS = ["fid_vs_nfe.png", "guidance_precision_recall.png", "guidance_accuracy_fid.png"]


def result(results, name):
    st = (results.get("stages") or {}).get(name)
    return st.get("result") if st else None


def save(fig, out, name, written):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def remove(out, name):
    path = os.path.join(out, name)
    if os.path.exists(path):
        os.remove(path)
        print(f"removed stale {path}")


def throughput(results, out, written):
    r = result(results, "throughput")
    if not r or not r.get("timings"):
        remove(out, "throughput.png")
        return
    batches = [row["batch"] for row in r["rows"]]
    timing = {(t["runtime"], t["batch"]): t for t in r["timings"]}
    series = r["runtimes"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.85 / len(series)
    for i, e in enumerate(series):
        xs, values, low, high = [], [], [], []
        for j, b in enumerate(batches):
            t = timing.get((e["id"], b))
            if not t:
                continue
            xs.append(j + (i - (len(series) - 1) / 2) * width)
            values.append(t["median_images_per_second"])
            low.append(t["median_images_per_second"] - t["min_images_per_second"])
            high.append(t["max_images_per_second"] - t["median_images_per_second"])
        hatch = "//" if e["precision"] == "bf16" else None
        ax.bar(xs, values, width, yerr=[low, high], capsize=2, label=f"{e['label']}" + (" (bf16)" if e["precision"] == "bf16" and "bf16" not in e["label"] else ""),
               hatch=hatch, edgecolor="white" if hatch else None)
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images per second (one UNet evaluation)")
    ax.set_title(f"Fashion-MNIST ADM UNet, {r['dnnl_threads']} threads, {r['cpu']['model']}: medians of {r['rounds']} interleaved rounds, bars: min-max",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    save(fig, out, "throughput.png", written)


def daemon(results, out, written):
    r = result(results, "daemon")
    if not r:
        remove(out, "daemon.png")
        return
    e = r["end_to_end"]
    d = e["daemon"]
    labels = ["engine alone", "daemon: claimed -> done", "daemon: submit -> done"]
    values = [e["engine_mean_seconds"], d["run_seconds"], d["submit_to_done_seconds"]]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    bars = ax.barh(labels[::-1], values[::-1], color=["#4c72b0", "#dd8452", "#c44e52"][::-1])
    for bar, v in zip(bars, values[::-1]):
        ax.annotate(f" {v:.2f} s", (v, bar.get_y() + bar.get_height() / 2), va="center", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_title(f"{e['images']} images, DDIM 50 steps: daemon overhead {e['overhead_percent']:.1f} % (submit -> done)", fontsize=10)
    save(fig, out, "daemon.png", written)


def quality_by_id(results):
    q = result(results, "quality")
    if not q:
        return {}
    return {row["id"]: row["quality"] for row in q.get("rows", []) if row.get("quality")}


def fid_vs_nfe(results, out, written):
    s = result(results, "sampling")
    q = quality_by_id(results)
    rows = [row for row in (s or {}).get("rows", []) if row["group"] in ("steps", "langevin") and row["id"] in q]
    if not rows:
        remove(out, "fid_vs_nfe.png")
        return
    fig, ax = plt.subplots(figsize=(9, 4.8))
    series = []
    for row in rows:
        if row["series"] not in series:
            series.append(row["series"])
    for i, name in enumerate(series):
        pts = sorted((row["network_evaluations_per_image"], q[row["id"]]["fid"]) for row in rows if row["series"] == name)
        style = "--" if row_group(rows, name) == "langevin" else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="os^vD<>ph*"[i % 10], color=plt.cm.tab20(i % 20),
                label=name)
    floors = [q[row["id"]]["fid_data_floor"] for row in rows]
    if floors:
        ax.axhline(sum(floors) / len(floors), color="grey", linestyle=":", label=f"data floor (N = {s['n']} real images)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image")
    ax.set_ylabel(f"FID (N = {s['n']})")
    ax.set_title("FID against network evaluations per image")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save(fig, out, "fid_vs_nfe.png", written)


def row_group(rows, series):
    """The group of the rows of one series (steps or langevin)."""
    return next(row["group"] for row in rows if row["series"] == series)


def guidance(results, out, written):
    s = result(results, "sampling")
    q = quality_by_id(results)
    groups = [("classifier_guidance", "classifier guidance (s)"), ("classifier_free", "classifier-free guidance (w)")]
    data = {}
    for g, label in groups:
        pts = sorted((row["x"], q[row["id"]]) for row in (s or {}).get("rows", []) if row["group"] == g and row["id"] in q)
        if pts:
            data[label] = pts
    if not data:
        remove(out, "guidance_precision_recall.png")
        remove(out, "guidance_accuracy_fid.png")
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, pts in data.items():
        ax.plot([p[1]["recall"] for p in pts], [p[1]["precision"] for p in pts], marker="o", label=label)
        for x, m in pts:
            ax.annotate(f"{x:g}", (m["recall"], m["precision"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Guidance: precision against recall (labels: scale), N = {s['n']}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    save(fig, out, "guidance_precision_recall.png", written)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, pts in data.items():
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1]["class_accuracy"] for p in pts], marker="o", label=label)
        axes[1].plot(xs, [p[1]["fid"] for p in pts], marker="o", label=label)
    axes[0].set_xlabel("guidance scale")
    axes[0].set_ylabel("class accuracy")
    axes[1].set_xlabel("guidance scale")
    axes[1].set_ylabel(f"FID (N = {s['n']})")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Guidance: class accuracy and FID against the scale")
    save(fig, out, "guidance_accuracy_fid.png", written)


def scale_out(results, out, written):
    r = result(results, "fleet")
    if not r or not r.get("queue"):
        remove(out, "scale_out.png")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    most = max(row["workers"] for row in r["queue"])
    ax.plot([1, most], [1, most], "k:", label="ideal")
    ax.plot([row["workers"] for row in r["queue"]], [row["speedup"] for row in r["queue"]], "o-",
            label=f"queue: test generator, {r['test_delay_ms_per_image']} ms an image")
    if r.get("engine"):
        ax.plot([row["workers"] for row in r["engine"]], [row["speedup"] for row in r["engine"]], "s-",
                label="engine, one thread a worker")
    ax.set_xlabel("workers")
    ax.set_ylabel("throughput against one worker")
    ax.set_xticks([row["workers"] for row in r["queue"]])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("diffusiond workers sharing one PostgreSQL store")
    save(fig, out, "scale_out.png", written)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="docs/bench/results.json")
    ap.add_argument("--out", default="docs/bench")
    args = ap.parse_args()
    with open(args.results) as f:
        results = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    written = []
    throughput(results, args.out, written)
    daemon(results, args.out, written)
    fid_vs_nfe(results, args.out, written)
    guidance(results, args.out, written)
    scale_out(results, args.out, written)
    for path in written:
        print(f"wrote {path}")
    missing = [p for p in QUALITY_PLOTS if not os.path.exists(os.path.join(args.out, p))]
    if missing:
        print(f"not drawn (no quality metrics yet): {', '.join(missing)}")


if __name__ == "__main__":
    main()
