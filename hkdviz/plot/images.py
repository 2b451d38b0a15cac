"""Interactive (plotly) image grids: band decodes, editing sweeps, trajectory filmstrips.

A grid is one montage image (cells separated by a white gutter) with the row and column labels
as axis ticks: one trace however many cells, and the pixels embedded once as a PNG data URI.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from .data import GUTTER, band_label, image_table, montage, to_rgb
from .tables import filmstrip_table



def png_data_uri(image: np.ndarray) -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_grid(table, row_labels=None, column_labels=None, title: str = "", cell_size: int = 96,
               gutter: int = GUTTER) -> go.Figure:
    """A labelled grid from uint8 RGB images [rows, columns, H, W, 3] (see `data.to_rgb`)."""
    table = np.asarray(table)
    if table.dtype != np.uint8:
        raise TypeError(f"image_grid expects uint8 RGB images (use hkdviz.plot.data.to_rgb), got {table.dtype}")
    rows, columns, height, width, _ = table.shape
    row_labels = list(row_labels) if row_labels is not None else [str(index) for index in range(rows)]
    column_labels = list(column_labels) if column_labels is not None else [str(index) for index in range(columns)]
    if len(row_labels) != rows or len(column_labels) != columns:
        raise ValueError(f"{len(row_labels)} row labels and {len(column_labels)} column labels for a "
                         f"{rows} x {columns} grid")
    canvas = montage(table, gutter)
    figure = go.Figure(go.Image(source=png_data_uri(canvas), hoverinfo="skip"))
    scale = cell_size / max(height, width)
    left = 16 + 8 * max(len(label) for label in row_labels)
    figure.update_layout(
        title=title, template="plotly_white", margin={"l": left, "r": 10, "t": 80 if title else 50, "b": 10},
        width=int(canvas.shape[1] * scale) + left + 20, height=int(canvas.shape[0] * scale) + (80 if title else 50) + 20)
    figure.update_xaxes(side="top", tickmode="array", ticks="", showgrid=False,
                        tickvals=[column * (width + gutter) + (width - 1) / 2 for column in range(columns)],
                        ticktext=column_labels)
    figure.update_yaxes(tickmode="array", ticks="", showgrid=False,
                        tickvals=[row * (height + gutter) + (height - 1) / 2 for row in range(rows)],
                        ticktext=row_labels)
    return figure


def band_grid(bands, title: str = "Spectral masking: decode of each band") -> go.Figure:
    """Band decodes: rows = samples, columns = bands (`image` with dims band, sample, channel, y, x)."""
    images = bands["image"] if isinstance(bands, xr.Dataset) else bands
    table, band_labels, sample_labels = image_table(images, "band", "sample")
    return image_grid(table.swapaxes(0, 1), [f"seed {label}" for label in sample_labels],
                      [band_label(label) for label in band_labels], title)


def trajectory_filmstrip(traj, max_frames: int = 8, samples=None, variable: str = "image",
                         title: str | None = None) -> go.Figure:
    """Decoded Koopman states over time: rows = samples, columns = times (sigma, T first).

    At most `max_frames` evenly spaced times (first and last kept). If the dataset holds teacher
    states (`teacher_image`), each sample gets a second row with them, shown as x_t / sqrt(1 + sigma^2)
    (a noisy state has standard deviation ~sigma; unscaled it would be saturated noise).
    """
    table, row_labels, column_labels = filmstrip_table(traj, max_frames, samples, variable)
    return image_grid(table, row_labels, column_labels,
                      title if title is not None else "Trajectory: decoded Koopman state at each sigma")


def method_grid(images, title: str = "One-step HKD samples vs the teacher at several NFE") -> go.Figure:
    """Rows = methods (e.g. 'HKD, 1 NFE', 'teacher, 35 NFE'), columns = samples: `image` with dims
    (method, sample, channel, y, x)."""
    images = images["image"] if isinstance(images, xr.Dataset) else images
    table, method_labels, sample_labels = image_table(images, "method", "sample")
    return image_grid(table, method_labels, [f"seed {label}" for label in sample_labels], title)


def sample_grid(images, labels=None, columns: int = 8, title: str = "Samples") -> go.Figure:
    """Images [N, C, H, W] (tensor, array or DataArray with dims sample, channel, y, x) in rows of `columns`."""
    rgb = to_rgb(images.transpose("sample", "channel", "y", "x").values if isinstance(images, xr.DataArray) else images)
    count = rgb.shape[0]
    rows = -(-count // columns)
    columns = min(columns, count)
    padded = np.full((rows * columns, *rgb.shape[1:]), 255, dtype=np.uint8)
    padded[:count] = rgb
    table = padded.reshape(rows, columns, *rgb.shape[1:])
    return image_grid(table, [""] * rows, labels[:columns] if labels is not None and rows == 1 else [""] * columns, title)


__all__ = ["png_data_uri", "image_grid", "band_grid", "trajectory_filmstrip",
           "sample_grid", "method_grid"]
