"""Samples a grid from the trained UNet in PyTorch (one row per class) and
writes it as a PNG: the recipe's own check that samples look like the requested
classes. Ancestral sampling with the learned variance on a respaced process;
optional classifier-free guidance; reports the feature classifier's accuracy on
the samples when the feature bundle exists."""
import argparse
import json
import os
import struct
import zlib

import numpy as np
import torch

import adm
import common
import configs
from diffusion import GaussianDiffusion, betas_for, respaced_betas, space_timesteps


def write_png(path, gray_u8):
    """Writes a 2-D uint8 array as an 8-bit grayscale PNG."""
    h, w = gray_u8.shape
    raw = b"".join(b"\x00" + gray_u8[r].tobytes() for r in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def grid(images_u8, rows, cols, pad=2, scale=2):
    n, h, w = images_u8.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images_u8[i]
    return np.kron(out, np.ones((scale, scale), dtype=np.uint8))


def sample(model, classes, steps, guidance, seed):
    base = betas_for(configs.DIFFUSION["schedule"], configs.DIFFUSION["steps"])
    kept = space_timesteps(len(base), str(steps))
    d = GaussianDiffusion(respaced_betas(base, kept), variance="learned_range")
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes)
    x = torch.randn(len(classes), 1, 28, 28, generator=g)
    with torch.no_grad():
        for k in reversed(range(len(kept))):
            t = torch.full((len(classes),), kept[k], dtype=torch.long)
            out = model(x, t, y)
            if guidance:
                out_null = model(x, t, torch.full_like(y, configs.NULL_CLASS))
                out = torch.cat([(1 + guidance) * out[:, :1] - guidance * out_null[:, :1], out[:, 1:]], 1)
            kk = torch.full((len(classes),), k, dtype=torch.long)
            x = d.p_sample(out, x, kk, torch.randn(x.shape, generator=g))
    return ((x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance w")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = adm.unet_from_architecture(configs.UNET)
    model.load_state_dict(common.load_safetensors(os.path.join(common.ROOT, "models", "fashion-mnist",
                                                                "model.safetensors")))
    model.eval()
    classes = [c for c in range(10) for _ in range(args.per_class)]
    images = sample(model, classes, args.steps, args.guidance, args.seed)
    out = args.out or os.path.join(common.ROOT, "training",
                                   f"samples-ddpm{args.steps}-w{args.guidance:g}.png")
    write_png(out, grid(images, 10, args.per_class))
    report = {"file": os.path.relpath(out, common.ROOT), "steps": args.steps, "guidance": args.guidance,
              "seed": args.seed}
    feat_dir = os.path.join(common.ROOT, "models", "fashion-mnist-features")
    if os.path.exists(os.path.join(feat_dir, "model.json")):
        m = json.load(open(os.path.join(feat_dir, "model.json")))
        net = adm.ExportedFeatureCNN(m["architecture"]["layers"],
                                     common.load_safetensors(os.path.join(feat_dir, "model.safetensors")))
        with torch.no_grad():
            pred = net(common.to_model_range(images))[1].argmax(1).numpy()
        report["class_accuracy"] = float((pred == np.array(classes)).mean())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
