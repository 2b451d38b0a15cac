"""Print (matplotlib) image grids: band decodes (paper Fig. 4), trajectories, sample comparisons."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..data import band_label, image_table, to_rgb
from ..tables import filmstrip_table
from .common import draw_image_table, figure_width, grid_height, new_figure, styled


@styled
def image_grid(table, row_labels, column_labels, width="single", title: str | None = None,
               column_label_rotation: float = 0.0, label_width: float = 0.45):
    """A labelled montage of uint8 RGB images [rows, columns, H, W, 3] sized to the paper column."""
    table = np.asarray(table)
    rows, columns = table.shape[:2]
    inches = figure_width(width)
    label_height = 0.18 + (0.15 if title else 0.0) + (0.2 if column_label_rotation else 0.0)
    figure, axes = new_figure(inches, grid_height(inches, rows, columns, label_height, label_width))
    draw_image_table(axes[0, 0], table, row_labels, column_labels, column_label_rotation=column_label_rotation)
    if title:
        figure.suptitle(title)
    return figure


def band_grid(bands, width="single", title: str | None = None):
    """Paper Fig. 4: rows = samples, columns = bands (e.g. smallest / intermediate / largest + full)."""
    images = bands["image"] if isinstance(bands, xr.Dataset) else bands
    table, band_labels, sample_labels = image_table(images, "band", "sample")
    return image_grid(table.swapaxes(0, 1), [f"seed {label}" for label in sample_labels],
                      [band_label(label) for label in band_labels], width, title)


def trajectory_filmstrip(traj, max_frames: int = 8, samples=None, width="double", title: str | None = None):
    """Decoded Koopman states at evenly spaced sigma (columns), one row per sample (+ teacher rows)."""
    table, row_labels, column_labels = filmstrip_table(traj, max_frames, samples)
    column_labels = [label.replace("sigma=", r"$\sigma$=") for label in column_labels]
    return image_grid(table, row_labels, column_labels, width, title, label_width=0.7)


def method_grid(images: xr.DataArray, width="double", title: str | None = None, max_samples: int | None = None):
    """Rows = methods (e.g. 'HKD 1 NFE', 'teacher 35 NFE'), columns = samples: `images` with dims
    (method, sample, channel, y, x)."""
    images = images["image"] if isinstance(images, xr.Dataset) else images
    if max_samples is not None:
        images = images.isel(sample=slice(0, max_samples))
    table, method_labels, sample_labels = image_table(images, "method", "sample")
    return image_grid(table, method_labels, [f"seed {label}" for label in sample_labels], width, title,
                      label_width=0.85)


def sample_strip(images, labels=None, width="double", title: str | None = None):
    """One row of images [N, C, H, W] (tensor, array, or DataArray with dims sample, channel, y, x)."""
    if isinstance(images, xr.DataArray):
        images = images.transpose("sample", "channel", "y", "x").values
    rgb = to_rgb(images)
    labels = list(labels) if labels is not None else [str(index) for index in range(len(rgb))]
    return image_grid(rgb[None], [""], labels, width, title, label_width=0.0)


__all__ = ["image_grid", "band_grid", "trajectory_filmstrip", "method_grid", "sample_strip"]
