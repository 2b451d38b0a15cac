"""EDM's four preconditionings around any EDM network, as teacher denoisers D(x; sigma).

NVlabs/edm `training/networks.py` writes every denoiser as

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

and its four classes differ only in the coefficients (Karras et al. 2022, Table 1):

    VPPrecond    c_skip 1   c_out -sigma   c_in 1/sqrt(sigma^2+1)   c_noise (M-1) t(sigma)   (DDPM++ baseline)
    VEPrecond    c_skip 1   c_out sigma    c_in 1                   c_noise ln(sigma/2)      (NCSN++ baseline)
    iDDPMPrecond c_skip 1   c_out -sigma   c_in 1/sqrt(sigma^2+1)   c_noise M-1-j(sigma)     (ADM baseline)
    EDMPrecond   c_skip sd^2/(sigma^2+sd^2)   c_out sigma sd/sqrt(sigma^2+sd^2)   c_in 1/sqrt(sigma^2+sd^2)   c_noise ln(sigma)/4

VP's noise level follows sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), and t(sigma) is its
inverse. iDDPM's network was trained at M discrete noise levels u_0 > ... > u_M = 0 (a cosine
alpha-bar schedule); j(sigma) is the index of the u nearest sigma (`round_sigma`), and its network
predicts 2 * channels (mean and variance), of which the first half is used.

The classes here take EDM's constructor arguments (img_resolution, img_channels, label_dim, use_fp16,
the preconditioning's own settings, model_type and the network's arguments) and hold the network
as `self.model`, so their state dicts use EDM's names ("model.enc.32x32_conv.weight", and "u" for
iDDPM). hkdviz's own `teacher.edm.EDMPrecond` stays the teacher HKD distils (DDPM++ split into an
encoder and a decoder); `EDMPreconditioning` here serves the EDM networks hkdviz cannot split.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...checkpoint import carried_meta, save_checkpoint
from ...model.config import DIFFUSION_DEFAULTS, UNET_DEFAULTS, resolve_config
from ...model.hkd import ParameterPlacement, check_image_batch
from ..edm import sigma_column
from .dhariwal import DhariwalUNet
from .song import SongUNet

# EDM's network classes by the name a pickle records (EDM's `model_type`).
NETWORKS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
# The key of a teacher checkpoint's config.json that marks an EDM network teacher (not hkdviz's EDMPrecond).
EDM_NETWORK_KEY = "edm_network"


class Preconditioning(ParameterPlacement, nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) around EDM network `self.model`.

    Subclasses define `coefficients` and their own settings; `edm_name` is EDM's class name.
    `forward(x, sigma, class_labels=None)` follows hkdviz's EDMPrecond: the preconditioning runs in
    float32 (float64 for float64 x), the network in its own dtype. EDM's `use_fp16` (half-precision
    network on CUDA) is recorded, not applied: cast the teacher with `.to(dtype=...)` or autocast.
    """

    edm_name = "?"
    default_model_type = "SongUNet"
    output_factor = 1  # network output channels per image channel (iDDPM: 2)

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 model_type: str | None = None, **model_kwargs):
        super().__init__()
        model_type = model_type or self.default_model_type
        if model_type not in NETWORKS:
            raise ValueError(f"{self.edm_name}: unknown model_type {model_type!r}; known: {sorted(NETWORKS)}")
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.label_dim = int(label_dim)
        self.use_fp16 = bool(use_fp16)
        self.model_type = model_type
        self.model_kwargs = dict(model_kwargs)
        self.model = NETWORKS[model_type](img_resolution=self.img_resolution, in_channels=self.img_channels,
                                          out_channels=self.img_channels * self.output_factor,
                                          label_dim=self.label_dim, **model_kwargs)
        # Provenance (the imported pickle, ...); save (and Teacher.save) carries it into meta.json.
        self.meta: dict = {}

    # -- what a subclass defines --------------------------------------------------------------------
    sigma_min: float
    sigma_max: float

    def settings(self) -> dict:
        """The preconditioning's own constructor arguments (JSON-able)."""
        return {}

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) for sigma [N, 1, 1, 1]; c_noise may keep that shape."""
        raise NotImplementedError

    def round_sigma(self, sigma) -> torch.Tensor:
        """The noise level the network is evaluated at (identity except for iDDPM's discrete grid)."""
        return torch.as_tensor(sigma)

    # -- the denoiser ------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.img_channels, self.img_resolution, self.img_resolution)

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        check_image_batch(x, self.image_shape)
        precision = torch.promote_types(x.dtype, torch.float32)
        x = x.to(precision)
        sigma = sigma_column(sigma, x.shape[0], x.device, precision)
        network_dtype = self.dtype
        if self.label_dim:
            if class_labels is None:
                # EDM feeds zeros here; a class-conditional teacher without labels is almost always a mistake.
                raise ValueError(f"this teacher is class-conditional (label_dim={self.label_dim}): pass class_labels "
                                 f"(one-hot, [N, {self.label_dim}])")
            class_labels = class_labels.to(device=x.device, dtype=network_dtype).reshape(-1, self.label_dim)
        else:
            class_labels = None
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        kwargs = {} if augment_labels is None else {"augment_labels": augment_labels.to(device=x.device, dtype=network_dtype)}
        output = self.model((c_in * x).to(network_dtype), c_noise.flatten().float(), class_labels, **kwargs)
        return c_skip * x + c_out * output[:, :self.img_channels].to(precision)

    # -- description -------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """What `Teacher` reads (see `hkdviz_config`)."""
        return self.hkdviz_config()

    def save(self, directory, meta: dict | None = None, config: dict | None = None):
        """A teacher checkpoint directory (`hkdviz.teacher.load_teacher` reads it back): the weights, the
        config a Teacher reads (`hkdviz_config`, or `config`) with this network's description under
        EDM_NETWORK_KEY, and this module's provenance updated by `meta`."""
        config = resolve_config(self.hkdviz_config() if config is None else config)
        return save_checkpoint(self, directory, kind="teacher", meta=carried_meta(self.meta, meta),
                               config={**config, EDM_NETWORK_KEY: self.network_spec()})

    def network_spec(self) -> dict:
        """Everything needed to rebuild this module (stored in a teacher checkpoint's config.json)."""
        return {"precond": self.edm_name,
                "precond_kwargs": {"img_resolution": self.img_resolution, "img_channels": self.img_channels,
                                   "label_dim": self.label_dim, "use_fp16": self.use_fp16, **self.settings()},
                "model_type": self.model_type, "model_kwargs": _plain(self.model_kwargs)}

    def hkdviz_config(self) -> dict:
        """The config a `Teacher` reads: image shape and label_dim in "unet", the sampling range in "diffusion".

        The "unet" section carries the network's own values where hkdviz's SongUNet has a key of that
        name; the network itself is described by `network_spec()`. The sampling range is EDM's
        generate.py default [0.002, 80] clipped to the range the preconditioning was trained on.
        """
        defaults = {name: parameter.default for name, parameter in _signature(NETWORKS[self.model_type]).items()}
        values = {**defaults, **self.model_kwargs}
        unet = {key: _plain(values[key]) for key in UNET_DEFAULTS if key in values}
        unet.update(img_resolution=self.img_resolution, in_channels=self.img_channels, out_channels=self.img_channels,
                    label_dim=self.label_dim)
        sigma_min = max(DIFFUSION_DEFAULTS["sigma_min"], float(self.sigma_min))
        sigma_max = min(DIFFUSION_DEFAULTS["sigma_max"], float(self.sigma_max))
        # iDDPM: both ends on its noise levels, so x_T = T * noise sits at the grid's first level (see round_grid).
        sigma_min, sigma_max = (float(self.round_sigma(torch.tensor(value, dtype=torch.float64, device="cpu")))
                                for value in (sigma_min, sigma_max))
        diffusion = {"sigma_min": sigma_min, "sigma_max": sigma_max,
                     "sigma_data": float(getattr(self, "sigma_data", DIFFUSION_DEFAULTS["sigma_data"]))}
        return resolve_config({"unet": unet, "diffusion": diffusion})

    def describe(self) -> str:
        """e.g. "VEPrecond + SongUNet (NCSN++)"."""
        return f"{self.edm_name} + {network_name(self.model_type, self.model_kwargs)}"

    def extra_repr(self) -> str:
        return f"{self.describe()}, parameters={sum(p.numel() for p in self.parameters()):,}"


class VPPreconditioning(Preconditioning):
    """EDM's VPPrecond (variance preserving, Song et al. 2021's DDPM++ baseline)."""

    edm_name = "VPPrecond"

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000, epsilon_t: float = 1e-5,
                 model_type: str = "SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = float(beta_d), float(beta_min), int(M), float(epsilon_t)
        self.sigma_min = float(self.sigma(epsilon_t))
        self.sigma_max = float(self.sigma(1))

    def settings(self) -> dict:
        return {"beta_d": self.beta_d, "beta_min": self.beta_min, "M": self.M, "epsilon_t": self.epsilon_t}

    def sigma(self, t) -> torch.Tensor:
        """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
        t = torch.as_tensor(t, dtype=torch.float64, device="cpu") if not torch.is_tensor(t) else t
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma) -> torch.Tensor:
        """t(sigma), the inverse of `sigma`: the root of beta_d t^2 / 2 + beta_min t = ln(1 + sigma^2)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device="cpu") if not torch.is_tensor(sigma) else sigma
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        return 1, -sigma, c_in, (self.M - 1) * self.sigma_inv(sigma)


class VEPreconditioning(Preconditioning):
    """EDM's VEPrecond (variance exploding, Song et al. 2021's NCSN++ baseline)."""

    edm_name = "VEPrecond"

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 sigma_min: float = 0.02, sigma_max: float = 100.0, model_type: str = "SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def settings(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def coefficients(self, sigma):
        return 1, sigma, 1, (0.5 * sigma).log()


class IDDPMPreconditioning(Preconditioning):
    """EDM's iDDPMPrecond (improved DDPM, Nichol & Dhariwal 2021; the ADM baseline)."""

    edm_name = "iDDPMPrecond"
    default_model_type = "DhariwalUNet"
    output_factor = 2

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 C_1: float = 0.001, C_2: float = 0.008, M: int = 1000, model_type: str = "DhariwalUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.C_1, self.C_2, self.M = float(C_1), float(C_2), int(M)
        self.register_buffer("u", iddpm_noise_levels(self.C_1, self.C_2, self.M))
        self.sigma_min = float(self.u[self.M - 1])
        self.sigma_max = float(self.u[0])

    def settings(self) -> dict:
        return {"C_1": self.C_1, "C_2": self.C_2, "M": self.M}

    def round_sigma(self, sigma, return_index: bool = False) -> torch.Tensor:
        """The u-grid value nearest each sigma (or its index j), in sigma's shape and dtype."""
        sigma = torch.as_tensor(sigma)
        grid = self.u.float()
        index = (sigma.to(device=grid.device, dtype=torch.float32).reshape(-1, 1) - grid.reshape(1, -1)).abs().argmin(1)
        result = index if return_index else grid[index].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)

    def coefficients(self, sigma):
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(sigma.dtype)
        return 1, -sigma, c_in, c_noise


class EDMPreconditioning(Preconditioning):
    """EDM's EDMPrecond around a network hkdviz cannot split for HKD (NCSN++, ADM)."""

    edm_name = "EDMPrecond"
    default_model_type = "DhariwalUNet"

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 sigma_min: float = 0.0, sigma_max: float = math.inf, sigma_data: float = 0.5,
                 model_type: str = "DhariwalUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)

    def settings(self) -> dict:
        # EDM's defaults (0, inf) mean "no limit"; inf is not JSON, so only finite limits are written.
        limits = {key: value for key, value in (("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max))
                  if math.isfinite(value)}
        return {**limits, "sigma_data": self.sigma_data}

    def coefficients(self, sigma):
        variance = sigma ** 2 + self.sigma_data ** 2
        return self.sigma_data ** 2 / variance, sigma * self.sigma_data / variance.sqrt(), 1 / variance.sqrt(), sigma.log() / 4


# EDM's class names -> ours.
PRECONDITIONINGS = {cls.edm_name: cls for cls in (VPPreconditioning, VEPreconditioning, IDDPMPreconditioning,
                                                   EDMPreconditioning)}


def iddpm_noise_levels(C_1: float = 0.001, C_2: float = 0.008, M: int = 1000) -> torch.Tensor:
    """iDDPM's M + 1 noise levels u_0 > ... > u_M = 0, float32 as EDM computes them.

    u_{j-1} = sqrt((u_j^2 + 1) / max(alpha_bar(j-1) / alpha_bar(j), C_1) - 1), alpha_bar(j) = sin^2(pi j / (2 M (C_2 + 1))).
    """
    def alpha_bar(j: int) -> torch.Tensor:
        return (0.5 * np.pi * torch.as_tensor(j, device="cpu") / M / (C_2 + 1)).sin() ** 2

    u = torch.zeros(M + 1, device="cpu")  # always CPU: also when a caller builds on the meta device
    for j in range(M, 0, -1):
        u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=C_1) - 1).sqrt()
    return u


def round_grid(denoiser, sigmas: torch.Tensor) -> torch.Tensor:
    """A sampling grid snapped onto the noise levels an iDDPM teacher was trained at, as EDM's sampler
    snaps it (`round_sigma`); every other denoiser's grid unchanged."""
    if not isinstance(denoiser, IDDPMPreconditioning):
        return sigmas
    snapped = denoiser.round_sigma(sigmas)
    if bool((snapped[1:] >= snapped[:-1]).any()):
        raise ValueError(f"{sigmas.numel() - 1} steps are finer than iDDPM's {denoiser.M} noise levels: two steps "
                         "round to the same level; use fewer steps")
    return snapped


def network_name(model_type: str, model_kwargs: dict) -> str:
    """DDPM++ / NCSN++ / ADM, the names EDM's paper uses for its networks."""
    if model_type == "DhariwalUNet":
        return "DhariwalUNet (ADM)"
    song = {**{name: parameter.default for name, parameter in _signature(SongUNet).items()}, **model_kwargs}
    ddpmpp = (song["embedding_type"] == "positional" and song["encoder_type"] == "standard"
              and song["decoder_type"] == "standard" and list(song["resample_filter"]) == [1, 1])
    ncsnpp = song["embedding_type"] == "fourier" and song["encoder_type"] != "standard"
    return f"SongUNet ({'DDPM++' if ddpmpp else 'NCSN++' if ncsnpp else 'custom'})"


def build_preconditioning(spec: dict) -> Preconditioning:
    """Rebuild a `Preconditioning` from `Preconditioning.network_spec()`'s dict (randomly initialised)."""
    return PRECONDITIONINGS[spec["precond"]](model_type=spec["model_type"], **spec["precond_kwargs"],
                                             **spec["model_kwargs"])


def _signature(cls) -> dict:
    import inspect
    return {name: parameter for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD}


def accepted_arguments(cls) -> set[str]:
    """Keyword arguments a preconditioning or network constructor takes (without **model_kwargs)."""
    return set(_signature(cls))


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


__all__ = ["EDM_NETWORK_KEY", "Preconditioning", "VPPreconditioning", "VEPreconditioning", "IDDPMPreconditioning",
           "EDMPreconditioning", "PRECONDITIONINGS", "NETWORKS", "build_preconditioning", "iddpm_noise_levels", "network_name",
           "accepted_arguments", "round_grid"]
