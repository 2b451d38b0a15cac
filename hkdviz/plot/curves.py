"""Interactive (plotly) curves over the diffusion time: cumulative effect of mode bands, latent energy.

Time runs as in the diffusion trajectory, T (noise) on the left to eps (clean) on the right, on a
log axis of sigma (plotly's autorange="reversed" on a log axis keeps the tick labels in sigma).
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import band_label, coordinate_labels, require
from .tables import CE_PANELS
from .style import category_colors

def _time_axis(figure, **kwargs):
    figure.update_xaxes(type="log", autorange="reversed", title_text="sigma (T to eps)", **kwargs)


def cumulative_effect(effect, variables=None) -> go.Figure:
    """Cumulative effect per band over time (`hkdviz.analysis.interventions.cumulative_effect`):
    one panel per variable (default: effect_share and energy_share), one line per band."""
    require(effect, dims=("band", "time"), what="cumulative-effect dataset")
    panels = [(name, title) for name, title in CE_PANELS if variables is None or name in variables]
    if variables is not None:
        panels += [(name, name) for name in variables if name not in dict(CE_PANELS)]
    panels = [(name, title) for name, title in panels if name in effect.data_vars]
    if not panels:
        raise ValueError(f"cumulative-effect dataset has none of {[name for name, _ in CE_PANELS]} "
                         f"(variables: {sorted(effect.data_vars)})")
    bands = coordinate_labels(effect, "band")
    colors = category_colors(len(bands), lines=True)
    time = effect["time"].values
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels],
                           horizontal_spacing=0.1)
    for column, (name, _) in enumerate(panels, start=1):
        values = effect[name].transpose("band", "time").values
        for band, color, row in zip(bands, colors, values):
            figure.add_trace(go.Scatter(x=time, y=row, mode="lines+markers", name=band_label(band), legendgroup=band,
                                        showlegend=column == 1, line={"color": color, "width": 2},
                                        marker={"size": 5},
                                        hovertemplate=f"{band}<br>sigma=%{{x:.4g}}<br>{name}=%{{y:.3f}}<extra></extra>"),
                             row=1, col=column)
        if name.endswith("share"):
            figure.update_yaxes(range=[0, 1.02], row=1, col=column)
    _time_axis(figure)
    figure.update_layout(title="Cumulative effect of mode bands along the trajectory", template="plotly_white",
                         height=420, legend={"title": "band"})
    return figure


def energy_curves(traj, log: bool = True) -> go.Figure:
    """Mean latent energy per level over time from a trajectory dataset (`energy` (sample, time, level))."""
    require(traj, variables=("energy",), dims=("time", "level"), what="trajectory dataset (hkdviz.trajectory)")
    energy = traj["energy"]
    if "sample" in energy.dims:
        energy = energy.mean("sample")
    names = (traj["level_name"].values.tolist() if "level_name" in traj.coords
             else coordinate_labels(traj, "level", "level"))
    colors = category_colors(len(names))
    figure = go.Figure()
    for index, (name, color) in enumerate(zip(names, colors)):
        figure.add_trace(go.Scatter(x=traj["time"].values, y=energy.isel(level=index).values, mode="lines",
                                    name=f"{index}: {name}", line={"color": color, "width": 2},
                                    hovertemplate=f"{name}<br>sigma=%{{x:.4g}}<br>energy=%{{y:.4g}}<extra></extra>"))
    _time_axis(figure)
    figure.update_yaxes(type="log" if log else "linear", title_text="mean square latent")
    figure.update_layout(title="Latent energy per level along the trajectory (mean over samples)",
                         template="plotly_white", height=420, legend={"title": "level"})
    return figure


def band_power_spectra(spectra) -> go.Figure:
    """Radial power spectrum of each band's decode (`edit_metrics.band_spectra`: power (band, frequency)),
    log-log: which alpha band carries the fine detail (high spatial frequency) on this model."""
    require(spectra, variables=("power",), dims=("band", "frequency"), what="band spectra dataset (band_spectra)")
    bands = coordinate_labels(spectra, "band")
    frequency = spectra["frequency"].values
    keep = frequency > 0  # the DC term has no place on a log axis
    figure = go.Figure()
    fraction = spectra["high_frequency_fraction"].values if "high_frequency_fraction" in spectra else None
    for index, (band, color) in enumerate(zip(bands, category_colors(len(bands), lines=True))):
        label = band_label(band) if fraction is None else f"{band_label(band)} (high-frequency share {fraction[index]:.2f})"
        figure.add_trace(go.Scatter(x=frequency[keep], y=spectra["power"].isel(band=index).values[keep], mode="lines",
                                    name=label, line={"color": color, "width": 2},
                                    hovertemplate=f"{band}<br>f=%{{x:.3f}} cycles/px<br>power=%{{y:.3g}}<extra></extra>"))
    octaves = [2.0 ** -power for power in range(1, 9) if frequency[keep].min() * 0.99 <= 2.0 ** -power]
    figure.update_xaxes(type="log", title_text="spatial frequency (cycles per pixel)", tickmode="array",
                        tickvals=octaves, ticktext=[f"1/{2 ** power}" for power in range(1, len(octaves) + 1)])
    figure.update_yaxes(type="log", title_text="radial power")
    figure.update_layout(title="Radial power spectrum of each band's decode", template="plotly_white", height=420,
                         legend={"title": "band"})
    return figure


__all__ = ["cumulative_effect", "energy_curves", "band_power_spectra"]
