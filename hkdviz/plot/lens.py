"""Plots of a Koopman lens (`hkdviz.lens`): how linear a teacher's features are, and its fitted spectrum
next to an HKD's learned one. Datasets in, plotly figures out; nothing here runs a model.

The lens dataset has the schema of `hkdviz.spectrum`, so `eigenvalue_plane`, `spectrum_histograms`
and the other spectrum plots read it unchanged; these add what only a lens has.
"""
from __future__ import annotations

import json
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import check_spectrum, level_names, subsample_modes
from .style import OKABE_ITO_LINES, REFERENCE, category_colors

# Operators whose generator is one per level, broadcast over positions (hkdviz.model.koopman.SHARED_OPERATORS;
# spelled out so plot/ reads datasets without importing the model package).
SHARED_OPERATORS = ("block_shared", "dense_shared")

LENS_COLOR = OKABE_ITO_LINES[1]   # vermillion: the teacher's fitted eigenvalues
HKD_COLOR = OKABE_ITO_LINES[0]    # blue: the HKD's learned ones


def _require_lens(ds) -> None:
    if not hasattr(ds, "data_vars") or "fit_residual" not in ds or "path_error" not in ds:
        raise TypeError(f"expects a lens dataset (hkdviz.lens), got {type(ds).__name__}")


def lens_residuals(ds, held_out: bool = True, path: bool = False) -> go.Figure:
    """Per level, the relative error of the fitted linear step against sigma (log axis, T on the left):
    training seeds solid, held-out seeds dashed, the constant baseline (G = 0) dotted grey.
    path=True draws the whole path from T instead (`path_error`, the analogue of HKD faithfulness)."""
    _require_lens(ds)
    if path:
        sigma = ds["time"].values
        solid, dashed, baseline = "path_error", "held_out_path_error", "constant_path_error"
        title = "Teacher features vs one linear path from T: ||z_t - exp((s(t)-s(T)) G) z_T|| / ||z_t||"
    else:
        sigma = ds["sigma_to"].values
        solid, dashed, baseline = "fit_residual", "held_out_error", "constant_residual"
        title = "One-step linearity of the teacher's features: ||z_k+1 - exp(dt G) z_k|| / ||z_k+1||"
    names = [str(name) for name in ds["fit_level_name"].values]
    colors = category_colors(len(names), lines=True)
    figure = go.Figure()
    for index, name in enumerate(names):
        figure.add_trace(go.Scatter(x=sigma, y=ds[solid].values[index], mode="lines+markers", name=name,
                                    legendgroup=name, line={"color": colors[index]}, marker={"size": 4}))
        if held_out and np.isfinite(ds[dashed].values[index]).any():
            figure.add_trace(go.Scatter(x=sigma, y=ds[dashed].values[index], mode="lines", name=f"{name} (held out)",
                                        legendgroup=name, showlegend=False,
                                        line={"color": colors[index], "dash": "dash"}))
        figure.add_trace(go.Scatter(x=sigma, y=ds[baseline].values[index], mode="lines", name=f"{name} (G = 0)",
                                    legendgroup=name, showlegend=False,
                                    line={"color": REFERENCE, "dash": "dot", "width": 1}))
    figure.update_layout(title=title, template="plotly_white", height=460, width=760,
                         xaxis_title="sigma (solid: training seeds, dashed: held out, dotted: G = 0)",
                         yaxis_title="relative error", legend={"title": "level"})
    figure.update_xaxes(type="log", autorange="reversed")
    return figure


def _distinct(spec, level: int) -> np.ndarray:
    """Row indices of one level; a shared generator (broadcast over positions) shows each eigenvalue once."""
    rows = np.flatnonzero(spec["level"].values == level)
    operators = json.loads(spec.attrs.get("level_operators", "[]"))
    if operators and operators[level] in SHARED_OPERATORS:
        rows = rows[(spec["y"].values[rows] == 0) & (spec["x"].values[rows] == 0)]
    return rows


def lens_comparison_plane(lens_spec, hkd_spec=None, levels=None, columns: int = 4, max_points: int = 20_000,
                          seed: int = 0) -> go.Figure:
    """Continuous eigenvalues (alpha, |beta|) per level: the teacher's fitted generator (diamonds) over
    the HKD's learned modes (dots, subsampled to max_points in all). Both per unit of the same Koopman
    time (compare_spectra checks it; this figure only reads the attrs into its title)."""
    check_spectrum(lens_spec)
    names = level_names(lens_spec)
    present = sorted(int(level) for level in np.unique(lens_spec["level"].values))
    chosen = present if levels is None else [level for level in present if level in set(np.atleast_1d(levels))]
    if not chosen:
        raise ValueError(f"no level with modes among {levels}; the lens has levels {present}")
    hkd_groups = {}
    if hkd_spec is not None:
        check_spectrum(hkd_spec)
        hkd_groups = subsample_modes(hkd_spec, max_points, seed)
    columns = max(1, min(columns, len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"{level}: {names[level]}" for level in chosen],
                           horizontal_spacing=0.06, vertical_spacing=0.12)
    for position, level in enumerate(chosen):
        row, column = position // columns + 1, position % columns + 1
        first = position == 0
        if level in hkd_groups:
            indices = hkd_groups[level]
            figure.add_trace(go.Scattergl(
                x=hkd_spec["alpha"].values[indices].astype(np.float32),
                y=np.abs(hkd_spec["beta"].values[indices]).astype(np.float32), mode="markers", name="HKD (learned)",
                legendgroup="hkd", showlegend=first, marker={"size": 3, "color": HKD_COLOR, "opacity": 0.35},
                hovertemplate="HKD<br>alpha=%{x:.4g}<br>|beta|=%{y:.4g}<extra></extra>"), row=row, col=column)
        indices = _distinct(lens_spec, level)
        figure.add_trace(go.Scatter(
            x=lens_spec["alpha"].values[indices], y=np.abs(lens_spec["beta"].values[indices]), mode="markers",
            name="teacher (lens fit)", legendgroup="lens", showlegend=first,
            marker={"size": 7, "symbol": "diamond", "color": LENS_COLOR, "line": {"width": 0.5, "color": "white"}},
            hovertemplate="teacher<br>alpha=%{x:.4g}<br>|beta|=%{y:.4g}<extra></extra>"), row=row, col=column)
    unit = lens_spec.attrs.get("time_unit", "eigenvalues per unit of Koopman time")
    figure.update_layout(title=f"Teacher's fitted spectrum vs HKD's learned spectrum ({unit})",
                         template="plotly_white", height=300 * rows + 80, width=260 * columns + 120,
                         legend={"orientation": "h", "y": -0.08})
    figure.update_xaxes(title_text="alpha", zeroline=True, zerolinecolor=REFERENCE)
    figure.update_yaxes(title_text="|beta|")
    return figure


def lens_comparison_bars(comparison) -> go.Figure:
    """Per-level Wasserstein distances of alpha and |beta| (`hkdviz.analysis.lens.compare_spectra`)."""
    if not hasattr(comparison, "data_vars") or "wasserstein_alpha" not in comparison:
        raise TypeError("expects the dataset returned by compare_spectra")
    labels = [str(name) for name in comparison["level_name"].values]
    figure = go.Figure([
        go.Bar(x=labels, y=comparison["wasserstein_alpha"].values, name="alpha", marker_color=OKABE_ITO_LINES[0]),
        go.Bar(x=labels, y=comparison["wasserstein_abs_beta"].values, name="|beta|", marker_color=OKABE_ITO_LINES[1]),
    ])
    figure.update_layout(barmode="group", template="plotly_white", height=380, width=720,
                         title=f"Teacher vs HKD spectra: 1-D Wasserstein distance per level "
                               f"(per unit of Koopman time {comparison.attrs.get('koopman_time', '?')})",
                         yaxis_title="Wasserstein distance", xaxis_title="level")
    return figure


__all__ = ["lens_residuals", "lens_comparison_plane", "lens_comparison_bars"]
