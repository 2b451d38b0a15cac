"""Tiny real data sets that ship inside the scikit-learn and scikit-image wheels (no download).

Both are grayscale; `num_channels=3` (the default) repeats the gray plane so they drop into
RGB models unchanged, `num_channels=1` keeps one plane.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DatasetError, InMemoryDataset, resize_images, to_uint8

DIGIT_LABEL_NAMES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
LFW_LABEL_NAMES: tuple[str, ...] = ("face", "non_face")


def _check_options(name: str, resolution: int, num_channels: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise DatasetError(f"{name}: resolution must be a positive integer, got {resolution!r}")
    if num_channels not in (1, 3):
        raise DatasetError(f"{name}: num_channels must be 1 or 3, got {num_channels!r}")


def _gray_to_uint8(gray: np.ndarray, resolution: int, num_channels: int) -> np.ndarray:
    """float [N, H, W] in [0, 1] -> uint8 [N, C, resolution, resolution] (bilinear)."""
    resized = resize_images(gray[:, None].astype(np.float32), resolution)
    return np.repeat(to_uint8(resized), num_channels, axis=1)


class DigitsDataset(InMemoryDataset):
    """scikit-learn's 1,797 handwritten digits (8x8, 17 gray levels), bilinearly upsampled;
    bright strokes on black, labels 0-9."""

    def __init__(self, resolution: int = 32, num_channels: int = 3, xflip: bool = False) -> None:
        _check_options("digits", resolution, num_channels)
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise ImportError("the digits data set needs scikit-learn: pip install 'hkdviz[train]'") from error
        digits = load_digits()
        gray = np.asarray(digits.images, dtype=np.float64) / 16.0  # pixel values are 0..16
        super().__init__(_gray_to_uint8(gray, int(resolution), num_channels),
                         np.asarray(digits.target, dtype=np.int64), name="digits",
                         label_names=DIGIT_LABEL_NAMES, xflip=xflip)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "digits", "resolution": self.resolution,
                "num_channels": self.num_channels, "xflip": self.xflip}


class LfwDataset(InMemoryDataset):
    """scikit-image's `lfw_subset`: 200 gray 25x25 crops, the first 100 faces and the other 100
    non-faces (label 0 = face, 1 = non_face), bilinearly resized."""

    def __init__(self, resolution: int = 32, num_channels: int = 3, xflip: bool = False) -> None:
        _check_options("lfw", resolution, num_channels)
        try:
            import skimage.data
        except ImportError as error:
            raise ImportError("the lfw data set needs scikit-image: pip install 'hkdviz[train]'") from error
        gray = np.clip(np.asarray(skimage.data.lfw_subset(), dtype=np.float64), 0.0, 1.0)
        labels = np.where(np.arange(len(gray)) < 100, 0, 1).astype(np.int64)
        super().__init__(_gray_to_uint8(gray, int(resolution), num_channels), labels, name="lfw",
                         label_names=LFW_LABEL_NAMES, xflip=xflip)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "lfw", "resolution": self.resolution,
                "num_channels": self.num_channels, "xflip": self.xflip}
