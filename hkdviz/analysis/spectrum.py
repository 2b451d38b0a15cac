"""Koopman spectra as xarray: one entry per eigenvalue pair of every level and position.

A "mode" is one (level, pair, y, x). Block levels (the paper's operator) are read in closed form:
the 2x2 block [[alpha, beta], [-beta, alpha]] on latent channels (k, k + d/2) has eigenvalues
alpha +- i beta, with right eigenvector (e_k +- i e_{k+d/2}) / sqrt(2) (the block is normal, so the
left eigenvector is the same). Reading them is a reshape of the (d, h, w) parameter, no eigensolver.
The reported member of each block pair is alpha + i beta (beta keeps its sign).
A "block_shared" level (one alpha/beta per channel pair, shared by every position) is reported like
"dense_shared": one entry per (pair, y, x) holding the shared eigenvalue at every position. Modes
stay addresses of latent slots, so level views, explicit bands, quantile bands (each pair weighted by
the positions it governs), editing masks and the widgets' mode-to-mask mapping work unchanged;
consumers that want each distinct eigenvalue once read position (0, 0) of a shared level.

Dense levels ("dense" per position, "dense_shared" per level) need a real eigendecomposition: it
runs in float64 (torch.linalg.eig, batched over positions). A real matrix's complex eigenvalues come
in conjugate pairs; each pair is reported once (the member with imag > 0) after checking that its
conjugate is present; each real eigenvalue is its own entry. The number of entries per position then
varies, so per-level views are padded with NaN. Entries within a position are sorted by real part,
largest first. Identity levels contribute no modes.
"""
from __future__ import annotations

import json
import math
import numbers

import numpy as np
import torch
import xarray as xr

from ..model.koopman import BLOCK_OPERATORS, koopman_time_label
from .storage import provenance_attrs

# Eigenvector arrays are (modes x components) complex; refuse requests that would exhaust memory.
MAX_EIGENVECTOR_BYTES = 4 * 2 ** 30
# Matrices per batched eig call (bounds the [P, d, d] temporaries).
DENSE_CHUNK_ELEMENTS = 2 ** 22


def spectrum(model, step: float = 1.0, eigenvectors: bool = False, levels=None, progress: bool = True) -> xr.Dataset:
    """The eigenvalues of every Koopman generator of `model`, along one dimension `mode`.

    Coordinates (per mode): `level` (level index), `pair`, `y`, `x`. Variables: `alpha`, `beta`
    (real and imaginary part), `eigenvalue` (alpha + i beta), `magnitude` = |exp(eigenvalue * step)|
    = e^{alpha step}, `frequency` = |beta| / (2 pi) (cycles per unit of Koopman time), `period` =
    1 / frequency (inf when beta = 0). Rates are per unit of the model's Koopman time (attrs
    `koopman_time` and `time_unit`: sigma, ln sigma or sigma^(1/7); see hkdviz.model.koopman).
    With eigenvectors=True also `right_eigenvector` and
    `left_eigenvector` (mode, component), normalised so u^H v = 1; components beyond a level's
    channel count are NaN. `levels` (indices or names) restricts the levels read.
    `level_view(spec, level)` reshapes one level to (pair, y, x) maps.
    """
    if not (hasattr(model, "levels") and hasattr(model, "koopman")):
        raise TypeError(f"spectrum expects an HKD model (hkdviz.load / hkdviz.build), got {type(model).__name__}")
    step = _check_step(step)
    infos = model.levels
    selected = _select_levels(infos, levels)
    parts = []
    dense = [index for index in selected if infos[index].operator in ("dense", "dense_shared")]
    bar = None
    if dense and progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(infos[index].height * infos[index].width for index in dense),
                   desc="dense eigendecomposition", unit="position")
    try:
        for index in selected:
            info, level = infos[index], model.koopman[index]
            if info.operator == "identity":
                continue
            if info.operator in BLOCK_OPERATORS:
                parts.append(_block_modes(index, level))
            elif info.operator in ("dense", "dense_shared"):
                parts.append(_dense_modes(index, info, level, eigenvectors, bar))
            else:
                raise ValueError(f"level {index} ({info.name}): unknown Koopman operator {info.operator!r}")
    finally:
        if bar is not None:
            bar.close()

    total = sum(part["count"] for part in parts)
    components = max((infos[index].channels for index in selected), default=0)
    if eigenvectors and total * components * 32 > MAX_EIGENVECTOR_BYTES:
        raise ValueError(f"eigenvectors for {total:,} modes x {components} components would take "
                         f"{total * components * 32 / 2 ** 30:.1f} GiB; pass levels=[...] to read fewer levels")

    pair_dtype = np.int16 if max((part["max_pair"] for part in parts), default=0) < 2 ** 15 else np.int32
    level_coord = np.empty(total, np.int16)
    pair = np.empty(total, pair_dtype)
    y = np.empty(total, np.int16)
    x = np.empty(total, np.int16)
    alpha = np.empty(total, np.float64)
    beta = np.empty(total, np.float64)
    start = 0
    for part in parts:
        stop = start + part["count"]
        level_coord[start:stop] = part["level"]
        pair[start:stop] = part["pair"]
        y[start:stop] = part["y"]
        x[start:stop] = part["x"]
        alpha[start:stop] = part["alpha"]
        beta[start:stop] = part["beta"]
        start = stop

    eigenvalue = np.empty(total, np.complex128)
    eigenvalue.real = alpha
    eigenvalue.imag = beta
    frequency = np.abs(beta) * (1 / (2 * math.pi))
    with np.errstate(divide="ignore"):
        period = 1 / frequency
    unit = koopman_time_label(getattr(model, "koopman_time_kind", "sigma"))
    variables = {
        "alpha": ("mode", alpha, {"long_name": f"real part (growth/decay rate per unit {unit})"}),
        "beta": ("mode", beta, {"long_name": f"imaginary part (angular frequency per unit {unit})"}),
        "eigenvalue": ("mode", eigenvalue, {"long_name": "generator eigenvalue alpha + i beta",
                                            "units": f"per unit {unit}"}),
        "magnitude": ("mode", np.exp(alpha * step), {"long_name": "|exp(eigenvalue * step)|"}),
        "frequency": ("mode", frequency, {"long_name": "|beta| / (2 pi)", "units": f"cycles per unit {unit}"}),
        "period": ("mode", period, {"long_name": "1 / frequency (inf for real eigenvalues)", "units": unit}),
    }
    if eigenvectors:
        right = np.full((total, components), np.nan + 1j * np.nan, np.complex128)
        left = np.full((total, components), np.nan + 1j * np.nan, np.complex128)
        start = 0
        for part in parts:
            stop = start + part["count"]
            channels = infos[part["level"]].channels
            if "right" in part:
                right[start:stop, :channels] = part["right"]
                left[start:stop, :channels] = part["left"]
            else:
                _block_eigenvectors(right[start:stop, :channels], left[start:stop, :channels], part["pair"])
            start = stop
        variables["right_eigenvector"] = (("mode", "component"), right, {"long_name": "v with A v = eigenvalue v"})
        variables["left_eigenvector"] = (("mode", "component"), left,
                                         {"long_name": "u with u^H A = eigenvalue u^H, u^H v = 1"})

    attrs = provenance_attrs(model)
    attrs.update({
        "step": step,
        "koopman_time": getattr(model, "koopman_time_kind", "sigma"),
        "time_unit": unit,
        "level_names": json.dumps([info.name for info in infos]),
        "level_shapes": json.dumps([[info.channels, info.height, info.width] for info in infos]),
        "level_operators": json.dumps([info.operator for info in infos]),
        "levels_read": json.dumps(selected),
    })
    coords = {"level": ("mode", level_coord), "pair": ("mode", pair), "y": ("mode", y), "x": ("mode", x)}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def level_view(spec: xr.Dataset, level) -> xr.Dataset:
    """One level of a `spectrum` dataset as maps with dims (pair, y, x); missing entries are NaN.

    `level` is a level index or name. Eigenvector variables become (pair, y, x, component), trimmed
    to the level's channel count.
    """
    if not isinstance(spec, xr.Dataset) or "mode" not in spec.dims or "level" not in spec.coords:
        raise TypeError("level_view expects a dataset returned by hkdviz.spectrum (dim 'mode', coord 'level')")
    names = json.loads(spec.attrs["level_names"]) if "level_names" in spec.attrs else None
    shapes = json.loads(spec.attrs["level_shapes"]) if "level_shapes" in spec.attrs else None
    operators = json.loads(spec.attrs["level_operators"]) if "level_operators" in spec.attrs else None
    index = _level_index(level, names, None if names is None else len(names))
    level_values = spec["level"].values
    rows = np.flatnonzero(level_values == index)
    if rows.size == 0:
        operator = operators[index] if operators else "unknown"
        raise ValueError(f"level {index} has no modes in this spectrum (operator {operator!r}; identity levels "
                         f"have none, and `levels=` may have left it out)")
    pair = spec["pair"].values[rows].astype(np.int64)
    y = spec["y"].values[rows].astype(np.int64)
    x = spec["x"].values[rows].astype(np.int64)
    channels = shapes[index][0] if shapes else None
    if shapes:
        height, width = shapes[index][1], shapes[index][2]
    else:
        height, width = int(y.max()) + 1, int(x.max()) + 1
    if operators and operators[index] in BLOCK_OPERATORS and channels is not None:
        pairs = channels // 2
    else:
        pairs = int(pair.max()) + 1

    variables = {}
    for name, variable in spec.data_vars.items():
        if "mode" not in variable.dims:
            continue
        values = variable.transpose("mode", ...).values[rows]
        extra_dims = [dim for dim in variable.dims if dim != "mode"]
        if "component" in extra_dims and channels is not None:
            values = values[:, :channels]
        fill = np.nan if values.dtype.kind in "fc" else 0
        out = np.full((pairs, height, width) + values.shape[1:], fill,
                      dtype=values.dtype if values.dtype.kind in "fc" else np.float64)
        out[pair, y, x] = values
        variables[name] = (("pair", "y", "x", *extra_dims), out, variable.attrs)
    attrs = dict(spec.attrs)
    attrs.update({"level": index, "level_name": names[index] if names else str(index)})
    if operators:
        attrs["operator"] = operators[index]
    coords = {"pair": np.arange(pairs), "y": np.arange(height), "x": np.arange(width), "level": index}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


# -- block levels: closed form ------------------------------------------------------------------------
def _block_modes(index: int, level) -> dict:
    # numpy widens float32 -> float64 later, into the output arrays (much faster than torch's .double()).
    # The per-position view: a shared level's (d, 1, 1) parameter becomes a copy at every position.
    generator = level.position_generator().detach().to("cpu").float().numpy()
    pairs, height, width = level.num_pairs, level.height, level.width
    positions = height * width
    count = pairs * positions
    # Mode order = C order of the (pair, y, x) parameter block, so level views are plain reshapes.
    return {
        "level": index, "count": count, "max_pair": pairs - 1,
        "pair": np.repeat(np.arange(pairs, dtype=np.int32), positions),
        "y": np.tile(np.repeat(np.arange(height, dtype=np.int16), width), pairs),
        "x": np.tile(np.arange(width, dtype=np.int16), pairs * height),
        "alpha": generator[:pairs].reshape(-1),
        "beta": generator[pairs:].reshape(-1),
    }


def _block_eigenvectors(right: np.ndarray, left: np.ndarray, pair: np.ndarray) -> None:
    # v = u = (e_k + i e_{k+d/2}) / sqrt(2) for eigenvalue alpha + i beta; u^H v = 1.
    pairs = right.shape[1] // 2
    right[:] = 0
    rows = np.arange(right.shape[0])
    scale = 1 / math.sqrt(2)
    right[rows, pair] = scale
    right[rows, pair + pairs] = 1j * scale
    left[:] = right


# -- dense levels: general eigendecomposition ---------------------------------------------------------
def _dense_modes(index: int, info, level, eigenvectors: bool, bar) -> dict:
    matrices = level.matrix.detach().to("cpu", torch.float64)  # [rows, cols, d, d]; (1, 1) when shared
    shared = matrices.shape[0] * matrices.shape[1] == 1 and info.height * info.width > 1
    matrices = matrices.reshape(-1, info.channels, info.channels)
    if not bool(torch.isfinite(matrices).all()):
        raise ValueError(f"level {index} ({info.name}): the dense generator holds NaN or inf values")
    channels = info.channels
    chunk = max(1, DENSE_CHUNK_ELEMENTS // (channels * channels))
    values, keeps, rights, lefts = [], [], [], []
    for start in range(0, matrices.shape[0], chunk):
        batch = matrices[start:start + chunk]
        if eigenvectors:
            eigenvalue, right = torch.linalg.eig(batch)
            inverse, info_code = torch.linalg.inv_ex(right)
            # A defective (non-diagonalisable) matrix has no left eigenvector basis: NaN, not garbage.
            inverse[info_code != 0] = complex("nan+nanj")
            rights.append(right.numpy())
            lefts.append(inverse.conj().resolve_conj().transpose(-1, -2).numpy())  # columns u_i with u_i^H = row i of V^-1
        else:
            eigenvalue = torch.linalg.eigvals(batch)
        eigenvalue = eigenvalue.numpy()
        keeps.append(_conjugate_pair_mask(eigenvalue, index, info.name, start))
        values.append(eigenvalue)
        if bar is not None:
            bar.update(info.height * info.width if shared else batch.shape[0])
    eigenvalue = np.concatenate(values)             # [P, d]
    keep = np.concatenate(keeps)
    real = np.where(keep, eigenvalue.real, -np.inf)
    # Kept entries first, then by real part (largest first), then by imaginary part.
    order = np.lexsort((-eigenvalue.imag, -real, ~keep), axis=-1)
    eigenvalue = np.take_along_axis(eigenvalue, order, axis=-1)
    keep = np.take_along_axis(keep, order, axis=-1)
    if shared:
        positions = info.height * info.width
        eigenvalue = np.broadcast_to(eigenvalue, (positions, channels))
        keep = np.broadcast_to(keep, (positions, channels))
    # Mode order (pair, y, x) like block levels: select in the transposed [d, P] layout.
    selected_pair, selected_position = np.nonzero(keep.T)
    chosen = eigenvalue.T[selected_pair, selected_position]
    part = {
        "level": index, "count": int(selected_pair.size), "max_pair": int(selected_pair.max(initial=0)),
        "pair": selected_pair.astype(np.int32),
        "y": (selected_position // info.width).astype(np.int16),
        "x": (selected_position % info.width).astype(np.int16),
        "alpha": chosen.real,
        "beta": np.abs(chosen.imag),  # real eigenvalues: exactly 0 (no -0.0)
    }
    if eigenvectors:
        right = np.concatenate(rights)
        left = np.concatenate(lefts)
        # Reorder the columns like the eigenvalues, then pick (position, column) for every mode.
        right = np.take_along_axis(right, order[:, None, :], axis=-1)
        left = np.take_along_axis(left, order[:, None, :], axis=-1)
        source = np.zeros_like(selected_position) if shared else selected_position
        part["right"] = right[source, :, selected_pair]
        part["left"] = left[source, :, selected_pair]
    return part


def _conjugate_pair_mask(eigenvalue: np.ndarray, index: int, name: str, offset: int) -> np.ndarray:
    """Which eigenvalues to report: the real ones and the imag > 0 member of each conjugate pair.

    Checks that each complex eigenvalue's conjugate is present (as it must be for a real matrix).
    """
    scale = np.maximum(1.0, np.abs(eigenvalue).max(axis=-1, keepdims=True))
    tolerance = 1e-7 * scale
    upper = eigenvalue.imag > tolerance
    lower = eigenvalue.imag < -tolerance
    real = ~(upper | lower)
    counts_match = upper.sum(-1) == lower.sum(-1)
    # Distance from each upper eigenvalue to the nearest lower one's conjugate.
    distance = np.abs(eigenvalue[:, :, None] - np.conj(eigenvalue[:, None, :]))
    distance = np.where(lower[:, None, :], distance, np.inf).min(axis=-1)
    paired = np.where(upper, distance <= tolerance, True).all(-1)
    bad = np.flatnonzero(~(counts_match & paired))
    if bad.size:
        raise ValueError(f"level {index} ({name}), position {offset + int(bad[0])}: complex eigenvalues do not come "
                         f"in conjugate pairs (tolerance {float(tolerance[bad[0], 0]):.2e}); is the generator real "
                         f"and finite?")
    eigenvalue.imag[real] = 0.0
    return real | upper


# -- helpers ------------------------------------------------------------------------------------------
def _check_step(step) -> float:
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step):
        raise ValueError(f"step must be a finite number, got {step!r}")
    return float(step)


def _level_index(level, names, count) -> int:
    if isinstance(level, str):
        if names is None or level not in names:
            raise KeyError(f"unknown level name {level!r}; levels: {names}")
        return names.index(level)
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be an index or a level name, got {level!r}")
    level = int(level)
    if count is not None and not 0 <= level < count:
        raise IndexError(f"level index {level} out of range (the model has {count} levels)")
    return level


def _select_levels(infos, levels) -> list[int]:
    names = [info.name for info in infos]
    if levels is None:
        return list(range(len(infos)))
    if isinstance(levels, (str, numbers.Integral)):
        levels = [levels]
    selected = sorted({_level_index(level, names, len(names)) for level in levels})
    if not selected:
        raise ValueError("levels is empty")
    return selected


__all__ = ["spectrum", "level_view"]
