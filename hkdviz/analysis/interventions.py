"""Interventions on Koopman latents: pure edits, a scoped context manager, spectral masking, cumulative effect.

An `Intervention` edits a list of per-level latents inside a selection M = band mask x region mask
(values in [0, 1], `bands.selection_masks`):

- `Mask(band)`: keep the band, zero the rest:                z' = M z
- `Gain(band, gain)`: scale the band:                          z' = (1 + (g - 1) M) z
- `PhaseRotation(band, angle, gain)`: rotate each pair w = u + i v inside the band:
                                                               w' = (1 + M (g e^{i phi} - 1)) w
- `Mix(band, other, ratio)`: move towards other latents:      z' = z + r M (other - z)

All of them act per mode and identically on a pair's two channels, so they commute with block Koopman
evolution: editing z_t and then evolving equals evolving and then editing (Mix needs `other` evolved too).

`apply(latents, interventions)` is a pure function (interventions need their masks: call
`.resolve(model)` first or pass `model=`). `intervene(model, *interventions, at="decode")` patches
`model.decode` (at="decode": edit the evolved latents z_eps) or `model.evolve` (at="latent": edit the
latents z_t before they are evolved) for the duration of a `with` block and always restores the model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..model.hkd import check_batch_size, check_seeds, sigma_tensor
from .bands import Band, as_band, band_for_model, band_masks, kept_fraction, selection_masks
from .storage import provenance_attrs
from .trajectory import time_grid


# -- interventions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Intervention:
    """Base: an edit inside `band` x `region`. `masks` holds the resolved per-level masks (see resolve)."""

    band: object = "all"
    region: object = "all"
    masks: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "band", as_band(self.band))

    def resolve(self, model, device=None, dtype=torch.float32) -> "Intervention":
        """A copy holding this intervention's masks for `model` (computed once, reused by apply), with its
        band's aliases read for `model` (bands.band_for_model)."""
        band = band_for_model(model, self.band)
        masks = selection_masks(model, band, self.region, device=device, dtype=dtype)
        return dataclasses.replace(self, band=band, masks=tuple(masks))

    def edit(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def to_dict(self) -> dict:
        data = {"type": type(self).__name__, "band": self.band.to_dict()}
        region = self.region
        data["region"] = region if isinstance(region, str) else f"tensor{list(region.shape)}"
        for item in dataclasses.fields(self):
            if item.name not in ("band", "region", "masks", "other"):
                data[item.name] = getattr(self, item.name)
        return data

    def _masks(self, latents) -> tuple:
        if self.masks is None:
            raise ValueError(f"{type(self).__name__} has no masks: call .resolve(model) or pass model= to apply()")
        if len(self.masks) != len(latents):
            raise ValueError(f"{type(self).__name__} was resolved for {len(self.masks)} levels, got {len(latents)} latents")
        return tuple(mask.to(device=latent.device, dtype=latent.dtype) for mask, latent in zip(self.masks, latents))


@dataclass(frozen=True)
class Mask(Intervention):
    """Keep the selection, zero everything else."""

    def edit(self, latents):
        return [latent * mask for latent, mask in zip(latents, self._masks(latents))]


@dataclass(frozen=True)
class Gain(Intervention):
    """Multiply the selection by `gain` (0 removes it, 1 is the identity)."""

    gain: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "gain", _finite(self.gain, "gain"))

    def edit(self, latents):
        return [latent * (1 + (self.gain - 1) * mask) for latent, mask in zip(latents, self._masks(latents))]


@dataclass(frozen=True)
class PhaseRotation(Intervention):
    """Multiply every pair w = u + i v in the selection by gain * e^{i angle} (angle in radians)."""

    angle: float = 0.0
    gain: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "angle", _finite(self.angle, "angle"))
        object.__setattr__(self, "gain", _finite(self.gain, "gain"))

    def edit(self, latents):
        out = []
        real, imaginary = self.gain * math.cos(self.angle) - 1, self.gain * math.sin(self.angle)
        for latent, mask in zip(latents, self._masks(latents)):
            pairs = latent.shape[-3] // 2
            u, v = latent.split(pairs, dim=-3)
            m = mask[:pairs]  # the same on both channels of a pair
            # w' = (1 + m (c - 1)) w with c = g e^{i phi}: factor = (1 + m (Re c - 1)) + i m Im c.
            a, b = 1 + m * real, m * imaginary
            out.append(torch.cat([a * u - b * v, b * u + a * v], dim=-3))
        return out


@dataclass(frozen=True)
class Mix(Intervention):
    """z + ratio * M (other - z): move the selection towards `other` latents (broadcastable per level)."""

    other: tuple = dataclasses.field(default=(), repr=False, compare=False)
    ratio: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "other", tuple(self.other))
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        for level, other in enumerate(self.other):
            if not isinstance(other, torch.Tensor) or not other.is_floating_point():
                raise TypeError(f"Mix: other latent of level {level} must be a floating-point tensor, got "
                                f"{getattr(other, 'dtype', type(other).__name__)}")
            if not bool(torch.isfinite(other).all()):
                raise ValueError(f"Mix: other latent of level {level} contains NaN or infinite values")

    def edit(self, latents):
        if len(self.other) != len(latents):
            raise ValueError(f"Mix needs one `other` latent per level ({len(latents)}), got {len(self.other)}")
        return [latent + self.ratio * mask * (other.to(latent.dtype) - latent)
                for latent, mask, other in zip(latents, self._masks(latents), self.other)]

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["other"] = [list(latent.shape) for latent in self.other]
        return data


def _finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_ratio(ratio) -> float:
    ratio = _finite(ratio, "ratio")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    return ratio


def apply(latents: Sequence[torch.Tensor], interventions: Sequence[Intervention], model=None) -> list[torch.Tensor]:
    """Apply interventions in order to per-level latents ([..., d, h, w]; any leading dims). Pure: the
    inputs are not modified. Interventions without masks are resolved against `model`."""
    latents = list(latents)
    for intervention in interventions:
        if not isinstance(intervention, Intervention):
            raise TypeError(f"interventions must be Intervention values, got {type(intervention).__name__}")
        if intervention.masks is None and model is not None:
            intervention = intervention.resolve(model, device=latents[0].device)
        latents = intervention.edit(latents)
    return latents


def describe(interventions: Sequence[Intervention]) -> str:
    """The interventions as a JSON string (for dataset attrs)."""
    return json.dumps([intervention.to_dict() for intervention in interventions], sort_keys=True)


PATCH_POINTS = {"decode": "decode", "latent": "evolve"}


@contextlib.contextmanager
def intervene(model, *interventions: Intervention, at: str = "decode"):
    """Scope interventions to a `with` block; the model is restored on exit, exceptions included.

        with intervene(model, Gain("high", 2.0)):
            images = model.sample([0, 1])

    at="decode" edits the latents entering `model.decode` (the evolved z_eps in model.sample);
    at="latent" edits the latents entering `model.evolve` (z_t before evolution). Nested scopes stack.
    """
    if at not in PATCH_POINTS:
        raise ValueError(f"at must be one of {sorted(PATCH_POINTS)}, got {at!r}")
    for intervention in interventions:
        if not isinstance(intervention, Intervention):
            raise TypeError(f"interventions must be Intervention values, got {type(intervention).__name__}")
    resolved = [intervention.resolve(model) if intervention.masks is None else intervention
                for intervention in interventions]
    name = PATCH_POINTS[at]
    shadowed = name in model.__dict__
    previous = model.__dict__.get(name)
    original = getattr(model, name)

    def patched(latents, *args, **kwargs):
        return original(apply(latents, resolved), *args, **kwargs)

    object.__setattr__(model, name, patched)
    try:
        yield model
    finally:
        if shadowed:
            object.__setattr__(model, name, previous)
        else:
            object.__delattr__(model, name)


# -- shared helpers ----------------------------------------------------------------------------------
def check_time(model, time, name: str = "time") -> float:
    if isinstance(time, bool) or not isinstance(time, numbers.Real):
        raise TypeError(f"{name} must be a number in [{model.sigma_min}, {model.sigma_max}], got {time!r}")
    time = float(time)
    if not model.sigma_min <= time <= model.sigma_max:
        raise ValueError(f"{name} must lie in [eps, T] = [{model.sigma_min}, {model.sigma_max}], got {time}")
    return time


def check_bands(bands, model=None) -> list[Band]:
    """Bands as a list of distinct Bands; with `model`, their aliases read for it (band_for_model)."""
    if isinstance(bands, (str, Band, dict)):
        bands = [bands]
    bands = [as_band(band) if model is None else band_for_model(model, band) for band in bands]
    if not bands:
        raise ValueError("bands is empty")
    labels = [band.label for band in bands]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"bands must have distinct labels, repeated: {duplicates} (give them a name=)")
    return bands


def noise_latents(model, seeds: Sequence[int]):
    """(x_T, sigma [N], z_T): the encoder's latents of the seeds' noise, exactly as model.forward makes them."""
    x_T = model.noise(seeds)
    sigma = sigma_tensor(model.sigma_max, len(seeds), x_T.device)
    return x_T, sigma, model.encode(x_T, sigma)


def latents_at(model, seeds: Sequence[int], time: float | None) -> list[torch.Tensor]:
    """z_t = exp((s(t) - s(T)) A) E(x_T, T) for the seeds; time None means eps computed exactly as model.sample."""
    _, sigma, latents = noise_latents(model, seeds)
    target = model.sigma_min if time is None else time
    return model.evolve_between(latents, sigma, target)


def _chunks(items: list, size: int):
    size = check_batch_size(size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _image_coords(model, seeds) -> dict:
    channels, height, width = model.image_shape
    return {"sample": np.asarray(seeds, dtype=np.int64), "channel": np.arange(channels),
            "y": np.arange(height), "x": np.arange(width)}


# -- spectral masking --------------------------------------------------------------------------------
@torch.no_grad()
def spectral_masking(model, seeds, bands=("smallest", "intermediate", "largest"), time=None, batch_size: int = 256,
                     clamp: bool = True, progress: bool = False) -> xr.Dataset:
    """Decode each band alone: keep its modes, zero the rest (HKD sec. 4 spectral masking).

    time None: the latents are the evolved z_eps of a one-step sample, so the band "all" reproduces
    `model.sample(seeds)` exactly. time t in [eps, T]: the latents are z_t = exp((t - T) A) E(x_T) and
    D(M . z_t) is decoded directly (like the trajectory's decoded state at t).
    Returns `image` (band, sample, channel, y, x) and `kept_fraction` (band, level).
    """
    seeds = check_seeds(seeds)
    bands = check_bands(bands, model)
    time = None if time is None else check_time(model, time)
    masks = [band_masks(model, band) for band in bands]
    images = [[] for _ in bands]
    chunks = list(_chunks(seeds, batch_size))
    for chunk in tqdm(chunks, desc="spectral masking", disable=not progress):
        latents = latents_at(model, chunk, time)
        noise = model.noise(chunk)  # the consistency head's skip input (unused by the raw head)
        for index, band_mask in enumerate(masks):
            image = model.decode(apply(latents, [Mask(bands[index], masks=tuple(band_mask))]), x_t=noise)
            images[index].append((image.clamp(-1, 1) if clamp else image).float().cpu())
    image = torch.stack([torch.cat(parts) for parts in images]).numpy()
    edits = [Mask(band).to_dict() for band in bands]
    return xr.Dataset(
        {"image": (("band", "sample", "channel", "y", "x"), image),
         "kept_fraction": (("band", "level"), np.asarray([kept_fraction(mask) for mask in masks]))},
        coords={"band": [band.label for band in bands], "level": np.arange(len(model.levels)),
                **_image_coords(model, seeds)},
        attrs=provenance_attrs(model, analysis="spectral_masking", edits=edits, bands=[b.to_dict() for b in bands],
                               time=time if time is not None else model.sigma_min, clamp=clamp),
    )


# -- cumulative effect -------------------------------------------------------------------------------
@torch.no_grad()
def cumulative_effect(model, seeds, bands=("smallest", "intermediate", "largest"), times=16, batch_size: int = 16,
                      progress: bool = True) -> xr.Dataset:
    """How much of the decoded image and of the latent energy each band carries along the trajectory.

    For band g with mask M_g, time t (z_t = exp((s(t) - s(T)) A) E(x_T), s the Koopman time) and sample n:

        effect_g(t)       = || D(M_g . z_t) - D(0) ||_2            (image L2 norm, unclamped decodes)
        effect_share_g(t) = effect_g(t) / sum_g' effect_g'(t)      (the cumulative effect CE; sums to 1)
        energy_share_g(t) = sum_l ||M_g . z_t,l||^2 / sum_l ||z_t,l||^2

    D(0) (every latent zeroed) is the decoder's bias image, so effect measures what the band adds. Shares
    are computed per sample and then averaged over samples; `effect` is the sample mean of effect_g.
    With bands that partition the modes (the default thirds), energy shares sum to 1 too.
    Returns vars effect_share, effect, energy_share (band, time) and level_energy_share (band, time, level);
    coordinate time = sigma values, T first.
    """
    seeds = check_seeds(seeds)
    bands = check_bands(bands, model)
    grid = time_grid(model, times)  # the trajectory's grid: Karras points T first, eps last (exact ends)
    masks = [band_masks(model, band) for band in bands]
    zero_image = model.decode([torch.zeros(1, info.channels, info.height, info.width, device=model.device)
                               for info in model.levels])
    effect, energy, level_energy = [], [], []  # per chunk: [G, K, n], [G, K, n], [G, K, n, L]
    targets = torch.as_tensor(grid, dtype=torch.float64).reshape(-1, 1)
    chunks = list(_chunks(seeds, batch_size))
    with tqdm(total=len(chunks) * len(bands), desc="cumulative effect", disable=not progress) as bar:
        for chunk in chunks:
            _, _, latents = noise_latents(model, chunk)
            trajectory = model.evolve_between(latents, model.sigma_max, targets)  # each [K, n, d, h, w]
            total = torch.stack([(latent.double() ** 2).sum(dim=(-3, -2, -1)) for latent in trajectory], dim=-1)
            chunk_effect, chunk_energy = [], []
            for band_mask in masks:
                masked = [latent * mask for latent, mask in zip(trajectory, band_mask)]
                image = model.decode(masked)
                chunk_effect.append((image - zero_image).double().flatten(-3).norm(dim=-1))
                chunk_energy.append(torch.stack([(latent.double() ** 2).sum(dim=(-3, -2, -1)) for latent in masked], -1))
                bar.update()
            effect.append(torch.stack(chunk_effect))
            level_energy.append(torch.stack(chunk_energy) / total.clamp_min(1e-300))
            energy.append(torch.stack(chunk_energy).sum(-1) / total.sum(-1).clamp_min(1e-300))
    effect = torch.cat(effect, dim=2)
    share = effect / effect.sum(dim=0, keepdim=True).clamp_min(1e-300)
    data = {
        "effect_share": (("band", "time"), share.mean(dim=2).cpu().numpy()),
        "effect": (("band", "time"), effect.mean(dim=2).cpu().numpy()),
        "energy_share": (("band", "time"), torch.cat(energy, dim=2).mean(dim=2).cpu().numpy()),
        "level_energy_share": (("band", "time", "level"), torch.cat(level_energy, dim=2).mean(dim=2).cpu().numpy()),
    }
    ds = xr.Dataset(data, coords={"band": [band.label for band in bands], "time": grid,
                                  "level": np.arange(len(model.levels))},
                    attrs=provenance_attrs(model, analysis="cumulative_effect", seeds=seeds,
                                           edits=[Mask(band).to_dict() for band in bands],
                                           bands=[band.to_dict() for band in bands],
                                           definition="effect_share = ||D(M_g z_t) - D(0)|| / sum_g' ||D(M_g' z_t) - D(0)||, "
                                                      "per sample then averaged; energy_share = ||M_g z_t||^2 / ||z_t||^2"))
    ds["time"].attrs["long_name"] = "sigma(t) = t, T first"
    return ds


__all__ = ["Intervention", "Mask", "Gain", "PhaseRotation", "Mix", "apply", "describe", "intervene",
           "spectral_masking", "cumulative_effect", "latents_at", "check_seeds", "check_time", "check_ratio"]
