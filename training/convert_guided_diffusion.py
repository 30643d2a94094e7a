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

guided-diffusion's README lines convert as written: MODEL_FLAGS, DIFFUSION_FLAGS,
CLASSIFIER_FLAGS, SAMPLE_FLAGS and TRAIN_FLAGS are all accepted. Flags that do
not change the converted weights or the bundle (--use_fp16, --dropout,
--classifier_use_fp16, --use_checkpoint, --use_kl, the sampling and training
flags, ...) are ignored with a note saying why (and, for the sampling flags,
what to put in a job file instead). Whether the checkpoint is a classifier
(EncoderUNetModel) or a UNet is told from its keys: the UNet flags describe a
UNet, the --classifier_* flags a classifier, so one command line converts both.
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


def is_classifier_state_dict(sd):
    """EncoderUNetModel (the noisy classifier) has no output_blocks and no label_emb; UNetModel has output_blocks."""
    return not any(k.startswith("output_blocks.") for k in sd) and "label_emb.weight" not in sd


def architecture(args, classifier=None):
    """The model.json architecture object for guided-diffusion's flags (a classifier's if `classifier`,
    default: the --classifier switch)."""
    if classifier is None:
        classifier = bool(args.classifier)
    if classifier:
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


# guided-diffusion flags that do not change what is converted: why, and what to do instead.
IGNORED = {
    "use_fp16": "the checkpoint holds float32 weights (guided-diffusion casts to fp16 only at run time); "
                "they are converted as float32 and diffusiond computes in float32",
    "classifier_use_fp16": "the checkpoint holds float32 weights; they are converted as float32",
    "dropout": "dropout is inactive at inference; the weights are the same",
    "use_checkpoint": "gradient checkpointing only saves memory in training",
    "use_kl": "a training loss; it does not change the network",
    "rescale_learned_sigmas": "a training loss weighting; it does not change the network",
    "timestep_respacing": "a sampling setting: give it per job as sampler.respacing (e.g. \"ddim25\" or \"250\")",
    "use_ddim": "a sampling setting: give it per job as sampler.kind (ddim or ddpm)",
    "clip_denoised": "a sampling setting: give it per job as sampler.clip",
    "classifier_scale": "a sampling setting: give it per job as sampler.guidance_scale (mode: classifier-guided)",
    "batch_size": "diffusiond's batch size is a daemon setting (config.yml batch_size)",
    "num_samples": "the number of images is a job setting (images_per_class or classes)",
    "model_path": "the checkpoint converted is the first argument",
    "classifier_path": "the checkpoint converted is the first argument (convert the classifier on its own)",
}
TRAIN_ONLY = ["data_dir", "schedule_sampler", "lr", "weight_decay", "lr_anneal_steps", "microbatch", "ema_rate",
              "log_interval", "save_interval", "resume_checkpoint", "fp16_scale_growth", "iterations",
              "anneal_lr", "noised", "eval_interval", "val_data_dir"]
for _name in TRAIN_ONLY:
    IGNORED[_name] = "a training setting; it does not change the weights"


def notes(args, classifier):
    """One line per flag given that is ignored, or that describes the other kind of network."""
    given = getattr(args, "_given", set())
    out = [f"--{name} ignored: {why}" for name, why in IGNORED.items() if name in given]
    unet_only = ["num_channels", "num_res_blocks", "num_heads", "num_heads_upsample", "num_head_channels",
                 "attention_resolutions", "class_cond", "learn_sigma", "use_scale_shift_norm", "resblock_updown",
                 "use_new_attention_order", "diffusion_steps", "noise_schedule", "predict_xstart", "rescale_timesteps"]
    classifier_only = ["classifier_width", "classifier_depth", "classifier_attention_resolutions",
                       "classifier_use_scale_shift_norm", "classifier_resblock_updown", "classifier_pool"]
    other = unet_only if classifier else classifier_only
    unused = [f"--{n}" for n in other if n in given]
    if unused:
        kind = "a classifier (EncoderUNetModel)" if classifier else "a UNet (UNetModel)"
        out.append(f"the checkpoint is {kind} by its keys; these flags describe the other network and are not used: "
                   + " ".join(unused))
    return out


def convert(args):
    sd = load_state_dict(args.checkpoint)
    keys_say_classifier = is_classifier_state_dict(sd)
    if "classifier" in getattr(args, "_given", set()) and bool(args.classifier) != keys_say_classifier:
        raise ConversionError(
            f"--classifier {args.classifier} but the checkpoint's keys are those of "
            + ("a classifier (no output_blocks)" if keys_say_classifier else "a UNet (it has output_blocks)"))
    classifier = keys_say_classifier
    if args.large_size is not None or args.small_size is not None:
        raise ConversionError("--large_size/--small_size: super-resolution models (SuperResModel) are not supported")
    if not classifier and args.rescale_timesteps and args.diffusion_steps != 1000:
        raise ConversionError(f"--rescale_timesteps with --diffusion_steps {args.diffusion_steps}: the network "
                              "expects t * 1000 / T, and diffusiond feeds the timestep index")
    for line in notes(args, classifier):
        print(f"convert_guided_diffusion: note: {line}", file=sys.stderr)
    if not classifier and args.rescale_timesteps:
        print("convert_guided_diffusion: note: --rescale_timesteps has no effect at --diffusion_steps 1000",
              file=sys.stderr)
    args.classifier = classifier
    arch = architecture(args, classifier)
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
        manifest["diffusion"] = {"schedule": args.noise_schedule, "steps": args.diffusion_steps,
                                 "prediction": "x0" if args.predict_xstart else "eps",
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
    flag("predict_xstart", False)
    flag("rescale_timesteps", False)
    # Flags of guided-diffusion's scripts that do not change the conversion (see IGNORED).
    for name in ["use_fp16", "classifier_use_fp16", "use_checkpoint", "use_kl", "rescale_learned_sigmas",
                 "use_ddim", "clip_denoised", "anneal_lr", "noised"]:
        flag(name, None)
    ap.add_argument("--dropout", type=float)
    ap.add_argument("--timestep_respacing")
    ap.add_argument("--classifier_scale", type=float)
    ap.add_argument("--batch_size", type=int)
    ap.add_argument("--num_samples", type=int)
    ap.add_argument("--model_path")
    ap.add_argument("--classifier_path")
    ap.add_argument("--large_size", type=int)
    ap.add_argument("--small_size", type=int)
    for name in [n for n in TRAIN_ONLY if n not in ("anneal_lr", "noised")]:
        ap.add_argument(f"--{name}")
    return ap


def parse_args(argv=None):
    """Parses like guided-diffusion's scripts; records which flags were given (for the notes)."""
    ap = parser()
    args = ap.parse_args(argv)
    given = set()
    for token in (sys.argv[1:] if argv is None else argv):
        if token.startswith("--"):
            given.add(token[2:].split("=", 1)[0])
    args._given = given
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args)
    except ConversionError as e:
        print(f"convert_guided_diffusion: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
