"""Shared helpers for the recipe: Fashion-MNIST IDX files, safetensors I/O,
bundle writing."""
import gzip
import hashlib
import json
import os
import struct
import subprocess

import numpy as np
import torch

DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "training", "work")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path):
    """Reads a (gzipped) IDX file into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split):
    """(images uint8 [N, 28, 28], labels int64 [N]) for 'train' or 't10k'."""
    images = read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    return images, labels


def to_model_range(images_u8):
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [-1, 1] (x = p / 127.5 - 1)."""
    return torch.from_numpy(images_u8.astype(np.float32) / 127.5 - 1.0)[:, None]


_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.float16: "F16"}
_NP = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "F16": np.float16, "U8": np.uint8}


def save_safetensors(tensors, path, metadata=None):
    """Writes {name: tensor} as safetensors (keys sorted, data 8-byte aligned)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    """Reads a safetensors file into {name: torch tensor}."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype=_NP[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "training"], capture_output=True,
                               text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_bundle(folder, manifest, files):
    """Writes {filename: {name: tensor}} as safetensors and model.json with their SHA-256."""
    os.makedirs(folder, exist_ok=True)
    hashes = {}
    for filename, tensors in files.items():
        path = os.path.join(folder, filename)
        save_safetensors(tensors, path)
        hashes[filename] = sha256_file(path)
    manifest = dict(manifest)
    manifest["files"] = hashes
    tmp = os.path.join(folder, "model.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(folder, "model.json"))


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def prepare_classifier_run(threads, seed):
    """Threads, seeds and the work folder for a classifier run; returns
    (train x, train y, test x, test y) with x in the model range."""
    torch.set_num_threads(threads)
    seed_everything(seed)
    os.makedirs(WORK, exist_ok=True)
    xi, yi = load_split("train")
    xt, yt = load_split("t10k")
    return to_model_range(xi), torch.from_numpy(yi), to_model_range(xt), torch.from_numpy(yt)
