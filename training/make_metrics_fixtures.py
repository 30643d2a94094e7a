"""Writes the metric fixtures under Tests/Fixtures/metrics/, computed independently of the Swift
code with numpy/scipy in float64:

- cases.safetensors: synthetic feature sets <case>.a / <case>.b (float32) and, for each case,
  FID through scipy.linalg.sqrtm (the pytorch-fid formula), KID (unbiased MMD², polynomial kernel,
  subsets drawn by SplitMix64 + partial Fisher-Yates, seed 0, as documented in
  Sources/Metrics/Statistics/SubsetSampler.swift) and precision/recall (k = 3, scipy cdist);
  one case has fewer samples than feature dimensions;
- images/: PNG and JPEG files of real test images in several sizes and channel layouts, and
  expected.safetensors with the features network's outputs (PyTorch, float64) on the
  preprocessed pixels (the preprocessing written out here in numpy).

Run with /usr/bin/python3 training/make_metrics_fixtures.py (after export_bundles.py).
"""
import json
import os

import numpy as np
import scipy.linalg
import scipy.spatial.distance
import torch
from PIL import Image

import adm
import common

OUT = os.path.join(common.ROOT, "Tests", "Fixtures", "metrics")
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def subset(self, population, size):
        order = list(range(population))
        for i in range(size):
            j = i + self.next() % (population - i)
            order[i], order[j] = order[j], order[i]
        return order[:size]


def fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_eigh(a, b):
    """The same through symmetric eigenproblems (to report how far sqrtm is from it)."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(root @ s2 @ root)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def mmd_unbiased(x, y):
    d, m = x.shape[1], x.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kid(a, b, subsets, size):
    m = min(size, len(a), len(b))
    rng = SplitMix64(0)
    values = []
    for _ in range(subsets):
        ia = rng.subset(len(a), m)
        ib = rng.subset(len(b), m)
        values.append(mmd_unbiased(a[ia], b[ib]))
    return float(np.mean(values)), float(np.std(values)), m


def precision_recall(real, gen, k=3):
    def radii(x):
        d = scipy.spatial.distance.cdist(x, x)
        return np.sort(d, axis=1)[:, k]
    rr, rg = radii(real), radii(gen)
    d = scipy.spatial.distance.cdist(gen, real)
    precision = float((d <= rr[None, :]).any(axis=1).mean())
    recall = float((d.T <= rg[None, :]).any(axis=1).mean())
    return precision, recall


def feature_like(rng, n, d, shift):
    """Non-negative, correlated, low-rank-plus-noise vectors like post-ReLU features."""
    basis = np.random.default_rng(99).normal(size=(16, d))
    z = rng.normal(size=(n, 16)) + shift
    return np.maximum(z @ basis / 4 + rng.normal(scale=0.3, size=(n, d)), 0).astype(np.float32)


def write_cases():
    rng = np.random.default_rng(2024)
    cases = {
        # name: (n_a, n_b, shift of a, KID subsets, KID subset size)
        "close": (600, 800, 0.0, 10, 200),
        "shifted": (500, 700, 0.4, 20, 100),
        "few": (50, 400, 0.2, 10, 1000),   # fewer samples than the 128 dimensions
        "tiny": (8, 300, 0.0, 5, 1000),
    }
    out = {}
    report = {}
    for name, (na, nb, shift, subsets, size) in cases.items():
        a = feature_like(rng, na, 128, shift)
        b = feature_like(rng, nb, 128, 0.0)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        f, fe = fid(a64, b64), fid_eigh(a64, b64)
        km, ks, m = kid(a64, b64, subsets, size)
        # Precision/recall as the evaluator computes them: the reference sample cut to N rows.
        p, r = precision_recall(b64[:na], a64)
        out[f"{name}.a"] = torch.from_numpy(a)
        out[f"{name}.b"] = torch.from_numpy(b)
        out[f"{name}.expected"] = torch.tensor([f, km, ks, float(m), p, r, float(subsets), float(size)], dtype=torch.float64)
        report[name] = {"fid_sqrtm": f, "fid_eigh": fe, "relative_difference": abs(f - fe) / abs(f),
                        "kid": [km, ks, m], "precision": p, "recall": r}
    os.makedirs(OUT, exist_ok=True)
    common.save_safetensors(out, os.path.join(OUT, "cases.safetensors"))
    print(json.dumps(report, indent=1))


def preprocess(pixels):
    """The documented preprocessing: gray (BT.601 luma for RGB, alpha over black), area-average
    resize to 28x28, x = v / 127.5 - 1."""
    p = pixels.astype(np.float64)
    if p.ndim == 2:
        gray = p
    else:
        c = p.shape[2]
        alpha = p[..., -1] / 255 if c in (2, 4) else 1.0
        colour = p[..., :3] if c >= 3 else p[..., :1]
        gray = (0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]) if colour.shape[2] == 3 else colour[..., 0]
        gray = gray * alpha
    h, w = gray.shape
    assert h % 28 == 0 and w % 28 == 0, "fixtures use integer factors"
    fy, fx = h // 28, w // 28
    gray = gray.reshape(28, fy, 28, fx).mean(axis=(1, 3))
    return gray / 127.5 - 1


def write_images():
    folder = os.path.join(OUT, "images")
    os.makedirs(folder, exist_ok=True)
    images, labels = common.load_split("t10k")
    manifest = json.load(open(os.path.join(common.ROOT, "models", "fashion-mnist-features", "model.json")))
    tensors = common.load_safetensors(os.path.join(common.ROOT, "models", "fashion-mnist-features", "model.safetensors"))
    net = adm.ExportedFeatureCNN(manifest["architecture"]["layers"], {k: v.double() for k, v in tensors.items()})
    files = []
    rng = np.random.default_rng(5)
    for i in range(6):
        g = images[i]
        up = np.kron(g, np.ones((4, 4), dtype=np.uint8))
        tint = np.stack([g, (g * 0.8).astype(np.uint8), (g * 0.5).astype(np.uint8)], axis=-1)
        tint2 = np.kron(tint, np.ones((2, 2, 1), dtype=np.uint8))
        alpha = rng.integers(0, 256, size=g.shape, dtype=np.uint8)
        variants = {
            f"{i}-gray.png": Image.fromarray(g, "L"),
            f"{i}-gray-x4.png": Image.fromarray(up, "L"),
            f"{i}-rgb-x2.png": Image.fromarray(tint2, "RGB"),
            f"{i}-gray-alpha.png": Image.fromarray(np.stack([g, alpha], axis=-1), "LA"),
            f"{i}-rgba.png": Image.fromarray(np.concatenate([tint, alpha[..., None]], axis=-1), "RGBA"),
            f"{i}-q85.jpg": Image.fromarray(g, "L"),
        }
        for name, im in variants.items():
            path = os.path.join(folder, name)
            if name.endswith(".jpg"):
                im.save(path, quality=85)
            else:
                im.save(path)
            files.append(name)
    xs = []
    for name in files:
        decoded = np.array(Image.open(os.path.join(folder, name)))
        xs.append(preprocess(decoded))
    x = torch.from_numpy(np.stack(xs)[:, None])
    with torch.no_grad():
        feats, logits = net(x)
    common.save_safetensors({"features": feats.float(), "logits": logits.float(), "x": x.float()},
                            os.path.join(folder, "expected.safetensors"))
    with open(os.path.join(folder, "files.txt"), "w") as f:
        f.write("\n".join(files) + "\n")
    print("wrote", len(files), "images")


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_cases()
    write_images()
