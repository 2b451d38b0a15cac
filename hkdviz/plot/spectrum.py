"""Interactive (plotly) views of a Koopman spectrum dataset (`hkdviz.spectrum(model)`).

All functions take the dataset and return a `plotly.graph_objects.Figure`; none touches a model.
Scatters use WebGL (`Scattergl`) and draw at most `max_points` markers (default
`style.MAX_POINTS` = 40,000; see `data.subsample_modes`): a CIFAR-10 model has ~800k modes, which
neither a browser nor a saved HTML report handles well. The title says how many are shown.
Histograms are binned here (numpy) and drawn as bars, so a figure never embeds raw per-mode data.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import (check_spectrum, histogram, level_grid, level_names, pair_label, pair_reduce, spectrum_step,
                   subsample_modes)
from .style import MAX_POINTS, REFERENCE, SEQUENTIAL, category_colors

_HOVER = ("<b>%{meta}</b><br>position y=%{customdata[0]:.0f}, x=%{customdata[1]:.0f}, pair %{customdata[2]:.0f}"
          "<br>{x_name}=%{x:.4g}, {y_name}=%{y:.4g}"
          "<br>|lambda| over a step=%{customdata[3]:.4g}<br>frequency=%{customdata[4]:.4g} cycles/sigma"
          "<extra></extra>")



def _time_unit(spec) -> str:
    """The Koopman time unit the rates are per (spectra written before it was recorded: sigma)."""
    return str(spec.attrs.get("time_unit", "sigma"))

def _hover(x_name: str, y_name: str) -> str:
    return _HOVER.replace("{x_name}", x_name).replace("{y_name}", y_name)


def _customdata(spec, indices: np.ndarray, step: float) -> np.ndarray:
    """Per-point hover data (y, x, pair, |lambda| over a step, frequency); x/y of the marker are not
    repeated here, which keeps the embedded payload at 28 bytes per point."""
    alpha = spec["alpha"].values[indices]
    beta = spec["beta"].values[indices]
    magnitude = spec["magnitude"].values[indices] if "magnitude" in spec else np.exp(alpha * step)
    frequency = spec["frequency"].values[indices] if "frequency" in spec else np.abs(beta) / (2 * np.pi)
    columns = [spec["y"].values[indices], spec["x"].values[indices], spec["pair"].values[indices], magnitude, frequency]
    # float32 keeps the embedded (base64) payload small; hover shows 4 significant digits anyway.
    return np.stack([np.asarray(column, dtype=np.float32) for column in columns], axis=1)


def _shown(groups: dict, total: int) -> str:
    shown = sum(len(indices) for indices in groups.values())
    return f"all {total:,} modes" if shown == total else f"{shown:,} of {total:,} modes (random subsample)"


def _select_levels(groups: dict, levels) -> dict:
    if levels is None:
        return groups
    levels = [levels] if isinstance(levels, (int, np.integer)) else list(levels)
    unknown = [level for level in levels if level not in groups]
    if unknown:
        raise ValueError(f"spectrum has no level(s) {unknown}; levels are {sorted(groups)}")
    return {level: groups[level] for level in levels}


def spectrum_scatter(spec, levels=None, max_points: int | None = MAX_POINTS, seed: int = 0,
                     step: float | None = None, marker_size: float = 3.0) -> go.Figure:
    """alpha (x) vs beta (y), one WebGL trace per level (click the legend to hide levels).

    Hover: level name, position (y, x), pair, |lambda| = e^{alpha step} over one step and the
    frequency |beta| / 2 pi. `levels` restricts to some level indices.
    """
    check_spectrum(spec)
    step = spectrum_step(spec, step)
    names = level_names(spec)
    scoped = spec if levels is None else spec.isel(mode=np.isin(spec["level"].values, np.atleast_1d(levels)))
    groups = _select_levels(subsample_modes(scoped, max_points, seed), levels)
    colors = category_colors(len(names))
    color_of = dict(zip(sorted(names), colors))
    figure = go.Figure()
    for level, indices in groups.items():
        figure.add_trace(go.Scattergl(
            x=scoped["alpha"].values[indices].astype(np.float32), y=scoped["beta"].values[indices].astype(np.float32),
            mode="markers", name=f"{level}: {names[level]}", meta=f"level {level}: {names[level]}",
            marker={"size": marker_size, "color": color_of[level], "opacity": 0.6},
            customdata=_customdata(scoped, indices, step), hovertemplate=_hover("alpha", "beta")))
    figure.update_layout(
        title=f"Koopman spectrum per level: {_shown(groups, scoped.sizes['mode'])}",
        xaxis_title=f"alpha (growth/decay rate per unit {_time_unit(scoped)})",
        yaxis_title=f"beta (angular frequency per unit {_time_unit(scoped)})",
        legend={"title": "level", "itemsizing": "constant"}, template="plotly_white", height=520)
    figure.add_vline(x=0, line={"color": REFERENCE, "width": 1, "dash": "dot"})
    return figure


def eigenvalue_plane(spec, step: float | None = None, levels=None, max_points: int | None = MAX_POINTS,
                     seed: int = 0, conjugates: bool = False, marker_size: float = 3.0) -> go.Figure:
    """Discrete eigenvalues exp((alpha + i beta) step) on the complex plane, with the unit circle.

    Inside the circle = decaying over one step, outside = growing, on it = persistent oscillation.
    One marker per pair (its reported member alpha + i beta); `conjugates=True` adds the mirror
    image alpha - i beta (twice the points, twice the size of a saved report).
    """
    check_spectrum(spec)
    step = spectrum_step(spec, step)
    names = level_names(spec)
    scoped = spec if levels is None else spec.isel(mode=np.isin(spec["level"].values, np.atleast_1d(levels)))
    groups = _select_levels(subsample_modes(scoped, max_points, seed), levels)
    color_of = dict(zip(sorted(names), category_colors(len(names))))
    figure = go.Figure()
    angle = np.linspace(0, 2 * np.pi, 361)
    figure.add_trace(go.Scatter(x=np.cos(angle), y=np.sin(angle), mode="lines", name="unit circle",
                                line={"color": REFERENCE, "width": 1}, hoverinfo="skip"))
    for level, indices in groups.items():
        discrete = np.exp((scoped["alpha"].values[indices] + 1j * scoped["beta"].values[indices]) * step)
        custom = _customdata(scoped, indices, step)
        if conjugates:
            discrete = np.concatenate([discrete, discrete.conj()])
            custom = np.concatenate([custom, custom])
        figure.add_trace(go.Scattergl(
            x=discrete.real.astype(np.float32), y=discrete.imag.astype(np.float32), mode="markers",
            name=f"{level}: {names[level]}", meta=f"level {level}: {names[level]}",
            marker={"size": marker_size, "color": color_of[level], "opacity": 0.6},
            customdata=custom, hovertemplate=_hover("Re", "Im")))
    figure.update_layout(
        title=f"Discrete eigenvalues exp(lambda dt), dt={step:g}: {_shown(groups, scoped.sizes['mode'])}",
        xaxis_title="Re exp(lambda dt)", yaxis_title="Im exp(lambda dt)", template="plotly_white",
        legend={"title": "level", "itemsizing": "constant"}, height=560, width=640)
    figure.update_yaxes(scaleanchor="x", scaleratio=1)
    return figure


def spectrum_histograms(spec, bins: int = 60, levels=None) -> go.Figure:
    """Per-level histograms of alpha (left column) and beta (right column), one row per level."""
    check_spectrum(spec)
    names = level_names(spec)
    chosen = sorted(names) if levels is None else list(np.atleast_1d(levels))
    values = spec["level"].values
    figure = make_subplots(rows=len(chosen), cols=2, shared_xaxes="columns", vertical_spacing=min(0.02, 0.3 / len(chosen)),
                           horizontal_spacing=0.08, column_titles=["alpha", "beta"])
    colors = dict(zip(sorted(names), category_colors(len(names))))
    for row, level in enumerate(chosen, start=1):
        mask = values == level
        if not mask.any():
            raise ValueError(f"spectrum has no level {level}; levels are {sorted(names)}")
        for column, variable in enumerate(("alpha", "beta"), start=1):
            counts, edges = histogram(spec[variable].values[mask], bins)
            centers = (edges[:-1] + edges[1:]) / 2
            figure.add_trace(go.Bar(x=centers, y=counts, width=np.diff(edges), marker_color=colors[level],
                                    name=f"{level}: {names[level]}", showlegend=column == 1,
                                    hovertemplate=f"{names[level]}<br>{variable}=%{{x:.4g}}<br>count=%{{y}}<extra></extra>"),
                             row=row, col=column)
        figure.update_yaxes(title_text=str(level), title_standoff=2, row=row, col=1)
    figure.update_layout(title="alpha and beta per level (rows: level index)", bargap=0, template="plotly_white",
                         height=max(320, 110 * len(chosen) + 120), legend={"title": "level"})
    return figure


def mode_map(spec, level: int, variable: str = "alpha", pair: int | None = None,
             colorscale: str = SEQUENTIAL) -> go.Figure:
    """One level's `variable` as a (y, x) heatmap: for one `pair`, or the mean over pairs (pair=None)."""
    image = pair_reduce(level_grid(spec, level, variable), variable, pair)
    name = level_names(spec)[level]
    figure = go.Figure(go.Heatmap(z=image.astype(np.float32), colorscale=colorscale, colorbar={"title": variable},
                                  hovertemplate="y=%{y}, x=%{x}<br>" + variable + "=%{z:.4g}<extra></extra>"))
    figure.update_layout(title=f"{pair_label(variable, pair)} at level {level} ({name})", template="plotly_white",
                         xaxis_title="x", yaxis_title="y", height=460, width=520)
    figure.update_yaxes(autorange="reversed", scaleanchor="x", scaleratio=1, constrain="domain")
    figure.update_xaxes(constrain="domain")
    return figure


def mode_maps(spec, variable: str = "alpha", pair: int | None = None, columns: int = 4,
              colorscale: str = SEQUENTIAL) -> go.Figure:
    """`mode_map` for every level in one grid (mean over pairs by default); one colour bar per level
    range would clutter, so each map is normalised to its own range and the hover shows values."""
    check_spectrum(spec)
    names = level_names(spec)
    levels = sorted(names)
    rows = -(-len(levels) // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"{level}: {names[level]}" for level in levels],
                           horizontal_spacing=0.03, vertical_spacing=0.08 if rows < 4 else 0.04)
    for position, level in enumerate(levels):
        grid = level_grid(spec, level, variable)
        image = pair_reduce(grid, variable, None if pair is None else min(pair, grid.shape[0] - 1))
        row, column = divmod(position, columns)
        figure.add_trace(go.Heatmap(z=image.astype(np.float32), colorscale=colorscale, showscale=False,
                                    name=names[level],
                                    hovertemplate="y=%{y}, x=%{x}<br>" + variable + "=%{z:.4g}<extra>%{fullData.name}</extra>"),
                         row=row + 1, col=column + 1)
    figure.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=None)
    figure.update_xaxes(showticklabels=False)
    for index in range(len(levels)):
        suffix = "" if index == 0 else str(index + 1)
        figure.layout[f"yaxis{suffix}"].update(scaleanchor=f"x{suffix}", scaleratio=1, constrain="domain")
        figure.layout[f"xaxis{suffix}"].update(constrain="domain")
    figure.update_layout(title=f"{pair_label(variable, pair)}, per level (each map on its own colour range)",
                         template="plotly_white", height=230 * rows + 90, width=230 * columns + 40)
    return figure


__all__ = ["spectrum_scatter", "eigenvalue_plane", "spectrum_histograms", "mode_map", "mode_maps"]
