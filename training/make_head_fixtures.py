"""Writes the Extended-Analytic-DPM parity fixtures under Tests/Fixtures/:

- bundles/tiny-unet-{cond,uncond}/sn-head.safetensors (random weights, listed with SHA-256 in the
  bundle's model.json) and heads-io.safetensors: the UNet output and the head output for the inputs of
  the bundle's io.safetensors, computed in float64 with the final feature map of the same pass;
- covariance-steps.safetensors: one reverse step of sn-ddpm, sn-ddim, npr-ddpm and npr-ddim
  (cosine T = 1000, respacing "10", eps prediction, x0 clipped) at respaced indices 5, 1 and 0, with
  the formulas written out here in float64 numpy independently of the engine.

Run with /usr/bin/python3 training/make_head_fixtures.py (after make_fixtures.py, which rewrites the bundles).
"""
import json
import os

import numpy as np
import torch

import adm
import common
from diffusion import betas_for, respaced_betas, space_timesteps
from make_fixtures import FIXTURES, randomise


def write_head_bundles():
    gen = torch.Generator().manual_seed(4321)
    for name in ["tiny-unet-cond", "tiny-unet-uncond"]:
        folder = os.path.join(FIXTURES, "bundles", name)
        with open(os.path.join(folder, "model.json")) as f:
            manifest = json.load(f)
        arch = manifest["architecture"]
        model = adm.unet_from_architecture(arch)
        model.load_state_dict(common.load_safetensors(os.path.join(folder, "model.safetensors")))
        head = adm.CovarianceHead(model.out[0].num_channels, arch["in_channels"])
        randomise(head, gen)
        path = os.path.join(folder, "sn-head.safetensors")
        common.save_safetensors(head.state_dict(), path)
        manifest["files"]["sn-head.safetensors"] = common.sha256_file(path)
        with open(os.path.join(folder, "model.json"), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        io = common.load_safetensors(os.path.join(folder, "io.safetensors"))
        with torch.no_grad():
            out, h = model.double().eval().forward_with_features(io["x"].double(), io["t"], io.get("y"))
            head_out = head.double()(h)
        common.save_safetensors({"out": out.float(), "head": head_out.float()}, os.path.join(folder, "heads-io.safetensors"))
        print("wrote", folder)


def one_step(kind, i, abar, x, eps, head, z, eta):
    """x_prev at respaced index i (abar over the kept timesteps) in float64."""
    abar_r = abar[i]
    abar_s = abar[i - 1] if i > 0 else 1.0
    beta_sr = 1 - abar_r / abar_s
    betatilde = beta_sr * (1 - abar_s) / (1 - abar_r)
    x0 = np.clip((x - np.sqrt(1 - abar_r) * eps) / np.sqrt(abar_r), -1, 1)
    ratio = (1 - abar_r) / abar_r
    cov = ratio * (head - eps ** 2) if kind.startswith("sn") else ratio * head
    cov = np.clip(cov, 0, 1)
    if kind.endswith("ddpm"):
        mean = np.sqrt(abar_s) * beta_sr / (1 - abar_r) * x0 + np.sqrt(1 - beta_sr) * (1 - abar_s) / (1 - abar_r) * x
        var = betatilde + abar_s * beta_sr ** 2 / (1 - abar_r) ** 2 * cov
    else:
        lam2 = eta ** 2 * betatilde if i > 0 else 0.0
        mean = np.sqrt(abar_s) * x0 + np.sqrt(1 - abar_s - lam2) * eps
        var = lam2 + (np.sqrt(abar_s) - np.sqrt((1 - abar_s - lam2) * abar_r / (1 - abar_r))) ** 2 * cov
    if i == 0:
        return mean
    if i == 1:
        var = np.clip(var, 0, (1 * 2 / 255 * np.sqrt(np.pi / 2)) ** 2)
    return mean + np.sqrt(var) * z


def write_covariance_steps():
    rng = np.random.default_rng(77)
    kept = sorted(space_timesteps(1000, "10"))
    betas = respaced_betas(betas_for("cosine", 1000), kept)
    abar = np.cumprod(1 - np.asarray(betas, dtype=np.float64))
    tensors = {"timesteps": torch.tensor(kept, dtype=torch.int64)}
    shape = (3, 1, 8, 8)
    for i in [5, 1, 0]:
        x = rng.standard_normal(shape)
        eps = rng.standard_normal(shape)
        u = rng.normal(0.05, 0.3, shape)
        z = rng.standard_normal(shape)
        tensors.update({f"i{i}.x": x, f"i{i}.eps": eps, f"i{i}.u": u, f"i{i}.z": z})
        for kind, eta in [("sn_ddpm", 0.0), ("sn_ddim", 0.0), ("npr_ddpm", 0.0), ("npr_ddim", 0.5)]:
            # SN's head h ~ E[eps^2]: eps^2 + u (sometimes below eps^2); NPR's g ~ E[(eps - eps_theta)^2]: |u| scaled.
            head = eps ** 2 + u if kind.startswith("sn") else np.abs(u) * 0.01
            tensors[f"i{i}.{kind}.head"] = head
            tensors[f"i{i}.{kind}.x_prev"] = one_step(kind, i, abar, x.astype(np.float32).astype(np.float64),
                                                       eps.astype(np.float32).astype(np.float64),
                                                       head.astype(np.float32).astype(np.float64),
                                                       z.astype(np.float32).astype(np.float64), eta)
    tensors = {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)).float()) for k, v in tensors.items()}
    path = os.path.join(FIXTURES, "covariance-steps.safetensors")
    common.save_safetensors(tensors, path)
    print("wrote", path)


if __name__ == "__main__":
    torch.manual_seed(5)
    write_head_bundles()
    write_covariance_steps()
