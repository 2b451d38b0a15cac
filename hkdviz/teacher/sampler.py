"""EDM's deterministic Heun sampler of the probability-flow ODE dx/dt = (x - D(x; t)) / t.

Grid: Karras et al. rho = 7, T first, eps last (sigma(t) = t). EDM's grid ends at sigma = 0 and
skips the second-order correction on the step into 0, so N steps cost 2N - 1 network evaluations
(18 steps = 35 NFE). Our grid ends at eps instead of 0, and the last step is still a plain Euler
step, which keeps EDM's NFE count (`final_correction=True` makes it Heun too, 2N evaluations).

The ODE state is kept in float64 (so the solver adds no rounding of its own); the denoiser is
called in its own dtype.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..model.hkd import karras_sigmas


def karras_grid(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """num_steps + 1 noise levels, sigma_max first and sigma_min last, float64."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    return karras_sigmas(num_steps + 1, sigma_min, sigma_max, rho=rho, dtype=torch.float64)


def heun_nfe(num_steps: int, final_correction: bool = False) -> int:
    """Network evaluations of `heun_trajectory` over num_steps steps."""
    return 2 * num_steps - (0 if final_correction else 1)


def denoiser_dtype(denoiser, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype a denoiser computes in: its `dtype` attribute, else its first parameter's, else `default`."""
    dtype = getattr(denoiser, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(denoiser, torch.nn.Module):
        for parameter in denoiser.parameters():
            return parameter.dtype
    return default


def check_grid(sigmas) -> torch.Tensor:
    """A validated 1-D float64 CPU grid: finite, positive, strictly decreasing (T first)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
    if sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError(f"sigmas must be a 1-D grid of noise levels, got shape {tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()) or not bool((sigmas > 0).all()):
        raise ValueError("sigmas must be finite and positive (the grid ends at eps > 0, not at 0)")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"sigmas must decrease strictly (T first, eps last), got {sigmas.tolist()}")
    return sigmas


@torch.no_grad()
def heun_trajectory(denoiser, x_T: torch.Tensor, sigmas, class_labels: torch.Tensor | None = None,
                    return_all: bool = True, final_correction: bool = False, return_nfe: bool = False,
                    output_dtype: torch.dtype | None = None, progress: bool = False):
    """Solve the PF-ODE from x_T (the state at sigmas[0]) through every noise level in `sigmas`.

    denoiser: callable (x, sigma[, class_labels]) -> D(x; sigma), e.g. EDMPrecond or IdealDenoiser.
    Returns the states [B, K, C, H, W] at all K = len(sigmas) levels (x_T first), or only the last
    [B, C, H, W] when return_all is False, in output_dtype (default: x_T's dtype); with return_nfe,
    a pair (states, number of network evaluations).
    """
    sigmas = check_grid(sigmas)
    if not x_T.is_floating_point():
        raise TypeError(f"x_T must be a floating-point tensor, got {x_T.dtype}")
    output_dtype = output_dtype or x_T.dtype
    network_dtype = denoiser_dtype(denoiser, default=x_T.dtype)  # plain functions get x_T's dtype
    extra = () if class_labels is None else (class_labels,)
    nfe = 0

    def derivative(x: torch.Tensor, sigma: float) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        denoised = denoiser(x.to(network_dtype), sigma, *extra).to(torch.float64)
        return (x - denoised) / sigma

    x = x_T.to(torch.float64)
    states = None
    if return_all:
        states = torch.empty((x.shape[0], sigmas.numel(), *x.shape[1:]), dtype=output_dtype, device=x.device)
        states[:, 0] = x.to(output_dtype)
    num_steps = sigmas.numel() - 1
    for step in tqdm(range(num_steps), desc="Heun", disable=not progress, leave=False):
        sigma, sigma_next = float(sigmas[step]), float(sigmas[step + 1])
        slope = derivative(x, sigma)
        x_next = x + (sigma_next - sigma) * slope
        if step < num_steps - 1 or final_correction:
            x_next = x + (sigma_next - sigma) * 0.5 * (slope + derivative(x_next, sigma_next))
        x = x_next
        if return_all:
            states[:, step + 1] = x.to(output_dtype)
    result = states if return_all else x.to(output_dtype)
    return (result, nfe) if return_nfe else result


def states_at(denoiser, x_T: torch.Tensor, sigmas, class_labels: torch.Tensor | None = None,
              final_correction: bool = False, output_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The teacher's states [B, K, C, H, W] at an explicit grid of K noise levels (x_T at sigmas[0])."""
    return heun_trajectory(denoiser, x_T, sigmas, class_labels, return_all=True,
                           final_correction=final_correction, output_dtype=output_dtype)


__all__ = ["karras_grid", "heun_trajectory", "heun_nfe", "states_at", "denoiser_dtype", "check_grid"]
