"""Trains the noisy classifier p(y | x_t, t) (ADM EncoderUNetModel, attention
pool) on x_t = q_sample(x0, t) with t uniform, and reports its test accuracy at
t = 0, 250, 500, 750. Saves training/work/classifier.pt.

--init-from continues from a committed bundle (its recipe's steps and wall time carry on);
--bf16 (PyTorch 2, the venv of `make train`) runs the network under bfloat16 autocast;
--flip adds random horizontal flips."""
import argparse
import contextlib
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import adm
import common
import configs
from diffusion import GaussianDiffusion, betas_for


def accuracy_at(model, diffusion, x, y, t_value, seed=0, batch=500):
    """Test accuracy on q_sample(x0, t) at a fixed t (one fixed noise draw)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            x0 = x[i:i + batch]
            t = torch.full((len(x0),), t_value, dtype=torch.long)
            xt = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
            correct += (model(xt, t).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--time-limit", type=float, default=1e9)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", help="classifier bundle folder whose weights start this run")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--flip", action="store_true", help="random horizontal flips")
    args = ap.parse_args()
    x, y, x_test, y_test = common.prepare_classifier_run(args.threads, args.seed)
    diffusion = GaussianDiffusion(betas_for(configs.DIFFUSION["schedule"], configs.DIFFUSION["steps"]))
    model = adm.unet_from_architecture(configs.CLASSIFIER)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    log = []
    step, total, previous_wall = 0, 0.0, 0.0
    if args.init_from:
        model.load_state_dict(common.load_safetensors(os.path.join(args.init_from, "model.safetensors")))
        recipe = json.load(open(os.path.join(args.init_from, "model.json")))["recipe"]
        step, previous_wall = recipe["steps"], recipe["wall_seconds"]
        print(f"starting from {args.init_from} (step {step})", flush=True)
    first_step = step
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    model.train()
    while step - first_step < args.steps and time.time() - started < args.time_limit:
        idx = torch.from_numpy(rng.integers(0, len(x), size=args.batch))
        t = torch.from_numpy(rng.integers(0, diffusion.T, size=args.batch))
        x0 = x[idx]
        if args.flip:
            flip = torch.from_numpy(rng.random(args.batch) < 0.5)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        xt_b = diffusion.q_sample(x0, t, torch.randn(args.batch, *x.shape[1:]))
        with autocast():
            logits = model(xt_b, t)
        loss = F.cross_entropy(logits.float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step - first_step + 1) / 200)
        opt.step()
        step += 1
        total += loss.item()
        if step % 100 == 0:
            log.append({"step": step, "loss": round(total / 100, 4), "wall_s": round(time.time() - started, 1)})
            print(json.dumps(log[-1]), flush=True)
            total = 0.0
    n_eval = 2000
    acc = {str(t): accuracy_at(model, diffusion, x_test[:n_eval], y_test[:n_eval], t) for t in (0, 250, 500, 750)}
    print(json.dumps({"test_accuracy_first_2000": acc}), flush=True)
    torch.save({"model": model.state_dict(), "log": log, "accuracy": acc, "eval_images": n_eval, "steps": step,
                "wall": previous_wall + time.time() - started, "args": vars(args)}, os.path.join(common.WORK, "classifier.pt"))


if __name__ == "__main__":
    main()
