"""Faithfulness: does an HKD model's linear latent path follow its teacher, and does it matter?

HKD claims that in its latent space the diffusion trajectory evolves linearly. Along the teacher's own
PF-ODE states x_t (EDM's Karras grid, T first, eps last) this module measures that claim, per sample,
grid time and level, and what the Koopman dynamics add to the one-step sample:

    koopman_error[t, l]   = || exp((s(t) - s(T)) A_l) E_l(x_T, T) - E_l(x_t, t) || / || E_l(x_t, t) ||
    constant_error[t, l]  = || E_l(x_T, T) - E_l(x_t, t) || / || E_l(x_t, t) ||      (the latent kept still)
    consistency_error[t]  = RMS( f(x_t, t) - x_eps )       f = the one-step map, x_eps = the teacher's end
    denoiser_error[t]     = RMS( D(x_t, t) - x_eps )       the teacher's own one-call estimate, for scale

and, in image space, whether a decoded latent shows the teacher's current estimate D(x_t, t) (decode as
every analysis decodes a latent, i.e. `hkdviz.trajectory`'s images; needs a callable teacher):

    readout_error[t]        = RMS( decode(E(x_t, t)) - D(x_t, t) )                  the encoder's own latent
    path_state_error[t]     = RMS( decode(exp((s(t) - s(T)) A) E(x_T, T)) - D(x_t, t) )  the Koopman path
    constant_state_error[t] = RMS( decode(E(x_T, T)) - D(x_t, t) )                   the latent kept still

and per sample the Koopman contribution: the RMS of the one-step sample to the teacher's sample
(both clamped to [-1, 1]) with the learned generators (`sample_rmse`) and with A = 0, i.e. the decoder
reading E(x_T, T) unevolved (`sample_rmse_without_koopman`). A model whose dynamics carry the generation
has koopman_error well below constant_error and a clearly worse sample without them.

`summarize_faithfulness(ds)` reduces a dataset to the headline numbers (`hkdviz eval` prints them).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..model import karras_sigmas
from ..model.hkd import check_seeds
from .storage import provenance_attrs

# The grid time whose errors are quoted as "mid-trajectory" (the Karras grid point nearest it is used).
REFERENCE_SIGMA = 2.0


def _relative(difference: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    difference, reference = difference.double().flatten(1), reference.double().flatten(1)
    return difference.norm(dim=1) / reference.norm(dim=1).clamp_min(1e-12)


def _rms(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (image.double() - target.double()).flatten(1).square().mean(dim=1).sqrt()


@torch.no_grad()
def faithfulness(model, teacher, seeds, num_steps: int = 18, batch_size: int = 16, progress: bool = True) -> xr.Dataset:
    """Faithfulness of `model` to `teacher` on the teacher's PF-ODE states (Karras grid, num_steps steps).

    `teacher`: anything with `states_at(x_T [N, C, H, W], sigmas [K]) -> [N, K, C, H, W]` (the PF-ODE
    states, x_T at sigmas[0] = T) and, optionally, a call `teacher(x, sigma) -> D(x; sigma)` (then
    `denoiser_error` is included). Returns a Dataset with dims (sample, time, level); see the module
    docstring for the variables. Memory stays bounded: `batch_size` trajectories at a time.
    """
    if not all(hasattr(model, name) for name in ("encode", "evolve_between", "decode", "levels")):
        raise TypeError(f"faithfulness expects an HKD model (hkdviz.load / hkdviz.build), got {type(model).__name__}")
    if not callable(getattr(teacher, "states_at", None)):
        raise TypeError(f"teacher must have a states_at(x_T, sigmas) method, got {type(teacher).__name__}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    seeds = check_seeds(seeds)
    eps, T = model.sigma_min, model.sigma_max
    grid = karras_sigmas(num_steps + 1, eps, T, dtype=torch.float64)
    grid[0], grid[-1] = T, eps
    with_denoiser = callable(teacher)
    num_samples, num_times, num_levels = len(seeds), grid.numel(), len(model.levels)

    koopman_error = np.empty((num_samples, num_times, num_levels))
    constant_error = np.empty_like(koopman_error)
    consistency_error = np.empty((num_samples, num_times))
    denoiser_error = np.empty_like(consistency_error) if with_denoiser else None
    state_errors = {name: np.empty_like(consistency_error) for name in ("readout_error", "path_state_error",
                                                                         "constant_state_error")} if with_denoiser else {}
    sample_rmse = np.empty(num_samples)
    sample_rmse_off = np.empty(num_samples)

    device, dtype = model.device, model.dtype
    sigma_column = grid.to(device=device, dtype=torch.float32)
    for start in tqdm(range(0, num_samples, batch_size), desc="faithfulness", disable=not progress):
        chunk = seeds[start:start + batch_size]
        rows = slice(start, start + len(chunk))
        n = len(chunk)
        x_T = model.noise(chunk)
        states = teacher.states_at(x_T, grid).to(device=device, dtype=dtype)  # [n, K, C, H, W]
        if tuple(states.shape) != (n, num_times, *model.image_shape):
            raise ValueError(f"teacher.states_at returned shape {tuple(states.shape)}, expected "
                             f"{[n, num_times, *model.image_shape]}")
        target = states[:, -1]
        flat_states = states.reshape(n * num_times, *model.image_shape)
        flat_sigma = sigma_column.repeat(n)                                       # sample-major, like flat_states
        # The one-step map from every teacher state, with the encoder's latents E(x_t, t) of the same call,
        # in chunks of at most batch_size images.
        parts = [model(flat_states[i:i + batch_size], flat_sigma[i:i + batch_size], return_latents=True)
                 for i in range(0, n * num_times, batch_size)]
        predictions = torch.cat([prediction for prediction, _ in parts])
        encoded = [torch.cat(level_parts).reshape(n, num_times, *level_parts[0].shape[1:])
                   for level_parts in zip(*(latents for _, latents in parts))]
        z_T = [latent[:, 0] for latent in encoded]
        path = model.evolve_between(z_T, T, grid.reshape(-1, 1))                  # [K, n, d, h, w]
        for level, (own, linear) in enumerate(zip(encoded, path)):
            own_flat = own.reshape(n * num_times, -1)
            linear_flat = linear.transpose(0, 1).reshape(n * num_times, -1)
            still_flat = z_T[level].unsqueeze(1).expand_as(own).reshape(n * num_times, -1)
            koopman_error[rows, :, level] = _relative(linear_flat - own_flat, own_flat).reshape(n, num_times).cpu().numpy()
            constant_error[rows, :, level] = _relative(still_flat - own_flat, own_flat).reshape(n, num_times).cpu().numpy()
        flat_target = target.unsqueeze(1).expand(n, num_times, *target.shape[1:]).reshape_as(predictions)
        consistency_error[rows] = _rms(predictions, flat_target).reshape(n, num_times).cpu().numpy()
        if with_denoiser:
            denoised = torch.cat([teacher(flat_states[i:i + batch_size], flat_sigma[i:i + batch_size])
                                  for i in range(0, n * num_times, batch_size)])
            denoiser_error[rows] = _rms(denoised.to(flat_target.dtype), flat_target).reshape(n, num_times).cpu().numpy()
            denoised = denoised.to(dtype).reshape(n, num_times, *model.image_shape)
            own_latents = [latent.reshape(n * num_times, *latent.shape[2:]) for latent in encoded]
            path_latents = [latent.transpose(0, 1).reshape(n * num_times, *latent.shape[2:]) for latent in path]
            for name, latents in (("readout_error", own_latents), ("path_state_error", path_latents)):
                decoded = torch.cat([model.decode([latent[i:i + batch_size] for latent in latents])
                                     for i in range(0, n * num_times, batch_size)])
                state_errors[name][rows] = _rms(decoded, denoised.reshape_as(decoded)).reshape(n, num_times).cpu().numpy()
            still = model.decode(z_T).unsqueeze(1).expand_as(denoised)
            state_errors["constant_state_error"][rows] = _rms(still.reshape(n * num_times, *model.image_shape),
                                                              denoised.reshape(n * num_times, *model.image_shape)
                                                              ).reshape(n, num_times).cpu().numpy()
        # Koopman contribution: the sample with its dynamics against the decoder reading z_T unevolved (A = 0).
        reference = target.float().clamp(-1, 1)
        with_koopman = predictions.reshape(n, num_times, *model.image_shape)[:, 0].float().clamp(-1, 1)
        without = model.decode(z_T, x_t=x_T.to(dtype), sigma=T).float().clamp(-1, 1)
        sample_rmse[rows] = _rms(with_koopman, reference).cpu().numpy()
        sample_rmse_off[rows] = _rms(without, reference).cpu().numpy()

    infos = model.levels
    variables = {
        "koopman_error": (("sample", "time", "level"), koopman_error,
                          {"long_name": "||exp((s(t) - s(T)) A) E(x_T, T) - E(x_t, t)|| / ||E(x_t, t)||"}),
        "constant_error": (("sample", "time", "level"), constant_error,
                           {"long_name": "||E(x_T, T) - E(x_t, t)|| / ||E(x_t, t)|| (latent kept constant)"}),
        "consistency_error": (("sample", "time"), consistency_error,
                              {"long_name": "RMS(f(x_t, t) - x_eps), one-step map from the teacher's state"}),
        "sample_rmse": (("sample",), sample_rmse, {"long_name": "RMS(clamp f(x_T, T) - clamp x_eps)"}),
        "sample_rmse_without_koopman": (("sample",), sample_rmse_off,
                                        {"long_name": "RMS(clamp D(E(x_T, T)) - clamp x_eps): generators at zero"}),
    }
    if with_denoiser:
        variables["denoiser_error"] = (("sample", "time"), denoiser_error,
                                       {"long_name": "RMS(D_teacher(x_t, t) - x_eps)"})
        long_names = {"readout_error": "RMS(decode(E(x_t, t)) - D_teacher(x_t, t))",
                      "path_state_error": "RMS(decode(exp((s(t) - s(T)) A) E(x_T, T)) - D_teacher(x_t, t))",
                      "constant_state_error": "RMS(decode(E(x_T, T)) - D_teacher(x_t, t))"}
        for name, values in state_errors.items():
            variables[name] = (("sample", "time"), values, {"long_name": long_names[name]})
    coords = {
        "sample": np.arange(num_samples),
        "seed": ("sample", np.asarray(seeds, dtype=np.int64)),
        "time": ("time", grid.numpy(), {"long_name": "sigma (EDM time t), T first"}),
        "level": np.arange(num_levels),
        "level_name": ("level", np.array([info.name for info in infos], dtype=object)),
    }
    attrs = provenance_attrs(model, analysis="faithfulness", seeds=seeds, num_steps=int(num_steps),
                             koopman_time=model.koopman_time_kind, output=model.output,
                             teacher_checkpoint_sha256=getattr(teacher, "checkpoint_sha256", None) or "")
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def summarize_faithfulness(ds: xr.Dataset, reference_sigma: float = REFERENCE_SIGMA) -> dict:
    """Headline numbers of a faithfulness dataset (sample means first, then over levels and times).

    - koopman_beats_constant: fraction of (level, grid time) pairs, T excluded (both errors are 0 there),
      where the mean Koopman error is below the mean constant-latent error;
    - koopman_error_median_at / constant_error_median_at: median over levels at the grid time nearest
      `reference_sigma` (reported as reference_time);
    - consistency_error_mean: the one-step map's RMS to x_eps averaged over samples and grid times;
    - sample_rmse, sample_rmse_without_koopman and koopman_contribution = their ratio - 1 (how much worse
      the sample gets with A = 0);
    - with a callable teacher, denoiser_error_mean and readout_error_mean / path_state_error_mean /
      constant_state_error_mean (grid times after T): how far decoded latents are from D(x_t, t).
    """
    koopman = ds["koopman_error"].mean("sample")
    constant = ds["constant_error"].mean("sample")
    inner = ds["time"] < ds["time"].values[0]
    beats = (koopman.where(inner, drop=True) < constant.where(inner, drop=True))
    nearest = int(np.abs(np.log(ds["time"].values) - np.log(reference_sigma)).argmin())
    with_koopman = float(ds["sample_rmse"].mean())
    without = float(ds["sample_rmse_without_koopman"].mean())
    summary = {
        "koopman_beats_constant": float(beats.mean()),
        "reference_time": float(ds["time"].values[nearest]),
        "koopman_error_median_at": float(koopman.isel(time=nearest).median()),
        "constant_error_median_at": float(constant.isel(time=nearest).median()),
        "consistency_error_mean": float(ds["consistency_error"].mean()),
        "consistency_error_at_T": float(ds["consistency_error"].isel(time=0).mean()),
        "sample_rmse": with_koopman,
        "sample_rmse_without_koopman": without,
        "koopman_contribution": without / with_koopman - 1 if with_koopman > 0 else float("nan"),
        "num_samples": int(ds.sizes["sample"]),
    }
    if "denoiser_error" in ds:
        summary["denoiser_error_mean"] = float(ds["denoiser_error"].mean())
    for name in ("readout_error", "path_state_error", "constant_state_error"):
        if name in ds:  # mean over samples and the grid times after T
            summary[f"{name}_mean"] = float(ds[name].where(inner, drop=True).mean())
    return summary


__all__ = ["faithfulness", "summarize_faithfulness", "REFERENCE_SIGMA"]
