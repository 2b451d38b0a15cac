"""The teacher: a denoiser (trained EDMPrecond or exact IdealDenoiser) plus the diffusion settings,
with seeded sampling and full PF-ODE trajectories.

The teacher draws x_T exactly as `HKDModel.noise` does (sigma_max times one CPU generator per
seed), so a teacher trajectory and an HKD sample with the same seed start from the same noise.

    teacher = load_teacher("default")                 # checkpoints/default/teacher/
    sigmas, states = teacher.trajectory(seeds=[0, 1])  # [N+1], [2, N+1, C, H, W]; states[:, -1] = x_eps
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..checkpoint import carried_meta, load_checkpoint, resolve_device
from ..data.base import to_unit_range
from ..model.config import resolve_config
from ..model.hkd import check_seeds, seed_noise
from .edm import EDMPrecond
from .edm_import import import_edm_pickle, is_edm_pickle_path
from .networks.precond import EDM_NETWORK_KEY, Preconditioning, round_grid
from .networks.spec import build_checked
from .sampler import check_grid, heun_trajectory, karras_grid


class Teacher:
    """Wraps `denoiser` ((x, sigma[, class_labels]) -> D) with the config's diffusion section.

    config defaults to `denoiser.config` (EDMPrecond has one); otherwise the default config, whose
    diffusion section is EDM's (eps = 0.002, T = 80).
    """

    def __init__(self, denoiser, config: dict | str | None = None):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable (x, sigma) -> D(x; sigma), got {type(denoiser).__name__}")
        if config is None:
            config = getattr(denoiser, "config", None)
        self.denoiser = denoiser
        self.config = resolve_config(config)
        diffusion = self.config["diffusion"]
        self.sigma_min = float(diffusion["sigma_min"])
        self.sigma_max = float(diffusion["sigma_max"])
        image_shape = getattr(denoiser, "image_shape", None)
        if image_shape is None:
            unet = self.config["unet"]
            image_shape = (unet["in_channels"], unet["img_resolution"], unet["img_resolution"])
        self.image_shape = tuple(image_shape)
        # Provenance, filled in by load_teacher.
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.meta: dict = dict(getattr(denoiser, "meta", {}) or {})

    # -- placement ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return getattr(self.denoiser, "device", torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.denoiser, "dtype", torch.float32)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Teacher":
        if isinstance(self.denoiser, torch.nn.Module):
            self.denoiser.to(device=resolve_device(device) if device is not None else None, dtype=dtype)
        return self

    def __call__(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma), the denoiser itself."""
        extra = () if class_labels is None else (class_labels,)
        return self.denoiser(x, sigma, *extra)

    # -- sampling ----------------------------------------------------------------------------------
    def noise(self, seeds: Sequence[int], device=None) -> torch.Tensor:
        """x_T = T * N(0, I), one CPU generator per seed: the same noise HKDModel.noise draws."""
        return self.sigma_max * seed_noise(seeds, self.image_shape, device=device or self.device)

    def grid(self, num_steps: int = 18, rho: float = 7.0) -> torch.Tensor:
        """The Karras grid of num_steps steps between this teacher's T and eps (num_steps + 1 values);
        for an iDDPM teacher snapped onto its noise levels, as EDM's sampler does."""
        return round_grid(self.denoiser, karras_grid(num_steps, self.sigma_min, self.sigma_max, rho))

    def trajectory(self, seeds: Sequence[int], num_steps: int = 18, batch_size: int = 64,
                   class_labels: torch.Tensor | None = None, progress: bool = True,
                   autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas [N+1] float64, states [B, N+1, C, H, W] float32): the PF-ODE from each seed's x_T.

        states[:, 0] is x_T, states[:, -1] the clean end x_eps (unclamped). 18 steps = 35 NFE.
        autocast_dtype (e.g. torch.bfloat16) runs the network in mixed precision; the ODE state stays float64.
        """
        seeds = check_seeds(seeds)
        sigmas = self.grid(num_steps)
        states = self._batched(seeds, sigmas, batch_size, class_labels, True, progress, autocast_dtype)
        return sigmas, states

    def sample(self, seeds: Sequence[int], num_steps: int = 18, batch_size: int = 64,
               class_labels: torch.Tensor | None = None, progress: bool = True,
               autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The clean ends [N, C, H, W] clamped to [-1, 1] (as HKDModel.sample)."""
        seeds = check_seeds(seeds)
        images = self._batched(seeds, self.grid(num_steps), batch_size, class_labels, False, progress, autocast_dtype)
        return images.clamp(-1, 1)

    def states_at(self, x_T: torch.Tensor, sigmas, class_labels: torch.Tensor | None = None,
                  substeps: int = 1) -> torch.Tensor:
        """States [B, K, C, H, W] at the K noise levels `sigmas` (T first), x_T being the state at sigmas[0].

        substeps > 1 solves with that many Karras-spaced Heun steps between consecutive levels
        (a more accurate path on coarse grids) and returns only the requested levels.
        """
        if x_T.ndim != 4 or tuple(x_T.shape[1:]) != self.image_shape:
            raise ValueError(f"x_T must have shape [B, {', '.join(map(str, self.image_shape))}], got {tuple(x_T.shape)}")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
        sigmas = check_grid(sigmas)
        fine = sigmas
        if substeps > 1 and sigmas.numel() > 1:
            pieces = [karras_grid(substeps, float(low), float(high))[:-1] for high, low in zip(sigmas[:-1], sigmas[1:])]
            fine = torch.cat(pieces + [sigmas[-1:]])
        states = heun_trajectory(self.denoiser, x_T.to(self.device), fine, class_labels, output_dtype=torch.float32)
        return states[:, ::substeps] if substeps > 1 else states

    @torch.no_grad()
    def regenerate(self, images: torch.Tensor, sigma: float, seeds: Sequence[int] | None = None, num_steps: int = 12,
                   rho: float = 7.0, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
        """Noise `images` [N, C, H, W] (in [-1, 1], or uint8) to `sigma` and solve the PF-ODE back to eps
        (Heun on the Karras grid sigma -> eps, num_steps steps): [N, C, H, W] float32 clamped to [-1, 1].

        What survives tells which scales the teacher can re-create: the structure coarser than sigma is
        kept by the noise, everything finer must be generated again (SDEdit's round trip). seeds: one
        noise seed per image (default 0..N-1), drawn as `noise` draws x_T, so a call is reproducible.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be [N, {', '.join(map(str, self.image_shape))}], got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        if not self.sigma_min < float(sigma) <= self.sigma_max:
            raise ValueError(f"sigma must lie in ({self.sigma_min}, {self.sigma_max}], got {sigma}")
        seeds = check_seeds(range(len(images)) if seeds is None else seeds)
        if len(seeds) != len(images):
            raise ValueError(f"need one seed per image: {len(seeds)} seeds for {len(images)} images")
        sigmas = karras_grid(num_steps, self.sigma_min, float(sigma), rho)
        outputs = []
        for start in tqdm(range(0, len(seeds), batch_size), desc=f"regenerate from sigma {sigma:g}",
                          disable=not progress, leave=False):
            chunk = seeds[start:start + batch_size]
            noisy = (to_unit_range(images[start:start + batch_size], self.device)
                     + float(sigma) * seed_noise(chunk, self.image_shape, device=self.device))
            outputs.append(heun_trajectory(self.denoiser, noisy, sigmas, return_all=False, output_dtype=torch.float32))
        return torch.cat(outputs).clamp(-1, 1)

    def _batched(self, seeds: list[int], sigmas: torch.Tensor, batch_size: int, class_labels, return_all: bool,
                 progress: bool, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        outputs = []
        starts = range(0, len(seeds), batch_size)
        # One bar: over batches when there are several, else over the solver's steps.
        for start in tqdm(starts, desc="teacher", disable=not progress or len(starts) < 2, leave=False):
            x_T = self.noise(seeds[start:start + batch_size])
            labels = None if class_labels is None else class_labels[start:start + batch_size]
            with torch.autocast(x_T.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                outputs.append(heun_trajectory(self.denoiser, x_T, sigmas, labels, return_all=return_all,
                                               output_dtype=torch.float32, progress=progress and len(starts) == 1))
        return torch.cat(outputs)

    # -- persistence -------------------------------------------------------------------------------
    def save(self, directory, meta: dict | None = None) -> Path:
        """Write the teacher checkpoint (model.safetensors + config.json + meta.json, kind "teacher"):
        this teacher's config and provenance (`meta` updates it)."""
        if not isinstance(self.denoiser, (EDMPrecond, Preconditioning)):
            raise TypeError(f"only a network teacher (EDMPrecond) can be saved; a {type(self.denoiser).__name__} "
                            "is rebuilt from its data instead (it holds no trained weights)")
        return self.denoiser.save(directory, meta=carried_meta(self.meta, meta), config=self.config)

    def __repr__(self) -> str:
        return (f"Teacher({type(self.denoiser).__name__}, image_shape={self.image_shape}, "
                f"sigma=[{self.sigma_min}, {self.sigma_max}], device={self.device})")


def build_denoiser(config: dict, state: dict, source: str):
    """The denoiser a teacher checkpoint's config.json describes, the builder `load_teacher` hands to
    `load_checkpoint` (which then copies the weights in, checked): hkdviz's EDMPrecond, or an imported EDM
    network (NCSN++ / ADM / VP / VE / iDDPM) when config.json holds its description; that one is checked
    against the weights on the meta device first and built around them (`networks.spec.build_checked`)."""
    if EDM_NETWORK_KEY in config:
        return build_checked(config[EDM_NETWORK_KEY], state, source)
    return EDMPrecond(config)


def load_teacher(name_or_dir="default", device="auto", dtype: torch.dtype | None = None) -> Teacher:
    """A trained EDM teacher from a shipped name ("default" -> checkpoints/default/teacher/), a directory
    (`hkdviz.checkpoint.load_checkpoint`), or an NVlabs/edm network pickle (*.pkl: imported without running
    any of its code; docs/teachers.md)."""
    if is_edm_pickle_path(name_or_dir):
        return import_edm_teacher(name_or_dir, device=resolve_device(device)).to(dtype=dtype)
    denoiser = load_checkpoint(name_or_dir, "teacher", build_denoiser, device, dtype)
    teacher = Teacher(denoiser)
    teacher.checkpoint_path = denoiser.checkpoint_path
    teacher.checkpoint_sha256 = denoiser.checkpoint_sha256
    return teacher


def import_edm_teacher(path, device="cpu", key: str = "ema") -> Teacher:
    """`import_edm_pickle` wrapped as a Teacher, with the pickle as its checkpoint (path and sha256)."""
    denoiser = import_edm_pickle(path, device=device, key=key)
    teacher = Teacher(denoiser)
    teacher.checkpoint_path = str(Path(path).resolve())
    teacher.checkpoint_sha256 = denoiser.meta["source_sha256"]
    return teacher


__all__ = ["Teacher", "build_denoiser", "import_edm_teacher", "load_teacher"]
