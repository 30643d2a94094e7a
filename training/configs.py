"""The architectures of the shipped bundles (model.json "architecture" objects)."""

UNET = {
    "type": "adm-unet", "image_size": 28, "in_channels": 1, "out_channels": 2,
    "model_channels": 32, "num_res_blocks": 2, "attention_resolutions": [4],
    "channel_mult": [1, 2, 2], "num_classes": 11, "num_heads": 1, "num_head_channels": 32,
    "num_heads_upsample": -1, "use_scale_shift_norm": True, "resblock_updown": True,
    "use_new_attention_order": False, "dropout": 0.0,
}

CLASSIFIER = {
    "type": "adm-encoder", "image_size": 28, "in_channels": 1, "out_channels": 10,
    "model_channels": 32, "num_res_blocks": 1, "attention_resolutions": [4],
    "channel_mult": [1, 2, 2], "num_heads": 1, "num_head_channels": 32,
    "use_scale_shift_norm": True, "resblock_updown": True,
    "use_new_attention_order": True, "pool": "attention", "dropout": 0.0,
}

DIFFUSION = {"schedule": "cosine", "steps": 1000, "prediction": "eps",
             "variance": "learned_range", "timestep_input": "index"}

NULL_CLASS = 10
P_UNCOND = 0.1
