"""Plots the training curves from training/work/*-log.csv and the classifier
log into training/loss-curves.png."""
import csv
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402


def main():
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    rows = list(csv.DictReader(open(os.path.join(common.WORK, "diffusion-log.csv"))))
    steps = [int(r["step"]) for r in rows]
    for key, ax in (("mse", axes[0]), ("vb", axes[1])):
        ax.plot(steps, [float(r[key]) for r in rows])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_title("UNet: L_simple (eps MSE), mean per 50 steps")
    axes[1].set_title("UNet: L_vlb term (bits/dim), mean per 50 steps")
    clf = torch.load(os.path.join(common.WORK, "classifier.pt"))
    axes[2].plot([r["step"] for r in clf["log"]], [r["loss"] for r in clf["log"]], label="noisy classifier")
    feats = torch.load(os.path.join(common.WORK, "features.pt"))
    per_epoch = len(range(60000 // feats["args"]["batch"]))
    axes[2].plot([h["epoch"] * per_epoch for h in feats["history"]], [h["train_loss"] for h in feats["history"]],
                 "o-", label="feature CNN (per epoch)")
    axes[2].set_title("classifiers: cross-entropy")
    axes[2].set_xlabel("step")
    axes[2].legend()
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    out = os.path.join(common.ROOT, "training", "loss-curves.png")
    fig.savefig(out, dpi=90)
    print(json.dumps({"file": os.path.relpath(out, common.ROOT)}))


if __name__ == "__main__":
    main()
