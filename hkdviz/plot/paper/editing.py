"""Print (matplotlib) views of editing results: paper Fig. 5 (editing sweep) and Fig. 6 (zero-shot
inpainting / colorization), and edit metrics against the ratio."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..data import coordinate_labels, image_table
from ..tables import EDIT_METRICS, METHOD_NAMES, metric_variables, sweep_table, variant_dim
from ..style import category_colors
from .common import figure_width, new_figure, styled
from .images import image_grid


def editing_grid(sweep: xr.Dataset, samples=None, ratios=None, width="double", title: str | None = None):
    """Per sample: a frequency-aware and a frequency-agnostic row; columns = reference + ratios."""
    table, row_labels, column_labels = sweep_table(sweep, samples, ratios)
    row_labels = [label.replace("frequency-", "freq.-") for label in row_labels]
    return image_grid(table, row_labels, column_labels, width, title, label_width=1.1)


def inpainting_grid(edits: xr.Dataset, width="single", title: str | None = None):
    """Rows = samples, columns = stages (original, masked, inpainted, grayscale, colorized, ...)."""
    images = edits["image"] if isinstance(edits, xr.Dataset) else edits
    table, stages, samples = image_table(images, "stage", "sample")
    return image_grid(table.swapaxes(0, 1), [f"seed {label}" for label in samples], stages, width, title,
                      column_label_rotation=30 if len(stages) > 4 and figure_width(width) < 5 else 0)


@styled
def edit_curves(metrics: xr.Dataset, variables=None, width="single"):
    """Editing metrics against the ratio (%): one panel per metric, one line per method."""
    names = metric_variables(metrics, variables)
    inches = figure_width(width)
    stacked = inches < 5
    rows, columns = (len(names), 1) if stacked else (1, len(names))
    figure, axes = new_figure(inches, 1.3 * len(names) + 0.3 if stacked else 2.0, rows, columns, sharex=True)
    variant = variant_dim(metrics)
    methods = coordinate_labels(metrics, variant) if variant else [None]
    ratio = 100 * np.asarray(metrics["ratio"].values, dtype=float)
    for axis, name in zip(axes.flat, names):
        variable = metrics[name]
        other = [dim for dim in variable.dims if dim not in ("ratio", variant)]
        if other:
            variable = variable.mean(other)
        for index, (method, color) in enumerate(zip(methods, category_colors(len(methods), lines=True))):
            values = variable.isel({variant: index}) if method is not None else variable
            axis.plot(ratio, values.transpose("ratio").values, color=color, marker="os^D"[index % 4], markersize=2.5,
                      label=METHOD_NAMES.get(method, method) if method is not None else name)
        axis.set_title(EDIT_METRICS.get(name, name), pad=2)
        axis.grid(True, linewidth=0.3, alpha=0.5)
    for axis in (axes.flat[-1:] if stacked else axes.flat):
        axis.set_xlabel("injection ratio (%)")
    axes.flat[0].legend(loc="best")
    return figure


__all__ = ["editing_grid", "inpainting_grid", "edit_curves"]
