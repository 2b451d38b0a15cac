"""The ideal denoiser of a finite data set: the exact minimum-MSE estimate E[y | x = y + sigma n].

For data points y_1..y_M (equally likely) and Gaussian noise of level sigma,

    D(x; sigma) = sum_i w_i y_i,   w = softmax_i( -||x - y_i||^2 / (2 sigma^2) ).

A teacher without training: its PF-ODE maps noise onto (copies of) the data points, which makes
it a known-answer teacher for tests and small experiments. The softmax streams over chunks of the
data with a running log-sum-exp, so memory stays O(batch x (chunk + pixels)) for any data size.
"""
from __future__ import annotations

import torch
from torch import nn

from .edm import sigma_column


class IdealDenoiser(nn.Module):
    """`IdealDenoiser(data)(x, sigma)` -> D(x; sigma). data: [M, C, H, W].

    labels ([M] ints, optional) make it class-conditional: `class_labels` ([N] ints or [N, L]
    one-hot) restrict each sample's posterior to the data points of its class.
    compute_dtype (float64 by default) is used for the distances: at sigma = 0.002 the softmax
    logits are ~1e6 times the squared distances, and float32 rounding would pick wrong neighbours.
    """

    def __init__(self, data: torch.Tensor, labels: torch.Tensor | None = None, chunk_size: int = 4096,
                 compute_dtype: torch.dtype = torch.float64):
        super().__init__()
        if not isinstance(data, torch.Tensor) or data.ndim != 4 or data.shape[0] < 1:
            raise ValueError(f"data must be a tensor [M, C, H, W] with M >= 1, got "
                             f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
        if not data.is_floating_point():
            raise TypeError(f"data must be floating point (images in [-1, 1]), got {data.dtype}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (data.shape[0],) or labels.is_floating_point():
                raise ValueError(f"labels must be integers of shape [{data.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
        self.chunk_size = int(chunk_size)
        self.compute_dtype = compute_dtype
        self.image_shape = tuple(int(size) for size in data.shape[1:])
        self.register_buffer("data", data.detach().reshape(data.shape[0], -1).clone(), persistent=False)
        self.register_buffer("labels", None if labels is None else labels.to(torch.int64), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def num_points(self) -> int:
        return self.data.shape[0]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape [N, {', '.join(map(str, self.image_shape))}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        batch = x.shape[0]
        compute = self.compute_dtype
        flat = x.reshape(batch, -1).to(device=self.device, dtype=compute)
        inverse_variance = 1 / sigma_column(sigma, batch, self.device, compute).reshape(batch, 1) ** 2
        classes = self._classes(class_labels, batch)

        running_max = torch.full((batch, 1), -torch.inf, dtype=compute, device=self.device)
        running_sum = torch.zeros((batch, 1), dtype=compute, device=self.device)
        weighted = torch.zeros_like(flat)
        for start in range(0, self.num_points, self.chunk_size):
            points = self.data[start:start + self.chunk_size].to(compute)
            # -||x - y||^2 / (2 sigma^2) up to the per-row constant -||x||^2 / (2 sigma^2).
            logits = (flat @ points.T - 0.5 * (points * points).sum(1)) * inverse_variance
            if classes is not None:
                same = classes[:, None] == self.labels[start:start + self.chunk_size][None, :]
                logits = logits.masked_fill(~same, -torch.inf)
            new_max = torch.maximum(running_max, logits.amax(1, keepdim=True))
            # Rows with no point seen yet keep max = -inf; shift them by 0 so no inf - inf appears.
            shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            rescale = torch.exp(running_max - shift)
            weights = torch.exp(logits - shift)
            running_sum = running_sum * rescale + weights.sum(1, keepdim=True)
            weighted = weighted * rescale + weights @ points
            running_max = new_max
        if classes is not None and not bool((running_sum > 0).all()):
            raise ValueError("some class_labels name a class with no data point")
        denoised = weighted / running_sum
        return denoised.reshape(x.shape).to(device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))

    def _classes(self, class_labels, batch: int) -> torch.Tensor | None:
        if class_labels is None:
            return None
        if self.labels is None:
            raise ValueError("class_labels given, but this IdealDenoiser was built without data labels")
        class_labels = torch.as_tensor(class_labels, device=self.device)
        if class_labels.ndim == 2:  # one-hot, as EDM passes them
            class_labels = class_labels.argmax(1)
        if class_labels.shape != (batch,):
            raise ValueError(f"class_labels must be [{batch}] ints or [{batch}, L] one-hot, got {tuple(class_labels.shape)}")
        return class_labels.to(torch.int64)

    def extra_repr(self) -> str:
        return f"points={self.num_points}, image_shape={self.image_shape}, chunk_size={self.chunk_size}"


__all__ = ["IdealDenoiser"]
