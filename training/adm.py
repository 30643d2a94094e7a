"""Reference PyTorch implementation of the ADM networks (guided-diffusion's
UNetModel and EncoderUNetModel) with the same hyperparameters and state-dict
key names, so that a guided-diffusion checkpoint converts key for key.

The Swift engine is tested against outputs of these modules.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _at_least_f32(x):
    """float16/bfloat16 -> float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding, cos first: [cos(t f_i), sin(t f_i)], f_i = exp(-ln(P) i / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32."""

    def forward(self, x):
        return super().forward(_at_least_f32(x)).type(x.dtype)


def normalization(ch):
    return GroupNorm32(32, ch)


def zero_module(m):
    for p in m.parameters():
        p.detach().zero_()
    return m


class TimestepBlock(nn.Module):
    pass


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels, use_conv, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels, use_conv, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_conv=False,
                 use_scale_shift_norm=False, up=False, down=False):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd = Upsample(channels, False)
            self.x_upd = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)))
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_rest(x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = in_conv(h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            h = out_rest(h)
        else:
            h = h + emb_out
            h = self.out_layers(h)
        return self.skip_connection(x) + h


def qkv_attention_legacy(qkv, n_heads):
    """[N, H*3c, T] -> [N, H*c, T]; per head contiguous q|k|v."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(_at_least_f32(weight), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v)
    return a.reshape(bs, -1, length)


def qkv_attention_new(qkv, n_heads):
    """[N, 3*H*c, T] -> [N, H*c, T]; q, k, v chunked first, then split into heads."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.chunk(3, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts",
                          (q * scale).reshape(bs * n_heads, ch, length),
                          (k * scale).reshape(bs * n_heads, ch, length))
    weight = torch.softmax(_at_least_f32(weight), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v.reshape(bs * n_heads, ch, length))
    return a.reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, channels, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0
            self.num_heads = channels // num_head_channels
        self.new_order = use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        attn = qkv_attention_new if self.new_order else qkv_attention_legacy
        h = attn(qkv, self.num_heads)
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads_channels, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(embed_dim, spacial_dim ** 2 + 1) / embed_dim ** 0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_heads_channels

    def forward(self, x):
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None, :, :].to(x.dtype)
        x = self.qkv_proj(x)
        x = qkv_attention_new(x, self.num_heads)
        x = self.c_proj(x)
        return x[:, :, 0]


def _heads_kwargs(num_heads, num_head_channels, new_order):
    return dict(num_heads=num_heads, num_head_channels=num_head_channels,
                use_new_attention_order=new_order)


class UNetModel(nn.Module):
    """guided-diffusion's UNetModel (fp32 only)."""

    def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks,
                 attention_resolutions, dropout=0.0, channel_mult=(1, 2, 4, 8), conv_resample=True,
                 num_classes=None, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                 use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=False):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        attention_resolutions = set(attention_resolutions)
        ted = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, ted)
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, ted, dropout, out_channels=int(mult * model_channels),
                                   use_scale_shift_norm=use_scale_shift_norm)]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **_heads_kwargs(num_heads, num_head_channels,
                                                                     use_new_attention_order)))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                out_ch = ch
                self.input_blocks.append(TimestepEmbedSequential(
                    ResBlock(ch, ted, dropout, out_channels=out_ch, use_scale_shift_norm=use_scale_shift_norm,
                             down=True) if resblock_updown else Downsample(ch, conv_resample, out_channels=out_ch)))
                ch = out_ch
                input_block_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, ted, dropout, use_scale_shift_norm=use_scale_shift_norm),
            AttentionBlock(ch, **_heads_kwargs(num_heads, num_head_channels, use_new_attention_order)),
            ResBlock(ch, ted, dropout, use_scale_shift_norm=use_scale_shift_norm))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                ich = input_block_chans.pop()
                layers = [ResBlock(ch + ich, ted, dropout, out_channels=int(model_channels * mult),
                                   use_scale_shift_norm=use_scale_shift_norm)]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **_heads_kwargs(num_heads_upsample, num_head_channels,
                                                                     use_new_attention_order)))
                if level and i == num_res_blocks:
                    out_ch = ch
                    layers.append(
                        ResBlock(ch, ted, dropout, out_channels=out_ch, use_scale_shift_norm=use_scale_shift_norm,
                                 up=True) if resblock_updown else Upsample(ch, conv_resample, out_channels=out_ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1)))

    def forward(self, x, timesteps, y=None):
        assert (y is not None) == (self.num_classes is not None), "class labels iff class-conditional"
        hs = []
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = module(h, emb)
        return self.out(h)

    def forward_with_features(self, x, timesteps, y=None):
        """(output, final feature map h before `out`): what a covariance head reads."""
        h = {}
        handle = self.out.register_forward_pre_hook(lambda module, inputs: h.setdefault("h", inputs[0]))
        try:
            out = self(x, timesteps, y)
        finally:
            handle.remove()
        return out, h["h"]


class CovarianceHead(nn.Module):
    """Extended-Analytic-DPM's "simple" head on the UNet's final feature map: GroupNorm -> SiLU ->
    zero-initialised 3x3 conv to the image channels; state-dict keys out2.0.* and out2.2.*.
    Its output is raw: E[eps^2 | x_n] for SN-DPM, E[(eps - eps_theta)^2 | x_n] for NPR-DPM."""

    def __init__(self, feature_channels, image_channels):
        super().__init__()
        self.out2 = nn.Sequential(normalization(feature_channels), nn.SiLU(),
                                  zero_module(nn.Conv2d(feature_channels, image_channels, 3, padding=1)))

    def forward(self, h):
        return self.out2(h)


class EncoderUNetModel(nn.Module):
    """guided-diffusion's EncoderUNetModel (the noisy classifier), pools 'adaptive' and 'attention'."""

    def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks,
                 attention_resolutions, dropout=0.0, channel_mult=(1, 2, 4, 8), conv_resample=True,
                 num_heads=1, num_head_channels=-1, use_scale_shift_norm=False, resblock_updown=False,
                 use_new_attention_order=False, pool="adaptive"):
        super().__init__()
        self.model_channels = model_channels
        attention_resolutions = set(attention_resolutions)
        ted = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, ted, dropout, out_channels=int(mult * model_channels),
                                   use_scale_shift_norm=use_scale_shift_norm)]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **_heads_kwargs(num_heads, num_head_channels,
                                                                     use_new_attention_order)))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    ResBlock(ch, ted, dropout, out_channels=ch, use_scale_shift_norm=use_scale_shift_norm,
                             down=True) if resblock_updown else Downsample(ch, conv_resample, out_channels=ch)))
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, ted, dropout, use_scale_shift_norm=use_scale_shift_norm),
            AttentionBlock(ch, **_heads_kwargs(num_heads, num_head_channels, use_new_attention_order)),
            ResBlock(ch, ted, dropout, use_scale_shift_norm=use_scale_shift_norm))
        self.pool = pool
        if pool == "adaptive":
            self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                     zero_module(nn.Conv2d(ch, out_channels, 1)), nn.Flatten())
        elif pool == "attention":
            assert num_head_channels != -1
            self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                     AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels))
        else:
            raise ValueError(f"unsupported pool {pool!r}")

    def forward(self, x, timesteps):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h)


class FeatureCNN(nn.Module):
    """Clean-image classifier whose penultimate layer defines diffusiond's FID.

    Trained with batch norm; `export_layers` folds it into the convolutions so
    that the exported network is conv/relu/maxpool/avgpool/linear only.
    """

    def __init__(self, in_channels=1, num_classes=10, widths=(32, 64, 64, 128), features=128):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.conv1, self.bn1 = nn.Conv2d(in_channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2)
        self.conv3, self.bn3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False), nn.BatchNorm2d(c3)
        self.conv4, self.bn4 = nn.Conv2d(c3, c4, 3, padding=1, bias=False), nn.BatchNorm2d(c4)
        self.fc1 = nn.Linear(c4, features)
        self.fc2 = nn.Linear(features, num_classes)
        self.dropout = nn.Dropout(0.3)

    def features(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)   # 28 -> 14
        h = F.relu(self.bn2(self.conv2(h)))
        h = F.max_pool2d(F.relu(self.bn3(self.conv3(h))), 2)   # 14 -> 7
        h = F.relu(self.bn4(self.conv4(h)))
        h = h.mean(dim=(2, 3))
        return F.relu(self.fc1(h))

    def forward(self, x):
        return self.fc2(self.dropout(self.features(x)))

    def export_layers(self):
        """(architecture layer list, {name: tensor}) with batch norm folded into each conv."""
        layers, tensors = [], {}
        convs = [("conv1", self.conv1, self.bn1, True), ("conv2", self.conv2, self.bn2, False),
                 ("conv3", self.conv3, self.bn3, True), ("conv4", self.conv4, self.bn4, False)]
        for name, conv, bn, pool in convs:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            tensors[f"{name}.weight"] = (conv.weight * scale[:, None, None, None]).detach().clone()
            tensors[f"{name}.bias"] = (bn.bias - bn.running_mean * scale).detach().clone()
            layers.append({"op": "conv", "name": name, "in": conv.in_channels, "out": conv.out_channels,
                           "kernel": 3, "padding": 1})
            layers.append({"op": "relu"})
            if pool:
                layers.append({"op": "maxpool", "size": 2})
        layers.append({"op": "global_avgpool"})
        for name, lin, extra in [("fc1", self.fc1, [{"op": "relu"}, {"op": "features"}]), ("fc2", self.fc2, [])]:
            tensors[f"{name}.weight"] = lin.weight.detach().clone()
            tensors[f"{name}.bias"] = lin.bias.detach().clone()
            layers.append({"op": "linear", "name": name, "in": lin.in_features, "out": lin.out_features})
            layers.extend(extra)
        return layers, tensors


class ExportedFeatureCNN(nn.Module):
    """Runs an exported feature-cnn layer list (the form the Swift engine runs)."""

    def __init__(self, layers, tensors):
        super().__init__()
        self.layers = layers
        self.tensors = tensors

    def forward(self, x):
        feats = None
        h = x
        for layer in self.layers:
            op = layer["op"]
            if op == "conv":
                n = layer["name"]
                h = F.conv2d(h, self.tensors[f"{n}.weight"], self.tensors[f"{n}.bias"], padding=layer["padding"])
            elif op == "relu":
                h = F.relu(h)
            elif op == "maxpool":
                h = F.max_pool2d(h, layer["size"])
            elif op == "global_avgpool":
                h = h.mean(dim=(2, 3))
            elif op == "linear":
                n = layer["name"]
                h = F.linear(h, self.tensors[f"{n}.weight"], self.tensors[f"{n}.bias"])
            elif op == "features":
                feats = h
            else:
                raise ValueError(op)
        return feats, h


def unet_from_architecture(arch):
    """Builds a UNetModel or EncoderUNetModel from a model.json architecture object."""
    common = dict(image_size=arch["image_size"], in_channels=arch["in_channels"],
                  model_channels=arch["model_channels"], out_channels=arch["out_channels"],
                  num_res_blocks=arch["num_res_blocks"], attention_resolutions=arch["attention_resolutions"],
                  dropout=arch.get("dropout", 0.0), channel_mult=tuple(arch["channel_mult"]),
                  num_heads=arch.get("num_heads", 1), num_head_channels=arch.get("num_head_channels", -1),
                  use_scale_shift_norm=arch["use_scale_shift_norm"], resblock_updown=arch["resblock_updown"],
                  use_new_attention_order=arch["use_new_attention_order"])
    if arch["type"] == "adm-unet":
        return UNetModel(num_classes=arch.get("num_classes"), num_heads_upsample=arch.get("num_heads_upsample", -1),
                         **common)
    if arch["type"] == "adm-encoder":
        return EncoderUNetModel(pool=arch["pool"], **common)
    raise ValueError(f"unknown architecture type {arch['type']!r}")
