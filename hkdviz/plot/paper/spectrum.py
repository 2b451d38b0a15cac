"""Print (matplotlib) views of a Koopman spectrum dataset. Scatter points are rasterized at 300 dpi
inside otherwise vector PDFs, so a figure with 40k points stays small and fast to open."""
from __future__ import annotations

import numpy as np

from matplotlib.lines import Line2D

from ..data import (check_spectrum, histogram, level_grid, level_names, pair_label, pair_reduce, spectrum_step,
                    subsample_modes)
from ..style import MAX_POINTS, REFERENCE, SEQUENTIAL, category_colors
from .common import figure_width, new_figure, styled


def _panel_grid(count: int, width: float, columns: int | None, panel_height: float | None = None):
    columns = columns or min(count, 4 if width > 5 else 2)
    rows = -(-count // columns)
    height = rows * (panel_height if panel_height is not None else 0.9 * width / columns) + 0.25
    return rows, columns, height


def _hide_unused(axes, used: int, xlabel: str | None = None) -> None:
    """Hide the empty panels of the last row; the panels above them get x tick labels (and the x label)."""
    rows, columns = axes.shape
    for index, axis in enumerate(axes.flat):
        if index >= used:
            axis.set_visible(False)
        elif index + columns >= used:  # nothing visible below this panel
            axis.tick_params(axis="x", labelbottom=True)
            if xlabel:
                axis.set_xlabel(xlabel)


@styled
def spectrum_scatter(spec, width="double", columns: int | None = None, max_points: int | None = MAX_POINTS,
                     seed: int = 0, share_axes: bool = True):
    """Small multiples: alpha (x) vs beta (y), one panel per level, shared axes by default."""
    check_spectrum(spec)
    names = level_names(spec)
    groups = subsample_modes(spec, max_points, seed)
    inches = figure_width(width)
    rows, columns, height = _panel_grid(len(groups), inches, columns)
    figure, axes = new_figure(inches, height, rows, columns, sharex=share_axes, sharey=share_axes)
    colors = category_colors(len(names))
    shown = sum(len(indices) for indices in groups.values())
    for axis, (level, indices), color in zip(axes.flat, groups.items(), colors):
        axis.scatter(spec["alpha"].values[indices], spec["beta"].values[indices], s=1.5, color=color,
                     alpha=0.5, linewidths=0, rasterized=True)
        axis.axvline(0, color=REFERENCE, linewidth=0.5, linestyle=":")
        axis.set_title(f"{level}: {names[level]}", pad=2)
    unit = str(spec.attrs.get("time_unit", "sigma")).replace("sigma", r"$\sigma$")
    _hide_unused(axes, len(groups), rf"$\alpha$ (per unit {unit})")
    for axis in axes[:, 0]:
        axis.set_ylabel(r"$\beta$")
    if shown < spec.sizes["mode"]:
        figure.text(1.0, 0.0, f"{shown:,} of {spec.sizes['mode']:,} modes shown", ha="right", va="bottom",
                    fontsize=5, color=REFERENCE)
    return figure


@styled
def eigenvalue_plane(spec, step: float | None = None, width="single", max_points: int | None = MAX_POINTS,
                     seed: int = 0, conjugates: bool = True):
    """Discrete eigenvalues exp((alpha +- i beta) dt) of every level on the complex plane, unit circle drawn."""
    check_spectrum(spec)
    step = spectrum_step(spec, step)
    names = level_names(spec)
    groups = subsample_modes(spec, max_points, seed)
    inches = figure_width(width)
    figure, axes = new_figure(inches, inches * 0.82)
    axis = axes[0, 0]
    angle = np.linspace(0, 2 * np.pi, 361)
    axis.plot(np.cos(angle), np.sin(angle), color=REFERENCE, linewidth=0.6, label="unit circle")
    points, colors, handles = [], [], []
    for (level, indices), color in zip(groups.items(), category_colors(len(names))):
        discrete = np.exp((spec["alpha"].values[indices] + 1j * spec["beta"].values[indices]) * step)
        if conjugates:
            discrete = np.concatenate([discrete, discrete.conj()])
        points.append(discrete)
        colors += [color] * discrete.size
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=3, color=color, label=f"{level}: {names[level]}"))
    # One scatter drawn in random order: per-level layers would let the last level hide the others.
    points = np.concatenate(points)
    order = np.random.default_rng(seed).permutation(points.size)
    axis.scatter(points.real[order], points.imag[order], s=1.5, c=np.asarray(colors)[order], alpha=0.5,
                 linewidths=0, rasterized=True)
    axis.set_aspect("equal", adjustable="datalim")
    axis.set_xlabel(r"Re $e^{\lambda \Delta t}$")
    axis.set_ylabel(r"Im $e^{\lambda \Delta t}$")
    axis.set_title(rf"discrete eigenvalues, $\Delta t$ = {step:g}", pad=2)
    axis.legend(handles=[axis.lines[0]] + handles, loc="center left", bbox_to_anchor=(1.0, 0.5), handletextpad=0.2,
                fontsize=5, borderaxespad=0.2)
    return figure


@styled
def spectrum_histograms(spec, variable: str = "alpha", bins: int = 50, width="double", columns: int | None = None,
                        log_counts: bool = False):
    """Histogram of `variable` (alpha or beta) per level, one small panel per level."""
    check_spectrum(spec)
    names = level_names(spec)
    levels = sorted(names)
    inches = figure_width(width)
    rows, columns, height = _panel_grid(len(levels), inches, columns, panel_height=0.85)
    figure, axes = new_figure(inches, height, rows, columns)
    values = spec["level"].values
    for axis, level, color in zip(axes.flat, levels, category_colors(len(names))):
        counts, edges = histogram(spec[variable].values[values == level], bins)
        axis.stairs(counts, edges, fill=True, color=color, alpha=0.85, linewidth=0)
        axis.set_title(f"{level}: {names[level]}", pad=2)
        axis.tick_params(axis="y", labelsize=5)
        if log_counts:
            axis.set_yscale("log")
    _hide_unused(axes, len(levels), {"alpha": r"$\alpha$", "beta": r"$\beta$"}.get(variable, variable))
    for axis in axes[:, 0]:
        axis.set_ylabel("modes")
    return figure


@styled
def spectrum_quantiles(spec, width="single"):
    """Compact summary for print: per level, the 5-95% range (thin), interquartile range (thick) and
    median (dot) of alpha (top) and beta (bottom)."""
    check_spectrum(spec)
    names = level_names(spec)
    levels = sorted(names)
    inches = figure_width(width)
    figure, axes = new_figure(inches, 2.3, 2, 1, sharex=True)
    values = spec["level"].values
    colors = category_colors(len(names))
    for axis, variable, symbol in zip(axes[:, 0], ("alpha", "beta"), (r"$\alpha$", r"$\beta$")):
        for position, level in enumerate(levels):
            data = spec[variable].values[values == level]
            low, q1, median, q3, high = np.nanpercentile(data, [5, 25, 50, 75, 95])
            axis.vlines(position, low, high, color=colors[position], linewidth=0.8)
            axis.vlines(position, q1, q3, color=colors[position], linewidth=3)
            axis.plot(position, median, "o", color="white", markersize=2, markeredgecolor=colors[position],
                      markeredgewidth=0.6)
        axis.axhline(0, color=REFERENCE, linewidth=0.5, linestyle=":")
        axis.set_ylabel(symbol)
    axes[-1, 0].set_xticks(range(len(levels)))
    axes[-1, 0].set_xticklabels([names[level] for level in levels], rotation=60, ha="right", fontsize=5)
    return figure


@styled
def mode_maps(spec, variable: str = "alpha", pair: int | None = None, width="double", columns: int | None = None,
              cmap: str = SEQUENTIAL):
    """Per-level (y, x) maps of `variable` (mean over pairs, or one pair), each with its own colour bar."""
    check_spectrum(spec)
    names = level_names(spec)
    levels = sorted(names)
    inches = figure_width(width)
    columns = columns or min(len(levels), 4 if inches > 5 else 2)
    rows = -(-len(levels) // columns)
    figure, axes = new_figure(inches, rows * inches / columns * 0.88 + 0.1, rows, columns)
    for axis, level in zip(axes.flat, levels):
        image = pair_reduce(level_grid(spec, level, variable), variable, pair)
        artist = axis.imshow(image, cmap=cmap, interpolation="nearest")
        axis.set_title(f"{level}: {names[level]}", pad=2)
        axis.set_xticks([])
        axis.set_yticks([])
        colorbar = figure.colorbar(artist, ax=axis, fraction=0.046, pad=0.02)
        colorbar.ax.tick_params(labelsize=4.5, length=1.5, width=0.4)
        colorbar.outline.set_linewidth(0.4)
        colorbar.locator = __import__("matplotlib.ticker", fromlist=["MaxNLocator"]).MaxNLocator(3)
        colorbar.update_ticks()
    _hide_unused(axes, len(levels))
    figure.suptitle(f"{pair_label(variable, pair)} per position")
    return figure


__all__ = ["spectrum_scatter", "eigenvalue_plane", "spectrum_histograms", "spectrum_quantiles", "mode_maps"]
