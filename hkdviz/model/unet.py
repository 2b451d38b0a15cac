"""EDM-style DDPM++ U-Net ("SongUNet"), split so HKD can use its halves.

The module and parameter names follow NVlabs/edm `training/networks.py` (enc/dec ModuleDicts,
UNetBlock with norm0/conv0/affine/norm1/conv1/skip/norm2/qkv/proj, map_noise/map_layer0/1), so
a state dict read from an EDM pickle maps onto this network name for name. Resampling uses the
EDM default filter [1, 1]: 2x2 average pooling down, nearest-neighbour up (what EDM's
separable filter computes), which keeps the code short.

The same network serves three roles:
- the EDM teacher (`forward`: the full U-Net, F_theta in EDM's notation);
- the HKD encoder (`encode`: down path plus the two middle blocks, conditioned on sigma(t));
- the HKD decoder (`decode`: up path, consuming the (Koopman-evolved) skips).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _weight_init(shape, mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    # EDM's initialisers; 'xavier_uniform' for DDPM++.
    if mode == "xavier_uniform":
        return np.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return np.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return np.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}")


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_mode: str = "xavier_uniform", init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        init = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(_weight_init([out_features, in_features], **init) * init_weight)
        self.bias = nn.Parameter(_weight_init([out_features], **init) * init_bias) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)
        return x


class Conv2d(nn.Module):
    """3x3 / 1x1 convolution with optional 2x resampling applied *before* the convolution (EDM order).

    kernel = 0 means "resample only" (no weight), as in EDM.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True,
                 up: bool = False, down: bool = False,
                 init_mode: str = "xavier_uniform", init_weight: float = 1.0, init_bias: float = 0.0):
        assert not (up and down)
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        init = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = (nn.Parameter(_weight_init([out_channels, in_channels, kernel, kernel], **init) * init_weight)
                       if kernel else None)
        self.bias = nn.Parameter(_weight_init([out_channels], **init) * init_bias) if kernel and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            x = F.avg_pool2d(x, 2)
        if self.weight is not None:
            weight = self.weight.to(x.dtype)
            bias = self.bias.to(x.dtype) if self.bias is not None else None
            x = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
        return x


class GroupNorm(nn.Module):
    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        # EDM's rule, min(32, C // 4) groups, assumes C divisible by it (EDM's widths are multiples of
        # 128). For other widths (e.g. 48 channels, whose 144-channel skip concatenation fails that rule)
        # take the largest group count below it that divides C: the same as EDM wherever EDM runs.
        self.num_groups = max(1, min(num_groups, num_channels // min_channels_per_group))
        while num_channels % self.num_groups:
            self.num_groups -= 1
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """EDM's residual block: norm-SiLU-conv, noise-embedding shift, norm-SiLU-dropout-conv, skip, attention."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, num_heads: int = 1, dropout: float = 0.0, skip_scale: float = math.sqrt(0.5),
                 eps: float = 1e-6, adaptive_scale: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_heads = num_heads if attention else 0
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            # SongUNet uses resample_proj=True: the skip is always a 1x1 projection when resampling.
            self.skip = Conv2d(in_channels, out_channels, kernel=1, up=up, down=down, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(chunks=2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = x + (self.skip(orig) if self.skip is not None else orig)
        x = x * self.skip_scale
        if self.num_heads:
            batch, channels, height, width = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(batch * self.num_heads, channels // self.num_heads, 3, -1).unbind(2)
            # softmax over keys of q.k / sqrt(c): EDM's AttentionOp, computed in float32 for stability.
            weights = torch.einsum("ncq,nck->nqk", q.float(), (k / math.sqrt(k.shape[1])).float()).softmax(dim=2).to(q.dtype)
            attended = torch.einsum("nqk,nck->ncq", weights, v)
            x = self.proj(attended.reshape(batch, channels, height, width)) + x
            x = x * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        freqs = torch.arange(0, self.num_channels // 2, dtype=torch.float32, device=x.device)
        freqs = freqs / (self.num_channels // 2 - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = x.float().ger(freqs)
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        # A persistent buffer so that saving and loading keeps the random frequencies.
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().ger((2 * np.pi * self.freqs).float())
        return torch.cat([x.cos(), x.sin()], dim=1)


class SongUNet(nn.Module):
    """DDPM++ U-Net of EDM. `forward(x, noise_labels)` is the raw network F; preconditioning lives elsewhere."""

    def __init__(self, img_resolution: int = 32, in_channels: int = 3, out_channels: int = 3, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult=(1, 2, 2, 2), channel_mult_emb: int = 4,
                 num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.10, label_dropout: float = 0.0,
                 embedding_type: str = "positional", channel_mult_noise: int = 1):
        super().__init__()
        if embedding_type not in ("positional", "fourier"):
            raise ValueError(f"embedding_type must be 'positional' or 'fourier', got {embedding_type!r}")
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        block_kwargs = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6)

        # Mapping network.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = (Linear(label_dim, noise_channels, init_mode="kaiming_normal", init_weight=np.sqrt(label_dim))
                          if label_dim else None)
        self.map_augment = Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        # Encoder: every module output is a skip tensor (a Koopman level in HKD).
        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block_kwargs)
            for index in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{index}"] = UNetBlock(cin, cout, attention=(res in attn_resolutions), **block_kwargs)
        skips = [block.out_channels for block in self.enc.values()]

        # Decoder. The first two blocks ("in0", "in1") are the middle of the U-Net: HKD runs them in the encoder.
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
            if level == 0:
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, kernel=3, init_weight=0.2)
        self.middle_names = [name for name in self.dec if name.endswith(("_in0", "_in1"))]

    # -- pieces ---------------------------------------------------------------------------------
    def embed(self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
              augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (and label) embedding shared by every block."""
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # swap sin/cos, as EDM does
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional (label_dim > 0): pass class_labels")
            tmp = class_labels
            if self.training and self.label_dropout:
                keep = (torch.rand([class_labels.shape[0], 1], device=class_labels.device) >= self.label_dropout)
                tmp = tmp * keep.to(tmp.dtype)
            emb = emb + self.map_label(tmp * np.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        emb = F.silu(self.map_layer1(emb))
        return emb

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> list[torch.Tensor]:
        """Down path + middle blocks. Returns every skip tensor followed by the bottleneck."""
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for name in self.middle_names:
            x = self.dec[name](x, emb)
        return skips + [x]

    def decode(self, latents: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Up path from (bottleneck, skips) to the 3-channel head."""
        skips = list(latents[:-1])
        x = latents[-1]
        aux = None
        for name, block in self.dec.items():
            if name in self.middle_names:
                continue
            if name.endswith("_aux_norm"):
                tmp = block(x)
            elif name.endswith("_aux_conv"):
                tmp = block(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(noise_labels, class_labels, augment_labels)
        return self.decode(self.encode(x, emb), emb)

    def level_shapes(self) -> list[tuple[str, int, int]]:
        """(name, channels, resolution) of each skip and of the bottleneck, in encode() order."""
        shapes = []
        for name, block in self.enc.items():
            # Names carry the output resolution ("16x16_down" outputs 16x16).
            shapes.append((name, block.out_channels, int(name.split("x")[0])))
        last = self.dec[self.middle_names[-1]]
        shapes.append(("bottleneck", last.out_channels, shapes[-1][2]))
        return shapes
