"""Input checks and small data reshapes shared by the plotly and matplotlib figures.

Nothing here computes model outputs: it only validates, subsamples and rearranges data that
analysis functions already produced (xarray Datasets, numpy arrays or torch tensors).
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .style import MAX_POINTS


def require(ds, variables=(), dims=(), coords=(), what: str = "dataset") -> None:
    """Raise a ValueError naming every missing variable, dimension or coordinate of `ds`."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{what}: expected an xarray.Dataset, got {type(ds).__name__}")
    missing = [f"variable {name!r}" for name in variables if name not in ds.data_vars]
    missing += [f"dimension {name!r}" for name in dims if name not in ds.dims]
    missing += [f"coordinate {name!r}" for name in coords if name not in ds.coords and name not in ds.data_vars]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)} (has variables {sorted(ds.data_vars)}, "
                         f"dims {dict(ds.sizes)}, coords {sorted(ds.coords)})")


def require_dims(array: xr.DataArray, dims, what: str) -> None:
    absent = [dim for dim in dims if dim not in array.dims]
    if absent:
        raise ValueError(f"{what} must have dims {tuple(dims)}; missing {absent} (got {array.dims})")


# -- spectra ---------------------------------------------------------------------------------------
def level_names(spec: xr.Dataset) -> dict[int, str]:
    """level index -> name, from attrs['level_names'] (JSON list) or a `level_name` variable."""
    levels = sorted(int(level) for level in np.unique(spec["level"].values))
    names = {}
    raw = spec.attrs.get("level_names")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if isinstance(raw, (list, tuple)):
        names = {index: str(name) for index, name in enumerate(raw)}
    return {level: names.get(level, f"level {level}") for level in levels}


def check_spectrum(spec) -> None:
    require(spec, variables=("alpha", "beta"), dims=("mode",), coords=("level", "y", "x", "pair"),
            what="spectrum dataset (hkdviz.spectrum)")


def spectrum_step(spec: xr.Dataset, step: float | None = None) -> float:
    """The time step dt of the discrete eigenvalues exp(lambda dt): explicit, else attrs['step'], else 1."""
    if step is not None:
        return float(step)
    raw = spec.attrs.get("step", 1.0)
    try:
        return float(json.loads(raw) if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        return 1.0


def subsample_modes(spec: xr.Dataset, max_points: int | None = MAX_POINTS, seed: int = 0) -> dict[int, np.ndarray]:
    """Mode indices to draw, per level, at most `max_points` in total.

    Levels smaller than an equal share are kept whole; the larger levels split what is left
    equally, each drawn uniformly at random with a fixed seed (so a figure is reproducible).
    This keeps the small deep levels (bottleneck) visible beside the large 32x32 ones.
    `max_points=None` keeps everything.
    """
    levels = spec["level"].values
    order = np.argsort(levels, kind="stable")
    unique, starts, counts = np.unique(levels[order], return_index=True, return_counts=True)
    groups = {int(level): np.sort(order[start:start + count]) for level, start, count in zip(unique, starts, counts)}
    if max_points is None or len(levels) <= max_points:
        return groups
    if max_points < len(groups):
        raise ValueError(f"max_points={max_points} is smaller than the number of levels ({len(groups)})")
    quota = {}
    remaining, pending = max_points, sorted(groups, key=lambda level: len(groups[level]))
    while pending:
        share = remaining // len(pending)
        level = pending[0]
        if len(groups[level]) <= share:
            quota[level] = len(groups[level])
            remaining -= quota[level]
            pending.pop(0)
        else:
            for index, level in enumerate(pending):
                quota[level] = share + (1 if index < remaining - share * len(pending) else 0)
            break
    generator = np.random.default_rng(seed)
    return {level: np.sort(generator.choice(indices, size=quota[level], replace=False))
            if quota[level] < len(indices) else indices for level, indices in groups.items()}


def level_grid(spec: xr.Dataset, level: int, variable: str) -> np.ndarray:
    """One level's `variable` as an array (pair, y, x); NaN where the spectrum has no mode."""
    check_spectrum(spec)
    if variable not in spec.data_vars:
        raise ValueError(f"spectrum has no variable {variable!r}; choose one of {sorted(spec.data_vars)}")
    mask = spec["level"].values == level
    if not mask.any():
        raise ValueError(f"spectrum has no level {level}; levels are {sorted(set(spec['level'].values.tolist()))}")
    pair, y, x = (spec[name].values[mask].astype(int) for name in ("pair", "y", "x"))
    values = spec[variable].values[mask]
    if np.iscomplexobj(values):
        values = np.abs(values)
    grid = np.full((pair.max() + 1, y.max() + 1, x.max() + 1), np.nan)
    grid[pair, y, x] = values
    return grid


def pair_reduce(grid: np.ndarray, variable: str, pair: int | None) -> np.ndarray:
    """(pair, y, x) -> (y, x): one pair, or the mean over pairs. The sign of beta only says which member
    of the conjugate pair alpha +- i beta is reported, so beta is averaged as |beta|."""
    if pair is not None:
        if not 0 <= pair < grid.shape[0]:
            raise ValueError(f"pair {pair} out of range (this level has {grid.shape[0]} pairs)")
        return grid[pair]
    if variable == "beta":
        grid = np.abs(grid)
    return np.nanmean(grid, axis=0)


def pair_label(variable: str, pair: int | None) -> str:
    if pair is not None:
        return f"{variable}, pair {pair}"
    return "mean |beta| over pairs" if variable == "beta" else f"mean {variable} over pairs"


def histogram(values: np.ndarray, bins: int | np.ndarray = 60) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) with finite values only; a constant array gets one unit-wide bin around it."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(1), np.array([-0.5, 0.5])
    low, high = values.min(), values.max()
    if isinstance(bins, int) and low == high:
        return np.array([values.size]), np.array([low - 0.5, low + 0.5])
    return np.histogram(values, bins=bins)


# -- images ----------------------------------------------------------------------------------------
def to_numpy(images) -> np.ndarray:
    """numpy array from a torch tensor, DataArray or array-like (no torch import needed)."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    elif isinstance(images, xr.DataArray):
        images = images.values
    return np.asarray(images)


def to_rgb(images, value_range=(-1.0, 1.0), channel_axis: int = -3) -> np.ndarray:
    """Images with channels at `channel_axis` (1 or 3 channels, values in `value_range`) ->
    uint8 with channels last (..., H, W, 3). Values outside the range are clipped; NaN -> black."""
    array = to_numpy(images).astype(np.float32)
    if array.ndim < 3:
        raise ValueError(f"images need at least 3 dims (channel, y, x), got shape {array.shape}")
    array = np.moveaxis(array, channel_axis, -1)
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels != 3:
        raise ValueError(f"images must have 1 or 3 channels on axis {channel_axis}, got {channels} "
                         f"(shape {to_numpy(images).shape})")
    low, high = value_range
    scaled = np.nan_to_num((array - low) / (high - low), nan=0.0)
    return (np.clip(scaled, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


GUTTER = 2  # pixels between the cells of an image grid, at the images' own resolution


def montage(table: np.ndarray, gutter: int = GUTTER, fill: int = 255) -> np.ndarray:
    """uint8 [R, C, H, W, 3] -> one uint8 image [R*H + (R-1)*gutter, C*W + (C-1)*gutter, 3]."""
    if table.ndim != 5 or table.shape[-1] != 3:
        raise ValueError(f"expected a table of RGB images [rows, columns, H, W, 3], got shape {table.shape}")
    rows, columns, height, width, _ = table.shape
    canvas = np.full((rows * height + (rows - 1) * gutter, columns * width + (columns - 1) * gutter, 3),
                     fill, dtype=np.uint8)
    for row in range(rows):
        for column in range(columns):
            top, left = row * (height + gutter), column * (width + gutter)
            canvas[top:top + height, left:left + width] = table[row, column]
    return canvas


def image_table(images: xr.DataArray, rows: str, columns: str) -> tuple[np.ndarray, list[str], list[str]]:
    """A DataArray with dims (rows, columns, channel, y, x) in any order -> (uint8 [R, C, H, W, 3],
    row labels, column labels). Labels come from the coordinates when present."""
    if not isinstance(images, xr.DataArray):
        raise TypeError(f"expected an xarray.DataArray of images, got {type(images).__name__}")
    require_dims(images, (rows, columns, "channel", "y", "x"), "image array")
    extra = [dim for dim in images.dims if dim not in (rows, columns, "channel", "y", "x")]
    if extra:
        raise ValueError(f"image array has extra dims {extra}; select one value of each first (e.g. .isel({extra[0]}=0))")
    ordered = images.transpose(rows, columns, "channel", "y", "x")
    return to_rgb(ordered.values), coordinate_labels(ordered, rows), coordinate_labels(ordered, columns)


def coordinate_labels(array: xr.DataArray | xr.Dataset, dim: str, prefix: str | None = None) -> list[str]:
    if dim in array.coords:
        values = array[dim].values
    else:
        values = np.arange(array.sizes[dim])
    labels = [format_value(value) for value in values]
    if prefix:
        labels = [f"{prefix} {label}" for label in labels]
    return labels


def format_value(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value.item() if isinstance(value, np.generic) else value)


BAND_LABELS = {"all": "full", "smallest": "smallest Re", "intermediate": "intermediate Re", "largest": "largest Re"}


def band_label(label: str) -> str:
    """Display name of a band coordinate: the alpha-ordered thirds say so ("smallest Re"), "all" is "full"."""
    return BAND_LABELS.get(label, label)


def evenly_spaced(count: int, keep: int) -> np.ndarray:
    """`keep` indices spread evenly over range(count), first and last included."""
    if keep >= count:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, keep)).astype(int))


__all__ = ["require", "require_dims", "level_names", "check_spectrum", "spectrum_step", "subsample_modes",
           "level_grid", "pair_reduce", "pair_label", "histogram", "to_numpy", "to_rgb", "montage", "GUTTER", "image_table",
           "coordinate_labels", "format_value",
           "evenly_spaced", "band_label", "BAND_LABELS"]
