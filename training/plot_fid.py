"""Plots FID (N = 1,000, the daemon's own metrics) and class accuracy against training images
seen, from training/evaluations.tsv (scripts/evaluate_model.py), into training/fid-vs-images.png."""
import csv
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    rows = list(csv.DictReader(open(os.path.join(HERE, "evaluations.tsv")), delimiter="\t"))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for job in sorted({r["job"] for r in rows}):
        pts = sorted((int(r["images_seen"]), float(r["fid"]), float(r["class_accuracy"]))
                     for r in rows if r["job"] == job and r["fid"] and r["images_seen"] and r["seed"] == "7")
        if not pts:
            continue
        line = a.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=job)[0]
        b.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=job)
        # The same bundle with other seeds: how far N = 1,000 moves the estimate by itself.
        other = [(int(r["images_seen"]), float(r["fid"]), float(r["class_accuracy"]), r["seed"])
                 for r in rows if r["job"] == job and r["fid"] and r["images_seen"] and r["seed"] != "7"]
        for x, fid, acc, seed in other:
            a.plot([x], [fid], "x", color=line.get_color(), label=f"{job}, seed {seed}")
            b.plot([x], [acc], "x", color=line.get_color())
    floor = [float(r["fid_floor"]) for r in rows if r["fid_floor"]]
    if floor:
        a.axhline(floor[0], color="gray", ls="--", label=f"data floor {floor[0]:.3f}")
    real = [float(r["real_accuracy"]) for r in rows if r["real_accuracy"]]
    if real:
        b.axhline(real[0], color="gray", ls="--", label=f"real test images {real[0]:.3f}")
    a.set_xlabel("training images seen"); a.set_ylabel("FID (N = 1,000)"); a.set_yscale("log"); a.legend()
    b.set_xlabel("training images seen"); b.set_ylabel("class accuracy"); b.legend()
    fig.suptitle("fashion-mnist UNet: the daemon's metrics.json at N = 1,000, seed 7 (x: other seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "fid-vs-images.png"), dpi=100)


if __name__ == "__main__":
    main()
