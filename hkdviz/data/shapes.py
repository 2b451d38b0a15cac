"""Procedural default data set: one coloured shape over a high-frequency texture.

The point of the data set is a clean split across frequencies, which is what a hierarchical
(multi-level) model should discover: the low frequencies carry the layout (which shape, where,
how big, what colours), the high frequencies carry the texture cropped from a photo.

Determinism: image i depends only on (seed, i) through `np.random.default_rng([seed, i])`, and
uses only `Generator.random()` (53 random bits per double, a stream NumPy keeps stable). The
renderer uses only IEEE-exact elementwise float32 operations (+, -, *, /, sqrt, floor, min,
max): no transcendental functions and no reductions whose rounding could depend on the CPU,
the SIMD width or the batch size. Image i is therefore bit-identical alone or in any batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .base import DatasetError, ImageDataset, to_uint8
from .textures import BACKGROUND_NAMES, TextureBank, texture_bank

SHAPE_NAMES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross")

# Geometry in units of the image width, so every resolution renders the same scene.
SIZE_RANGE = (0.13, 0.29)  # "radius": the shape spans about 26-58 % of the width
EXTENT_FACTOR = 1.2  # farthest point of any shape from its centre, in units of its size
EDGE_MARGIN = 0.02
# Texture geometry in (downscaled) source pixels per 1/32 of the image width: 1.75-4 source
# pixels (3.5-8 of the original photo) land in each pixel of a 32x32 image, fine enough that
# the texture is high-frequency. Capped per source so that the rotated crop fits inside it.
TEXTURE_ZOOM_RANGE = (1.75, 4.0)
CROP_MARGIN = 2.0  # source pixels kept free around a crop for the bilinear taps
HALF_DIAGONAL = 0.7072  # of a unit square, rounded up from sqrt(2) / 2
TEXTURE_CONTRAST_RANGE = (0.06, 0.13)  # std of the texture, pixel values in [0, 1]
LOWPASS_MIX_RANGE = (0.0, 0.2)  # how much of the photo's own shading comes back
TEXTURE_CLIP = 2.5  # texture values beyond this many stds are clipped
TEXTURE_TRIES = 8  # redraws of the crop centre when it lands on a smooth region
TEXTURE_MIN_DETAIL = 0.6  # "smooth" = local texture below this fraction of the source's median

PIXELS_PER_CHUNK = 262_144  # rendering works on [B, H, W, 6] float32 arrays: ~25 MB per tap


@dataclass(frozen=True)
class ShapeParameters:
    """Everything that defines one image; lengths in image widths, colours RGB in [0, 1]."""

    shape: int
    background: int
    center_x: float
    center_y: float
    size: float
    direction: tuple[float, float]  # (cos, sin) of the shape's rotation
    ring_thickness: float  # ring only: thickness as a fraction of `size`
    shape_colour: tuple[float, float, float]
    background_colour: tuple[float, float, float]
    texture_contrast: float  # wanted std of the texture
    texture_gain: float  # factor on the source's high-pass that achieves it
    lowpass_mix: float
    texture_center: tuple[float, float]  # (x, y) in source pixels
    texture_span: float  # source pixels covered by the image width
    texture_direction: tuple[float, float]


def _uniform(value: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return low + (high - low) * value


def _unit_vector(rng: np.random.Generator) -> tuple[float, float]:
    """Uniform direction by rejection from the square: needs no cos/sin, whose last bit varies
    between math libraries."""
    while True:
        a, b = rng.random(2) * 2.0 - 1.0
        norm_squared = float(a * a + b * b)
        if 1e-4 < norm_squared <= 1.0:
            norm = math.sqrt(norm_squared)
            return float(a) / norm, float(b) / norm


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    """Piecewise-linear HSV -> RGB using only arithmetic (hue in [0, 1))."""
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = (offset + hue * 6.0) % 6.0
        channels.append(value - value * saturation * max(0.0, min(k, 4.0 - k, 1.0)))
    return channels[0], channels[1], channels[2]


def draw_parameters(seed: int, index: int, bank: TextureBank | None = None) -> ShapeParameters:
    """The parameters of image `index` of the set with `seed` (pure function of both)."""
    bank = texture_bank() if bank is None else bank
    rng = np.random.default_rng([int(seed), int(index)])
    u = [float(value) for value in rng.random(16)]

    shape = min(int(u[0] * len(SHAPE_NAMES)), len(SHAPE_NAMES) - 1)
    background = min(int(u[1] * len(BACKGROUND_NAMES)), len(BACKGROUND_NAMES) - 1)
    size = _uniform(u[2], SIZE_RANGE)
    reach = size * EXTENT_FACTOR + EDGE_MARGIN
    center_x = _uniform(u[3], (reach, 1.0 - reach))
    center_y = _uniform(u[4], (reach, 1.0 - reach))
    ring_thickness = _uniform(u[5], (0.3, 0.5))

    # Strong contrast in both value and hue: a bright saturated shape on a dark, duller
    # background or the reverse, with the background hue a third to two thirds round the wheel.
    shape_hue = u[6]
    background_hue = (shape_hue + _uniform(u[7], (0.3, 0.7))) % 1.0
    if u[8] < 0.5:
        shape_value, background_value = _uniform(u[9], (0.8, 1.0)), _uniform(u[10], (0.15, 0.42))
    else:
        shape_value, background_value = _uniform(u[9], (0.08, 0.3)), _uniform(u[10], (0.6, 0.88))
    shape_colour = _hsv_to_rgb(shape_hue, _uniform(u[11], (0.65, 1.0)), shape_value)
    background_colour = _hsv_to_rgb(background_hue, _uniform(u[12], (0.15, 0.6)), background_value)

    texture_contrast = _uniform(u[13], TEXTURE_CONTRAST_RANGE)
    lowpass_mix = _uniform(u[14], LOWPASS_MIX_RANGE)
    texture_span = 32.0 * _uniform(u[15], TEXTURE_ZOOM_RANGE)
    direction = _unit_vector(rng)
    texture_direction = _unit_vector(rng)
    texture_span, texture_center, texture_gain = _texture_placement(
        rng, bank, background, texture_span, texture_contrast)
    return ShapeParameters(
        shape=shape, background=background, center_x=center_x, center_y=center_y, size=size,
        direction=direction, ring_thickness=ring_thickness, shape_colour=shape_colour,
        background_colour=background_colour, texture_contrast=texture_contrast,
        texture_gain=texture_gain, lowpass_mix=lowpass_mix, texture_center=texture_center,
        texture_span=texture_span, texture_direction=texture_direction,
    )


def _texture_placement(rng: np.random.Generator, bank: TextureBank, background: int,
                       span: float, contrast: float) -> tuple[float, tuple[float, float], float]:
    """(span, crop centre (x, y) in source pixels, gain that gives the texture `contrast`).

    The span shrinks when the rotated crop would not fit in a small source (chelsea).
    Smooth regions (sky, a wall) are redrawn a few times so most crops show real texture; the
    gain divides by the local texture strength, capped so that a smooth crop that slips through
    is not turned into amplified noise.
    """
    # The rotated crop (half diagonal + margin for the bilinear taps) must stay inside the
    # source: a tap outside it would read a neighbouring source in the stacked array.
    height, width = float(bank.heights[background]), float(bank.widths[background])
    span = min(span, (min(height, width) - 1.0 - 2.0 * CROP_MARGIN) / (2.0 * HALF_DIAGONAL))
    half_diagonal = span * HALF_DIAGONAL + CROP_MARGIN
    typical = float(bank.typical_detail[background])
    for _ in range(TEXTURE_TRIES):
        tx, ty = rng.random(2)
        center = (_uniform(float(tx), (half_diagonal, width - 1.0 - half_diagonal)),
                  _uniform(float(ty), (half_diagonal, height - 1.0 - half_diagonal)))
        local = float(bank.detail[background, int(center[1] + 0.5), int(center[0] + 0.5)])
        if local >= TEXTURE_MIN_DETAIL * typical:
            break
    gain = contrast / max(local, TEXTURE_MIN_DETAIL * typical)
    return span, center, gain


def _column(values: Sequence[Any], trailing: int = 2) -> np.ndarray:
    """Per-image scalars -> float32 [B, 1, 1] (or [B, 1, 1, K] for tuples) for broadcasting."""
    array = np.asarray(values, dtype=np.float64).astype(np.float32)
    return array.reshape(array.shape[:1] + (1,) * trailing + array.shape[1:])


def _box_distance(u: np.ndarray, v: np.ndarray, half_u: np.ndarray, half_v: np.ndarray) -> np.ndarray:
    """Chebyshev-style box distance: exact along the edges, which is all antialiasing needs."""
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _signed_distance(kind: int, u: np.ndarray, v: np.ndarray, size: np.ndarray,
                     ring_thickness: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) in the shape's rotated frame (u, v)."""
    name = SHAPE_NAMES[kind]
    if name == "disc":
        return np.sqrt(u * u + v * v) - size
    if name == "square":
        half = size * np.float32(0.85)  # corners reach 0.85 * sqrt(2) = 1.2 sizes
        return _box_distance(u, v, half, half)
    if name == "triangle":
        # Equilateral, circumradius 1.15 sizes: inside when every edge normal n satisfies
        # n . p <= inradius; normals 120 degrees apart (cos = -1/2, sin = sqrt(3)/2).
        inradius = size * np.float32(0.575)
        half_root3 = np.float32(math.sqrt(3.0) / 2.0)
        edge_a = v
        edge_b = -half_root3 * u - np.float32(0.5) * v
        edge_c = half_root3 * u - np.float32(0.5) * v
        return np.maximum(np.maximum(edge_a, edge_b), edge_c) - inradius
    if name == "ring":
        thickness = size * ring_thickness
        middle = size - thickness * np.float32(0.5)
        return np.abs(np.sqrt(u * u + v * v) - middle) - thickness * np.float32(0.5)
    if name == "cross":
        arm_length, arm_width = size * np.float32(0.95), size * np.float32(0.32)
        return np.minimum(_box_distance(u, v, arm_length, arm_width),
                          _box_distance(u, v, arm_width, arm_length))
    raise AssertionError(f"no geometry for shape {name!r}")


def render_coverage(parameters: Sequence[ShapeParameters], resolution: int) -> np.ndarray:
    """Antialiased shape coverage, float32 [B, H, W] in [0, 1] (1 inside the shape)."""
    grid = (np.arange(resolution, dtype=np.float32) + np.float32(0.5)) / np.float32(resolution)
    offset_x = grid[None, None, :] - _column([p.center_x for p in parameters])
    offset_y = grid[None, :, None] - _column([p.center_y for p in parameters])
    direction = np.asarray([p.direction for p in parameters], dtype=np.float32)
    cos, sin = direction[:, 0, None, None], direction[:, 1, None, None]
    u = cos * offset_x + sin * offset_y
    v = cos * offset_y - sin * offset_x
    size = _column([p.size for p in parameters])
    ring_thickness = _column([p.ring_thickness for p in parameters])

    distance = np.empty(u.shape, dtype=np.float32)
    kinds = np.array([p.shape for p in parameters])
    for kind in np.unique(kinds):
        members = kinds == kind
        distance[members] = _signed_distance(
            int(kind), u[members], v[members], size[members], ring_thickness[members]
        )
    # Linear ramp one pixel wide centred on the edge: area coverage for straight edges.
    return np.clip(np.float32(0.5) - distance * np.float32(resolution), 0.0, 1.0)


def render_background(parameters: Sequence[ShapeParameters], resolution: int,
                      bank: TextureBank) -> np.ndarray:
    """Tinted texture, float32 [B, H, W, 3] (not yet clipped)."""
    grid = (np.arange(resolution, dtype=np.float32) + np.float32(0.5)) / np.float32(resolution)
    grid = grid - np.float32(0.5)
    across, down = grid[None, None, :], grid[None, :, None]
    direction = np.asarray([p.texture_direction for p in parameters], dtype=np.float32)
    cos, sin = direction[:, 0, None, None], direction[:, 1, None, None]
    span = _column([p.texture_span for p in parameters])
    center = np.asarray([p.texture_center for p in parameters], dtype=np.float32)
    source_x = center[:, 0, None, None] + span * (cos * across - sin * down)
    source_y = center[:, 1, None, None] + span * (sin * across + cos * down)

    column_index = np.floor(source_x)
    row_index = np.floor(source_y)
    weight_x = (source_x - column_index)[..., None]
    weight_y = (source_y - row_index)[..., None]
    sources = np.array([p.background for p in parameters], dtype=np.int64)
    # Guard: a tap outside its own source would silently read another one (or wrap around).
    last_row = (bank.heights[sources] - 2)[:, None, None]
    last_column = (bank.widths[sources] - 2)[:, None, None]
    if (row_index.min() < 0 or column_index.min() < 0 or (row_index > last_row).any()
            or (column_index > last_column).any()):
        raise RuntimeError("shapes: a texture crop reaches outside its source image")
    flat = (sources[:, None, None] * bank.source_stride
            + row_index.astype(np.int64) * bank.row_stride + column_index.astype(np.int64))
    pixels = bank.pixels
    top = pixels[flat] * (np.float32(1.0) - weight_x) + pixels[flat + 1] * weight_x
    flat = flat + bank.row_stride
    bottom = pixels[flat] * (np.float32(1.0) - weight_x) + pixels[flat + 1] * weight_x
    sample = top * (np.float32(1.0) - weight_y) + bottom * weight_y  # [B, H, W, 6]
    image, lowpass = sample[..., :3], sample[..., 3:]

    gain = _column([p.texture_gain for p in parameters], 3)
    limit = _column([p.texture_contrast * TEXTURE_CLIP for p in parameters], 3)
    mix = _column([p.lowpass_mix for p in parameters], 3)
    mean_colour = _column([bank.mean_colour[p.background] for p in parameters])
    base = _column([p.background_colour for p in parameters])
    # Clipping the texture keeps single strong photo edges (a rocket's rim) from turning into
    # saturated lines that would rival the shape.
    texture = np.clip(gain * (image - lowpass), -limit, limit)
    return base + texture + mix * (lowpass - mean_colour)


def render(parameters: Sequence[ShapeParameters], resolution: int,
           bank: TextureBank | None = None) -> np.ndarray:
    """uint8 images [B, 3, H, W] for a list of parameters."""
    bank = texture_bank() if bank is None else bank
    coverage = render_coverage(parameters, resolution)[..., None]
    background = render_background(parameters, resolution, bank)
    colour = _column([p.shape_colour for p in parameters])
    image = background + coverage * (colour - background)
    return np.ascontiguousarray(to_uint8(image).transpose(0, 3, 1, 2))


class ShapesDataset(ImageDataset):
    """`num_images` procedural RGB images; labels `shape` (SHAPE_NAMES) and `background`
    (BACKGROUND_NAMES). The main label (`__getitem__`, key "label") is the shape."""

    parallel_render = True  # rendering is pure NumPy on (seed, index): bit-identical on any thread

    def __init__(self, num_images: int, resolution: int = 32, seed: int = 0,
                 xflip: bool = False) -> None:
        super().__init__(xflip=xflip)
        for argument, value, minimum in (("num_images", num_images, 1),
                                         ("resolution", resolution, 4), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise DatasetError(f"shapes: {argument} must be an integer >= {minimum}, got {value!r}")
        self.num_images = int(num_images)
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.num_channels = 3
        self.name = "shapes"
        self.label_names = SHAPE_NAMES
        self.background_names = BACKGROUND_NAMES

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "shapes", "num_images": self.num_images, "resolution": self.resolution,
                "seed": self.seed, "xflip": self.xflip}

    def _num_raw_images(self) -> int:
        return self.num_images

    def _materialize_chunk_size(self) -> int:
        return max(1, PIXELS_PER_CHUNK // (self.resolution * self.resolution))

    def parameters(self, index: int) -> dict[str, Any]:
        """The scene of un-mirrored image `index` (0 <= index < num_images) as a plain dict."""
        if not 0 <= int(index) < self.num_images:
            raise IndexError(f"shapes: image {index} out of range for {self.num_images} images")
        return asdict(draw_parameters(self.seed, int(index)))

    def _load_raw_batch(self, raw_indices: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        bank = texture_bank()
        parameters = [draw_parameters(self.seed, int(index), bank) for index in raw_indices]
        images = render(parameters, self.resolution, bank)
        shapes = np.array([p.shape for p in parameters], dtype=np.int64)
        backgrounds = np.array([p.background for p in parameters], dtype=np.int64)
        return images, {"label": shapes, "shape": shapes, "background": backgrounds}

    def masks(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Shape coverage float32 [N, H, W] in [0, 1] for data set indices (mirrors included):
        the ground-truth layout, handy for checking what a level of a model encodes."""
        split = [self._split_index(index) for index in np.asarray(indices).reshape(-1)]
        parameters = [draw_parameters(self.seed, raw) for raw, _ in split]
        coverage = render_coverage(parameters, self.resolution)
        for position, (_, mirrored) in enumerate(split):
            if mirrored:
                coverage[position] = coverage[position][:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(coverage))
