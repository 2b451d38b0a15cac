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
from typing import Any, Callable

import numpy as np

# (name, how to get it from skimage.data). Gray textures are tinted by the background colour;
# colour photos keep their colour detail. All ship inside the scikit-image wheel (no download),
# and all are PNG files: lossless decoding gives the same pixels with any PNG library, which a
# JPEG (rocket.jpg, say) would not promise.
BACKGROUND_SOURCES: tuple[tuple[str, Callable[[Any], np.ndarray]], ...] = (
    ("brick", lambda data: data.brick()),
    ("grass", lambda data: data.grass()),
    ("gravel", lambda data: data.gravel()),
    ("coffee", lambda data: data.coffee()),
    ("astronaut", lambda data: data.astronaut()),
    ("chelsea", lambda data: data.chelsea()),
    ("motorcycle", lambda data: data.stereo_motorcycle()[0]),
    ("immunohistochemistry", lambda data: data.immunohistochemistry()),
)
BACKGROUND_NAMES: tuple[str, ...] = tuple(name for name, _ in BACKGROUND_SOURCES)

MAX_SOURCE_SIDE = 512  # larger photos are centre-cropped before downscaling
DOWNSCALE = 2  # sources are block-averaged first, so that zoomed-out crops do not alias
LOWPASS_RADIUS = 3  # source pixels; two passes of a 7-wide box ~ Gaussian sigma 2.8
DETAIL_RADIUS = 16  # source pixels; window of the local texture strength, about one crop


@dataclass(frozen=True)
class TextureBank:
    """All sources stacked in one array so a batch can gather from any of them at once."""

    pixels: np.ndarray  # float32 [S * H * W, 6]: RGB image then RGB low-pass, rows flattened
    heights: np.ndarray  # int64 [S]: usable height of each source
    widths: np.ndarray  # int64 [S]
    row_stride: int  # W of the padded stack
    source_stride: int  # H * W of the padded stack
    detail: np.ndarray  # float32 [S, H, W]: local std of the high-pass around each pixel
    typical_detail: np.ndarray  # float64 [S]: median of `detail` over each source
    mean_colour: np.ndarray  # float64 [S, 3]: mean of the low-pass, quantized


_BANK: TextureBank | None = None
_BANK_LOCK = threading.Lock()


def texture_bank() -> TextureBank:
    """The process-wide bank, built on first use (about a second) and then reused."""
    global _BANK
    if _BANK is None:
        with _BANK_LOCK:
            if _BANK is None:
                _BANK = _build_bank()
    return _BANK


def _load_source(loader: Callable[[Any], np.ndarray]) -> np.ndarray:
    """uint8 [H, W, 3] of a shipped skimage image, centre-cropped to MAX_SOURCE_SIDE, then
    reduced DOWNSCALE times."""
    try:
        import skimage.data
    except ImportError as error:  # scikit-image is in the `train` extra
        raise ImportError("the shapes data set needs scikit-image: pip install 'hkdviz[train]'") from error
    image = np.asarray(loader(skimage.data))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.uint8)
    height, width = image.shape[:2]
    top = max(0, (height - MAX_SOURCE_SIDE) // 2)
    left = max(0, (width - MAX_SOURCE_SIDE) // 2)
    image = image[top : top + MAX_SOURCE_SIDE, left : left + MAX_SOURCE_SIDE]
    # Integer block mean with round-half-up: exact, so identical on every machine.
    height, width = (side // DOWNSCALE * DOWNSCALE for side in image.shape[:2])
    blocks = image[:height, :width].astype(np.int64).reshape(
        height // DOWNSCALE, DOWNSCALE, width // DOWNSCALE, DOWNSCALE, 3)
    area = DOWNSCALE * DOWNSCALE
    return ((blocks.sum(axis=(1, 3)) + area // 2) // area).astype(np.uint8)


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


def _lowpass_sum(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Two box passes per axis on uint8 [H, W, 3]: (integer sums, their weight)."""
    total = image.astype(np.int64)
    for _ in range(2):
        total = _box_sum(total, LOWPASS_RADIUS, axis=0)
        total = _box_sum(total, LOWPASS_RADIUS, axis=1)
    return total, (2 * LOWPASS_RADIUS + 1) ** 4


def _local_detail(image: np.ndarray, lowpass_sum: np.ndarray, weight: int) -> np.ndarray:
    """Local std of the high-pass (RGB pooled) over a DETAIL_RADIUS window, float32 in [0, 1]
    units; integer sums up to the final sqrt (values stay below 2**63)."""
    highpass = image.astype(np.int64) * weight - lowpass_sum
    energy = (highpass * highpass).sum(axis=2)
    energy = _box_sum(_box_sum(energy, DETAIL_RADIUS, axis=0), DETAIL_RADIUS, axis=1)
    count = 3 * (2 * DETAIL_RADIUS + 1) ** 2
    return (np.sqrt(energy.astype(np.float64) / count) / (weight * 255.0)).astype(np.float32)


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
    detail = np.zeros((len(sources), stack_height, stack_width), dtype=np.float32)
    typical_detail = np.zeros(len(sources), dtype=np.float64)
    mean_colour = np.zeros((len(sources), 3), dtype=np.float64)
    for position, source in enumerate(sources):
        height, width = source.shape[:2]
        lowpass_sum, weight = _lowpass_sum(source)
        # int64 -> float64 is exact (sums < 2**53), then one correctly rounded division.
        lowpass = (lowpass_sum.astype(np.float64) / (weight * 255.0)).astype(np.float32)
        stack[position, :height, :width, :3] = source.astype(np.float32) / np.float32(255.0)
        stack[position, :height, :width, 3:] = lowpass
        # Texture strength varies within a photo (sky vs. hair): the renderer normalises by the
        # local value so every crop gets the contrast it asked for.
        local = _quantize(_local_detail(source, lowpass_sum, weight), step=1.0 / 65536.0)
        detail[position, :height, :width] = local
        typical_detail[position] = _quantize(np.median(local))
        mean_colour[position] = _quantize(lowpass.astype(np.float64).mean(axis=(0, 1)))
    return TextureBank(
        pixels=stack.reshape(-1, 6),
        heights=heights,
        widths=widths,
        row_stride=stack_width,
        source_stride=stack_height * stack_width,
        detail=detail,
        typical_detail=typical_detail,
        mean_colour=mean_colour,
    )
