"""Turns the trained checkpoints in training/work/ into the bundles in models/:
safetensors weights, model.json with the SHA-256 of every file, the recipe's
numbers, the Gamma table, and the feature bundle's reference statistics and
data floor."""
import argparse
import json
import os
import platform

import numpy as np
import scipy.linalg
import torch

import adm
import common
import configs

MODELS = os.path.join(common.ROOT, "models")
DATA = {"height": 28, "width": 28, "channels": 1, "normalisation": "x = pixel / 127.5 - 1"}
SOURCE = "Debian dataset-fashion-mnist (train 60,000 / t10k 10,000 IDX files)"


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}, torch {torch.__version__}"


def fid_from_stats(mu1, s1, mu2, s2):
    """FID through the eigenvalues of sqrt(S1) S2 sqrt(S1) (float64, negatives clamped)."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ s2 @ root
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def features_of(layers, tensors, images_u8, batch=1000):
    net = adm.ExportedFeatureCNN(layers, tensors)
    out = []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            x = common.to_model_range(images_u8[i:i + batch]).to(next(iter(tensors.values())).dtype)
            f, _ = net(x)
            out.append(f.double().numpy())
    return np.concatenate(out)


def unet_manifest(rev, step, wall, args):
    """model.json of the UNet bundle (without files and Gamma table) for a run at `step`."""
    return {
        "format": "diffusiond-bundle/1", "name": "fashion-mnist", "kind": "unet",
        "architecture": configs.UNET, "diffusion": configs.DIFFUSION, "classes": common.CLASSES,
        "null_class": configs.NULL_CLASS, "data": DATA,
        "recipe": {"revision": rev, "data": SOURCE, "steps": step, "wall_seconds": round(wall),
                   "images_seen": int(args.get("images_seen", step * args["batch"])),
                   "batch": args["batch"], "learning_rate": args["lr"], "ema": args["ema"],
                   "label_drop_probability": configs.P_UNCOND,
                   "loss": "L_simple + 0.001 L_vlb (hybrid)" + (
                       f", Min-SNR-{args['min_snr']:g} weighting of L_simple" if args.get("min_snr") else ""),
                   "precision": "bfloat16 autocast" if args.get("bf16") else "float32",
                   "importance_sampling": bool(args["importance"]), "machine": machine(),
                   "history": args.get("history", [])},
    }


def export_unet_snapshot(ema_state, step, wall, args, folder):
    """Writes the EMA weights as a bundle without a Gamma table (an intermediate snapshot)."""
    manifest = unet_manifest(common.git_revision(), step, wall, vars(args) if hasattr(args, "__dict__") else args)
    common.write_bundle(folder, manifest, {"model.safetensors": {k: v.float() for k, v in ema_state.items()}})
    print(f"snapshot {folder}", flush=True)


def export_unet(rev):
    """The UNet bundle from training/work/diffusion.pt (EMA weights). The Gamma tables are computed
    afterwards by the engine (`make gamma`: diffusionctl gamma-table), which adds gamma.safetensors
    and model.json's analytic_dpm record."""
    st = torch.load(os.path.join(common.WORK, "diffusion.pt"), weights_only=False)
    args = dict(st["args"], images_seen=st.get("images_seen", st["step"] * st["args"]["batch"]))
    manifest = unet_manifest(rev, st["step"], st["wall"], args)
    common.write_bundle(os.path.join(MODELS, "fashion-mnist"), manifest,
                        {"model.safetensors": {k: v.float() for k, v in st["ema"].items()}})


def export_classifier(rev):
    st = torch.load(os.path.join(common.WORK, "classifier.pt"))
    manifest = {
        "format": "diffusiond-bundle/1", "name": "fashion-mnist-classifier", "kind": "classifier",
        "architecture": configs.CLASSIFIER, "diffusion": configs.DIFFUSION, "classes": common.CLASSES, "data": DATA,
        "recipe": {"revision": rev, "data": SOURCE, "steps": st["steps"], "wall_seconds": round(st["wall"]),
                   "batch": st["args"]["batch"], "learning_rate": st["args"]["lr"],
                   "training_input": "q_sample(x0, t), t uniform in 0..T-1",
                   "test_accuracy_by_t": st["accuracy"], "test_images_evaluated": st["eval_images"],
                   "machine": machine()},
    }
    common.write_bundle(os.path.join(MODELS, "fashion-mnist-classifier"), manifest,
                        {"model.safetensors": st["model"]})


def export_features(rev):
    st = torch.load(os.path.join(common.WORK, "features.pt"))
    cnn = adm.FeatureCNN()
    cnn.load_state_dict(st["model"])
    cnn.eval()
    layers, tensors = cnn.export_layers()
    train_x, train_y = common.load_split("train")
    test_x, test_y = common.load_split("t10k")
    # float32 network (as the engine runs it), float64 statistics.
    f_train = features_of(layers, tensors, train_x)
    f_test = features_of(layers, tensors, test_x)
    ref = {"all.mean": torch.from_numpy(f_train.mean(0)), "all.cov": torch.from_numpy(np.cov(f_train, rowvar=False))}
    counts = {}
    for c in range(10):
        fc = f_train[train_y == c]
        ref[f"class{c}.mean"] = torch.from_numpy(fc.mean(0))
        ref[f"class{c}.cov"] = torch.from_numpy(np.cov(fc, rowvar=False))
        counts[str(c)] = int(len(fc))
    # The data floor: real test images against the training reference, at equal N.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(f_test))
    # Feature samples for KID, precision/recall and the data floor at any N: 10,000 training
    # features (a seeded subset) and every test feature in the floor's order (its first N rows are
    # the floor's subset at N). float32, as the network computes them.
    sample = np.random.default_rng(1).permutation(len(f_train))[:10000]
    ref["sample.features"] = torch.from_numpy(f_train[sample].astype(np.float32))
    ref["sample.labels"] = torch.from_numpy(train_y[sample])
    ref["sample.indices"] = torch.from_numpy(sample.astype(np.int64))
    ref["floor.features"] = torch.from_numpy(f_test[order].astype(np.float32))
    ref["floor.labels"] = torch.from_numpy(test_y[order])
    ref["floor.indices"] = torch.from_numpy(order.astype(np.int64))
    floor = {}
    for n in (100, 200, 500, 1000, 2000, 5000, 10000):
        sub = f_test[order[:n]]
        floor[str(n)] = fid_from_stats(sub.mean(0), np.cov(sub, rowvar=False),
                                       f_train.mean(0), np.cov(f_train, rowvar=False))
    # Cross-check the eigenvalue route against scipy's sqrtm on the full test set.
    s1, s2 = np.cov(f_test, rowvar=False), np.cov(f_train, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    fid_scipy = float(((f_test.mean(0) - f_train.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2)
                      - 2 * np.trace(covmean))
    assert abs(fid_scipy - floor["10000"]) < 1e-6 * max(1.0, abs(fid_scipy)) + 1e-6, (fid_scipy, floor)
    with torch.no_grad():
        logits = adm.ExportedFeatureCNN(layers, tensors)(common.to_model_range(test_x))[1]
    accuracy = float((logits.argmax(1).numpy() == test_y).mean())
    manifest = {
        "format": "diffusiond-bundle/1", "name": "fashion-mnist-features", "kind": "features",
        "architecture": {"type": "feature-cnn", "layers": layers}, "classes": common.CLASSES, "data": DATA,
        "feature_dimension": int(f_train.shape[1]),
        "reference": {"file": "reference.safetensors", "images": int(len(f_train)), "class_counts": counts,
                      "source": "train split", "data_floor_fid": floor,
                      "data_floor_note": "FID of N test images (fixed random subset, seed 0) against the "
                                         "60,000-image training reference",
                      "sample": "sample.*: 10,000 training images (numpy default_rng(1) permutation, first "
                                "10,000): features, labels, indices (KID, precision/recall)",
                      "floor_set": "floor.*: the 10,000 test images in the data floor's order (numpy "
                                   "default_rng(0) permutation; the first N are the floor's subset at N): "
                                   "features, labels, indices"},
        "recipe": {"revision": rev, "data": SOURCE, "epochs": st["args"]["epochs"], "wall_seconds": round(st["wall"]),
                   "test_accuracy": accuracy, "history": st["history"], "machine": machine(),
                   "augmentation": "horizontal flip, translation up to 2 pixels", "batch_norm": "folded at export"},
    }
    common.write_bundle(os.path.join(MODELS, "fashion-mnist-features"), manifest,
                        {"model.safetensors": tensors, "reference.safetensors": ref})
    print(f"features: test accuracy {accuracy:.4f}, data floor {floor}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundles", nargs="*", default=["features", "classifier", "unet"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    rev = common.git_revision()
    for b in args.bundles:
        {"unet": export_unet, "classifier": export_classifier, "features": export_features}[b](rev)
        print("exported", b)


if __name__ == "__main__":
    main()
