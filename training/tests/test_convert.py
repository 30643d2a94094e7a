"""The guided-diffusion converter on state dicts of our own that use guided-diffusion's key names."""
import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import adm  # noqa: E402
import common  # noqa: E402
import convert_guided_diffusion as conv  # noqa: E402

FLAGS = ["--image_size", "32", "--num_channels", "32", "--num_res_blocks", "1", "--attention_resolutions", "16,8",
         "--class_cond", "--learn_sigma", "--num_head_channels", "32", "--resblock_updown", "True",
         "--use_new_attention_order", "--channel_mult", "1,2,2"]


class ConvertTests(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def checkpoint(self, flags, mutate=None):
        args = conv.parser().parse_args(["x.pt", "out"] + flags)
        torch.manual_seed(0)
        model = adm.unet_from_architecture(conv.architecture(args))
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.05)
        sd = model.state_dict()
        if mutate:
            mutate(sd)
        path = os.path.join(self.tmp.name, "ckpt.pt")
        torch.save(sd, path)
        return model, path

    def test_unet_converts_key_for_key_and_computes_the_same(self):
        model, path = self.checkpoint(FLAGS)
        out = os.path.join(self.tmp.name, "bundle")
        self.assertEqual(conv.main([path, out] + FLAGS), 0)
        manifest = json.load(open(os.path.join(out, "model.json")))
        arch = manifest["architecture"]
        self.assertEqual(arch["attention_resolutions"], [2, 4])
        self.assertEqual(arch["out_channels"], 6)
        self.assertTrue(arch["use_scale_shift_norm"])  # guided-diffusion's default
        self.assertEqual(manifest["files"]["model.safetensors"],
                         common.sha256_file(os.path.join(out, "model.safetensors")))
        weights = common.load_safetensors(os.path.join(out, "model.safetensors"))
        self.assertEqual(set(weights), set(model.state_dict()))
        self.assertIn("input_blocks.2.0.in_layers.2.weight", weights)  # the down ResBlock's conv
        reloaded = adm.unet_from_architecture(arch)
        reloaded.load_state_dict(weights)
        x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 700]), torch.tensor([5, 999])
        with torch.no_grad():
            self.assertTrue(torch.equal(model(x, t, y), reloaded(x, t, y)))

    def test_classifier_converts(self):
        flags = ["--classifier", "--image_size", "32", "--classifier_width", "32", "--classifier_depth", "1",
                 "--classifier_attention_resolutions", "8", "--channel_mult", "1,2"]
        model, path = self.checkpoint(flags)
        out = os.path.join(self.tmp.name, "clf")
        self.assertEqual(conv.main([path, out] + flags), 0)
        manifest = json.load(open(os.path.join(out, "model.json")))
        self.assertEqual(manifest["kind"], "classifier")
        self.assertEqual(manifest["architecture"]["pool"], "attention")
        self.assertIn("out.2.positional_embedding", common.load_safetensors(os.path.join(out, "model.safetensors")))

    def test_mismatched_checkpoint_names_the_keys(self):
        def mutate(sd):
            sd["label_emb.weight"] = torch.zeros(10, 128)       # wrong shape
            del sd["out.2.bias"]                               # missing
            sd["input_blocks.99.0.weight"] = torch.zeros(1)   # unexpected
        _, path = self.checkpoint(FLAGS, mutate)
        args = conv.parser().parse_args([path, os.path.join(self.tmp.name, "bad")] + FLAGS)
        with self.assertRaises(conv.ConversionError) as ctx:
            conv.convert(args)
        msg = str(ctx.exception)
        self.assertIn("missing key out.2.bias", msg)
        self.assertIn("unexpected key input_blocks.99.0.weight", msg)
        self.assertIn("key label_emb.weight: shape [10, 128], expected [1000, 128]", msg)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "bad", "model.json")))


# Command lines from openai/guided-diffusion's README, as written there.
README_SAMPLE_FLAGS = "--batch_size 4 --num_samples 100 --timestep_respacing 250"
README_64 = ("--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 --image_size 64 "
             "--learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 --num_res_blocks 3 "
             "--resblock_updown True --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True")
README_64_SAMPLE = (README_64 + " --classifier_scale 1.0 --classifier_path models/64x64_classifier.pt --classifier_depth 4 "
                    "--model_path models/64x64_diffusion.pt " + README_SAMPLE_FLAGS)
README_128_DDIM = ("--attention_resolutions 32,16,8 --class_cond True --image_size 128 --learn_sigma True --num_channels 256 "
                   "--num_heads 4 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True "
                   "--image_size 128 --classifier_attention_resolutions 32,16,8 --classifier_depth 2 --classifier_width 128 "
                   "--classifier_pool attention --classifier_resblock_updown True --classifier_use_scale_shift_norm True "
                   "--classifier_scale 1.0 --classifier_use_fp16 True "
                   "--batch_size 4 --num_samples 50000 --timestep_respacing ddim25 --use_ddim True")
README_TRAIN_CLASSIFIER = ("--iterations 300000 --anneal_lr True --batch_size 256 --lr 3e-4 --save_interval 10000 "
                           "--weight_decay 0.05 --image_size 128 --classifier_attention_resolutions 32,16,8 "
                           "--classifier_depth 2 --classifier_width 128 --classifier_pool attention "
                           "--classifier_resblock_updown True --classifier_use_scale_shift_norm True")
README_DIFFUSION_FLAGS = "--diffusion_steps 4000 --noise_schedule cosine --rescale_learned_sigmas False --use_kl True"


class GuidedDiffusionFlagTests(unittest.TestCase):
    """guided-diffusion's own flags are accepted; the kind of network comes from the checkpoint's keys."""

    def setUp(self):
        torch.set_num_threads(1)
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_readme_command_lines_parse_to_the_readme_architectures(self):
        args = conv.parse_args(["x.pt", "out"] + README_64_SAMPLE.split())
        unet = conv.architecture(args, classifier=False)
        # guided-diffusion's create_model for these flags: ds = 64 // res, channel_mult (1, 2, 3, 4) at 64 px.
        self.assertEqual(unet["attention_resolutions"], [2, 4, 8])
        self.assertEqual(unet["channel_mult"], [1, 2, 3, 4])
        self.assertEqual((unet["model_channels"], unet["num_res_blocks"], unet["num_head_channels"]), (192, 3, 64))
        self.assertEqual((unet["out_channels"], unet["num_classes"]), (6, 1000))
        self.assertTrue(unet["use_new_attention_order"] and unet["resblock_updown"] and unet["use_scale_shift_norm"])
        clf = conv.architecture(args, classifier=True)
        self.assertEqual((clf["type"], clf["num_res_blocks"], clf["model_channels"]), ("adm-encoder", 4, 128))
        args = conv.parse_args(["x.pt", "out"] + README_128_DDIM.split())
        clf = conv.architecture(args, classifier=True)
        self.assertEqual(clf["attention_resolutions"], [4, 8, 16])
        self.assertEqual(clf["channel_mult"], [1, 1, 2, 3, 4])
        self.assertEqual(conv.architecture(args, classifier=False)["num_heads"], 4)
        conv.parse_args(["x.pt", "out"] + README_TRAIN_CLASSIFIER.split())
        args = conv.parse_args(["x.pt", "out"] + README_DIFFUSION_FLAGS.split())
        self.assertEqual((args.diffusion_steps, args.noise_schedule), (4000, "cosine"))

    def test_unknown_flags_are_still_errors(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            conv.parse_args(["x.pt", "out", "--num_chanels", "64"])

    def small_checkpoints(self, flags):
        """A random UNet and a random classifier checkpoint for one command line."""
        args = conv.parse_args(["x.pt", "out"] + flags)
        paths = {}
        for kind in ("unet", "classifier"):
            torch.manual_seed(1)
            model = adm.unet_from_architecture(conv.architecture(args, classifier=(kind == "classifier")))
            for p in model.parameters():
                torch.nn.init.normal_(p, std=0.05)
            paths[kind] = (model, os.path.join(self.tmp.name, f"{kind}.pt"))
            torch.save(model.state_dict(), paths[kind][1])
        return paths

    def run_main(self, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = conv.main(argv)
        return rc, err.getvalue()

    def test_one_readme_style_command_line_converts_the_unet_and_the_classifier(self):
        # The README's MODEL_FLAGS + CLASSIFIER_FLAGS + SAMPLE_FLAGS form, at a size a test can build.
        flags = ("--attention_resolutions 16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 --image_size 32 "
                 "--learn_sigma True --noise_schedule cosine --num_channels 32 --num_head_channels 32 --num_res_blocks 1 "
                 "--resblock_updown True --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True "
                 "--channel_mult 1,2 --classifier_attention_resolutions 8 --classifier_depth 1 --classifier_width 32 "
                 "--classifier_pool attention --classifier_resblock_updown True --classifier_use_scale_shift_norm True "
                 "--classifier_scale 1.0 --classifier_use_fp16 True "
                 "--batch_size 4 --num_samples 100 --timestep_respacing ddim25 --use_ddim True").split()
        paths = self.small_checkpoints(flags)
        outputs = {}
        for kind, (model, path) in paths.items():
            out = os.path.join(self.tmp.name, f"bundle-{kind}")
            rc, err = self.run_main([path, out] + flags)
            self.assertEqual(rc, 0, err)
            with open(os.path.join(out, "model.json")) as f:
                manifest = json.load(f)
            self.assertEqual(manifest["kind"], kind)
            weights = common.load_safetensors(os.path.join(out, "model.safetensors"))
            self.assertEqual(set(weights), set(model.state_dict()))
            for k, v in model.state_dict().items():
                self.assertTrue(torch.equal(weights[k], v), k)
            outputs[kind] = (manifest, err)
        unet_manifest, unet_err = outputs["unet"]
        self.assertEqual(unet_manifest["diffusion"]["schedule"], "cosine")
        self.assertEqual(unet_manifest["diffusion"]["variance"], "learned_range")
        for flag in ("--use_fp16", "--dropout", "--timestep_respacing", "--use_ddim", "--batch_size", "--num_samples",
                     "--classifier_scale", "--classifier_use_fp16"):
            self.assertIn(f"note: {flag} ignored", unet_err)
        self.assertIn("sampler.respacing", unet_err)
        self.assertIn("these flags describe the other network and are not used: --classifier_width", unet_err)
        clf_manifest, clf_err = outputs["classifier"]
        self.assertNotIn("diffusion", clf_manifest)
        self.assertEqual(clf_manifest["architecture"]["type"], "adm-encoder")
        self.assertIn("a classifier (EncoderUNetModel) by its keys", clf_err)
        self.assertIn("--num_channels", clf_err)

    def test_a_contradicting_classifier_switch_is_named(self):
        flags = ["--image_size", "32", "--num_channels", "32", "--num_res_blocks", "1", "--attention_resolutions", "16",
                 "--channel_mult", "1,2", "--classifier_width", "32", "--classifier_depth", "1",
                 "--classifier_attention_resolutions", "8", "--num_head_channels", "32"]
        paths = self.small_checkpoints(flags)
        rc, err = self.run_main([paths["unet"][1], os.path.join(self.tmp.name, "b"), "--classifier"] + flags)
        self.assertEqual(rc, 1)
        self.assertIn("--classifier True but the checkpoint's keys are those of a UNet", err)

    def test_predict_xstart_and_super_resolution(self):
        flags = ["--image_size", "32", "--num_channels", "32", "--num_res_blocks", "1", "--attention_resolutions", "16",
                 "--channel_mult", "1,2", "--num_head_channels", "32", "--predict_xstart", "True"]
        paths = self.small_checkpoints(flags)
        out = os.path.join(self.tmp.name, "x0")
        rc, err = self.run_main([paths["unet"][1], out] + flags)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(out, "model.json")) as f:
            self.assertEqual(json.load(f)["diffusion"]["prediction"], "x0")
        rc, err = self.run_main([paths["unet"][1], out + "-sr", "--large_size", "256", "--small_size", "64"] + flags)
        self.assertEqual(rc, 1)
        self.assertIn("super-resolution models (SuperResModel) are not supported", err)


if __name__ == "__main__":
    unittest.main()
