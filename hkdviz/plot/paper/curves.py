"""Print (matplotlib) curves over diffusion time: cumulative effect of mode bands, latent energy.
Time runs T (left) to eps (right) on a log sigma axis, as the trajectory does."""
from __future__ import annotations

from matplotlib import ticker

from ..tables import CE_PANELS
from ..data import band_label, coordinate_labels, require
from ..style import category_colors
from .common import figure_width, new_figure, styled



def _time_axis(axis):
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.set_xlabel(r"$\sigma$ (T $\rightarrow$ $\epsilon$)")


@styled
def cumulative_effect(effect, width="single", variables=None):
    """One panel per share (image effect, latent energy), one line per band, shares in [0, 1]."""
    require(effect, dims=("band", "time"), what="cumulative-effect dataset")
    names = [name for name, _ in CE_PANELS] if variables is None else list(variables)
    names = [name for name in names if name in effect.data_vars]
    if not names:
        raise ValueError(f"cumulative-effect dataset has none of the variables to draw (has {sorted(effect.data_vars)})")
    titles = dict(CE_PANELS)
    inches = figure_width(width)
    stacked = inches < 5
    rows, columns = (len(names), 1) if stacked else (1, len(names))
    height = 1.35 * len(names) + 0.35 if stacked else 2.2
    figure, axes = new_figure(inches, height, rows, columns, sharex=True)
    bands = coordinate_labels(effect, "band")
    colors = category_colors(len(bands), lines=True)
    markers = "osD^v<>"
    time = effect["time"].values
    for axis, name in zip(axes.flat, names):
        values = effect[name].transpose("band", "time").values
        for index, (band, color, row) in enumerate(zip(bands, colors, values)):
            axis.plot(time, row, color=color, marker=markers[index % len(markers)], markersize=2.5,
                      label=band_label(band))
        axis.set_title(titles.get(name, name), pad=2)
        if name.endswith("share"):
            axis.set_ylim(0, 1.02)
        axis.set_ylabel("share" if name.endswith("share") else name)
        axis.grid(True, linewidth=0.3, alpha=0.5)
    _time_axis(axes.flat[-1] if stacked else axes.flat[0])
    if not stacked:
        for axis in axes.flat[1:]:
            axis.set_xlabel(axes.flat[0].get_xlabel())
    axes.flat[0].legend(loc="best", handlelength=1.5)
    return figure


@styled
def energy_curves(traj, width="single", log: bool = True):
    """Mean latent energy per level over time (trajectory dataset `energy`)."""
    require(traj, variables=("energy",), dims=("time", "level"), what="trajectory dataset (hkdviz.trajectory)")
    energy = traj["energy"].mean("sample") if "sample" in traj["energy"].dims else traj["energy"]
    names = (traj["level_name"].values.tolist() if "level_name" in traj.coords
             else coordinate_labels(traj, "level", "level"))
    inches = figure_width(width)
    figure, axes = new_figure(inches, 2.1)
    axis = axes[0, 0]
    for index, (name, color) in enumerate(zip(names, category_colors(len(names)))):
        axis.plot(traj["time"].values, energy.isel(level=index).values, color=color, label=f"{index}: {name}")
    _time_axis(axis)
    if log:
        axis.set_yscale("log")
    axis.set_ylabel("mean square latent")
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=5, handlelength=1.2)
    return figure


def _cutoff(spectra) -> str:
    import json
    try:
        return f"{float(json.loads(str(spectra.attrs['cutoff']))):.3g}"
    except (KeyError, ValueError, TypeError):
        return "the cutoff"


@styled
def band_power_spectra(spectra, width="single"):
    """Radial power spectrum of each band's decode, log-log (`edit_metrics.band_spectra`)."""
    require(spectra, variables=("power",), dims=("band", "frequency"), what="band spectra dataset (band_spectra)")
    bands = coordinate_labels(spectra, "band")
    frequency = spectra["frequency"].values
    keep = frequency > 0
    figure, axes = new_figure(figure_width(width), 2.6)
    axis = axes[0, 0]
    fraction = spectra["high_frequency_fraction"].values if "high_frequency_fraction" in spectra else None
    for index, (band, color) in enumerate(zip(bands, category_colors(len(bands), lines=True))):
        label = band_label(band) + ("" if fraction is None else f" ({fraction[index]:.2f})")
        axis.plot(frequency[keep], spectra["power"].isel(band=index).values[keep], color=color, label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    # Octave ticks read better than 3x10^-2-style minor labels, which collide on a short log axis.
    octaves = [2.0 ** -power for power in range(1, 9) if frequency[keep].min() * 0.99 <= 2.0 ** -power]
    axis.set_xticks(octaves, [f"1/{2 ** power}" for power in range(1, len(octaves) + 1)])
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("spatial frequency (cycles / pixel)")
    axis.set_ylabel("radial power")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, columnspacing=1.0,
                title=f"band (share of power above {_cutoff(spectra)} cycles/pixel)" if fraction is not None else None,
                title_fontsize=5)
    return figure


__all__ = ["cumulative_effect", "energy_curves", "band_power_spectra"]


@styled
def faithfulness_curves(faith, width="double"):
    """Left: per level, the Koopman path's relative error to the encoder's own latents of the teacher's
    states (solid) against keeping the latent constant (dashed). Middle: the one-step map's RMS to the
    teacher's end from each teacher state, next to the teacher's own denoiser (`analysis.faithfulness`).
    Right, when the dataset has them: decoded latents (the Koopman path's, the constant one's, the
    encoder's own) against the teacher's current estimate D(x_t, t), i.e. whether the trajectory hkdviz
    draws is the teacher's."""
    require(faith, variables=("koopman_error", "constant_error", "consistency_error"), dims=("time", "level"),
            what="faithfulness dataset (hkdviz.analysis.faithfulness)")
    koopman = faith["koopman_error"].mean("sample")
    constant = faith["constant_error"].mean("sample")
    names = (faith["level_name"].values.tolist() if "level_name" in faith.coords
             else coordinate_labels(faith, "level", "level"))
    time = faith["time"].values
    inner = time < time[0]  # at T both errors are 0 by construction: log axes start one grid point later
    states = "path_state_error" in faith
    figure, axes = new_figure(figure_width(width), 2.4, 1, 3 if states else 2)
    left, right = axes[0, 0], axes[0, 1]
    for index, (name, color) in enumerate(zip(names, category_colors(len(names), lines=True))):
        left.plot(time[inner], koopman.isel(level=index).values[inner], color=color, label=f"{index}: {name}")
        left.plot(time[inner], constant.isel(level=index).values[inner], color=color, linestyle="--", linewidth=0.8)
    left.set_yscale("log")
    left.set_ylabel("relative latent error")
    left.set_title("Koopman path (solid) vs constant latent (dashed)", pad=2)
    left.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=5, handlelength=1.2)
    right.plot(time, faith["consistency_error"].mean("sample").values, color="black", label="HKD f(x_t, t)")
    if "denoiser_error" in faith:
        right.plot(time, faith["denoiser_error"].mean("sample").values, color="gray", linestyle="--",
                   label="teacher D(x_t, t)")
    right.set_ylabel(r"RMS to the teacher's $x_\epsilon$")
    right.set_title("one call from the teacher's state", pad=2)
    right.legend(loc="best", handlelength=1.5)
    panels = [left, right]
    if states:
        third = axes[0, 2]
        for name, label, style in (("path_state_error", "Koopman path", {"color": "black"}),
                                   ("constant_state_error", "constant latent", {"color": "black", "linestyle": "--"}),
                                   ("readout_error", "encoder's own latent", {"color": "gray"})):
            third.plot(time, faith[name].mean("sample").values, label=label, **style)
        third.set_ylabel(r"RMS to the teacher's $D(x_t, t)$")
        third.set_title("decoded latent vs the teacher's estimate", pad=2)
        third.legend(loc="best", handlelength=1.5)
        panels.append(third)
    for axis in panels:
        _time_axis(axis)
        axis.grid(True, linewidth=0.3, alpha=0.5)
    return figure


@styled
def lens_curves(lens, width="double"):
    """The Koopman lens of a teacher (`hkdviz.lens`). Left: per level, the relative error of one fitted linear
    step between consecutive grid times (solid) against keeping the features constant (dashed). Right: the
    whole linear path from T (solid) against the constant features (dashed), the teacher-side analogue of
    HKD's faithfulness."""
    require(lens, variables=("fit_residual", "constant_residual", "path_error"), dims=("fit_level",),
            what="lens dataset (hkdviz.lens)")
    names = [str(name) for name in lens["fit_level_name"].values]
    colors = category_colors(len(names), lines=True)
    figure, axes = new_figure(figure_width(width), 2.4, 1, 2)
    left, right = axes[0, 0], axes[0, 1]
    step_sigma = lens["sigma_to"].values
    path_sigma = lens["time"].values
    inner = path_sigma < path_sigma[0]  # the path starts at T, where its error is 0
    for index, (name, color) in enumerate(zip(names, colors)):
        left.plot(step_sigma, lens["fit_residual"].values[index], color=color, label=f"{index}: {name}")
        left.plot(step_sigma, lens["constant_residual"].values[index], color=color, linestyle="--", linewidth=0.8)
        right.plot(path_sigma[inner], lens["path_error"].values[index][inner], color=color)
        if "constant_path_error" in lens:
            right.plot(path_sigma[inner], lens["constant_path_error"].values[index][inner], color=color,
                       linestyle="--", linewidth=0.8)
    kind = str(lens.attrs.get("koopman_time", "sigma"))
    left.set_title(f"one fitted step (solid) vs constant (dashed), time {kind}", pad=2)
    right.set_title("the linear path from T (solid) vs constant (dashed)", pad=2)
    left.set_ylabel("relative feature error")
    left.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=5, handlelength=1.2)
    for axis in (left, right):
        _time_axis(axis)
        axis.set_yscale("log")
        axis.grid(True, linewidth=0.3, alpha=0.5)
    return figure
