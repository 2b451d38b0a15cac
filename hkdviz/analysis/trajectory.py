"""Koopman trajectories as xarray: the state of every level at many times, decoded to images.

From the noise x_T the encoder gives z_T = E(x_T, T); the Koopman state at sigma t is
z_t = exp((s(t) - s(T)) A) z_T (s = the model's Koopman time), computed for all times in one broadcast
(`model.evolve_between` with target sigmas of shape [K, 1]). Decoding z_t (with x_T as the consistency
head's skip input) gives what the model "sees" at t; at t = eps it is the one-step sample (the semigroup
law). A teacher, when given, supplies the PF-ODE
states x_t at the same sigmas; E(x_t, t) vs z_t then measures latent consistency.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
import xarray as xr

from ..model import karras_sigmas
from ..model.hkd import check_seeds
from .storage import provenance_attrs

# Explicit times within this relative distance of eps or T (float rounding) are snapped onto them.
TIME_TOLERANCE = 1e-6


def time_grid(model, times) -> np.ndarray:
    """Sigma values for a trajectory, float64, strictly decreasing, within [eps, T].

    `times` is an int K >= 2 (EDM's Karras grid, rho = 7, T first and eps last) or a 1-D sequence
    of sigma values (list, numpy array or tensor).
    """
    eps, T = model.sigma_min, model.sigma_max
    if isinstance(times, bool):
        raise TypeError("times must be a number of time points or a 1-D array of sigma values, got a bool")
    if isinstance(times, numbers.Integral):
        if times < 2:
            raise ValueError(f"times must be >= 2 (the grid runs from T = {T:g} to eps = {eps:g}), got {times}; "
                             f"pass an explicit array such as [{T:g}] for a single time")
        grid = karras_sigmas(int(times), eps, T, dtype=torch.float64).numpy().copy()
        grid[0], grid[-1] = T, eps  # exact ends despite the rho-power round trip
        return grid
    if isinstance(times, (str, bytes)) or isinstance(times, numbers.Number):
        raise TypeError(f"times must be an int (number of time points) or a 1-D array of sigma values, got {times!r}")
    if isinstance(times, torch.Tensor):
        times = times.detach().cpu().numpy()
    try:
        grid = np.array(times, dtype=np.float64)  # a copy: the ends are snapped in place below
    except (TypeError, ValueError):
        raise TypeError(f"times must be an int or a 1-D array of sigma values, got {type(times).__name__}") from None
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"times must be a non-empty 1-D array of sigma values, got shape {grid.shape}")
    if not np.isfinite(grid).all():
        raise ValueError("times contains NaN or inf")
    low, high = eps * (1 - TIME_TOLERANCE), T * (1 + TIME_TOLERANCE)
    outside = grid[(grid < low) | (grid > high)]
    if outside.size:
        raise ValueError(f"times must lie in [eps, T] = [{eps:g}, {T:g}]; got {outside[:5].tolist()}")
    # Snap values that are the ends up to rounding (e.g. float32 sigmas) onto exactly eps and T.
    grid[np.abs(grid - eps) <= eps * TIME_TOLERANCE] = eps
    grid[np.abs(grid - T) <= T * TIME_TOLERANCE] = T
    if not (np.diff(grid) < 0).all():
        raise ValueError("times must be strictly decreasing (T first, eps last), like the diffusion trajectory")
    return grid


@torch.no_grad()
def trajectory(model, seeds, times=16, teacher=None, latents: bool = False, batch_size: int = 64,
               progress: bool = True) -> xr.Dataset:
    """Decoded Koopman states of `model` over time for the noise of each seed.

    Variables: `image` (sample, time, channel, y, x) = clamp(D(z_t), -1, 1); `energy`
    (sample, time, level) = mean square of each level's latent; with latents=True also
    `latent_<level name>` (sample, time, <name>_channel, <name>_y, <name>_x). With a teacher
    (any object with `states_at(x_T [N,C,H,W], sigmas [K]) -> [N, K, C, H, W]`, the PF-ODE states
    from x_T at sigmas[0] = T): `teacher_image` (sample, time, channel, y, x),
    `latent_consistency` (sample, time, level) = ||E(x_t, t) - z_t|| / ||z_t||, and the faithfulness
    pair `koopman_error` = ||z_t - E(x_t, t)|| / ||E(x_t, t)|| and `constant_error` = ||z_T - E(x_t, t)|| /
    ||E(x_t, t)|| (the same measures as hkdviz.analysis.faithfulness, on this trajectory's grid).
    Coordinates: `sample` (0..N-1) with its `seed`, `time` (sigma), `level` with `level_name`.
    Memory stays bounded: at most `batch_size` sample-times are evolved and decoded at once.
    """
    if not all(hasattr(model, name) for name in ("encode", "evolve", "decode", "levels")):
        raise TypeError(f"trajectory expects an HKD model (hkdviz.load / hkdviz.build), got {type(model).__name__}")
    seeds = check_seeds(seeds)
    grid = time_grid(model, times)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if teacher is not None and not callable(getattr(teacher, "states_at", None)):
        raise TypeError(f"teacher must have a states_at(x_T, sigmas) method, got {type(teacher).__name__}")
    device, T = model.device, model.sigma_max
    infos = model.levels
    num_samples, num_times, num_levels = len(seeds), grid.size, len(infos)
    channels, height, width = model.image_shape

    image = np.empty((num_samples, num_times, channels, height, width), np.float32)
    energy = np.empty((num_samples, num_times, num_levels), np.float32)
    latent_arrays = ([np.empty((num_samples, num_times, info.channels, info.height, info.width), np.float32)
                      for info in infos] if latents else None)
    if teacher is not None:
        consistency = np.empty_like(energy)
        koopman_error = np.empty_like(energy)
        constant_error = np.empty_like(energy)
        teacher_image = _teacher_images(model, teacher, seeds, grid, batch_size)

    # K <= batch_size: whole samples per chunk, so all times of a sample are one evolve broadcast.
    samples_per_chunk = max(1, batch_size // num_times)
    times_per_chunk = min(num_times, batch_size)
    targets_all = torch.as_tensor(grid, dtype=torch.float64)
    sigma_all = torch.as_tensor(grid, dtype=torch.float32, device=device)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_samples * num_times, desc="trajectory", unit="state")
    try:
        for sample_start in range(0, num_samples, samples_per_chunk):
            chunk_seeds = seeds[sample_start:sample_start + samples_per_chunk]
            rows = slice(sample_start, sample_start + len(chunk_seeds))
            x_T = model.noise(chunk_seeds)
            z_T = model.encode(x_T.to(model.dtype), T)
            for time_start in range(0, num_times, times_per_chunk):
                columns = slice(time_start, time_start + times_per_chunk)
                k = min(times_per_chunk, num_times - time_start)
                z_t = model.evolve_between(z_T, T, targets_all[columns].reshape(k, 1))  # each [k, n, d, h, w]
                decoded = model.decode(z_t, x_t=x_T).float().clamp(-1, 1)              # [k, n, C, H, W]
                image[rows, columns] = decoded.transpose(0, 1).cpu().numpy()
                for index, latent in enumerate(z_t):
                    latent = latent.float()
                    energy[rows, columns, index] = latent.square().mean(dim=(-3, -2, -1)).T.cpu().numpy()
                    if latents:
                        latent_arrays[index][rows, columns] = latent.transpose(0, 1).cpu().numpy()
                if teacher is not None:
                    states_t = torch.from_numpy(teacher_image[rows, columns]).to(device=device, dtype=model.dtype)
                    n = states_t.shape[0]
                    sigma = sigma_all[columns].expand(n, k).reshape(-1)
                    encoded = model.encode(states_t.reshape(n * k, *model.image_shape), sigma)
                    for index, (teacher_latent, latent) in enumerate(zip(encoded, z_t)):
                        latent = latent.float().transpose(0, 1).reshape(n * k, -1)
                        own = teacher_latent.float().reshape(n * k, -1)
                        still = z_T[index].float().reshape(n, 1, -1).expand(n, k, -1).reshape(n * k, -1)
                        difference = own - latent
                        own_norm = own.norm(dim=1).clamp_min(1e-12)
                        ratio = difference.norm(dim=1) / latent.norm(dim=1).clamp_min(1e-12)
                        consistency[rows, columns, index] = ratio.reshape(n, k).cpu().numpy()
                        koopman_error[rows, columns, index] = (difference.norm(dim=1) / own_norm).reshape(n, k).cpu().numpy()
                        constant_error[rows, columns, index] = ((own - still).norm(dim=1) / own_norm).reshape(n, k).cpu().numpy()
                if bar is not None:
                    bar.update(len(chunk_seeds) * k)
    finally:
        if bar is not None:
            bar.close()

    variables = {
        "image": (("sample", "time", "channel", "y", "x"), image,
                  {"long_name": "decoded Koopman state clamp(D(z_t), -1, 1)"}),
        "energy": (("sample", "time", "level"), energy, {"long_name": "mean square latent per level"}),
    }
    if latents:
        for info, array in zip(infos, latent_arrays):
            dims = ("sample", "time", f"{info.name}_channel", f"{info.name}_y", f"{info.name}_x")
            variables[f"latent_{info.name}"] = (dims, array, {"long_name": f"Koopman state z_t of level {info.index}"})
    if teacher is not None:
        variables["teacher_image"] = (("sample", "time", "channel", "y", "x"), teacher_image,
                                      {"long_name": "teacher PF-ODE state x_t"})
        variables["latent_consistency"] = (("sample", "time", "level"), consistency,
                                           {"long_name": "||E(x_t, t) - z_t|| / ||z_t|| per level"})
        # The faithfulness measures (analysis.faithfulness), relative to the encoder's own latents.
        variables["koopman_error"] = (("sample", "time", "level"), koopman_error,
                                      {"long_name": "||z_t - E(x_t, t)|| / ||E(x_t, t)|| (Koopman path)"})
        variables["constant_error"] = (("sample", "time", "level"), constant_error,
                                       {"long_name": "||z_T - E(x_t, t)|| / ||E(x_t, t)|| (latent kept constant)"})
    coords = {
        "sample": np.arange(num_samples),
        "seed": ("sample", np.asarray(seeds, dtype=np.int64)),
        "time": ("time", grid, {"long_name": "sigma (EDM time t)"}),
        "channel": np.arange(channels),
        "y": np.arange(height),
        "x": np.arange(width),
        "level": np.arange(num_levels),
        "level_name": ("level", np.array([info.name for info in infos], dtype=object)),
    }
    attrs = provenance_attrs(model, seeds=seeds)
    attrs.update({"sigma_min": model.sigma_min, "sigma_max": T, "teacher": type(teacher).__name__ if teacher else ""})
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _teacher_images(model, teacher, seeds: list[int], grid: np.ndarray, batch_size: int) -> np.ndarray:
    """Teacher states [N, K, C, H, W] at the grid's sigmas, `batch_size` samples per teacher call.

    They are computed up front (they are part of the output anyway) so an expensive teacher sees
    full batches whatever the number of times.
    """
    T = model.sigma_max
    # The teacher starts at T; ask for T too when the grid does not begin there, and drop it after.
    sigmas = grid if grid[0] == T else np.concatenate([[T], grid])
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=model.device)
    images = np.empty((len(seeds), grid.size, *model.image_shape), np.float32)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start:start + batch_size]
        states = teacher.states_at(model.noise(chunk), sigmas)
        expected = (len(chunk), sigmas.numel(), *model.image_shape)
        if not isinstance(states, torch.Tensor) or tuple(states.shape) != expected:
            shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
            raise ValueError(f"teacher.states_at must return a tensor of shape [N, K, C, H, W] = {list(expected)}, "
                             f"got {shape}")
        if not bool(torch.isfinite(states).all()):
            raise ValueError("teacher.states_at returned NaN or inf values")
        images[start:start + len(chunk)] = states[:, -grid.size:].float().cpu().numpy()
    return images


__all__ = ["time_grid", "trajectory"]
