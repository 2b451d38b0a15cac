"""Editing generations through their Koopman latents: frequency-aware editing, gains, phases, inpainting.

Frequency-aware editing (HKD sec. 4; the recipe is hkdviz's choice, the paper gives no formula). For the
image of seed s (noise x_T) and a reference image x_ref, at the edit time t_mid:

    z_A = exp((t_mid - T) A) E(x_T, T)                  the generation's latents at t_mid
    z_B = E(x_ref + t_mid n, t_mid)                     the reference enters through the encoder at t_mid
    z   = z_A + r M . (z_B - z_A)                       M = band mask x region mask resized per level
    x   = D(exp((eps - t_mid) A) z)

The band defaults to "high" (= the largest-real-part third, measured to carry the fine detail, see
bands.py); band="all" is the frequency-agnostic baseline. n is standard normal noise from
`reference_seed`, so an edit is reproducible.

Because the edit is linear and the masks act per mode (they commute with the block evolution), hkdviz
computes x = D(z_eps + r M . exp((eps - t_mid) A)(z_B - z_A)) with z_eps the sample's own evolved
latents: identical up to float rounding, and r = 0 then reproduces `model.sample` exactly. `EditSession`
caches z_eps and the evolved difference, so a slider move costs one mask multiply and one decode.

Times. time="mid" is the midpoint of EDM's Karras schedule (rho = 7):
t_mid = ((T^(1/7) + eps^(1/7)) / 2)^7, about 2.52 for [0.002, 80]; it is the middle point of every
Karras grid with an odd number of points (the 19 states of EDM's 18-step trajectory). Any number in
[eps, T] is accepted.

Regions (bands.region_mask): "lower-left" is the paper's "lower-left half", the triangle below the
main diagonal; also "upper-right", "lower", "upper", "left", "right", "all", or an [H, W] mask.

Inpainting and colorization follow Consistency Models' zero-shot editing (Song et al. 2023, Alg. 4)
with the HKD one-step map f(x, t) = model(x, t).
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..model.hkd import karras_sigmas, seed_noise
from .bands import as_band, band_for_model, region_mask, selection_masks
from .interventions import (Gain, PhaseRotation, check_ratio, check_seeds, check_time, intervene, noise_latents)
from .storage import provenance_attrs

KARRAS_RHO = 7.0


def edit_time(model, time="mid") -> float:
    """The edit time: "mid" = Karras midpoint ((T^(1/rho) + eps^(1/rho)) / 2)^rho, or a number in [eps, T]."""
    if isinstance(time, str):
        if time != "mid":
            raise ValueError(f"time must be 'mid' or a number in [{model.sigma_min}, {model.sigma_max}], got {time!r}")
        low, high = model.sigma_min ** (1 / KARRAS_RHO), model.sigma_max ** (1 / KARRAS_RHO)
        return float(((low + high) / 2) ** KARRAS_RHO)
    return check_time(model, time)


def check_images(model, images, name: str = "images", allow_single: bool = False) -> torch.Tensor:
    """Validate images in [-1, 1] of the model's size: [N, C, H, W] (or [C, H, W] if allow_single)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [-1, 1], got dtype {images.dtype} "
                        f"(convert uint8 images with x.float() / 127.5 - 1)")
    shape = tuple(model.image_shape)
    if allow_single and images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        expected = f"[{', '.join(map(str, shape))}] or [N, ...]" if allow_single else f"[N, {', '.join(map(str, shape))}]"
        raise ValueError(f"{name} must have shape {expected} to match the model's images, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(images.shape)} holds no image")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1.01 or high > 1.01:
        raise ValueError(f"{name} values must lie in [-1, 1], got [{low:.3g}, {high:.3g}] "
                         f"(scale [0, 1] images with 2 x - 1)")
    return images.to(device=model.device, dtype=torch.float32)


# -- frequency-aware editing -------------------------------------------------------------------------
class EditSession:
    """Frequency-aware editing with the encoder work cached (what a slider widget needs).

        session = EditSession(model, seeds=[0], reference=image)   # encodes once
        images = session.update(ratio=0.5)                          # re-mix + decode only
        images = session.update(band="all", region="left")

    The generation's evolved latents z_eps and the reference difference exp((eps - t_mid) A)(z_B - z_A)
    are computed once per (seeds, reference, time, reference_seed); `update` multiplies by the cached
    mask of (band, region) and decodes. Returns images [N, C, H, W] in [-1, 1]. A new time, reference,
    reference_seed or set of seeds needs a new session (they change the encoder's input).
    """

    def __init__(self, model, seeds, reference: torch.Tensor, time="mid", reference_seed: int = 0,
                 band="high", region="lower-left", ratio: float = 0.0):
        self.model = model
        self.seeds = check_seeds(seeds)
        reference = check_images(model, reference, "reference", allow_single=True)
        if reference.shape[0] not in (1, len(self.seeds)):
            raise ValueError(f"reference must be one image [C, H, W] or one per seed [{len(self.seeds)}, C, H, W], "
                             f"got {reference.shape[0]} images")
        if isinstance(reference_seed, bool) or not isinstance(reference_seed, numbers.Integral):
            raise TypeError(f"reference_seed must be an integer, got {reference_seed!r}")
        if not 0 <= reference_seed < 2 ** 63:
            raise ValueError(f"reference_seed must be in [0, 2**63), got {reference_seed}")
        self.reference = reference
        self.reference_seed = int(reference_seed)
        self.time = edit_time(model, time)
        self._masks = {}
        with torch.no_grad():
            x_T, sigma, latents = noise_latents(model, self.seeds)
            self.noise = x_T                                                       # the consistency head's skip input
            self.base = model.evolve_between(latents, sigma, model.sigma_min)     # = model.sample's latents
            generation = model.evolve_between(latents, sigma, self.time)          # z_A at t_mid
            noise = seed_noise([self.reference_seed], model.image_shape, device=model.device)
            reference_latents = model.encode(reference + self.time * noise, self.time)  # z_B
            difference = [b - a for a, b in zip(generation, reference_latents)]
            self.difference = model.evolve_between(difference, self.time, model.sigma_min)
        self.state = {"ratio": 0.0, "band": band_for_model(model, band), "region": "all"}
        self.set(ratio=ratio, band=band, region=region)
        self.image: torch.Tensor | None = None

    def masks(self, band, region) -> list[torch.Tensor]:
        """Band x region masks per level, cached for named regions."""
        band = band_for_model(self.model, band)
        if isinstance(region, str):
            key = (band.to_json(), region)
            if key not in self._masks:
                self._masks[key] = selection_masks(self.model, band, region)
            return self._masks[key]
        return selection_masks(self.model, band, region)

    def set(self, ratio=None, band=None, region=None) -> None:
        """Change any of ratio, band, region (validated) without decoding."""
        if ratio is not None:
            self.state["ratio"] = check_ratio(ratio)
        if band is not None:
            self.state["band"] = band_for_model(self.model, band)
        if region is not None:
            self.masks(self.state["band"], region)  # validates the region (and warms the cache)
            self.state["region"] = region
        elif band is not None:
            self.masks(self.state["band"], self.state["region"])

    def latents(self) -> list[torch.Tensor]:
        """The edited latents at eps for the current state."""
        ratio = self.state["ratio"]
        if ratio == 0.0:
            return list(self.base)
        masks = self.masks(self.state["band"], self.state["region"])
        return [base + ratio * mask * difference for base, mask, difference in zip(self.base, masks, self.difference)]

    @torch.no_grad()
    def update(self, ratio=None, band=None, region=None) -> torch.Tensor:
        """Set the state and return the edited images [N, C, H, W] in [-1, 1]."""
        self.set(ratio=ratio, band=band, region=region)
        self.image = self.model.decode(self.latents(), x_t=self.noise).float().clamp(-1, 1)
        return self.image

    def to_dict(self) -> dict:
        """The edit as plain data (for attrs / widget state)."""
        region = self.state["region"]
        return {"type": "frequency_edit", "seeds": self.seeds, "ratio": self.state["ratio"],
                "band": self.state["band"].to_dict(),
                "region": region if isinstance(region, str) else f"tensor{list(region.shape)}",
                "time": self.time, "reference_seed": self.reference_seed}


def frequency_edit(model, seeds, reference: torch.Tensor, ratio: float, time="mid", band="high",
                   region="lower-left", reference_seed: int = 0) -> torch.Tensor:
    """Inject the reference's `band` Koopman features into `region` at `ratio` (see module docstring).

    reference: [C, H, W] (or one per seed, [N, C, H, W]) in [-1, 1]. band="all" is the
    frequency-agnostic baseline. Returns images [N, C, H, W] in [-1, 1]; ratio 0 gives model.sample(seeds).
    """
    session = EditSession(model, seeds, reference, time=time, reference_seed=reference_seed, band=band,
                          region=region, ratio=ratio)
    return session.update()


def editing_sweep(model, seeds, reference: torch.Tensor, ratios: Sequence[float] = (0, .1, .2, .5, .8, .9),
                  band="high", region="lower-left", time="mid", reference_seed: int = 0,
                  progress: bool = False) -> xr.Dataset:
    """Frequency-aware ("aware", the given band) and frequency-agnostic ("agnostic", all bands) edits
    over ratios. Returns `image` (variant, ratio, sample, channel, y, x), `reference` and `region` (y, x)."""
    ratios = [check_ratio(ratio) for ratio in ratios]
    if not ratios:
        raise ValueError("ratios is empty")
    session = EditSession(model, seeds, reference, time=time, reference_seed=reference_seed, band=band, region=region)
    band = band_for_model(model, band)
    variants = {"aware": band, "agnostic": as_band("all")}
    images = np.empty((len(variants), len(ratios), len(session.seeds), *model.image_shape), dtype=np.float32)
    with tqdm(total=len(variants) * len(ratios), desc="editing sweep", disable=not progress) as bar:
        for row, variant_band in enumerate(variants.values()):
            for column, ratio in enumerate(ratios):
                images[row, column] = session.update(ratio=ratio, band=variant_band).cpu().numpy()
                bar.update()
    channels, height, width = model.image_shape
    reference_image = session.reference.cpu().numpy()
    reference_var = ((("channel", "y", "x"), reference_image[0]) if reference_image.shape[0] == 1
                     else (("sample", "channel", "y", "x"), reference_image))
    edit = session.to_dict()
    edit.update(band=band.to_dict(), baseline=as_band("all").to_dict(), ratios=ratios)
    edit.pop("ratio")
    return xr.Dataset(
        {"image": (("variant", "ratio", "sample", "channel", "y", "x"), images),
         "reference": reference_var,
         "region": (("y", "x"), region_mask(region, height, width).numpy())},
        coords={"variant": list(variants), "ratio": np.asarray(ratios), "sample": np.asarray(session.seeds),
                "channel": np.arange(channels), "y": np.arange(height), "x": np.arange(width)},
        attrs=provenance_attrs(model, analysis="editing_sweep", edits=[edit]),
    )


# -- gain and phase edits ----------------------------------------------------------------------------
def gain_edit(model, seeds, band="high", gain: float = 2.0, region="all") -> torch.Tensor:
    """model.sample(seeds) with the band's modes (inside region) scaled by `gain`: [N, C, H, W] in [-1, 1]."""
    with intervene(model, Gain(band, region, gain=gain)):
        return model.sample(check_seeds(seeds))


def phase_edit(model, seeds, band="high", angle: float = math.pi / 2, gain: float = 1.0, region="all") -> torch.Tensor:
    """model.sample(seeds) with each pair w = u + i v of the band multiplied by gain * e^{i angle}."""
    with intervene(model, PhaseRotation(band, region, angle=angle, gain=gain)):
        return model.sample(check_seeds(seeds))


# -- zero-shot inpainting and colorization (Consistency Models, Algorithm 4) -------------------------
def default_edit_sigmas(model) -> list[float]:
    """Five steps: the Karras grid of 6 points without its last (eps), about 80, 24, 5.8, 0.97, 0.085."""
    return karras_sigmas(6, model.sigma_min, model.sigma_max)[:-1].tolist()


def _check_sigmas(model, sigmas) -> list[float]:
    if sigmas is None:
        return default_edit_sigmas(model)
    sigmas = [check_time(model, sigma, "sigmas") for sigma in sigmas]
    if not sigmas:
        raise ValueError("sigmas is empty")
    if any(later >= earlier for earlier, later in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must be strictly decreasing, got {sigmas}")
    return sigmas


def _seed_generators(seed, count: int) -> list[torch.Generator]:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < 2 ** 63 - count:
        raise ValueError(f"seed must be in [0, 2**63 - {count}) (one generator per image: seed + index), got {seed}")
    # One generator per image (seed + index): an image's result does not depend on the batch around it.
    return [torch.Generator().manual_seed(int(seed) + index) for index in range(count)]


def luminance_basis(dtype=torch.float32) -> torch.Tensor:
    """Orthogonal 3x3 matrix Q whose first column is the luminance direction (ITU-R 601 weights,
    normalised), as in Consistency Models' colorization; colour coordinates are Q^T rgb."""
    vector = np.asarray([0.2989, 0.5870, 0.1140])
    matrix = np.eye(3)
    matrix[:, 0] = vector / np.linalg.norm(vector)
    matrix = np.linalg.qr(matrix)[0]
    if matrix[:, 0].sum() < 0:
        matrix = -matrix
    return torch.as_tensor(matrix, dtype=dtype)


@torch.no_grad()
def zero_shot_edit(model, images: torch.Tensor, known: torch.Tensor, basis: torch.Tensor | None = None,
                   sigmas=None, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Consistency Models' Algorithm 4 with f(x, t) = clamp(model(x, t), -1, 1).

    In the coordinates A x = Q^T x (per pixel; Q = `basis`, identity when None), entries where `known`
    is 1 are taken from `images`, the others are generated:
        x = f(A^-1[A y . known] + t_1 z, t_1);  x = A^-1[A y . known + A x . (1 - known)]
        for t_n in sigmas[1:]:  x = f(x + sqrt(t_n^2 - eps^2) z, t_n), then the same replacement.
    """
    images = check_images(model, images, "images")
    sigmas = _check_sigmas(model, sigmas)
    if not isinstance(known, torch.Tensor):
        raise TypeError(f"known must be a tensor broadcastable to {tuple(images.shape)}, got {type(known).__name__}")
    try:
        known = known.to(device=images.device, dtype=images.dtype).expand_as(images)
    except RuntimeError:
        raise ValueError(f"known of shape {tuple(known.shape)} does not broadcast to the images' "
                         f"{tuple(images.shape)}") from None
    channels = images.shape[1]
    if basis is None:
        basis = torch.eye(channels)
    basis = basis.to(device=images.device, dtype=images.dtype)

    def forward(x):   # A x: colour coordinates along the channel axis
        return torch.einsum("ij,nihw->njhw", basis, x)

    def backward(a):  # A^-1 a = Q a (Q orthogonal)
        return torch.einsum("ij,njhw->nihw", basis, a)

    target = forward(images) * known

    def replace(x):
        return backward(target + forward(x) * (1 - known))

    generators = _seed_generators(seed, images.shape[0])

    def noise():
        return torch.stack([torch.randn(images.shape[1:], generator=generator) for generator in generators]).to(images)

    x = backward(target)
    for step, sigma in enumerate(tqdm(sigmas, desc="zero-shot edit", disable=not progress)):
        scale = sigma if step == 0 else math.sqrt(max(sigma ** 2 - model.sigma_min ** 2, 0.0))
        x = replace(model(x + scale * noise(), sigma).float().clamp(-1, 1))
    return x.clamp(-1, 1)


def _inpaint_mask(model, images: torch.Tensor, mask) -> torch.Tensor:
    channels, height, width = model.image_shape
    if isinstance(mask, str) or (isinstance(mask, torch.Tensor) and mask.ndim == 2):
        return region_mask(mask, height, width, device=images.device)[None, None]
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a region name, an [H, W] tensor or [N, 1 or C, H, W], got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask must be bool or floating point, got {mask.dtype}")
    if mask.ndim != 4 or mask.shape[0] not in (1, images.shape[0]) or mask.shape[1] not in (1, channels) \
            or tuple(mask.shape[2:]) != (height, width):
        raise ValueError(f"mask must have shape [H, W] or [N or 1, 1 or {channels}, {height}, {width}], "
                         f"got {tuple(mask.shape)}")
    mask = mask.to(device=images.device, dtype=torch.float32)
    if float(mask.min()) < 0 or float(mask.max()) > 1:
        raise ValueError("mask values must lie in [0, 1]")
    return mask


def inpaint(model, images: torch.Tensor, mask, sigmas=None, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Fill the pixels where `mask` is 1 (a region name, [H, W], or [N, 1 or C, H, W]); keep the rest.
    images: [N, C, H, W] in [-1, 1]. Returns [N, C, H, W] in [-1, 1]."""
    images = check_images(model, images, "images")
    missing = _inpaint_mask(model, images, mask)
    return zero_shot_edit(model, images, 1 - missing, sigmas=sigmas, seed=seed, progress=progress)


def colorize(model, images: torch.Tensor, sigmas=None, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Generate colour for grayscale content: luminance is kept, the two orthogonal chroma coordinates
    are generated. images: colour [N, 3, H, W] (their luminance is used) or gray [N, 1, H, W], in [-1, 1]."""
    if model.image_shape[0] != 3:
        raise ValueError(f"colorize needs an RGB model, this one makes {model.image_shape[0]}-channel images")
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # gray g -> (g, g, g): its luminance coordinate is g * sum(q0)
    images = check_images(model, images, "images")
    basis = luminance_basis()
    known = torch.zeros(1, 3, 1, 1)
    known[:, 0] = 1
    return zero_shot_edit(model, images, known, basis=basis, sigmas=sigmas, seed=seed, progress=progress)


__all__ = ["EditSession", "frequency_edit", "editing_sweep", "edit_time", "gain_edit", "phase_edit",
           "zero_shot_edit", "inpaint", "colorize", "luminance_basis", "default_edit_sigmas", "check_images"]
