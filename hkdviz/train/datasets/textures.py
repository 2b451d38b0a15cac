"""Background sources for the shapes data set: scikit-image's shipped images, split into bands.

Each source is stored as 6 float32 channels: the image (RGB, in [0, 1]) and its low-pass
(RGB). The renderer takes "image - low-pass" as the high-frequency texture and adds back a
little of the low-pass, so the background's low frequencies stay weak next to the shape.

The low-pass is a box filter applied twice, computed with integer sums so that it is exact and
the same on every machine (no float reductions whose order a CPU or library could change).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

# (name, loader in skimage.data, kind). Gray textures are tinted by the background colour;
# colour photos keep their colour detail. All ship inside the scikit-image wheel (no download).
BACKGROUND_SOURCES: tuple[tuple[str, str], ...] = (
    ("brick", "brick"),
    ("grass", "grass"),
    ("gravel", "gravel"),
    ("coffee", "coffee"),
    ("astronaut", "astronaut"),
    ("chelsea", "chelsea"),
    ("rocket", "rocket"),
    ("immunohistochemistry", "immunohistochemistry"),
)
BACKGROUND_NAMES: tuple[str, ...] = tuple(name for name, _ in BACKGROUND_SOURCES)

MAX_SOURCE_SIDE = 512  # larger photos are centre-cropped: keeps the stacked array ~50 MB
LOWPASS_RADIUS = 6  # source pixels; two passes of a 13-wide box ~ Gaussian sigma 5.3


@dataclass(frozen=True)
class TextureBank:
    """All sources stacked in one array so a batch can gather from any of them at once."""

    pixels: np.ndarray  # float32 [S * H * W, 6]: RGB image then RGB low-pass, rows flattened
    heights: np.ndarray  # int64 [S]: usable height of each source
    widths: np.ndarray  # int64 [S]
    row_stride: int  # W of the padded stack
    source_stride: int  # H * W of the padded stack
    texture_scale: np.ndarray  # float64 [S]: 1 / std of the high-pass, quantized (see below)
    mean_colour: np.ndarray  # float64 [S, 3]: mean of the low-pass, quantized


_BANK: TextureBank | None = None
_BANK_LOCK = threading.Lock()


def texture_bank() -> TextureBank:
    """The process-wide bank, built on first use (about 0.5 s) and then reused."""
    global _BANK
    if _BANK is None:
        with _BANK_LOCK:
            if _BANK is None:
                _BANK = _build_bank()
    return _BANK


def _load_source(loader: str) -> np.ndarray:
    """uint8 [H, W, 3] of a shipped skimage image, centre-cropped to MAX_SOURCE_SIDE."""
    try:
        import skimage.data
    except ImportError as error:  # scikit-image is in the `train` extra
        raise ImportError("the shapes data set needs scikit-image: pip install 'hkdviz[train]'") from error
    image = np.asarray(getattr(skimage.data, loader)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.uint8)
    height, width = image.shape[:2]
    top = max(0, (height - MAX_SOURCE_SIDE) // 2)
    left = max(0, (width - MAX_SOURCE_SIDE) // 2)
    return image[top : top + MAX_SOURCE_SIDE, left : left + MAX_SOURCE_SIDE]


def _box_sum(values: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Integer sum over a (2 radius + 1) window along `axis`, edges replicated."""
    pad = [(0, 0)] * values.ndim
    pad[axis] = (radius + 1, radius)
    padded = np.pad(values, pad, mode="edge")
    cumulative = np.cumsum(padded, axis=axis, dtype=np.int64)
    size = values.shape[axis]
    upper = np.take(cumulative, np.arange(2 * radius + 1, 2 * radius + 1 + size), axis=axis)
    lower = np.take(cumulative, np.arange(0, size), axis=axis)
    return upper - lower


def _lowpass(image: np.ndarray) -> np.ndarray:
    """Two box passes per axis on uint8 [H, W, 3] -> float32 in [0, 1], exact integer sums."""
    total = image.astype(np.int64)
    for _ in range(2):
        total = _box_sum(total, LOWPASS_RADIUS, axis=0)
        total = _box_sum(total, LOWPASS_RADIUS, axis=1)
    divisor = float((2 * LOWPASS_RADIUS + 1) ** 4 * 255)
    # int64 -> float64 is exact here (sums < 2**53); one correctly rounded division.
    return (total.astype(np.float64) / divisor).astype(np.float32)


def _quantize(values: np.ndarray, step: float = 1.0 / 4096.0) -> np.ndarray:
    """Round statistics to a coarse grid: a float reduction may differ in its last bits across
    machines, and rounding makes those bits irrelevant to the rendered pixels."""
    return np.round(np.asarray(values, dtype=np.float64) / step) * step


def _build_bank() -> TextureBank:
    sources = [_load_source(loader) for _, loader in BACKGROUND_SOURCES]
    heights = np.array([source.shape[0] for source in sources], dtype=np.int64)
    widths = np.array([source.shape[1] for source in sources], dtype=np.int64)
    stack_height, stack_width = int(heights.max()), int(widths.max())
    stack = np.zeros((len(sources), stack_height, stack_width, 6), dtype=np.float32)
    texture_scale = np.zeros(len(sources), dtype=np.float64)
    mean_colour = np.zeros((len(sources), 3), dtype=np.float64)
    for position, source in enumerate(sources):
        height, width = source.shape[:2]
        image = source.astype(np.float32) / np.float32(255.0)
        lowpass = _lowpass(source)
        stack[position, :height, :width, :3] = image
        stack[position, :height, :width, 3:] = lowpass
        highpass = (image - lowpass).astype(np.float64)
        # Per-source normalisation so every background gets the texture contrast we ask for.
        texture_scale[position] = _quantize(1.0 / max(float(highpass.std()), 1e-3), step=1.0 / 64.0)
        mean_colour[position] = _quantize(lowpass.astype(np.float64).mean(axis=(0, 1)))
    return TextureBank(
        pixels=stack.reshape(-1, 6),
        heights=heights,
        widths=widths,
        row_stride=stack_width,
        source_stride=stack_height * stack_width,
        texture_scale=texture_scale,
        mean_colour=mean_colour,
    )
