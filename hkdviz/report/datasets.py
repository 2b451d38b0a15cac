"""Compute and save the netCDF datasets the figures are drawn from (one file per analysis).

Every file is written with `analysis.storage.save_dataset` (h5netcdf, provenance attrs) into the
data directory; the figures are then drawn from the files alone (`hkdviz figures --data DIR`).

    file                    from                                            dims of the main variable
    spectrum.nc             analysis.spectrum.spectrum                      alpha, beta (mode)
    trajectory.nc           analysis.trajectory.trajectory (+ teacher)      image (sample, time, channel, y, x)
    band_decodes.nc         interventions.spectral_masking                  image (band, sample, channel, y, x)
    band_spectra.nc         edit_metrics.band_spectra                       power (band, frequency)
    cumulative_effect.nc    interventions.cumulative_effect                 effect_share (band, time)
    editing_sweep.nc        editing.editing_sweep                           image (method, ratio, sample, ...)
    editing_metrics.nc      edit_metrics.editing_report                     lowpass_mse (method, ratio)
    zero_shot.nc            editing.inpaint + editing.colorize              image (stage, sample, channel, y, x)
    samples.nc              model.sample + teacher.sample (35/5/1 NFE)      image (method, sample, channel, y, x)
    faithfulness.nc         analysis.faithfulness (needs a teacher)         koopman_error (sample, time, level)
    lens.nc                 analysis.lens (needs a teacher)                 fit_residual (fit_level, transition)

An analysis whose module is missing or fails is skipped with its reason (the figures needing it are
skipped too); the rest still runs.
"""
from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr

# Sizes of the default run: small enough for 2 CPU cores with the tiny model, enough to read a figure.
DEFAULTS = {
    "sample_seeds": list(range(8)),         # samples.nc: one-step vs teacher
    "band_seeds": list(range(4)),           # band_decodes.nc (paper Fig. 4 rows), band_spectra.nc
    "trajectory_seeds": list(range(3)),
    "times": 16,                            # trajectory and cumulative-effect time points
    "effect_seeds": list(range(8)),
    "edit_seeds": list(range(2)),           # editing sweep rows (x2 methods)
    "edit_ratios": [0.0, 0.1, 0.2, 0.5, 0.8, 0.9],   # paper Fig. 5: 10/20/50/80/90 % (+ the original)
    "reference_seed": 1000,                 # the editing reference is the model's sample for this seed
    "zero_shot_seeds": [100, 101, 102],     # images to inpaint / colorize (the model's own samples)
    "teacher_steps": [18, 3, 1],            # Heun steps = 35 / 5 / 1 NFE
    "faithfulness_seeds": list(range(8)),   # teacher PF-ODE trajectories (EDM's 18-step grid)
    "lens_seeds": 8, "lens_held_out": 4,    # the Koopman lens of the teacher's own features (18-step grid)
}

# --quick: the same files from fewer seeds and time points (tests, a first look on a slow machine).
QUICK = {
    "sample_seeds": [0, 1, 2], "band_seeds": [0, 1], "trajectory_seeds": [0], "times": 6, "effect_seeds": [0, 1],
    "edit_seeds": [0], "zero_shot_seeds": [100], "faithfulness_seeds": [0, 1], "lens_seeds": 2, "lens_held_out": 1,
}

FILES = {
    "spectrum": "spectrum.nc", "trajectory": "trajectory.nc", "band_decodes": "band_decodes.nc",
    "band_spectra": "band_spectra.nc", "cumulative_effect": "cumulative_effect.nc",
    "editing_sweep": "editing_sweep.nc", "editing_metrics": "editing_metrics.nc", "zero_shot": "zero_shot.nc",
    "samples": "samples.nc", "faithfulness": "faithfulness.nc", "lens": "lens.nc",
}


@dataclass
class Outcome:
    name: str
    path: Path | None
    seconds: float
    skipped: str | None = None   # the reason, when the dataset could not be made
    details: dict = field(default_factory=dict)


def _function(module: str, name: str):
    """An analysis function, or ImportError/AttributeError naming what is missing."""
    return getattr(importlib.import_module(f"hkdviz.analysis.{module}"), name)


def _reference(model, settings) -> torch.Tensor:
    return model.sample([settings["reference_seed"]])[0]


def _spectrum(model, teacher, settings):
    return _function("spectrum", "spectrum")(model, progress=False)


def _trajectory(model, teacher, settings):
    trajectory = _function("trajectory", "trajectory")
    return trajectory(model, settings["trajectory_seeds"], times=settings["times"], teacher=teacher, progress=False)


def _band_decodes(model, teacher, settings):
    masking = _function("interventions", "spectral_masking")
    return masking(model, settings["band_seeds"], ("smallest", "intermediate", "largest", "all"))


def _band_spectra(model, teacher, settings):
    return _function("edit_metrics", "band_spectra")(model, settings["band_seeds"])


def _cumulative_effect(model, teacher, settings):
    effect = _function("interventions", "cumulative_effect")
    return effect(model, settings["effect_seeds"], times=settings["times"], progress=False)


def _editing_sweep(model, teacher, settings):
    sweep = _function("editing", "editing_sweep")
    return sweep(model, settings["edit_seeds"], _reference(model, settings), ratios=settings["edit_ratios"])


def _editing_metrics(model, teacher, settings):
    report = _function("edit_metrics", "editing_report")
    return report(model, settings["edit_seeds"], _reference(model, settings), ratios=settings["edit_ratios"])


def _zero_shot(model, teacher, settings):
    """Inpaint a centred square and colorize the grayscale version of the model's own samples."""
    inpaint = _function("editing", "inpaint")
    colorize = _function("editing", "colorize")
    from hkdviz.analysis.storage import provenance_attrs
    seeds = settings["zero_shot_seeds"]
    originals = model.sample(seeds)
    channels, height, width = model.image_shape
    hole = torch.zeros(height, width)
    hole[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
    masked = originals * (1 - hole.to(originals.device))        # the hole shows as mid-gray (0)
    stages = {"original": originals, "masked": masked, "inpainted": inpaint(model, originals, hole)}
    if channels == 3:
        weights = torch.tensor([0.2989, 0.5870, 0.1140], device=originals.device).reshape(1, 3, 1, 1)
        gray = (originals * weights).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        stages.update({"grayscale": gray, "colorized": colorize(model, gray)})
    image = torch.stack([stage.float().cpu() for stage in stages.values()]).numpy()
    return xr.Dataset(
        {"image": (("stage", "sample", "channel", "y", "x"), image), "hole": (("y", "x"), hole.numpy())},
        coords={"stage": list(stages), "sample": np.asarray(seeds), "channel": np.arange(channels),
                "y": np.arange(height), "x": np.arange(width)},
        attrs=provenance_attrs(model, analysis="zero_shot", seeds=seeds,
                               edits=[{"type": "inpaint", "mask": "centre square, half the side"},
                                      {"type": "colorize"}]))


def _samples(model, teacher, settings):
    """One-step HKD samples, and the teacher's at 35/5/1 NFE for the same seeds (same noise)."""
    from hkdviz.analysis.storage import provenance_attrs
    seeds = settings["sample_seeds"]
    methods = {"HKD, 1 NFE": model.sample(seeds)}
    if teacher is not None:
        for steps in settings["teacher_steps"]:
            methods[f"teacher, {2 * steps - 1} NFE"] = teacher.sample(seeds, num_steps=steps, progress=False)
    channels, height, width = model.image_shape
    image = torch.stack([images.float().cpu() for images in methods.values()]).numpy()
    return xr.Dataset(
        {"image": (("method", "sample", "channel", "y", "x"), image)},
        coords={"method": list(methods), "sample": np.asarray(seeds), "channel": np.arange(channels),
                "y": np.arange(height), "x": np.arange(width)},
        attrs=provenance_attrs(model, analysis="samples", seeds=seeds,
                               teacher=getattr(teacher, "checkpoint_path", None) or "",
                               teacher_steps=settings["teacher_steps"] if teacher is not None else []))


def _faithfulness(model, teacher, settings):
    if teacher is None:
        raise ValueError("faithfulness needs the model's teacher (none was found beside the checkpoint)")
    faithfulness = _function("faithfulness", "faithfulness")
    return faithfulness(model, teacher, settings["faithfulness_seeds"], progress=False)


def _lens(model, teacher, settings):
    """The teacher's own features fitted in the model's Koopman time (so the spectra compare)."""
    if teacher is None:
        raise ValueError("the Koopman lens reads the model's teacher (none was found beside the checkpoint)")
    lens = _function("lens", "lens")
    seeds = int(settings["lens_seeds"])
    held_out = list(range(seeds, seeds + int(settings["lens_held_out"])))
    return lens(teacher, seeds=seeds, held_out_seeds=held_out, time=getattr(model, "koopman_time_kind", "sigma"),
                progress=False)


STEPS = {
    "spectrum": _spectrum, "trajectory": _trajectory, "band_decodes": _band_decodes, "band_spectra": _band_spectra,
    "cumulative_effect": _cumulative_effect, "editing_sweep": _editing_sweep, "editing_metrics": _editing_metrics,
    "zero_shot": _zero_shot, "samples": _samples, "faithfulness": _faithfulness, "lens": _lens,
}


def compute_dataset(name: str, model, directory, teacher=None, settings: dict | None = None) -> Outcome:
    """Compute one dataset and save it as directory/FILES[name]; failures become a skipped Outcome."""
    from hkdviz.analysis.storage import save_dataset
    if name not in STEPS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(STEPS)}")
    settings = {**DEFAULTS, **(settings or {})}
    path = Path(directory) / FILES[name]
    start = time.perf_counter()
    try:
        with torch.no_grad():
            dataset = STEPS[name](model, teacher, settings)
        save_dataset(dataset, path)
    except (ImportError, AttributeError) as error:
        return Outcome(name, None, time.perf_counter() - start, f"analysis code not available ({error})")
    except Exception as error:  # noqa: BLE001 - one failing analysis must not stop the report
        where = traceback.extract_tb(error.__traceback__)[-1]
        return Outcome(name, None, time.perf_counter() - start,
                       f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})")
    return Outcome(name, path, time.perf_counter() - start)


__all__ = ["DEFAULTS", "QUICK", "FILES", "STEPS", "Outcome", "compute_dataset"]
