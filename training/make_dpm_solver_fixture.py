"""Writes Tests/Fixtures/dpm-solver-steps.safetensors: diffusers' own DPMSolverMultistepScheduler
(defaults: solver_order 2, dpmsolver++, midpoint, lower_order_final, linspace spacing, final sigma
zero, no thresholding) run on a fixed eps sequence, for the engine's DPMSolverPlusPlusSampler test.

The scheduler gets the engine's cosine schedule (T = 1000): its alphas_cumprod are replaced by the
float64 products of the betas rounded to float32 (diffusers itself would take the cumulative product
of float32 betas), so that the comparison measures the solver, not two cumulative products.

The "model" is the exact denoiser of Gaussian data N(0.4, 0.6^2) per element plus a fixed error
0.5 sqrt(abar_t) r_k (r_k standard normal, one draw per step), so that x0 estimates leave [-1, 1]
and the clipping case differs. Every step records the state before it, the eps fed and the timestep;
the last state is the result. Cases: n10 and n25 (defaults), n10_clip (thresholding with
sample_max_value 1, which is clipping x0 to [-1, 1]).

Needs diffusers 0.30 (works with Debian's torch 1.13):
  /usr/bin/python3 -m venv --system-site-packages /tmp/dvenv && /tmp/dvenv/bin/pip install diffusers==0.30.3
  /tmp/dvenv/bin/python training/make_dpm_solver_fixture.py
"""
import os

import numpy as np
import torch

import common
from diffusion import betas_for

import diffusers
from diffusers import DPMSolverMultistepScheduler

MEAN, STD = 0.4, 0.6
SHAPE = (3, 1, 8, 8)


def exact_eps(x, abar):
    """eps*(x_t) = sqrt(1 - abar)(x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar) in float64."""
    return np.sqrt(1 - abar) * (x - np.sqrt(abar) * MEAN) / (abar * STD * STD + 1 - abar)


def run(steps, thresholding, seed):
    betas = betas_for("cosine", 1000)
    abar = np.cumprod(1 - betas)
    kwargs = dict(num_train_timesteps=1000, trained_betas=betas.tolist())
    if thresholding:
        kwargs.update(thresholding=True, sample_max_value=1.0)
    sched = DPMSolverMultistepScheduler(**kwargs)
    sched.alphas_cumprod = torch.tensor(abar, dtype=torch.float64).float()
    sched.set_timesteps(steps)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32))
    states, epss = [x.clone()], []
    for k, t in enumerate(sched.timesteps.tolist()):
        a = float(abar[t])
        eps = exact_eps(x.double().numpy(), a) + 0.5 * np.sqrt(a) * rng.standard_normal(SHAPE)
        eps = torch.from_numpy(eps.astype(np.float32))
        epss.append(eps)
        x = sched.step(eps, t, x).prev_sample
        states.append(x.clone())
    return sched.timesteps.clone(), torch.stack(states), torch.stack(epss)


def main():
    tensors = {}
    for name, steps, thresholding, seed in [("n10", 10, False, 1), ("n25", 25, False, 2), ("n10_clip", 10, True, 3)]:
        timesteps, states, epss = run(steps, thresholding, seed)
        tensors[f"{name}.timesteps"] = timesteps.to(torch.int64)
        tensors[f"{name}.states"] = states
        tensors[f"{name}.eps"] = epss
    path = os.path.join(common.ROOT, "Tests", "Fixtures", "dpm-solver-steps.safetensors")
    common.save_safetensors(tensors, path, metadata={"diffusers": diffusers.__version__, "torch": torch.__version__})
    print("wrote", path)


if __name__ == "__main__":
    main()
