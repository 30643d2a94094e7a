"""Converts an openai/guided-diffusion checkpoint (a torch.save'd state dict of
UNetModel or EncoderUNetModel) into a diffusiond bundle: model.json +
model.safetensors. The flags are guided-diffusion's own script flags, with the
same defaults, so the command line that trained or sampled a checkpoint converts
it. Every key must match the reference architecture (strict load): missing or
unexpected keys and wrong shapes are reported by name.

  /usr/bin/python3 training/convert_guided_diffusion.py 64x64_diffusion.pt out/ \
      --image_size 64 --num_channels 192 --num_res_blocks 3 --attention_resolutions 32,16,8 \
      --class_cond --learn_sigma --num_head_channels 64 --resblock_updown \
      --use_new_attention_order --use_scale_shift_norm
"""
import argparse
import sys

import torch

import adm
import common

DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4),
                32: (1, 2, 2, 2)}


class ConversionError(Exception):
    pass


def channel_mult(image_size, text):
    if text:
        return [float(m) if "." in m else int(m) for m in text.split(",")]
    if image_size not in DEFAULT_MULT:
        raise ConversionError(f"no default channel_mult for image_size {image_size}: pass --channel_mult")
    return list(DEFAULT_MULT[image_size])


def architecture(args):
    """The model.json architecture object for guided-diffusion's flags."""
    if args.classifier:
        res = args.classifier_attention_resolutions
        return {"type": "adm-encoder", "image_size": args.image_size, "in_channels": 3, "out_channels": 1000,
                "model_channels": args.classifier_width, "num_res_blocks": args.classifier_depth,
                "attention_resolutions": [args.image_size // int(r) for r in res.split(",")],
                "channel_mult": channel_mult(args.image_size, args.channel_mult), "num_heads": 1,
                "num_head_channels": 64, "use_scale_shift_norm": args.classifier_use_scale_shift_norm,
                "resblock_updown": args.classifier_resblock_updown, "use_new_attention_order": False,
                "pool": args.classifier_pool}
    return {"type": "adm-unet", "image_size": args.image_size, "in_channels": 3,
            "out_channels": 6 if args.learn_sigma else 3, "model_channels": args.num_channels,
            "num_res_blocks": args.num_res_blocks,
            "attention_resolutions": [args.image_size // int(r) for r in args.attention_resolutions.split(",")],
            "channel_mult": channel_mult(args.image_size, args.channel_mult),
            "num_classes": 1000 if args.class_cond else None, "num_heads": args.num_heads,
            "num_head_channels": args.num_head_channels, "num_heads_upsample": args.num_heads_upsample,
            "use_scale_shift_norm": args.use_scale_shift_norm, "resblock_updown": args.resblock_updown,
            "use_new_attention_order": args.use_new_attention_order}


def load_state_dict(path):
    sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConversionError(f"{path}: not a state dict of tensors")
    return {k: v.float() for k, v in sd.items()}


def check_keys(model, sd):
    """Raises ConversionError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    problems = [f"missing key {k} {list(v.shape)}" for k, v in expected.items() if k not in sd]
    problems += [f"unexpected key {k} {list(v.shape)}" for k, v in sd.items() if k not in expected]
    problems += [f"key {k}: shape {list(sd[k].shape)}, expected {list(v.shape)}"
                 for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if problems:
        raise ConversionError("checkpoint does not match the architecture:\n  " + "\n  ".join(problems))


def convert(args):
    arch = architecture(args)
    sd = load_state_dict(args.checkpoint)
    model = adm.unet_from_architecture(arch)
    check_keys(model, sd)
    model.load_state_dict(sd, strict=True)
    manifest = {"format": "diffusiond-bundle/1", "name": args.name or "converted", "kind":
                "classifier" if args.classifier else "unet", "architecture": arch,
                "classes": [str(i) for i in range(1000 if (args.classifier or args.class_cond) else 0)],
                "data": {"height": args.image_size, "width": args.image_size, "channels": 3,
                         "normalisation": "x = pixel / 127.5 - 1"},
                "recipe": {"converted_from": args.checkpoint, "converter": "training/convert_guided_diffusion.py"}}
    if not args.classifier:
        manifest["diffusion"] = {"schedule": args.noise_schedule, "steps": args.diffusion_steps, "prediction": "eps",
                                 "variance": "learned_range" if args.learn_sigma else "fixed_large",
                                 "timestep_input": "index"}
    common.write_bundle(args.out, manifest, {"model.safetensors": model.state_dict()})
    return arch


def str2bool(v):
    """guided-diffusion's boolean flags: --flag, --flag True, --flag false, ..."""
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out", help="bundle folder to write")
    ap.add_argument("--name")
    flag = lambda n, d: ap.add_argument(f"--{n}", type=str2bool, nargs="?", const=True, default=d)
    ap.add_argument("--image_size", type=int, default=64)
    ap.add_argument("--num_channels", type=int, default=128)
    ap.add_argument("--num_res_blocks", type=int, default=2)
    ap.add_argument("--num_heads", type=int, default=4)
    ap.add_argument("--num_heads_upsample", type=int, default=-1)
    ap.add_argument("--num_head_channels", type=int, default=-1)
    ap.add_argument("--attention_resolutions", default="16,8")
    ap.add_argument("--channel_mult", default="")
    flag("class_cond", False)
    flag("learn_sigma", False)
    flag("use_scale_shift_norm", True)
    flag("resblock_updown", False)
    flag("use_new_attention_order", False)
    ap.add_argument("--diffusion_steps", type=int, default=1000)
    ap.add_argument("--noise_schedule", default="linear")
    flag("classifier", False)
    ap.add_argument("--classifier_width", type=int, default=128)
    ap.add_argument("--classifier_depth", type=int, default=2)
    ap.add_argument("--classifier_attention_resolutions", default="32,16,8")
    flag("classifier_use_scale_shift_norm", True)
    flag("classifier_resblock_updown", True)
    ap.add_argument("--classifier_pool", default="attention")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        convert(args)
    except ConversionError as e:
        print(f"convert_guided_diffusion: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
