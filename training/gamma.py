"""Analytic-DPM's Gamma table for the trained UNet: for every timestep index t,
Gamma_t = mean over training images of ||eps_theta(x_t, t)||^2 / d, with one
noise draw per image and t. The network sees the null class (the Gamma of the
unconditional model, as the paper uses), and, separately, the true class of
each image (the class-conditional table).

Resumable: partial sums live in training/work/gamma.pt."""
import argparse
import os
import time

import numpy as np
import torch

import adm
import common
import configs
from diffusion import GaussianDiffusion, betas_for


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=10000, help="training images per timestep")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=1e9)
    ap.add_argument("--state", default=os.path.join(common.WORK, "gamma.pt"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    st = torch.load(os.path.join(common.WORK, "diffusion.pt"))
    model = adm.unet_from_architecture(configs.UNET)
    model.load_state_dict(st["ema"])
    model.eval()
    diffusion = GaussianDiffusion(betas_for(configs.DIFFUSION["schedule"], configs.DIFFUSION["steps"]))
    T = diffusion.T
    images, labels = common.load_split("train")
    rng = np.random.default_rng(2024)
    subset = rng.permutation(len(images))[:args.images]
    x_all = common.to_model_range(images[subset])
    y_all = torch.from_numpy(labels[subset])
    sums = {"uncond": np.zeros(T), "cond": np.zeros(T)}
    counts = np.zeros(T, dtype=np.int64)
    wall = 0.0
    if os.path.exists(args.state):
        prev = torch.load(args.state)
        if prev["images"] == args.images and prev["model_step"] == st["step"]:
            sums, counts, wall = prev["sums"], prev["counts"], prev["wall"]
    started = time.time()
    d = x_all[0].numel()
    # Work list: (t, image block); every image gets its own noise draw at every t.
    gen = torch.Generator()
    with torch.no_grad():
        for t in range(T):
            while counts[t] < args.images:
                if time.time() - started > args.time_limit:
                    break
                lo = int(counts[t])
                hi = min(lo + args.batch, args.images)
                gen.manual_seed(int(t * 1_000_003 + lo))
                x0 = x_all[lo:hi]
                tt = torch.full((hi - lo,), t, dtype=torch.long)
                noise = torch.randn(x0.shape, generator=gen)
                xt = diffusion.q_sample(x0, tt, noise)
                for key, y in (("uncond", torch.full_like(tt, configs.NULL_CLASS)), ("cond", y_all[lo:hi])):
                    eps = model(xt, tt, y)[:, :1]
                    sums[key][t] += (eps.double() ** 2).sum(dim=(1, 2, 3)).div(d).sum().item()
                counts[t] = hi
            if t % 50 == 49 or t == T - 1:
                torch.save({"sums": sums, "counts": counts, "images": args.images, "model_step": st["step"],
                            "wall": wall + time.time() - started}, args.state)
                print(f"t {t}: Gamma_uncond {sums['uncond'][t] / max(counts[t], 1):.5f} "
                      f"Gamma_cond {sums['cond'][t] / max(counts[t], 1):.5f} "
                      f"{(wall + time.time() - started) / 60:.1f} min", flush=True)
            if time.time() - started > args.time_limit:
                print("time limit reached; rerun to continue", flush=True)
                break


if __name__ == "__main__":
    main()
