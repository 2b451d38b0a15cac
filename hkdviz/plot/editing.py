"""Interactive (plotly) views of editing results: the frequency-aware vs agnostic sweep (paper Fig. 5),
zero-shot inpainting/colorization grids (Fig. 6), and edit metrics over the ratio."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from .data import coordinate_labels
from .tables import EDIT_METRICS, METHOD_NAMES, metric_variables, sweep_table, variant_dim
from .images import image_grid
from .style import category_colors

def editing_grid(sweep: xr.Dataset, samples=None, ratios=None,
                 title: str = "Frequency-aware vs frequency-agnostic editing (columns: injection ratio)") -> go.Figure:
    """Paper Fig. 5 layout: per sample, a frequency-aware and a frequency-agnostic row over ratios
    (`editing.editing_sweep`: image (variant, ratio, sample, channel, y, x), reference, region)."""
    table, row_labels, column_labels = sweep_table(sweep, samples, ratios)
    return image_grid(table, row_labels, column_labels, title)


def zero_shot_grid(edits: xr.Dataset, title: str = "Zero-shot inpainting and colorization") -> go.Figure:
    """Rows = samples, columns = stages (`image` with dims stage, sample, channel, y, x)."""
    from .data import image_table
    images = edits["image"] if isinstance(edits, xr.Dataset) else edits
    table, stages, samples = image_table(images, "stage", "sample")
    return image_grid(table.swapaxes(0, 1), [f"seed {label}" for label in samples], stages, title)


def edit_curves(metrics: xr.Dataset, variables=None) -> go.Figure:
    """Editing metrics (`editing_report`) against the ratio: one panel per metric, one line per method."""
    from plotly.subplots import make_subplots
    names = metric_variables(metrics, variables)
    variant = variant_dim(metrics)
    methods = coordinate_labels(metrics, variant) if variant else [None]
    colors = category_colors(len(methods), lines=True)
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=[EDIT_METRICS.get(name, name) for name in names])
    ratio = 100 * np.asarray(metrics["ratio"].values, dtype=float)
    for column, name in enumerate(names, start=1):
        variable = metrics[name]
        other = [dim for dim in variable.dims if dim not in ("ratio", variant)]
        if other:
            variable = variable.mean(other)
        for index, (method, color) in enumerate(zip(methods, colors)):
            values = variable.isel({variant: index}) if method is not None else variable
            label = METHOD_NAMES.get(method, method) if method is not None else name
            figure.add_trace(go.Scatter(x=ratio, y=values.transpose("ratio").values, mode="lines+markers", name=label,
                                        legendgroup=label, showlegend=column == 1, line={"color": color, "width": 2},
                                        hovertemplate=f"{label}<br>ratio=%{{x:.0f}}%<br>{name}=%{{y:.4g}}<extra></extra>"),
                             row=1, col=column)
        figure.update_xaxes(title_text="injection ratio (%)", row=1, col=column)
    figure.update_layout(title="Editing metrics against the injection ratio", template="plotly_white", height=400)
    return figure


__all__ = ["editing_grid", "zero_shot_grid", "edit_curves"]
