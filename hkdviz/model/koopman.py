"""Koopman operators: one linear generator per level and spatial position.

Evolution is exp(tau * A) applied to a latent z of shape [..., d, h, w]. `tau` may be a number or a
tensor whose shape broadcasts against z's leading (batch) dimensions, so many times are one call:
latents [N, d, h, w] with tau of shape [K, 1] give [K, N, d, h, w].

Three operator kinds:
- BlockKoopman: the paper's block-diagonal A with 2x2 blocks [[alpha, beta], [-beta, alpha]],
  channel k paired with channel k + d/2. Closed form, elementwise, no matrix exponential. Per
  position ("block", parameter (d, h, w)) or one alpha/beta per channel pair shared by every
  position of the level ("block_shared", parameter (d, 1, 1)), which evolves exactly like a "block"
  level holding the broadcast copy.
- DenseKoopman: a full d x d generator per position (or one per level with shared=True), for
  ablations and for importing other Koopman models. Uses torch.linalg.matrix_exp.
- IdentityKoopman: no evolution (A = 0, not trained), for the "no Koopman" and "bottleneck only"
  ablations.

Koopman time. The generator acts per unit of a *Koopman time* s(sigma), and a latent encoded at
sigma_a is carried to sigma_b by exp((s(sigma_b) - s(sigma_a)) A). `koopman_time` is the one mapping
every consumer goes through (HKDModel.evolve_between): "sigma" (s = sigma, the paper's tau = t - T),
"log_sigma" (s = ln sigma: every e-fold of the noise level is one unit) or "karras" (s = sigma^(1/7),
the variable in which EDM's Karras grid is uniform). Eigenvalues are rates per unit of that time.
"""
from __future__ import annotations

import torch
from torch import nn

# exp(60) ~ 1.1e26: far beyond any meaningful state, yet a latent of magnitude up to ~1e12 can be
# scaled by it without overflowing float32 (max ~3.4e38). Larger |alpha * tau| saturate here
# instead of producing inf/NaN; the semigroup law then holds only up to the saturation.
DEFAULT_MAX_EXPONENT = 60.0


KOOPMAN_TIMES = ("sigma", "log_sigma", "karras")
KARRAS_RHO = 7.0


def koopman_time(sigma, kind: str = "sigma") -> torch.Tensor:
    """s(sigma) in float64 (a tensor shaped like sigma); differences of it are the evolution times tau."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if kind == "sigma":
        return sigma
    if kind == "log_sigma":
        return sigma.log()
    if kind == "karras":
        return sigma ** (1 / KARRAS_RHO)
    raise ValueError(f"unknown Koopman time {kind!r}; choose one of {KOOPMAN_TIMES}")


def koopman_time_label(kind: str) -> str:
    """The unit of Koopman time, for dataset attrs and plot labels."""
    return {"sigma": "sigma", "log_sigma": "ln sigma", "karras": "sigma^(1/7)"}[kind]


def _as_tau(tau, reference: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tau = torch.as_tensor(tau, dtype=dtype, device=reference.device)
    # Leading-dims broadcast: append the (d, h, w) axes.
    return tau.reshape(*tau.shape, 1, 1, 1)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision latents are evolved in float32: exp and trig in bf16 lose the phase quickly.
    return torch.float64 if dtype == torch.float64 else torch.float32


class KoopmanLevel(nn.Module):
    kind = "abstract"

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.channels = channels
        self.height = height
        self.width = width

    def evolve(self, latent: torch.Tensor, tau) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def dense_generator(self) -> torch.Tensor:
        """The generator as dense matrices, shape [h, w, d, d] (row = output channel)."""
        raise NotImplementedError  # pragma: no cover

    def _check(self, latent: torch.Tensor) -> None:
        if latent.shape[-3:] != (self.channels, self.height, self.width):
            raise ValueError(f"latent of shape {tuple(latent.shape)} does not match this Koopman level "
                             f"(expects [..., {self.channels}, {self.height}, {self.width}])")


class BlockKoopman(KoopmanLevel):
    """Block-diagonal generator; parameter `generator` of shape (d, h, w) = [alpha | beta], or (d, 1, 1)
    with shared=True (kind "block_shared": one alpha/beta per channel pair for every position)."""

    kind = "block"

    def __init__(self, channels: int, height: int, width: int, max_exponent: float = DEFAULT_MAX_EXPONENT,
                 shared: bool = False):
        if channels % 2:
            raise ValueError(f"a block Koopman level needs an even channel count, got {channels}")
        super().__init__(channels, height, width)
        self.max_exponent = float(max_exponent)
        self.shared = shared
        if shared:
            self.kind = "block_shared"
        rows, cols = (1, 1) if shared else (height, width)
        # Zero generator = identity evolution (paper's initialisation).
        self.generator = nn.Parameter(torch.zeros(channels, rows, cols))

    @property
    def num_pairs(self) -> int:
        return self.channels // 2

    def position_generator(self) -> torch.Tensor:
        """The generator at every position, (d, h, w): the parameter itself, or for a shared level its
        broadcast view (no copy; gradients flow back to the (d, 1, 1) parameter)."""
        return self.generator.expand(self.channels, self.height, self.width)

    @property
    def alpha(self) -> torch.Tensor:
        """Growth rates per pair and position, (d/2, h, w) (a broadcast view for a shared level)."""
        return self.position_generator()[: self.num_pairs]

    @property
    def beta(self) -> torch.Tensor:
        """Angular frequencies per pair and position, (d/2, h, w) (a broadcast view for a shared level)."""
        return self.position_generator()[self.num_pairs:]

    def evolve(self, latent: torch.Tensor, tau) -> torch.Tensor:
        self._check(latent)
        compute = _compute_dtype(latent.dtype)
        tau = _as_tau(tau, latent, compute)
        # A shared level computes on the per-position view: the same elementwise kernels on the same
        # layout as a "block" level, so it evolves bit for bit like one holding the broadcast copy.
        alpha = self.alpha.to(compute)
        beta = self.beta.to(compute)
        growth = (alpha * tau).clamp(-self.max_exponent, self.max_exponent).exp()
        angle = beta * tau
        cos = growth * angle.cos()
        sin = growth * angle.sin()
        u, v = latent.to(compute).split(self.num_pairs, dim=-3)
        # w = u + i v  ->  w' = e^{alpha tau} e^{-i beta tau} w
        evolved = torch.cat([cos * u + sin * v, cos * v - sin * u], dim=-3)
        return evolved.to(latent.dtype)

    def dense_generator(self) -> torch.Tensor:
        pairs = self.num_pairs
        alpha = self.alpha.permute(1, 2, 0)
        beta = self.beta.permute(1, 2, 0)
        dense = self.generator.new_zeros(self.height, self.width, self.channels, self.channels)
        index = torch.arange(pairs, device=self.generator.device)
        dense[:, :, index, index] = alpha
        dense[:, :, index + pairs, index + pairs] = alpha
        dense[:, :, index, index + pairs] = beta
        dense[:, :, index + pairs, index] = -beta
        return dense


class DenseKoopman(KoopmanLevel):
    """Full generator per position (`shared=False`, parameter (h, w, d, d)) or per level ((1, 1, d, d))."""

    kind = "dense"

    def __init__(self, channels: int, height: int, width: int, shared: bool = False):
        super().__init__(channels, height, width)
        self.shared = shared
        if shared:
            self.kind = "dense_shared"
        rows, cols = (1, 1) if shared else (height, width)
        self.matrix = nn.Parameter(torch.zeros(rows, cols, channels, channels))

    def evolve(self, latent: torch.Tensor, tau) -> torch.Tensor:
        self._check(latent)
        compute = _compute_dtype(latent.dtype)
        tau = torch.as_tensor(tau, dtype=compute, device=latent.device)
        # [*tau, rows, cols, d, d]; matrix_exp is batched over everything in front.
        propagator = torch.linalg.matrix_exp(tau.reshape(*tau.shape, 1, 1, 1, 1) * self.matrix.to(compute))
        propagator = propagator.movedim((-4, -3), (-2, -1))  # [*tau, d, d, rows, cols]
        evolved = torch.einsum("...ijhw,...jhw->...ihw", propagator, latent.to(compute))
        return evolved.to(latent.dtype)

    def dense_generator(self) -> torch.Tensor:
        return self.matrix.expand(self.height, self.width, self.channels, self.channels)


class IdentityKoopman(KoopmanLevel):
    """No dynamics: the latent passes unchanged (broadcast to tau's shape like the others)."""

    kind = "identity"

    def evolve(self, latent: torch.Tensor, tau) -> torch.Tensor:
        self._check(latent)
        tau = _as_tau(tau, latent, _compute_dtype(latent.dtype))
        shape = torch.broadcast_shapes(tau.shape[:-3], latent.shape[:-3]) + latent.shape[-3:]
        return latent.expand(shape)

    def dense_generator(self) -> torch.Tensor:
        return torch.zeros(self.height, self.width, self.channels, self.channels)


OPERATORS = ("block", "block_shared", "dense", "dense_shared")
# Kinds whose modes are channel pairs (closed-form spectrum, alpha/beta bands), and kinds whose
# generator is one per level broadcast over positions (per-position spectrum entries are copies).
BLOCK_OPERATORS = ("block", "block_shared")
SHARED_OPERATORS = ("block_shared", "dense_shared")


def make_level(operator: str, channels: int, height: int, width: int, max_exponent: float = DEFAULT_MAX_EXPONENT) -> KoopmanLevel:
    if operator == "block":
        return BlockKoopman(channels, height, width, max_exponent=max_exponent)
    if operator == "block_shared":
        return BlockKoopman(channels, height, width, max_exponent=max_exponent, shared=True)
    if operator == "dense":
        return DenseKoopman(channels, height, width, shared=False)
    if operator == "dense_shared":
        return DenseKoopman(channels, height, width, shared=True)
    if operator == "identity":
        return IdentityKoopman(channels, height, width)
    raise ValueError(f"unknown Koopman operator {operator!r}; choose one of {OPERATORS + ('identity',)}")


def randomize_generators(model, seed: int = 0, alpha_scale: float = 0.05, beta_scale: float = 0.5):
    """Give every block level of an (untrained) model random generators: alpha ~ -alpha_scale * U(0, 1)
    (decaying) and beta ~ beta_scale * N(0, 1) (rotating), seeded. An untrained model's generators are
    zero (identity evolution), which makes every band alike and flatters eigensolvers; tests,
    benchmarks and mechanics demos use this to get a non-trivial, reproducible spectrum."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for level in model.koopman:
            if getattr(level, "kind", "") in BLOCK_OPERATORS:
                pairs = level.num_pairs
                shape = (pairs, *level.generator.shape[1:])  # (pairs, 1, 1) for a shared level
                level.generator[:pairs] = -alpha_scale * torch.rand(shape, generator=generator)
                level.generator[pairs:] = beta_scale * torch.randn(shape, generator=generator)
    return model
