"""The guided-diffusion converter on state dicts of our own that use guided-diffusion's key names."""
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


if __name__ == "__main__":
    unittest.main()
