"""EDM's SongUNet with every option: DDPM++ and NCSN++ (Song et al. 2021) as one network.

    DDPM++: embedding_type="positional", encoder_type="standard", decoder_type="standard", resample_filter=[1, 1]
    NCSN++: embedding_type="fourier", channel_mult_noise=2, encoder_type="residual", resample_filter=[1, 3, 3, 1]
            (EDM's release keeps decoder_type="standard"; "skip" is supported too)

Parameter names are NVlabs/edm's (map_noise, map_layer0, enc["16x16_aux_residual"], dec["32x32_aux_conv"],
...). hkdviz's `model.unet.SongUNet` is the DDPM++ case split into an encoder and a decoder for HKD;
this one is a teacher only: `forward(x, noise_labels, class_labels)` is the raw network F.
The extra paths:
- encoder "skip": the input image, down-sampled (aux_down) and projected (aux_skip), is added to
  the first tensor of each lower resolution;
- encoder "residual": the image is carried along a strided-convolution path (aux_residual, fused
  FIR down-sampling) and averaged into that tensor, x = (x + aux(x_aux)) / sqrt(2);
- decoder "skip": every resolution emits an image (aux_norm, aux_conv), up-sampled (aux_up) and
  summed into the output; "standard" emits it at the top resolution only.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...model.unet import FourierEmbedding, GroupNorm, Linear, PositionalEmbedding
from .layers import Conv2d, UNetBlock


class SongUNet(nn.Module):
    """EDM's SongUNet (DDPM++ / NCSN++); constructor arguments and defaults as in NVlabs/edm."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult=(1, 2, 2, 2), channel_mult_emb: int = 4,
                 num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.10, label_dropout: float = 0.0,
                 embedding_type: str = "positional", channel_mult_noise: int = 1, encoder_type: str = "standard",
                 decoder_type: str = "standard", resample_filter=(1, 1)):
        for name, value, allowed in (("embedding_type", embedding_type, ("fourier", "positional")),
                                     ("encoder_type", encoder_type, ("standard", "skip", "residual")),
                                     ("decoder_type", decoder_type, ("standard", "skip"))):
            if value not in allowed:
                raise ValueError(f"SongUNet {name} must be one of {allowed}, got {value!r}")
        super().__init__()
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block_kwargs = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                            resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                            init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping network.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder.
        self.enc = nn.ModuleDict()
        cout = in_channels
        caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, kernel=0, down=True, resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, kernel=3, down=True, fused_resample=True,
                                                                   resample_filter=resample_filter, **init)
                    caux = cout
            for index in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{index}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for name, block in self.enc.items() if "aux" not in name]

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
                self.dec[f"{res}x{res}_block{index}"] = UNetBlock(
                    cin, cout, attention=(index == num_blocks and res in attn_resolutions), **block_kwargs)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, kernel=0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        # Mapping: sin/cos swapped (EDM's order), labels scaled by sqrt(label_dim) as in EDM.
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"this network is class-conditional (label_dim={self.label_dim}): pass class_labels")
            labels = class_labels
            if self.training and self.label_dropout:
                labels = labels * (torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout).to(labels.dtype)
            emb = emb + self.map_label(labels * np.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        emb = F.silu(self.map_layer1(emb))

        # Encoder; `auxiliary` is the image path of the skip / residual encoders.
        skips = []
        auxiliary = x
        for name, block in self.enc.items():
            if "aux_down" in name:
                auxiliary = block(auxiliary)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(auxiliary)
            elif "aux_residual" in name:
                x = skips[-1] = auxiliary = (x + block(auxiliary)) / np.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        # Decoder; `auxiliary` now accumulates the output image.
        auxiliary = None
        image = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                auxiliary = block(auxiliary)
            elif "aux_norm" in name:
                image = block(x)
            elif "aux_conv" in name:
                image = block(F.silu(image))
                auxiliary = image if auxiliary is None else image + auxiliary
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return auxiliary


__all__ = ["SongUNet"]
