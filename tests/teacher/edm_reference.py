"""An independent evaluation of NVlabs/edm's SongUNet and DhariwalUNet from a state dict (test helper).

Written from the architecture's definition (EDM's training/networks.py), in a different form from
hkdviz.teacher.networks: functions over a dict of tensors, the layout re-derived from the constructor
arguments, and the FIR resampling done by explicit tap sums (zero-stuffing for up-sampling) instead
of strided / transposed convolutions. Plain 3x3 / 1x1 convolutions use F.conv2d.
"""
import math

import numpy as np
import torch
from torch.nn import functional as F

SONG_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
                     num_blocks=4, attn_resolutions=[16], embedding_type="positional", channel_mult_noise=1,
                     encoder_type="standard", decoder_type="standard", resample_filter=[1, 1])
ADM_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4,
                    num_blocks=3, attn_resolutions=[32, 16, 8])


def fir_filter(taps) -> torch.Tensor:
    taps = np.asarray(taps, dtype=np.float64)
    return torch.tensor(np.outer(taps, taps) / taps.sum() ** 2, dtype=torch.float64)


def fir_down(x, taps):
    """y[i, j] = sum_ab f[a, b] x[2i + a - p, 2j + b - p] with zeros outside, p = (k - 1) // 2."""
    f = fir_filter(taps)
    k = f.shape[0]
    p = (k - 1) // 2
    padded = F.pad(x, (p, p, p, p))
    height = (x.shape[2] + 2 * p - k) // 2 + 1
    width = (x.shape[3] + 2 * p - k) // 2 + 1
    out = torch.zeros(x.shape[0], x.shape[1], height, width, dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            out += float(f[a, b]) * padded[:, :, a:a + 2 * height - 1:2, b:b + 2 * width - 1:2]
    return out


def fir_up(x, taps):
    """Zero-stuff (x at even positions), filter with 4 f, keep the centred 2H x 2W window."""
    f = 4 * fir_filter(taps)
    k = f.shape[0]
    p = (k - 1) // 2
    n, c, h, w = x.shape
    full = torch.zeros(n, c, 2 * h + k, 2 * w + k, dtype=x.dtype)
    for a in range(k):
        for b in range(k):  # x[i, j] lands on 2i + a, 2j + b of the full transposed-convolution output
            full[:, :, a:a + 2 * h:2, b:b + 2 * w:2] += float(f[a, b]) * x
    return full[:, :, p:p + 2 * h, p:p + 2 * w]


def conv(sd, name, x, taps=(1, 1), up=False, down=False, fused=False):
    weight, bias = sd.get(f"{name}.weight"), sd.get(f"{name}.bias")
    if fused and down:  # EDM's fused down-sampling: convolve with the extra filter padding, then filter
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2 + (len(taps) - 1) // 2)
        x = _fir_down_unpadded(x, taps)
    else:
        if up:
            x = fir_up(x, taps)
        if down:
            x = fir_down(x, taps)
        if weight is not None:
            x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if bias is not None:
        x = x + bias.reshape(1, -1, 1, 1)
    return x


def _fir_down_unpadded(x, taps):
    """Stride-2 filtering without padding (the second half of EDM's fused down-sampling)."""
    f = fir_filter(taps)
    k = f.shape[0]
    height, width = (x.shape[2] - k) // 2 + 1, (x.shape[3] - k) // 2 + 1
    out = torch.zeros(x.shape[0], x.shape[1], height, width, dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            out += float(f[a, b]) * x[:, :, a:a + 2 * height - 1:2, b:b + 2 * width - 1:2]
    return out


def linear(sd, name, x):
    y = x @ sd[f"{name}.weight"].t()
    return y + sd[f"{name}.bias"] if f"{name}.bias" in sd else y


def group_norm(sd, name, x, eps):
    groups = min(32, x.shape[1] // 4)
    return F.group_norm(x, groups, sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def block(sd, name, x, emb, out_channels, *, up=False, down=False, heads=0, skip_scale, eps, adaptive, taps,
          resample_proj):
    in_channels = x.shape[1]
    h = conv(sd, f"{name}.conv0", F.silu(group_norm(sd, f"{name}.norm0", x, eps)), taps, up, down)
    params = linear(sd, f"{name}.affine", emb)[:, :, None, None]
    if adaptive:
        scale, shift = params[:, :out_channels], params[:, out_channels:]
        h = F.silu(shift + group_norm(sd, f"{name}.norm1", h, eps) * (scale + 1))
    else:
        h = F.silu(group_norm(sd, f"{name}.norm1", h + params, eps))
    h = conv(sd, f"{name}.conv1", h)
    if in_channels != out_channels or up or down:
        if not resample_proj and in_channels == out_channels:
            assert f"{name}.skip.weight" not in sd, f"{name}: ADM's resampling skip has no projection"
        skip = conv(sd, f"{name}.skip", x, taps, up, down)
    else:
        assert f"{name}.skip.weight" not in sd
        skip = x
    h = (h + skip) * skip_scale
    if heads:
        n, c, height, width = h.shape
        qkv = conv(sd, f"{name}.qkv", group_norm(sd, f"{name}.norm2", h, eps)).reshape(n * heads, c // heads, 3, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(c // heads), dim=2)
        attended = torch.einsum("nqk,nck->ncq", weights, v).reshape(n, c, height, width)
        h = (conv(sd, f"{name}.proj", attended) + h) * skip_scale
    return h


def song_unet(sd, kwargs, x, noise_labels, class_labels=None):
    """EDM's SongUNet.forward, evaluated from the state dict `sd` and the constructor arguments."""
    kw = {**SONG_DEFAULTS, **kwargs}
    resolution, model_channels, taps = kw["img_resolution"], kw["model_channels"], kw["resample_filter"]
    common = dict(skip_scale=math.sqrt(0.5), eps=1e-6, adaptive=False, taps=taps, resample_proj=True)
    noise_channels = model_channels * kw["channel_mult_noise"]
    if kw["embedding_type"] == "fourier":
        angles = noise_labels[:, None] * (2 * math.pi * sd["map_noise.freqs"])[None]
    else:
        half = noise_channels // 2
        angles = noise_labels[:, None] * (1 / 10000) ** (torch.arange(half, dtype=x.dtype) / (half - 1))[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)  # EDM computes [cos, sin] and then swaps the halves
    if kw["label_dim"]:
        emb = emb + linear(sd, "map_label", class_labels * math.sqrt(kw["label_dim"]))
    emb = F.silu(linear(sd, "map_layer1", F.silu(linear(sd, "map_layer0", emb))))

    skips, aux, h = [], x, x
    levels = len(kw["channel_mult"])
    for level, mult in enumerate(kw["channel_mult"]):
        res = f"{resolution >> level}x{resolution >> level}"
        if level == 0:
            h = conv(sd, f"enc.{res}_conv", h)
            skips.append(h)
        else:
            h = block(sd, f"enc.{res}_down", h, emb, h.shape[1], down=True, **common)
            skips.append(h)
            if kw["encoder_type"] == "skip":
                aux = fir_down(aux, taps)
                h = skips[-1] = h + conv(sd, f"enc.{res}_aux_skip", aux)
            if kw["encoder_type"] == "residual":
                h = skips[-1] = aux = (h + conv(sd, f"enc.{res}_aux_residual", aux, taps, down=True, fused=True)) / math.sqrt(2)
        for index in range(kw["num_blocks"]):
            heads = 1 if (resolution >> level) in kw["attn_resolutions"] else 0
            h = block(sd, f"enc.{res}_block{index}", h, emb, model_channels * mult, heads=heads, **common)
            skips.append(h)

    out = None
    for level in reversed(range(levels)):
        mult = kw["channel_mult"][level]
        res = f"{resolution >> level}x{resolution >> level}"
        if level == levels - 1:
            h = block(sd, f"dec.{res}_in0", h, emb, h.shape[1], heads=1, **common)
            h = block(sd, f"dec.{res}_in1", h, emb, h.shape[1], **common)
        else:
            h = block(sd, f"dec.{res}_up", h, emb, h.shape[1], up=True, **common)
        for index in range(kw["num_blocks"] + 1):
            heads = 1 if index == kw["num_blocks"] and (resolution >> level) in kw["attn_resolutions"] else 0
            h = block(sd, f"dec.{res}_block{index}", torch.cat([h, skips.pop()], dim=1), emb, model_channels * mult,
                      heads=heads, **common)
        if kw["decoder_type"] == "skip" or level == 0:
            if kw["decoder_type"] == "skip" and level < levels - 1:
                out = fir_up(out, taps)
            image = conv(sd, f"dec.{res}_aux_conv", F.silu(group_norm(sd, f"dec.{res}_aux_norm", h, 1e-6)))
            out = image if out is None else image + out
    assert not skips
    return out


def dhariwal_unet(sd, kwargs, x, noise_labels, class_labels=None):
    """EDM's DhariwalUNet.forward, evaluated from the state dict `sd` and the constructor arguments."""
    kw = {**ADM_DEFAULTS, **kwargs}
    resolution, model_channels = kw["img_resolution"], kw["model_channels"]
    common = dict(skip_scale=1.0, eps=1e-5, adaptive=True, taps=(1, 1), resample_proj=False)
    half = model_channels // 2
    angles = noise_labels[:, None] * (1 / 10000) ** (torch.arange(half, dtype=x.dtype) / half)[None]  # endpoint=False
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)
    emb = linear(sd, "map_layer1", F.silu(linear(sd, "map_layer0", emb)))
    if kw["label_dim"]:
        emb = emb + class_labels @ sd["map_label.weight"].t()
    emb = F.silu(emb)

    skips, h = [], x
    for level, mult in enumerate(kw["channel_mult"]):
        size = resolution >> level
        res = f"{size}x{size}"
        if level == 0:
            h = conv(sd, f"enc.{res}_conv", h)
        else:
            h = block(sd, f"enc.{res}_down", h, emb, h.shape[1], down=True, **common)
        skips.append(h)
        for index in range(kw["num_blocks"]):
            channels = model_channels * mult
            heads = channels // 64 if size in kw["attn_resolutions"] else 0
            h = block(sd, f"enc.{res}_block{index}", h, emb, channels, heads=heads, **common)
            skips.append(h)
    levels = len(kw["channel_mult"])
    for level in reversed(range(levels)):
        size = resolution >> level
        res = f"{size}x{size}"
        if level == levels - 1:
            h = block(sd, f"dec.{res}_in0", h, emb, h.shape[1], heads=h.shape[1] // 64, **common)
            h = block(sd, f"dec.{res}_in1", h, emb, h.shape[1], **common)
        else:
            h = block(sd, f"dec.{res}_up", h, emb, h.shape[1], up=True, **common)
        for index in range(kw["num_blocks"] + 1):
            channels = model_channels * kw["channel_mult"][level]
            heads = channels // 64 if size in kw["attn_resolutions"] else 0
            h = block(sd, f"dec.{res}_block{index}", torch.cat([h, skips.pop()], dim=1), emb, channels, heads=heads,
                      **common)
    assert not skips
    return conv(sd, "out_conv", F.silu(group_norm(sd, "out_norm", h, 1e-5)))
