"""Trains the class-conditional ADM UNet on Fashion-MNIST (hybrid loss,
learned-range variance, cosine schedule, null class with p = 0.1, EMA).

Resumable: state lives in training/work/diffusion.pt; each run trains until
--steps or --time-limit, whichever comes first, and saves."""
import argparse
import copy
import csv
import os
import time

import numpy as np
import torch

import adm
import common
import configs
from diffusion import GaussianDiffusion, LossSecondMomentSampler, betas_for


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20000, help="total optimiser steps")
    ap.add_argument("--time-limit", type=float, default=1e9, help="seconds for this run")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.9995)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--importance", action="store_true", help="loss-second-moment timestep sampler")
    ap.add_argument("--state", default=os.path.join(common.WORK, "diffusion.pt"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(args.state), exist_ok=True)

    images, labels = common.load_split("train")
    data = common.to_model_range(images)
    labels = torch.from_numpy(labels)
    diffusion = GaussianDiffusion(betas_for(configs.DIFFUSION["schedule"], configs.DIFFUSION["steps"]))
    common.seed_everything(args.seed)
    model = adm.unet_from_architecture(configs.UNET)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sampler = LossSecondMomentSampler(diffusion.T)
    step, wall = 0, 0.0
    rng = np.random.default_rng(args.seed)
    if os.path.exists(args.state):
        st = torch.load(args.state)
        model.load_state_dict(st["model"]); ema.load_state_dict(st["ema"]); opt.load_state_dict(st["opt"])
        step, wall = st["step"], st["wall"]
        sampler.losses, sampler.counts = st["sampler_losses"], st["sampler_counts"]
        rng = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        print(f"resumed at step {step} ({wall / 60:.1f} min so far)", flush=True)
    log_path = os.path.splitext(args.state)[0] + "-log.csv"
    new_log = not os.path.exists(log_path)
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "mse", "vb", "wall_s"])

    def save():
        tmp = args.state + ".tmp"
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    "wall": wall, "sampler_losses": sampler.losses, "sampler_counts": sampler.counts,
                    "rng": rng, "torch_rng": torch.get_rng_state(), "args": vars(args)}, tmp)
        os.replace(tmp, args.state)

    started = time.time()
    run_start_wall = wall
    acc = np.zeros(3)
    n_acc = 0
    model.train()
    while step < args.steps and time.time() - started < args.time_limit:
        idx = torch.from_numpy(rng.integers(0, len(data), size=args.batch))
        x0, y = data[idx], labels[idx].clone()
        y[torch.from_numpy(rng.random(args.batch) < configs.P_UNCOND)] = configs.NULL_CLASS
        if args.importance:
            t, w = sampler.sample(args.batch, rng)
        else:
            t, w = torch.from_numpy(rng.integers(0, diffusion.T, size=args.batch)), torch.ones(args.batch)
        loss, mse, vb = diffusion.training_losses(model, x0, t, y)
        sampler.update(t, loss.detach())
        total = (loss * w).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 500)
        opt.step()
        step += 1
        rate = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(rate).add_(pm, alpha=1 - rate)
        acc += [loss.mean().item(), mse.mean().item(), vb.mean().item()]
        n_acc += 1
        wall = run_start_wall + time.time() - started
        if step % 50 == 0:
            writer.writerow([step, *(acc / n_acc).round(6), round(wall, 1)])
            log.flush()
            print(f"step {step} loss {acc[0] / n_acc:.4f} mse {acc[1] / n_acc:.4f} vb {acc[2] / n_acc:.4f} "
                  f"{wall / 60:.1f} min", flush=True)
            acc[:] = 0
            n_acc = 0
        if step % 500 == 0:
            save()
    save()
    print(f"stopped at step {step} after {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
