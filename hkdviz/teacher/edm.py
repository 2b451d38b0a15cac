"""The EDM teacher: preconditioned denoiser D(x; sigma) around a SongUNet, and EDM's training loss.

Follows NVlabs/edm `training/networks.py` (EDMPrecond) and `training/loss.py` (EDMLoss):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,  sd = sigma_data = 0.5.

The teacher is built from the same config format as HKD (sections unet / diffusion / koopman; the
koopman section is ignored here), and its U-Net (`self.net`) has the same parameter names as
`HKDModel.unet`, which is how HKD's encoder and decoder are initialised from the teacher.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import carried_meta, save_checkpoint
from ..model.config import unet_kwargs
from ..model.hkd import DiffusionModule, check_image_batch, sigma_tensor
from ..model.unet import SongUNet

# U-Net settings that do not change any parameter's name or shape: a teacher trained with one
# dropout can initialise an HKD model fine-tuned with another.
_NON_ARCHITECTURE_KEYS = ("dropout", "label_dropout")


def sigma_column(sigma, batch: int, device, dtype) -> torch.Tensor:
    """A number, [N] or [N, 1, 1, 1] sigma as a validated [N, 1, 1, 1] tensor."""
    return sigma_tensor(sigma, batch, device, dtype).reshape(batch, 1, 1, 1)


class EDMPrecond(DiffusionModule):
    """EDM's preconditioned denoiser. `forward(x, sigma)` returns D(x; sigma), the denoised image."""

    def __init__(self, config: dict | str | None = None):
        super().__init__(config)
        self.net = SongUNet(**unet_kwargs(self.config))
        # Provenance (checkpoint path, imported pickle, ...); save carries it into meta.json.
        self.meta: dict = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.net.in_channels, self.net.img_resolution, self.net.img_resolution)

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma) for x [N, C, H, W] and sigma a number, [N] or [N, 1, 1, 1].

        The preconditioning runs in float32 (float64 when x is float64), the network in its own
        dtype, as EDM does; the result has the preconditioning dtype.
        """
        check_image_batch(x, self.image_shape)
        precision = torch.promote_types(x.dtype, torch.float32)
        x = x.to(precision)
        sigma = sigma_column(sigma, x.shape[0], x.device, precision)
        variance = sigma ** 2 + self.sigma_data ** 2
        c_skip = self.sigma_data ** 2 / variance
        c_out = sigma * self.sigma_data / variance.sqrt()
        c_in = 1 / variance.sqrt()
        c_noise = (sigma.log() / 4).flatten().float()
        network_dtype = self.dtype
        if class_labels is not None:
            class_labels = class_labels.to(device=x.device, dtype=network_dtype)
        output = self.net((c_in * x).to(network_dtype), c_noise, class_labels, augment_labels)
        return c_skip * x + c_out * output.to(precision)

    def save(self, directory, meta: dict | None = None, config: dict | None = None) -> Path:
        """A teacher checkpoint (kind "teacher"): this module's provenance updated by `meta`; config
        defaults to this module's (a Teacher passes its own)."""
        return save_checkpoint(self, directory, kind="teacher", meta=carried_meta(self.meta, meta),
                               config=self.config if config is None else config)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def extra_repr(self) -> str:
        return f"preset={self.config['preset']!r}, sigma_data={self.sigma_data}, parameters={self.num_parameters():,}"


def _architecture(config: dict) -> dict:
    unet = {key: value for key, value in config["unet"].items() if key not in _NON_ARCHITECTURE_KEYS}
    return {"unet": unet, "sigma_data": config["diffusion"]["sigma_data"]}


def init_hkd_from_teacher(hkd_model, teacher):
    """Copy the teacher's U-Net weights into HKD's encoder/decoder (`hkd_model.unet`), as the paper does.

    `teacher` is an EDMPrecond or a Teacher wrapping one. The Koopman generators are left as they
    are (zero = identity evolution at initialisation). Returns hkd_model.
    """
    denoiser = getattr(teacher, "denoiser", teacher)
    if not isinstance(denoiser, EDMPrecond):
        raise TypeError(f"init_hkd_from_teacher needs an EDMPrecond teacher, got {type(denoiser).__name__}")
    expected, found = _architecture(hkd_model.config), _architecture(denoiser.config)
    if expected != found:
        differences = [f"unet.{key}: HKD {expected['unet'].get(key)!r} vs teacher {found['unet'].get(key)!r}"
                       for key in sorted(set(expected["unet"]) | set(found["unet"]))
                       if expected["unet"].get(key) != found["unet"].get(key)]
        if expected["sigma_data"] != found["sigma_data"]:
            differences.append(f"diffusion.sigma_data: HKD {expected['sigma_data']} vs teacher {found['sigma_data']}")
        raise ValueError("cannot initialise HKD from this teacher, the configs differ: " + "; ".join(differences))
    with torch.no_grad():
        hkd_model.unet.load_state_dict(denoiser.net.state_dict(), strict=True)
    return hkd_model


class EDMLoss:
    """EDM's denoising loss: log-normal sigma, weight (sigma^2 + sd^2) / (sigma sd)^2. Returns the
    per-element loss [N, C, H, W]; the caller reduces it (EDM sums, then divides by the batch)."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5):
        self.P_mean = P_mean
        self.P_std = P_std
        self.sigma_data = sigma_data

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def sample_sigma(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """sigma = exp(P_mean + P_std * n), n ~ N(0, 1), as [batch, 1, 1, 1] float32."""
        normal = _randn([batch, 1, 1, 1], device, generator)
        return (normal * self.P_std + self.P_mean).exp()

    def loss_at(self, net, images: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                class_labels: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The loss for given sigma [N, 1, 1, 1] and unit noise [N, C, H, W] (deterministic)."""
        kwargs = {} if augment_labels is None else {"augment_labels": augment_labels}
        denoised = net(images + noise * sigma, sigma, class_labels, **kwargs)
        return self.weight(sigma) * (denoised - images) ** 2

    def __call__(self, net, images: torch.Tensor, class_labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must have shape [N, C, H, W], got {tuple(images.shape)}")
        sigma = self.sample_sigma(images.shape[0], images.device, generator)
        noise = _randn(list(images.shape), images.device, generator).to(images.dtype)
        return self.loss_at(net, images, sigma, noise, class_labels, augment_labels)


def _randn(shape, device, generator: torch.Generator | None) -> torch.Tensor:
    # Draw on the generator's device (a CPU generator keeps runs reproducible across devices).
    source = generator.device if generator is not None else device
    return torch.randn(shape, device=source, generator=generator).to(device)


__all__ = ["EDMPrecond", "EDMLoss", "init_hkd_from_teacher", "sigma_column"]
