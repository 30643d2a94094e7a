"""Trains an Extended-Analytic-DPM covariance head (Bao et al. 2022) on a frozen UNet bundle.

The UNet (model.safetensors of --bundle) is loaded and frozen whole; only the head trains: the
authors' "simple" head (adm.CovarianceHead: GroupNorm -> SiLU -> zero-initialised 3x3 conv to the
image channels) on the UNet's final feature map, read from the same forward pass as eps_theta.
  --kind sn:  loss sum over pixels of (eps^2 - h(x_n))^2, so h -> E[eps^2 | x_n];
  --kind npr: loss sum over pixels of ((eps - eps_theta(x_n))^2 - g(x_n))^2, eps_theta detached,
              so g -> E[(eps - eps_theta)^2 | x_n].
x_n = q_sample(x0, n) with n uniform over the T steps; labels as the UNet was trained (the null class
with probability configs.P_UNCOND), so the head serves conditional and unconditional sampling.
Adam (lr 1e-4 as the authors, no warm-up, no gradient clipping), EMA of the head weights.

Resumable: state lives in training/work/heads-<kind>.pt; each run trains until --steps or
--time-limit, whichever comes first, and saves. --export writes the EMA head as <kind>-head.safetensors
into --export-to (default: the bundle itself) and records its SHA-256 in that bundle's model.json.
--bf16 (bfloat16 autocast of the frozen UNet and the head; losses in float32) needs PyTorch 2.

  /usr/bin/python3 training/train_heads.py --kind sn --steps 20 --time-limit 60   # smoke run
"""
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
from diffusion import GaussianDiffusion, betas_for


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["sn", "npr"], required=True)
    ap.add_argument("--bundle", default=os.path.join(common.ROOT, "models", "fashion-mnist"))
    ap.add_argument("--steps", type=int, default=50000, help="total optimiser steps")
    ap.add_argument("--time-limit", type=float, default=1e9, help="seconds for this run")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--ema", type=float, default=0.9999)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state", help="checkpoint (default training/work/heads-<kind>.pt)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (PyTorch 2)")
    ap.add_argument("--relative", action="store_true",
                    help="weight each sample's loss by 1 / m_t^2, m_t the per-timestep mean of the target (NPR: 1 - Gamma_t "
                         "from the bundle's gamma.safetensors; SN: 1); same minimiser, balanced gradients across t")
    ap.add_argument("--reset-optimizer", action="store_true", help="fresh Adam moments on resume (after changing the loss)")
    ap.add_argument("--export", action="store_true", help="write the EMA head into a bundle after the run")
    ap.add_argument("--export-to", help="bundle folder to write the head into (default --bundle)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state_path = args.state or os.path.join(common.WORK, f"heads-{args.kind}.pt")
    os.makedirs(os.path.dirname(state_path), exist_ok=True)

    with open(os.path.join(args.bundle, "model.json")) as f:
        manifest = json.load(f)
    arch = manifest["architecture"]
    unet = adm.unet_from_architecture(arch)
    unet.load_state_dict(common.load_safetensors(os.path.join(args.bundle, "model.safetensors")))
    unet.eval().requires_grad_(False)
    channels = arch["in_channels"]
    d = manifest.get("diffusion", configs.DIFFUSION)
    diffusion = GaussianDiffusion(betas_for(d["schedule"], d["steps"]))
    null_class = manifest.get("null_class")

    images, labels = common.load_split("train")
    data = common.to_model_range(images)
    labels = torch.from_numpy(labels)

    common.seed_everything(args.seed)
    head = adm.CovarianceHead(unet.out[0].num_channels, channels)
    ema = copy.deepcopy(head).requires_grad_(False)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    step, wall = 0, 0.0
    rng = np.random.default_rng(args.seed)
    if os.path.exists(state_path):
        st = torch.load(state_path, weights_only=False)
        assert st["kind"] == args.kind, f"{state_path} holds a {st['kind']} head"
        head.load_state_dict(st["head"]); ema.load_state_dict(st["ema"])
        if not args.reset_optimizer:
            opt.load_state_dict(st["opt"])
        step, wall, rng = st["step"], st["wall"], st["rng"]
        torch.set_rng_state(st["torch_rng"])
        for group in opt.param_groups:
            group["lr"] = args.lr  # the learning rate asked now, not the one saved
        print(f"resumed at step {step} ({wall / 60:.1f} min so far), lr {args.lr:g}", flush=True)

    probe_images, probe_labels = common.load_split("t10k")
    probe_x0 = common.to_model_range(probe_images[:64])
    probe_y = torch.from_numpy(probe_labels[:64]) if arch.get("num_classes") else None
    probe_noise = torch.from_numpy(np.random.default_rng(12345).standard_normal(probe_x0.shape).astype(np.float32))

    def probe():
        """Mean EMA head output against the mean target on 64 test images at t = 100, 500, 900."""
        parts = []
        with torch.no_grad():
            for n in (100, 500, 900):
                t = torch.full((len(probe_x0),), n, dtype=torch.long)
                out, features = unet.forward_with_features(diffusion.q_sample(probe_x0, t, probe_noise), t, probe_y)
                target = probe_noise ** 2 if args.kind == "sn" else (probe_noise - out[:, :channels]) ** 2
                parts.append(f"t={n} head {ema(features).mean().item():.4f} target {target.mean().item():.4f}")
        return "; ".join(parts)

    def save():
        tmp = state_path + ".tmp"
        torch.save({"kind": args.kind, "head": head.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "step": step, "wall": wall, "rng": rng, "torch_rng": torch.get_rng_state(), "args": vars(args),
                    "bundle_sha256": manifest["files"]["model.safetensors"]}, tmp)
        os.replace(tmp, state_path)

    # Per-timestep loss weights: 1 for plain training; 1 / m_t^2 with --relative, where m_t is the mean of
    # the target at t (NPR: E[(eps - eps_theta)^2] = 1 - Gamma_t for the optimal eps_theta, Gamma_t of the
    # bundle's conditional table), so every timestep weighs by its relative error. Any positive weight per t
    # keeps the minimiser E[target | x_n]; it only stops the small-t samples from drowning the rest.
    weights = torch.ones(diffusion.T)
    if args.relative and args.kind == "npr":
        gamma_path = os.path.join(args.bundle, "gamma.safetensors")
        tables = common.load_safetensors(gamma_path)
        gamma = tables.get("gamma_conditional", tables["gamma"]).double()
        weights = (1.0 / (1.0 - gamma).clamp(min=1e-4) ** 2).float()
        weights = weights / weights.mean()
    log_path = os.path.splitext(state_path)[0] + "-log.csv"
    new_log = not os.path.exists(log_path)
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "wall_s"])
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    started, run_start_wall, acc, n_acc = time.time(), wall, 0.0, 0
    head.train()
    while step < args.steps and time.time() - started < args.time_limit:
        idx = torch.from_numpy(rng.integers(0, len(data), size=args.batch))
        x0 = data[idx]
        y = None
        if arch.get("num_classes"):
            y = labels[idx].clone()
            if null_class is not None:
                y[torch.from_numpy(rng.random(args.batch) < configs.P_UNCOND)] = null_class
        t = torch.from_numpy(rng.integers(0, diffusion.T, size=args.batch))
        noise = torch.randn_like(x0)
        xt = diffusion.q_sample(x0, t, noise)
        with torch.no_grad(), autocast():
            out, features = unet.forward_with_features(xt, t, y)
        eps_theta = out[:, :channels].float().detach()
        with autocast():
            pred = head(features.detach()).float()
        target = noise ** 2 if args.kind == "sn" else (noise - eps_theta) ** 2
        loss = (weights[t] * ((target - pred) ** 2).sum(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        rate = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), head.parameters()):
                pe.mul_(rate).add_(pm, alpha=1 - rate)
            for be, bm in zip(ema.buffers(), head.buffers()):
                be.copy_(bm)
        acc += loss.item()
        n_acc += 1
        wall = run_start_wall + time.time() - started
        if step % 100 == 0 or step == args.steps:
            writer.writerow([step, acc / n_acc, round(wall, 1)])
            log.flush()
            print(f"step {step} loss {acc / n_acc:.4f} ({wall / 60:.1f} min)", flush=True)
            acc, n_acc = 0.0, 0
        if step % 1000 == 0:
            save()
            print(f"probe at step {step}: {probe()}", flush=True)
    if n_acc:
        writer.writerow([step, acc / n_acc, round(wall, 1)])
        print(f"step {step} loss {acc / n_acc:.4f} ({wall / 60:.1f} min)", flush=True)
    save()
    log.close()
    print(f"probe at step {step}: {probe()}", flush=True)

    if args.export:
        folder = args.export_to or args.bundle
        name = f"{args.kind}-head.safetensors"
        path = os.path.join(folder, name)
        common.save_safetensors({k: v.float() for k, v in ema.state_dict().items()}, path,
                                metadata={"kind": args.kind, "steps": step, "wall_seconds": round(wall),
                                          "loss_weighting": "relative (1 / m_t^2)" if args.relative else "none",
                                          "unet_sha256": manifest["files"]["model.safetensors"]})
        with open(os.path.join(folder, "model.json")) as f:
            target_manifest = json.load(f)
        target_manifest["files"][name] = common.sha256_file(path)
        tmp = os.path.join(folder, "model.json.tmp")
        with open(tmp, "w") as f:
            json.dump(target_manifest, f, indent=2)
            f.write("\n")
        os.replace(tmp, os.path.join(folder, "model.json"))
        print("wrote", path)


if __name__ == "__main__":
    main()
