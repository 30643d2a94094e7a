"""Trains the class-conditional ADM UNet on Fashion-MNIST (hybrid loss,
learned-range variance, cosine schedule, null class with p = 0.1, EMA).

Resumable: state lives in training/work/diffusion.pt; each run trains until
--steps or --time-limit, whichever comes first, saves, and (with --export)
writes the EMA weights as a bundle (training/work/snapshots/step-N/, and
models/fashion-mnist/ with --export-to-models). --init-from continues from a
committed bundle when the checkpoint is gone (fresh optimiser).

Speed on a CPU: --bf16 (autocast of the network's forward and backward to
bfloat16; the losses stay float32) and --compile (torch.compile, about five
minutes once per run) need PyTorch 2 (the venv of `make train`)."""
import argparse
import contextlib
import copy
import csv
import json
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
    ap.add_argument("--init-from", help="bundle folder whose weights start a new run (fine-tuning the shipped model)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network (PyTorch 2)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (PyTorch 2)")
    ap.add_argument("--min-snr", type=float, default=0.0,
                    help="Min-SNR-gamma weighting of the eps MSE (Hang et al. 2023): min(SNR, gamma) / SNR; 0 = off")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="write an EMA snapshot bundle every N steps (training/work/snapshots/step-N)")
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
    step, wall, images_seen = 0, 0.0, 0
    rng = np.random.default_rng(args.seed)
    if os.path.exists(args.state):
        st = torch.load(args.state, weights_only=False)
        model.load_state_dict(st["model"]); ema.load_state_dict(st["ema"]); opt.load_state_dict(st["opt"])
        step, wall = st["step"], st["wall"]
        images_seen = st.get("images_seen", step * st["args"]["batch"])
        sampler.losses, sampler.counts = st["sampler_losses"], st["sampler_counts"]
        rng = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        print(f"resumed at step {step} ({wall / 60:.1f} min so far)", flush=True)
    elif args.init_from:
        weights = common.load_safetensors(os.path.join(args.init_from, "model.safetensors"))
        model.load_state_dict(weights)
        ema.load_state_dict(weights)
        manifest = json.load(open(os.path.join(args.init_from, "model.json")))
        step, wall = manifest["recipe"]["steps"], manifest["recipe"]["wall_seconds"]
        images_seen = manifest["recipe"].get("images_seen", step * manifest["recipe"]["batch"])
        print(f"starting from {args.init_from} (step {step}) with a fresh optimiser", flush=True)
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
                    "rng": rng, "torch_rng": torch.get_rng_state(), "args": vars(args),
                    "optimiser_start": optimiser_start, "images_seen": images_seen}, tmp)
        os.replace(tmp, args.state)

    started = time.time()
    run_start_wall = wall
    # Learning-rate warm-up over the first 500 steps of this optimiser (a fresh one after --init-from too).
    optimiser_start = st["optimiser_start"] if os.path.exists(args.state) and "optimiser_start" in st else step
    acc = np.zeros(3)
    n_acc = 0
    model.train()
    net = torch.compile(model) if args.compile else model
    snr = (diffusion.abar / (1 - diffusion.abar)) if args.min_snr > 0 else None
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext

    def forward(xt, t, y):
        with autocast():
            return net(xt, t, y)

    def snapshot():
        import export_bundles
        export_bundles.export_unet_snapshot(ema.state_dict(), step, wall, args,
                                            os.path.join(common.WORK, "snapshots", f"step-{step}"))

    while step < args.steps and time.time() - started < args.time_limit:
        idx = torch.from_numpy(rng.integers(0, len(data), size=args.batch))
        x0, y = data[idx], labels[idx].clone()
        y[torch.from_numpy(rng.random(args.batch) < configs.P_UNCOND)] = configs.NULL_CLASS
        if args.importance:
            t, w = sampler.sample(args.batch, rng)
        else:
            t, w = torch.from_numpy(rng.integers(0, diffusion.T, size=args.batch)), torch.ones(args.batch)
        weight = None if snr is None else torch.from_numpy(np.minimum(snr[t.numpy()], args.min_snr) / snr[t.numpy()])
        loss, mse, vb = diffusion.training_losses(forward, x0, t, y, mse_weight=None if weight is None else weight.float())
        sampler.update(t, loss.detach())
        total = (loss * w).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step - optimiser_start + 1) / 500)
        opt.step()
        step += 1
        images_seen += args.batch
        args.images_seen = images_seen
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
        if args.snapshot_every and step % args.snapshot_every == 0:
            snapshot()
    save()
    if args.snapshot_every:
        snapshot()
    print(f"stopped at step {step} after {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
