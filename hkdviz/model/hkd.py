"""The HKD one-step generator:  x_hat_eps = head( D( { exp((s(eps) - s(t)) A_l) E_l(x_t, sigma(t)) }_l ) ).

Data flow: noise x_T (or a teacher state x_t) -> encode -> per-level latents -> evolve(tau) ->
(optional intervention) -> decode -> image. sigma(t) = t (EDM convention); s is the Koopman time
(config koopman.time, see koopman.py), so tau = s(sigma_to) - s(sigma_from) (`evolve_between`).

Output head (config "output"):
- "raw": the decoder's 3-channel head F is the image (the first choice; with teacher initialisation F
  starts as EDM's network output, a noise-like prediction, far from the teacher's denoised image).
- "consistency": x_hat = c_skip(sigma) x_t + c_out(sigma) F, the consistency-model form with its
  boundary condition at eps (c_skip(eps) = 1, c_out(eps) = 0). hkdviz uses EDM's preconditioning for the
  noise *beyond* eps, s^2 = sigma^2 - eps^2: c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2).
  At sigma = T these equal EDM's own c_skip, c_out to ~1e-10, so an HKD initialised from its teacher with
  decoder_sigma = T and zero generators computes exactly the teacher's D(x_T, T) at T.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from .config import resolve_config, unet_kwargs
from .koopman import koopman_time, make_level
from .unet import SongUNet

# Latents are limited to +-LATENT_LIMIT before decoding (`saturate`), so that a huge evolution
# (`evolve(z, 1e9)` on a growing mode) or gain (`Gain(band, 1e30)`) saturates the image instead of
# overflowing the decoder's float32 arithmetic into inf/NaN. A trained model's latents are many orders
# of magnitude smaller (docs/hardening-values.md); below the limit they are decoded untouched.
LATENT_LIMIT = 1e8


@dataclass(frozen=True)
class LevelInfo:
    index: int
    name: str
    channels: int
    height: int
    width: int
    operator: str


def seed_noise(seeds: Sequence[int], shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise, one CPU torch.Generator per seed: an image depends on its seed only."""
    seeds = [int(seed) for seed in seeds]
    noise = torch.empty(len(seeds), *shape, dtype=torch.float32)
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(seed)
        noise[row] = torch.randn(*shape, generator=generator)
    return noise.to(device=device, dtype=dtype)


def sigma_tensor(sigma, batch: int, device, dtype=torch.float32) -> torch.Tensor:
    """A number, [N] or [N, 1, 1, 1] sigma as a validated [N] tensor (N = batch)."""
    sigma = torch.as_tensor(sigma, dtype=dtype, device=device)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    elif sigma.numel() == batch and sigma.shape[0] == batch:
        sigma = sigma.reshape(batch)
    else:
        raise ValueError(f"sigma must be a number or hold one value per sample ([{batch}]), got shape {tuple(sigma.shape)}")
    if not bool(((sigma > 0) & (sigma < math.inf)).all()):  # one check (one device sync) for NaN, inf, <= 0
        raise ValueError(f"sigma must be positive and finite, got {sigma.flatten()[:5].tolist()}")
    return sigma


class ParameterPlacement:
    """`device` and `dtype` of an nn.Module's parameters (a mixin: the HKD model and every teacher network)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def check_image_batch(x: torch.Tensor, image_shape, name: str = "x") -> None:
    """x must be a floating-point [N, *image_shape] tensor; errors name the expected shape."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} must have shape [N, {', '.join(map(str, image_shape))}], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


class DiffusionModule(ParameterPlacement, nn.Module):
    """Base of HKDModel and the EDM teacher: the resolved config, its diffusion constants, and the
    device/dtype of the parameters."""

    def __init__(self, config: dict | str | None = None):
        super().__init__()
        self.config = resolve_config(config)
        diffusion = self.config["diffusion"]
        self.sigma_min = float(diffusion["sigma_min"])
        self.sigma_max = float(diffusion["sigma_max"])
        self.sigma_data = float(diffusion["sigma_data"])


class HKDModel(DiffusionModule):
    def __init__(self, config: dict | str | None = None):
        super().__init__(config)
        diffusion = self.config["diffusion"]
        self.decoder_sigma = float(diffusion["decoder_sigma"])
        self.output = self.config["output"]
        self.koopman_time_kind = self.config["koopman"]["time"]
        self.unet = SongUNet(**unet_kwargs(self.config))

        koopman = self.config["koopman"]
        shapes = self.unet.level_shapes()
        levels = []
        self._levels = []
        for index, (name, channels, resolution) in enumerate(shapes):
            dynamic = koopman["levels"] == "all" or (koopman["levels"] == "bottleneck" and name == "bottleneck")
            operator = koopman["operator"] if dynamic else "identity"
            levels.append(make_level(operator, channels, resolution, resolution, koopman["max_exponent"]))
            self._levels.append(LevelInfo(index, name, channels, resolution, resolution, operator))
        self.koopman = nn.ModuleList(levels)
        # Provenance, filled in by hkdviz.load.
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.meta: dict = {}

    # -- introspection -----------------------------------------------------------------------------
    @property
    def levels(self) -> list[LevelInfo]:
        return list(self._levels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        resolution = self.unet.img_resolution
        return (self.unet.in_channels, resolution, resolution)

    # -- the three stages --------------------------------------------------------------------------
    def encode(self, x_t: torch.Tensor, sigma, class_labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Lift a noisy image [N, C, H, W] at noise level sigma (number or [N]) to per-level latents."""
        check_image_batch(x_t, self.image_shape, "x_t")
        if x_t.device != self.device:
            raise ValueError(f"x_t is on {x_t.device} but the model is on {self.device}; move it with x_t.to(model.device)")
        if not bool(torch.isfinite(x_t).all()):
            raise ValueError("x_t contains NaN or infinite values")
        sigma = sigma_tensor(sigma, x_t.shape[0], x_t.device)
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        c_noise = sigma.log() / 4
        emb = self.unet.embed(c_noise, class_labels).to(x_t.dtype)
        return self.unet.encode(x_t * c_in.to(x_t.dtype).reshape(-1, 1, 1, 1), emb)

    def evolve(self, latents: Sequence[torch.Tensor], tau) -> list[torch.Tensor]:
        """exp(tau A_l) per level, in closed form; tau is in units of Koopman time (see evolve_between).
        tau broadcasts against the latents' leading dims: a number, [N] (one per sample) or [K, 1]
        (K times for every sample -> [K, N, ...])."""
        self._check_latents(latents)
        check_tau(tau, lead=latents[0].shape[:-3])
        return [level.evolve(latent, tau) for level, latent in zip(self.koopman, latents)]

    def koopman_time(self, sigma) -> torch.Tensor:
        """s(sigma) in this model's Koopman time (float64 tensor shaped like sigma)."""
        return koopman_time(sigma, self.koopman_time_kind)

    def koopman_tau(self, sigma_from, sigma_to) -> torch.Tensor:
        """tau = s(sigma_to) - s(sigma_from) (float64 on the model's device, broadcast of the two shapes)."""
        start = self.koopman_time(_as_sigmas(sigma_from, "sigma_from", self.device))
        end = self.koopman_time(_as_sigmas(sigma_to, "sigma_to", self.device))
        return end - start

    def evolve_between(self, latents: Sequence[torch.Tensor], sigma_from, sigma_to) -> list[torch.Tensor]:
        """Carry latents encoded at noise level sigma_from to sigma_to: exp((s(sigma_to) - s(sigma_from)) A).

        The one call analysis code uses to move latents in time (it never computes tau itself). Each of
        sigma_from and sigma_to is a number, an [N] tensor (one per sample) or a [K, 1] tensor (K times for
        every sample -> latents [K, N, ...]); they broadcast like evolve's tau. Semigroup law:
        evolve_between(evolve_between(z, a, b), b, c) == evolve_between(z, a, c) up to float rounding.
        """
        return self.evolve(latents, self.koopman_tau(sigma_from, sigma_to))

    def decode(self, latents: Sequence[torch.Tensor], class_labels: torch.Tensor | None = None,
               x_t: torch.Tensor | None = None, sigma=None) -> torch.Tensor:
        """Up path with the fixed decoder noise embedding, then the output head. Latents may carry extra
        leading dims ([K, N, ...]); they are decoded as one batch and the image keeps them ([K, N, C, H, W]).

        With output="consistency", (x_t, sigma) is the input the latents were encoded from: the image is
        c_skip(sigma) x_t + c_out(sigma) F. sigma defaults to T (latents of the noise, as in every analysis);
        x_t=None drops the skip term, which at T is c_skip(T) x_T (c_skip(T) = sd^2 / T^2 ~ 4e-5). With
        output="raw" the image is F and x_t, sigma are ignored.
        """
        self._check_latents(latents)
        return self._image(self._decoder_output(latents, class_labels), x_t, sigma)

    def _image(self, network_output: torch.Tensor, x_t: torch.Tensor | None = None, sigma=None) -> torch.Tensor:
        """The decoder's F as the model's image: F itself (raw), or the head at sigma (default T)."""
        if self.output == "raw":
            return network_output
        return self.head(network_output, x_t, self.sigma_max if sigma is None else sigma)

    def _decoder_output(self, latents: Sequence[torch.Tensor], class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """F: the up path with the fixed decoder noise embedding, before any head (latents already checked)."""
        lead = latents[0].shape[:-3]
        flat = saturate([latent.reshape(-1, *latent.shape[-3:]) for latent in latents])
        batch = flat[0].shape[0]
        decoder_sigma = torch.full((batch,), self.decoder_sigma, device=flat[0].device)
        emb = self.unet.embed(decoder_sigma.log() / 4, class_labels).to(flat[0].dtype)
        image = self.unet.decode(flat, emb)
        return image.reshape(*lead, *image.shape[1:])

    def head_coefficients(self, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_skip, c_out) of the consistency head at sigma (float64 tensors shaped like sigma)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        beyond = (sigma ** 2 - self.sigma_min ** 2).clamp_min(0)  # s^2: the noise variance beyond eps
        variance = beyond + self.sigma_data ** 2
        return self.sigma_data ** 2 / variance, beyond.sqrt() * self.sigma_data / variance.sqrt()

    def head(self, network_output: torch.Tensor, x_t: torch.Tensor | None, sigma) -> torch.Tensor:
        """c_skip(sigma) x_t + c_out(sigma) F for F [..., N, C, H, W] and sigma a number or [N] (consistency head)."""
        sigma = torch.as_tensor(sigma.detach() if isinstance(sigma, torch.Tensor) else sigma,
                                dtype=torch.float64, device=network_output.device)
        c_skip, c_out = self.head_coefficients(sigma)
        shape = (-1, 1, 1, 1) if c_skip.ndim else ()
        c_skip = c_skip.reshape(shape).to(network_output.dtype)
        c_out = c_out.reshape(shape).to(network_output.dtype)
        image = c_out * network_output
        if x_t is not None:
            image = image + c_skip * x_t.to(network_output.dtype)
        return image

    def forward(self, x_t: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                return_latents: bool = False, return_readout: bool = False):
        """The one-step map f(x_t, t) = head(D(exp((s(eps) - s(t)) A) E(x_t, t))) (unclamped).

        return_latents=True also returns the encoder's latents E(x_t, t), and return_readout=True the
        readout decode(E(x_t, t)) (the latents decoded where they are, without evolution; see `readout`),
        after the image in that order. Training terms read them through this one call, which keeps
        DistributedDataParallel's gradient hooks in charge; the readout shares the decoder pass (one batch)."""
        sigma = sigma_tensor(sigma, x_t.shape[0], x_t.device)
        latents = self.encode(x_t, sigma, class_labels)
        # evolve_between's tau, without validating sigma a second time (sigma_tensor just did) on this hot path.
        evolved = self.evolve(latents, self.koopman_time(self.sigma_min) - self.koopman_time(sigma))
        if return_readout:
            both = [torch.stack([moved, here]) for moved, here in zip(evolved, latents)]  # [2, N, ...]
            self._check_latents(both)
            network, unevolved = self._decoder_output(both, class_labels).unbind(0)
            image, readout = self._image(network, x_t, sigma), self._image(unevolved)
        else:
            image = self.decode(evolved, class_labels, x_t=x_t, sigma=sigma)
        extras = ((latents,) if return_latents else ()) + ((readout,) if return_readout else ())
        return (image, *extras) if extras else image

    def readout(self, x_t: torch.Tensor, sigma, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The state the latents of x_t hold now: decode(E(x_t, t)), without any evolution, and read the way
        every analysis reads a latent (`decode` with its defaults: the head at T, no skip term), so that it
        is a function of the latents alone and applies as well to latents on the Koopman path.

        Trained with hkd.state_weight > 0, this approximates the teacher's denoised estimate D(x_t, t): a
        latent is then a picture of its trajectory's current state, and the Koopman evolution has to carry
        the generation from there; without that term nothing asks it to be anything in particular."""
        sigma = sigma_tensor(sigma, x_t.shape[0], x_t.device)
        return self.decode(self.encode(x_t, sigma, class_labels), class_labels)

    # -- sampling ----------------------------------------------------------------------------------
    def noise(self, seeds: Sequence[int], device=None) -> torch.Tensor:
        """x_T = T * N(0, I), one generator per seed (CPU generator, so CPU and GPU get the same noise)."""
        return self.sigma_max * seed_noise(seeds, self.image_shape, device=device or self.device)

    @torch.no_grad()
    def sample(self, seeds: Sequence[int], batch_size: int = 256, class_labels: torch.Tensor | None = None,
               autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
               progress: bool = True) -> torch.Tensor:
        """One-step samples [N, C, H, W] in [-1, 1] for the given seeds, on the model's device.

        autocast_dtype (e.g. torch.bfloat16) enables mixed precision on GPU; channels_last converts
        the inputs to that memory format (convert the model too: model.to(memory_format=...)).
        Seeds are drawn `batch_size` at a time, with a progress bar when there is more than one batch
        (progress=False hides it); the result must fit in memory (check_output_memory says so first).
        """
        if isinstance(seeds, range):  # a huge range is refused before check_seeds makes it a list
            check_output_memory(len(seeds), self.image_shape, self.device)
            seeds = check_seeds(seeds)
        else:
            seeds = check_seeds(seeds)
            check_output_memory(len(seeds), self.image_shape, self.device)
        batch_size = check_batch_size(batch_size)
        if autocast_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype!r}")
        if class_labels is not None and self.unet.label_dim == 0:
            raise ValueError("class_labels were given, but this model is unconditional (label_dim 0): pass None")
        if class_labels is not None and len(class_labels) != len(seeds):
            raise ValueError(f"class_labels must hold one row per seed ({len(seeds)}), got {len(class_labels)}")
        # Filled batch by batch: no list of batches plus a concatenated copy (twice the memory at the end).
        outputs = None
        starts = range(0, len(seeds), batch_size)
        if progress and len(starts) > 1:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="hkdviz sample", unit="batch")
        for start in starts:
            chunk = seeds[start:start + batch_size]
            x_T = self.noise(chunk)
            if channels_last:
                x_T = x_T.contiguous(memory_format=torch.channels_last)
            labels = None if class_labels is None else class_labels[start:start + batch_size]
            with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                image = self(x_T, self.sigma_max, labels)
            if outputs is None:
                outputs = torch.empty(len(seeds), *image.shape[1:], device=image.device)
            outputs[start:start + len(chunk)] = image.float().clamp(-1, 1)
        return outputs

    # -- persistence -------------------------------------------------------------------------------
    def save(self, directory, meta: dict | None = None) -> None:
        save_checkpoint(self, directory, kind="hkd", meta=meta)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def _check_latents(self, latents) -> None:
        if isinstance(latents, torch.Tensor) or not hasattr(latents, "__len__"):
            raise TypeError(f"latents must be a list of {len(self.koopman)} tensors (one per level), "
                            f"got {type(latents).__name__}")
        if len(latents) != len(self.koopman):
            raise ValueError(f"expected {len(self.koopman)} latents (one per level), got {len(latents)}")
        lead, device = None, self.device
        for info, latent in zip(self._levels, latents):
            expected = f"[..., {info.channels}, {info.height}, {info.width}]"
            if not isinstance(latent, torch.Tensor):
                raise TypeError(f"latent of level {info.index} ({info.name}) must be a tensor {expected}, "
                                f"got {type(latent).__name__}")
            if tuple(latent.shape[-3:]) != (info.channels, info.height, info.width) or latent.ndim < 4:
                raise ValueError(f"latent of level {info.index} ({info.name}) must have shape [N, {info.channels}, "
                                 f"{info.height}, {info.width}] (or more leading dims), got {tuple(latent.shape)}")
            if not latent.is_floating_point():
                raise TypeError(f"latent of level {info.index} ({info.name}) must be floating point, got {latent.dtype}")
            if latent.device != device:
                raise ValueError(f"latent of level {info.index} ({info.name}) is on {latent.device}, the model on {device}")
            if lead is None:
                lead = latent.shape[:-3]
            elif latent.shape[:-3] != lead:
                raise ValueError(f"latent of level {info.index} ({info.name}) has leading dims {tuple(latent.shape[:-3])}, "
                                 f"level 0 has {tuple(lead)}: every level needs the same")

    def extra_repr(self) -> str:
        return f"preset={self.config['preset']!r}, levels={len(self._levels)}, parameters={self.num_parameters():,}"


def _as_sigmas(sigma, name: str, device) -> torch.Tensor:
    """A positive finite noise level (number or tensor) as a float64 tensor on `device`, for Koopman times."""
    sigma = torch.as_tensor(sigma.detach() if isinstance(sigma, torch.Tensor) else sigma,
                            dtype=torch.float64, device=device)
    if not bool(torch.isfinite(sigma).all()) or not bool((sigma > 0).all()):
        raise ValueError(f"{name} must be positive and finite, got {sigma.flatten()[:5].tolist()}")
    return sigma


def check_seeds(seeds) -> list[int]:
    """An int or a sequence of ints in [0, 2**63) -> list[int], with clear errors."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seeds = [seeds]
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be an integer or a sequence of integers, got {type(seeds).__name__}")
    if isinstance(seeds, range):  # checked from its ends, without a loop over a possibly huge range
        if len(seeds) and not (0 <= min(seeds) and max(seeds) < 2 ** 63):
            raise ValueError(f"seeds must be in [0, 2**63), got {seeds}")
        if not len(seeds):
            raise ValueError("seeds is empty")
        return list(seeds)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seeds must be integers, got {seed!r}")
        if not 0 <= int(seed) < 2 ** 63:
            raise ValueError(f"seeds must be in [0, 2**63), got {seed}")
    return [int(seed) for seed in seeds]


def saturate(latents: list[torch.Tensor]) -> list[torch.Tensor]:
    """The latents clamped to +-LATENT_LIMIT; the very same tensors when none exceeds it. Looking first
    (a read-only min/max, one device sync for all levels) is cheaper than clamping every time: a clamp
    allocates a copy of every latent, and those fresh buffers measurably slowed sampling on the CPU."""
    extremes = [torch.stack(torch.aminmax(latent)).abs().max() for latent in latents if latent.numel()]
    if not extremes:
        return latents
    extremes = torch.stack(extremes)
    # NaN latents would decode to NaN images silently. Outside training (no grad) that is an input error;
    # in training a NaN is left to the loop's non-finite-loss check, which says what to change.
    if not torch.is_grad_enabled() and bool(extremes.isnan().any()):
        levels = [index for index, value in enumerate(extremes.tolist()) if value != value]
        raise ValueError(f"latents hold NaN values (levels {levels}); decode needs finite latents")
    if not bool((extremes > LATENT_LIMIT).any()):
        return latents
    return [latent.clamp(-LATENT_LIMIT, LATENT_LIMIT) for latent in latents]


def check_batch_size(batch_size, name: str = "batch_size") -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"{name} must be >= 1, got {batch_size}")
    return int(batch_size)


def check_tau(tau, lead=None) -> None:
    """tau of `evolve`: a real number, or a real tensor/array of them, all finite, whose shape broadcasts
    against the latents' leading dims `lead` (number, [N], [K, 1], ...)."""
    if isinstance(tau, torch.Tensor):
        if tau.is_complex() or tau.dtype == torch.bool:
            raise TypeError(f"tau must be real, got a {tau.dtype} tensor")
        if lead is not None:
            try:
                torch.broadcast_shapes(tau.shape, lead)
            except RuntimeError:
                raise ValueError(f"tau of shape {tuple(tau.shape)} does not broadcast against the latents' leading "
                                 f"dims {tuple(lead)}: use a number, [{lead[-1] if lead else 'N'}] or [K, 1]") from None
        if tau.is_floating_point() and not bool(torch.isfinite(tau).all()):
            raise ValueError(f"tau must be finite, got NaN or inf in {tau.flatten()[:5].tolist()}")
        return
    if isinstance(tau, bool) or isinstance(tau, (str, bytes, complex)):
        raise TypeError(f"tau must be a real number or a tensor of them, got {tau!r}")
    if isinstance(tau, numbers.Real):
        if not math.isfinite(tau):
            raise ValueError(f"tau must be finite, got {tau}")
        return
    try:
        values = torch.as_tensor(tau, dtype=torch.float64)  # a list or a numpy array
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"tau must be a real number or a tensor of them, got {type(tau).__name__}") from None
    check_tau(values, lead)


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory where an output of `device` lives: CUDA's free memory, the host's available RAM
    (Linux), or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def check_output_memory(count: int, image_shape, device: torch.device) -> None:
    """Refuse, before any work, a float32 result [count, C, H, W] larger than the free memory."""
    needed = count * math.prod(image_shape) * 4
    if needed < 1 << 30:  # under 1 GiB: not worth asking the system
        return
    free = available_memory_bytes(device)
    if free is not None and needed > free:
        raise MemoryError(f"{count:,} samples of {list(image_shape)} need {needed / 2**30:.1f} GiB on {device}, "
                          f"{free / 2**30:.1f} GiB are free: sample fewer seeds per call")


def build(preset_or_config=None, **overrides) -> HKDModel:
    """An untrained HKD model from a preset name ("tiny", "cifar10", "ffhq64") or a config dict."""
    return HKDModel(resolve_config(preset_or_config, **overrides))


def load(name_or_dir="default", device="auto", dtype: torch.dtype | None = None) -> HKDModel:
    """Load a trained HKD model (a shipped name such as "default", or a checkpoint directory); `hkdviz.load`.

    device: "auto" (CUDA when present), "cpu", "cuda[:N]" or a torch.device. dtype: None (as saved),
    a floating torch.dtype, or its name ("float32", "float16", "bfloat16", "float64"). The checks and
    the provenance it records: `hkdviz.checkpoint.load_checkpoint`."""
    return load_checkpoint(name_or_dir, "hkd", lambda config, state, source: HKDModel(config), device, dtype)


def karras_sigmas(num_points: int, sigma_min: float, sigma_max: float, rho: float = 7.0, dtype=torch.float64) -> torch.Tensor:
    """EDM's time grid, sigma_max first, sigma_min last (num_points values, no trailing zero)."""
    if num_points < 1:
        raise ValueError(f"need at least one time point, got {num_points}")
    if num_points == 1:
        return torch.tensor([sigma_max], dtype=dtype)
    index = torch.arange(num_points, dtype=dtype)
    return (sigma_max ** (1 / rho) + index / (num_points - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


__all__ = ["HKDModel", "LevelInfo", "build", "load", "check_seeds", "check_batch_size", "check_tau", "seed_noise", "sigma_tensor",
           "karras_sigmas", "LATENT_LIMIT"]
