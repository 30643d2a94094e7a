"""Trains the clean-image feature CNN (the FID feature extractor) on
Fashion-MNIST and reports its test accuracy. Saves training/work/features.pt."""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import adm
import common


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--continue-from", help="a features.pt to fine-tune (its history is kept)")
    args = ap.parse_args()
    x, y, x_test, y_test = common.prepare_classifier_run(args.threads, args.seed)
    model = adm.FeatureCNN()
    previous_history, previous_wall = [], 0.0
    if args.continue_from:
        prev = torch.load(args.continue_from)
        model.load_state_dict(prev["model"])
        previous_history, previous_wall = prev["history"], prev["wall"]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = args.epochs * (len(x) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    history = list(previous_history)
    first_epoch = len(history)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for i in range(len(x) // args.batch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            xb = x[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb[flip] = xb[flip].flip(-1)
            # random translation by up to 2 pixels (pad with background, then crop)
            dx, dy = rng.integers(-2, 3, size=2)
            xb = torch.roll(F.pad(xb, (2, 2, 2, 2), value=-1.0), shifts=(int(dy), int(dx)), dims=(2, 3))[:, :, 2:30, 2:30]
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate(model, x_test, y_test)
        history.append({"epoch": first_epoch + epoch + 1, "learning_rate_max": args.lr, "train_loss": round(total / (len(x) // args.batch), 4),
                        "test_accuracy": acc, "wall_s": round(previous_wall + time.time() - started, 1)})
        print(json.dumps(history[-1]), flush=True)
    torch.save({"model": model.state_dict(), "history": history, "wall": previous_wall + time.time() - started,
                "args": vars(args)}, os.path.join(common.WORK, "features.pt"))


if __name__ == "__main__":
    main()
