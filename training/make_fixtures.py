"""Writes the parity fixtures under Tests/Fixtures/:

- bundles/<name>/: small random-weight bundles (every layer random, including
  those zero-initialised in training) covering each architecture option, with
  io.safetensors beside model.json: inputs and float64-computed reference outputs;
- sampler-steps.safetensors: reference sampler steps with the noise given;
- shipped/<bundle>-io.safetensors: the same kind of inputs and outputs for the
  shipped bundles in models/ (when they exist).

Run with /usr/bin/python3 training/make_fixtures.py [--shipped-only].
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn

import adm
import common
import configs
from diffusion import GaussianDiffusion, betas_for, respaced_betas, space_timesteps

FIXTURES = os.path.join(common.ROOT, "Tests", "Fixtures")

TINY = {
    "tiny-unet-cond": {
        "type": "adm-unet", "image_size": 16, "in_channels": 1, "out_channels": 2, "model_channels": 32,
        "num_res_blocks": 1, "attention_resolutions": [2], "channel_mult": [1, 2], "num_classes": 11,
        "num_heads": 1, "num_head_channels": 32, "num_heads_upsample": -1, "use_scale_shift_norm": True,
        "resblock_updown": True, "use_new_attention_order": False},
    "tiny-unet-uncond": {
        "type": "adm-unet", "image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": 32,
        "num_res_blocks": 2, "attention_resolutions": [1, 2], "channel_mult": [1, 1], "num_classes": None,
        "num_heads": 2, "num_head_channels": -1, "num_heads_upsample": -1, "use_scale_shift_norm": False,
        "resblock_updown": False, "use_new_attention_order": True},
    "tiny-classifier-attention": {
        "type": "adm-encoder", "image_size": 16, "in_channels": 1, "out_channels": 10, "model_channels": 32,
        "num_res_blocks": 1, "attention_resolutions": [2], "channel_mult": [1, 2], "num_heads": 1,
        "num_head_channels": 32, "use_scale_shift_norm": True, "resblock_updown": True,
        "use_new_attention_order": False, "pool": "attention"},
    "tiny-classifier-adaptive": {
        "type": "adm-encoder", "image_size": 8, "in_channels": 3, "out_channels": 5, "model_channels": 32,
        "num_res_blocks": 1, "attention_resolutions": [2], "channel_mult": [1, 1], "num_heads": 2,
        "num_head_channels": -1, "use_scale_shift_norm": False, "resblock_updown": False,
        "use_new_attention_order": True, "pool": "adaptive"},
}


def randomise(model, gen):
    """Gives every parameter a random value (zero-initialised layers too)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1 / np.sqrt(fan_in)
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=gen)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=gen)
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        elif isinstance(m, nn.Embedding):
            with torch.no_grad():
                m.weight.normal_(generator=gen)
        elif isinstance(m, adm.AttentionPool2d):
            with torch.no_grad():
                m.positional_embedding.normal_(generator=gen).mul_(m.positional_embedding.shape[0] ** -0.5)


def unet_io(model, arch, n, gen):
    """Inputs and float64 reference outputs for a UNet or classifier."""
    x = torch.randn(n, arch["in_channels"], arch["image_size"], arch["image_size"], generator=gen)
    t = torch.randint(0, 1000, (n,), generator=gen)
    t[0] = 0
    io = {"x": x, "t": t}
    m64 = model.double().eval()
    if arch["type"] == "adm-unet":
        y = torch.randint(0, arch["num_classes"], (n,), generator=gen) if arch.get("num_classes") else None
        with torch.no_grad():
            io["out"] = m64(x.double(), t, y).float()
        if y is not None:
            io["y"] = y
    else:
        y = torch.randint(0, arch["out_channels"], (n,), generator=gen)
        xd = x.double().requires_grad_(True)
        logits = m64(xd, t)
        logp = torch.log_softmax(logits, dim=-1)[torch.arange(n), y].sum()
        (grad,) = torch.autograd.grad(logp, xd)
        io.update(y=y, logits=logits.detach().float(), grad=grad.float())
    model.float()
    return io


def write_tiny_bundles():
    gen = torch.Generator().manual_seed(1234)
    for name, arch in TINY.items():
        torch.manual_seed(1)
        model = adm.unet_from_architecture(arch)
        randomise(model, gen)
        kind = "unet" if arch["type"] == "adm-unet" else "classifier"
        manifest = {"format": "diffusiond-bundle/1", "name": name, "kind": kind, "architecture": arch,
                    "classes": [f"class{i}" for i in range(arch.get("num_classes") or arch["out_channels"])],
                    "data": {"height": arch["image_size"], "width": arch["image_size"],
                             "channels": arch["in_channels"], "normalisation": "x = pixel / 127.5 - 1"},
                    "recipe": {"purpose": "parity fixture: random weights"}}
        if kind == "unet":
            manifest["diffusion"] = dict(configs.DIFFUSION, variance="learned_range"
                                         if arch["out_channels"] == 2 * arch["in_channels"] else "fixed_small")
            if arch.get("num_classes"):
                manifest["null_class"] = arch["num_classes"] - 1
        folder = os.path.join(FIXTURES, "bundles", name)
        common.write_bundle(folder, manifest, {"model.safetensors": model.state_dict()})
        common.save_safetensors(unet_io(model, arch, 3, gen), os.path.join(folder, "io.safetensors"))
        print("wrote", folder)
    # The feature CNN, batch norm folded at export.
    torch.manual_seed(2)
    cnn = adm.FeatureCNN()
    randomise(cnn, gen)
    cnn.eval()
    layers, tensors = cnn.export_layers()
    arch = {"type": "feature-cnn", "layers": layers}
    folder = os.path.join(FIXTURES, "bundles", "tiny-features")
    manifest = {"format": "diffusiond-bundle/1", "name": "tiny-features", "kind": "features", "architecture": arch,
                "classes": common.CLASSES, "data": {"height": 28, "width": 28, "channels": 1,
                                                     "normalisation": "x = pixel / 127.5 - 1"},
                "recipe": {"purpose": "parity fixture: random weights"}}
    common.write_bundle(folder, manifest, {"model.safetensors": tensors})
    x = torch.randn(3, 1, 28, 28, generator=gen)
    with torch.no_grad():
        feats, logits = adm.ExportedFeatureCNN(layers, {k: v.double() for k, v in tensors.items()})(x.double())
        ref_feats = cnn.double().features(x.double())
    assert torch.allclose(feats, ref_feats, atol=1e-9), "batch-norm folding changed the features"
    common.save_safetensors({"x": x, "features": feats.float(), "logits": logits.float()},
                            os.path.join(folder, "io.safetensors"))
    print("wrote", folder)


def write_sampler_steps():
    """Reference steps for the cosine T=1000 learned-range process, full and respaced."""
    gen = torch.Generator().manual_seed(99)
    base = betas_for("cosine", 1000)
    out = {}
    n, shape = 3, (1, 4, 4)

    def inputs(prefix, k, orig):
        x = torch.randn(n, *shape, generator=gen)
        eps = torch.randn(n, *shape, generator=gen)
        v = torch.rand(n, *shape, generator=gen) * 2 - 1
        noise = torch.randn(n, *shape, generator=gen)
        out.update({f"{prefix}.x_t": x, f"{prefix}.model_out": torch.cat([eps, v], 1), f"{prefix}.noise": noise,
                    f"{prefix}.t_index": k, f"{prefix}.t_original": orig})
        return x, torch.cat([eps, v], 1).double(), noise

    for name, spacing in [("ddpm_full", None), ("ddpm_respaced10", "10")]:
        kept = list(range(1000)) if spacing is None else space_timesteps(1000, spacing)
        d = GaussianDiffusion(respaced_betas(base, kept), variance="learned_range")
        k = torch.tensor([len(kept) - 1, len(kept) // 2, 0])
        orig = torch.tensor([kept[i] for i in k])
        x, mo, noise = inputs(name, k, orig)
        mean, log_var, x0, _ = d.p_mean_variance(mo, x.double(), k)
        out[f"{name}.x_prev"] = (mean + (k != 0).double().reshape(-1, 1, 1, 1) * torch.exp(0.5 * log_var)
                                 * noise.double()).float()
        out[f"{name}.mean"], out[f"{name}.log_variance"], out[f"{name}.x0"] = mean.float(), log_var.float(), x0.float()
        out[f"{name}.timesteps"] = torch.tensor(kept)
    for name, eta in [("ddim50_eta0", 0.0), ("ddim50_eta05", 0.5)]:
        kept = space_timesteps(1000, "ddim50")
        d = GaussianDiffusion(respaced_betas(base, kept), variance="learned_range")
        k = torch.tensor([len(kept) - 1, 10, 0])
        orig = torch.tensor([kept[i] for i in k])
        x, mo, noise = inputs(name, k, orig)
        abar_prev = torch.tensor([d.abar_prev[i] for i in k], dtype=torch.float64)
        _, _, x0, _ = d.p_mean_variance(mo, x.double(), k)
        eps = (torch.from_numpy(d.sqrt_recip_abar)[k].reshape(-1, 1, 1, 1) * x.double() - x0) / \
            torch.from_numpy(d.sqrt_recipm1_abar)[k].reshape(-1, 1, 1, 1)
        abar = torch.from_numpy(d.abar)[k].reshape(-1, 1, 1, 1)
        ap = abar_prev.reshape(-1, 1, 1, 1)
        sigma = eta * torch.sqrt((1 - ap) / (1 - abar)) * torch.sqrt(1 - abar / ap)
        xp = x0 * torch.sqrt(ap) + torch.sqrt(1 - ap - sigma ** 2) * eps + (k != 0).double().reshape(-1, 1, 1, 1) \
            * sigma * noise.double()
        out[f"{name}.x_prev"], out[f"{name}.x0"] = xp.float(), x0.float()
        out[f"{name}.timesteps"] = torch.tensor(kept)
    path = os.path.join(FIXTURES, "sampler-steps.safetensors")
    common.save_safetensors(out, path)
    print("wrote", path)


def write_shipped_io():
    """Inputs and reference outputs for the shipped bundles (float64 reference)."""
    gen = torch.Generator().manual_seed(7)
    os.makedirs(os.path.join(FIXTURES, "shipped"), exist_ok=True)
    for name in ("fashion-mnist", "fashion-mnist-classifier"):
        folder = os.path.join(common.ROOT, "models", name)
        if not os.path.exists(os.path.join(folder, "model.json")):
            continue
        manifest = json.load(open(os.path.join(folder, "model.json")))
        model = adm.unet_from_architecture(manifest["architecture"])
        model.load_state_dict(common.load_safetensors(os.path.join(folder, "model.safetensors")))
        io = unet_io(model, manifest["architecture"], 4, gen)
        if manifest["kind"] == "unet" and "y" in io:  # also the null class, the unconditional path
            io["y"][-1] = manifest["null_class"]
            with torch.no_grad():
                io["out"] = model.double()(io["x"].double(), io["t"], io["y"]).float()
            model.float()
        common.save_safetensors(io, os.path.join(FIXTURES, "shipped", f"{name}-io.safetensors"))
        print("wrote shipped io for", name)
    folder = os.path.join(common.ROOT, "models", "fashion-mnist-features")
    if os.path.exists(os.path.join(folder, "model.json")):
        manifest = json.load(open(os.path.join(folder, "model.json")))
        tensors = common.load_safetensors(os.path.join(folder, "model.safetensors"))
        images, _ = common.load_split("t10k")
        x = common.to_model_range(images[:8])
        with torch.no_grad():
            feats, logits = adm.ExportedFeatureCNN(manifest["architecture"]["layers"],
                                                   {k: v.double() for k, v in tensors.items()})(x.double())
        common.save_safetensors({"x": x, "features": feats.float(), "logits": logits.float()},
                                os.path.join(FIXTURES, "shipped", "fashion-mnist-features-io.safetensors"))
        print("wrote shipped io for fashion-mnist-features")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shipped-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.shipped_only:
        write_tiny_bundles()
        write_sampler_steps()
    write_shipped_io()


if __name__ == "__main__":
    main()
