"""Images and curves rearranged into tables (numpy arrays and labels) that both figure backends draw.

No plotting library is imported here: `hkdviz.plot.paper` (matplotlib) and the plotly modules share
these, so the print figures never need plotly.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .data import coordinate_labels, evenly_spaced, require, to_rgb

CE_PANELS = (("effect_share", "share of the decoded image"), ("energy_share", "share of the latent energy"))


def filmstrip_table(traj, max_frames: int = 8, samples=None, variable: str = "image", scale_teacher: bool = True):
    """(uint8 [rows, frames, H, W, 3], row labels, column labels) for a trajectory dataset.
    Teacher states are divided by sqrt(1 + sigma^2) unless scale_teacher=False."""
    require(traj, variables=(variable,), dims=("sample", "time"), what="trajectory dataset (hkdviz.trajectory)")
    if samples is not None:
        traj = traj.isel(sample=list(np.atleast_1d(samples)))
    frames = evenly_spaced(traj.sizes["time"], max_frames)
    picked = traj.isel(time=frames)
    column_labels = [f"sigma={label}" for label in coordinate_labels(picked, "time")]
    sample_labels = coordinate_labels(picked, "sample")
    teacher = _teacher_variable(picked)
    rows, labels = [], []
    for index, label in enumerate(sample_labels):
        rows.append(to_rgb(picked[variable].isel(sample=index).transpose("time", "channel", "y", "x").values))
        labels.append(f"seed {label}" if teacher is None else f"seed {label} HKD")
        if teacher is not None:
            teacher_images = picked[teacher].isel(sample=index)
            if "teacher_time" in teacher_images.dims:  # teacher states on their own grid: nearest sigma
                teacher_images = teacher_images.sel(teacher_time=picked["time"].values, method="nearest")
            states = teacher_images.transpose(..., "channel", "y", "x").values
            if scale_teacher:
                sigma = np.asarray(picked["time"].values, dtype=float).reshape(-1, 1, 1, 1)
                states = states / np.sqrt(1 + sigma ** 2)
            rows.append(to_rgb(states))
            labels.append(f"seed {label} teacher")
    return np.stack(rows), labels, column_labels


def _teacher_variable(traj) -> str | None:
    for name in ("teacher_image", "teacher"):
        if name in traj.data_vars and {"channel", "y", "x"} <= set(traj[name].dims):
            return name
    return None


METHOD_NAMES = {"aware": "frequency-aware", "agnostic": "frequency-agnostic"}
# The dimension that tells frequency-aware from frequency-agnostic edits ("variant"; "method" in older files).
VARIANT_DIMS = ("variant", "method")


def variant_dim(ds) -> str | None:
    return next((dim for dim in VARIANT_DIMS if dim in ds.dims), None)


def sweep_table(sweep: xr.Dataset, samples=None, ratios=None):
    """(uint8 table, row labels, column labels) for an `editing_sweep` dataset.

    Columns: reference, then every ratio (0 = the unedited sample). Rows: for each sample, one row per
    method; the reference column shows the reference on the first row and, on the second, only its
    part inside the edited region (the rest washed out).
    """
    require(sweep, variables=("image",), dims=("ratio", "sample"), what="editing sweep dataset (editing_sweep)")
    variant = variant_dim(sweep)
    if variant is None:
        raise ValueError(f"editing sweep dataset lacks a 'variant' dimension (aware / agnostic); dims {dict(sweep.sizes)}")
    if samples is not None:
        sweep = sweep.isel(sample=list(np.atleast_1d(samples)))
    if ratios is not None:
        sweep = sweep.sel(ratio=list(np.atleast_1d(ratios)), method="nearest")
    images = sweep["image"].transpose("sample", variant, "ratio", "channel", "y", "x")
    rgb = to_rgb(images.values)                                   # [S, M, R, H, W, 3]
    samples_count, methods_count = rgb.shape[:2]
    height, width = rgb.shape[3:5]
    reference = _reference_rgb(sweep, samples_count, height, width)  # [S, H, W, 3]
    region = sweep["region"].values.astype(bool) if "region" in sweep else None
    rows, labels = [], []
    method_labels = [METHOD_NAMES.get(label, label) for label in coordinate_labels(sweep, variant)]
    sample_labels = coordinate_labels(sweep, "sample")
    for sample in range(samples_count):
        for method in range(methods_count):
            if method == 0:
                first = reference[sample]
            elif method == 1 and region is not None:
                # The part of the reference that is injected; the rest washed out towards white.
                first = (0.25 * reference[sample] + 0.75 * 255).astype(np.uint8)
                first[region] = reference[sample][region]
            else:
                first = np.full_like(reference[sample], 255)
            rows.append(np.concatenate([first[None], rgb[sample, method]]))
            labels.append(f"seed {sample_labels[sample]}, {method_labels[method]}")
    columns = ["reference / region"] + [f"{100 * float(ratio):.0f}%" for ratio in sweep["ratio"].values]
    return np.stack(rows), labels, columns


def _reference_rgb(sweep, samples: int, height: int, width: int) -> np.ndarray:
    if "reference" not in sweep:
        return np.full((samples, height, width, 3), 255, dtype=np.uint8)
    reference = sweep["reference"]
    if "sample" in reference.dims:
        return to_rgb(reference.transpose("sample", "channel", "y", "x").values)
    return np.repeat(to_rgb(reference.transpose("channel", "y", "x").values)[None], samples, axis=0)


EDIT_METRICS = {"lowpass_mse": "low-pass MSE to the original (inside the region)",
                "highpass_correlation": "high-pass correlation with the reference (inside the region)",
                "lowpass_psnr": "low-pass PSNR to the original (dB)"}


def metric_variables(metrics: xr.Dataset, variables=None) -> list[str]:
    """The variables to draw: given ones, else the known editing metrics present, else every
    variable whose dims are (variant,) ratio only."""
    require(metrics, dims=("ratio",), what="edit metrics dataset (editing_report)")
    if variables is not None:
        missing = [name for name in variables if name not in metrics.data_vars]
        if missing:
            raise ValueError(f"edit metrics dataset has no variables {missing} (has {sorted(metrics.data_vars)})")
        return list(variables)
    names = [name for name in ("lowpass_mse", "highpass_correlation") if name in metrics.data_vars]
    names = names or [name for name, variable in metrics.data_vars.items()
                      if "ratio" in variable.dims and set(variable.dims) <= {*VARIANT_DIMS, "ratio"}]
    if not names:
        raise ValueError(f"edit metrics dataset has no variables over 'ratio' (has {sorted(metrics.data_vars)})")
    return names


__all__ = ["CE_PANELS", "filmstrip_table", "sweep_table", "metric_variables", "variant_dim", "METHOD_NAMES",
           "EDIT_METRICS", "VARIANT_DIMS"]
