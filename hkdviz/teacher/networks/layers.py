"""EDM's layers with any resampling filter: Conv2d (FIR up/down, fused or not) and UNetBlock.

hkdviz's own `model/unet.py` keeps only EDM's default [1, 1] filter (average pooling down, nearest
up), which is all DDPM++ needs. NCSN++ resamples with the [1, 3, 3, 1] filter, and its residual
encoder uses EDM's *fused* down-sampling (convolution first, filter second, which pads the border
differently); ADM's blocks resample their skip path without a projection (a kernel-0 Conv2d).
These classes do all of that with NVlabs/edm's parameter and buffer names (weight, bias,
resample_filter), so a state dict from an EDM pickle loads name for name.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...model.unet import GroupNorm, Linear, UNetBlock as _DDPMUNetBlock, _weight_init


def resample_filter_tensor(taps) -> torch.Tensor:
    """EDM's 2-D resampling filter [1, 1, k, k] from 1-D taps: outer(f, f) / sum(f)^2 (sums to 1)."""
    taps = torch.as_tensor(taps, dtype=torch.float32, device="cpu")
    return (taps.ger(taps) / taps.sum().square()).unsqueeze(0).unsqueeze(1)


class Conv2d(nn.Module):
    """EDM's Conv2d: a k x k convolution (k = 0: none) with optional 2x FIR resampling.

    Unfused (EDM's default): resample, then convolve. Fused (`fused_resample=True`, used by NCSN++'s
    residual encoder): convolve first (padded by both the kernel's and the filter's half-width), then
    filter with stride 2 and no padding. No EDM network fuses up-sampling, so that is refused.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter=(1, 1), fused_resample: bool = False,
                 init_mode: str = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        if up and down:
            raise ValueError("Conv2d cannot resample up and down at once")
        if fused_resample and up and kernel:
            raise ValueError("fused up-sampling is not supported (no EDM network uses it)")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        init = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        shape = [out_channels, in_channels, kernel, kernel]
        self.weight = nn.Parameter(_weight_init(shape, **init) * init_weight) if kernel else None
        self.bias = nn.Parameter(_weight_init([out_channels], **init) * init_bias) if kernel and bias else None
        # A persistent buffer, as in EDM (so it is part of the state dict and checked on import);
        # the taps are kept to recompute it when the layer was built on the meta device.
        self.resample_taps = [float(tap) for tap in resample_filter]
        self.register_buffer("resample_filter", resample_filter_tensor(resample_filter) if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        taps = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        weight_pad = weight.shape[-1] // 2 if weight is not None else 0
        filter_pad = (taps.shape[-1] - 1) // 2 if taps is not None else 0
        if self.fused_resample and self.down and weight is not None:
            x = F.conv2d(x, weight, padding=weight_pad + filter_pad)
            x = F.conv2d(x, taps.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
        else:
            if self.up:  # the filter times 4 keeps the mean: each output pixel gets a quarter of the taps
                x = F.conv_transpose2d(x, taps.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=filter_pad)
            if self.down:
                x = F.conv2d(x, taps.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2,
                             padding=filter_pad)
            if weight is not None:
                x = F.conv2d(x, weight, padding=weight_pad)
        if bias is not None:
            x = x + bias.reshape(1, -1, 1, 1)
        return x


class UNetBlock(_DDPMUNetBlock):
    """EDM's UNetBlock with every constructor option (hkdviz's `model.unet.UNetBlock` fixes DDPM++'s).

    The forward pass is inherited unchanged: norm-SiLU-conv, embedding shift (or ADM's adaptive
    scale and shift), norm-SiLU-dropout-conv, skip, optional self-attention. What differs is the
    construction: the resampling filter, whether a resampling skip gets a 1x1 projection
    (`resample_proj`; ADM's does not, its skip only resamples), the head count (`num_heads`, or
    one head per `channels_per_head` channels), and the init settings.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, num_heads: int | None = None, channels_per_head: int = 64,
                 dropout: float = 0.0, skip_scale: float = 1.0, eps: float = 1e-5, resample_filter=(1, 1),
                 resample_proj: bool = False, adaptive_scale: bool = True, init: dict | None = None,
                 init_zero: dict | None = None, init_attn: dict | None = None):
        nn.Module.__init__(self)  # the parent's constructor builds DDPM++'s fixed layout; this one builds EDM's general one
        init = dict(init or {})
        init_zero = dict(init_weight=0) if init_zero is None else dict(init_zero)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        self.num_heads = 0 if not attention else num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down, resample_filter=resample_filter, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **(init_attn if init_attn is not None else init))
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)


__all__ = ["Conv2d", "UNetBlock", "GroupNorm", "Linear", "resample_filter_tensor"]
