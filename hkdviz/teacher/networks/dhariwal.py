"""EDM's DhariwalUNet: the ADM network (Dhariwal & Nichol 2021) of EDM's ImageNet-64 models.

Differences from SongUNet worth knowing: the noise embedding is positional without EDM's
sin/cos swap and with endpoint=False; the class label enters after the mapping layers (added to
the embedding, unscaled); blocks use adaptive scale-and-shift (GroupNorm eps 1e-5, skip_scale 1),
one attention head per 64 channels, and resample their skip path without a projection; the output
is one GroupNorm-SiLU-conv head. Parameter names are NVlabs/edm's.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ...model.unet import GroupNorm, Linear, PositionalEmbedding
from .layers import Conv2d, UNetBlock


class DhariwalUNet(nn.Module):
    """EDM's DhariwalUNet (ADM); constructor arguments and defaults as in NVlabs/edm."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult=(1, 2, 3, 4), channel_mult_emb: int = 4,
                 num_blocks: int = 3, attn_resolutions=(32, 16, 8), dropout: float = 0.10, label_dropout: float = 0.0):
        super().__init__()
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block_kwargs = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        # Mapping network.
        self.map_noise = PositionalEmbedding(num_channels=model_channels, endpoint=False)  # EDM's default, unlike SongUNet's
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                init_weight=math.sqrt(label_dim)) if label_dim else None

        # Encoder.
        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
            for index in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{index}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for block in self.enc.values()]

        # Decoder.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block_kwargs)
            for index in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{index}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        emb = self.map_layer1(emb)
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"this network is class-conditional (label_dim={self.label_dim}): pass class_labels")
            labels = class_labels
            if self.training and self.label_dropout:
                labels = labels * (torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout).to(labels.dtype)
            emb = emb + self.map_label(labels)
        emb = F.silu(emb)

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


__all__ = ["DhariwalUNet"]
