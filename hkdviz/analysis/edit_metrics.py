"""Measuring edits: frequency splits, radial power spectra, and the frequency-aware editing report.

Frequencies are in cycles per pixel (Nyquist = 0.5). The low/high split is an FFT filter over (y, x):
- "gaussian" (default): low-pass transfer exp(-f^2 / (2 cutoff^2)), f the radial frequency, so `cutoff`
  is the transfer function's standard deviation; no ringing.
- "ideal": keep f <= cutoff.
high-pass = image - low-pass. The FFT treats images as periodic (edges wrap), identically for every
image compared, so the comparisons stay fair.

Editing metrics inside the edited region R (weights from the region mask):
(a) low-pass fidelity: MSE (and PSNR, peak-to-peak 2) between the edited and the original (ratio 0,
    = model.sample) low-pass content: did the edit keep the global structure?
(b) high-pass correlation: Pearson correlation between the edited and the reference's high-pass
    content: did the reference's detail arrive?
Frequency-aware editing should keep (a) close to the original (low MSE) where the agnostic baseline
(all bands) breaks it, while (b) rises with the ratio.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import xarray as xr

from .bands import as_band, band_for_model, region_mask
from .editing import EditSession
from .interventions import Mask, check_bands, check_ratio, spectral_masking
from .storage import provenance_attrs

FILTERS = ("gaussian", "ideal")
DEFAULT_CUTOFF = 0.125  # cycles per pixel: structure larger than ~8 px counts as low frequency


def radial_frequency(height: int, width: int, device=None) -> torch.Tensor:
    """|f| in cycles per pixel on the FFT grid, [height, width]."""
    fy = torch.fft.fftfreq(height, device=device, dtype=torch.float64).reshape(-1, 1)
    fx = torch.fft.fftfreq(width, device=device, dtype=torch.float64).reshape(1, -1)
    return (fy ** 2 + fx ** 2).sqrt()


def _check_filter(cutoff: float, kind: str) -> None:
    if kind not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {kind!r}")
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 < cutoff:
        raise ValueError(f"cutoff must be a positive number (cycles per pixel), got {cutoff!r}")


def lowpass(images: torch.Tensor, cutoff: float = DEFAULT_CUTOFF, kind: str = "gaussian") -> torch.Tensor:
    """Low-pass filtered images [..., H, W] (same shape and dtype)."""
    _check_filter(cutoff, kind)
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim < 2:
        raise TypeError("images must be a floating-point tensor [..., H, W]")
    radius = radial_frequency(*images.shape[-2:], device=images.device)
    transfer = (-(radius ** 2) / (2 * cutoff ** 2)).exp() if kind == "gaussian" else (radius <= cutoff).double()
    spectrum = torch.fft.fft2(images.double())
    return torch.fft.ifft2(spectrum * transfer).real.to(images.dtype)


def split_frequencies(images: torch.Tensor, cutoff: float = DEFAULT_CUTOFF, kind: str = "gaussian"):
    """(low, high) with low + high = images."""
    low = lowpass(images, cutoff, kind)
    return low, images - low


def radial_power_spectrum(images) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of images [..., C, H, W] (channels averaged).

    Returns (frequencies [F], power [..., F]): F = min(H, W) // 2 + 1 integer-radius bins up to Nyquist,
    frequencies in cycles per pixel (bin k = k / min(H, W)); power = |FFT|^2 / (H W), bin 0 is the mean (DC).
    """
    images = torch.as_tensor(images)
    if images.ndim < 3 or not images.is_floating_point():
        raise ValueError(f"images must be a floating-point array [..., C, H, W], got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    size = min(height, width)
    power = torch.fft.fft2(images.double()).abs() ** 2 / (height * width)
    power = power.mean(dim=-3)  # channels
    bins = (radial_frequency(height, width, device=images.device) * size).round().long()
    count = size // 2 + 1
    inside = bins < count
    flat = power.reshape(-1, height * width)[:, inside.reshape(-1)]
    index = bins.reshape(-1)[inside.reshape(-1)]
    sums = torch.zeros(flat.shape[0], count, dtype=torch.float64, device=images.device).index_add_(1, index, flat)
    counts = torch.bincount(index, minlength=count).to(torch.float64)
    spectrum = (sums / counts).reshape(*power.shape[:-2], count)
    return np.arange(count) / size, spectrum.cpu().numpy()


def high_frequency_fraction(images, cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """Share of the non-DC power of images [..., C, H, W] at radial frequencies above `cutoff`, [...]."""
    images = torch.as_tensor(images)
    _check_filter(cutoff, "ideal")
    height, width = images.shape[-2:]
    power = (torch.fft.fft2(images.double()).abs() ** 2).mean(dim=-3)
    radius = radial_frequency(height, width, device=images.device)
    high = (power * (radius > cutoff)).sum(dim=(-2, -1))
    total = (power * (radius > 0)).sum(dim=(-2, -1))
    return (high / total.clamp_min(1e-300)).cpu().numpy()


def _weights(region, images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    weights = region_mask(region, height, width, device=images.device, dtype=torch.float64)
    if float(weights.sum()) == 0:
        raise ValueError("the region is empty")
    return weights.expand(*images.shape[-3:])  # [C, H, W]


def region_mse(first: torch.Tensor, second: torch.Tensor, region="all") -> torch.Tensor:
    """Weighted mean squared difference inside the region, per image: [N]."""
    weights = _weights(region, first)
    difference = (first.double() - second.double()) ** 2
    return (difference * weights).sum(dim=(-3, -2, -1)) / weights.sum()


def region_correlation(first: torch.Tensor, second: torch.Tensor, region="all") -> torch.Tensor:
    """Weighted Pearson correlation over the region's pixels and channels, per image: [N]."""
    weights = _weights(region, first)
    total = weights.sum()
    first, second = first.double(), second.double()
    first = first - (first * weights).sum(dim=(-3, -2, -1), keepdim=True) / total
    second = second - (second * weights).sum(dim=(-3, -2, -1), keepdim=True) / total
    covariance = (first * second * weights).sum(dim=(-3, -2, -1))
    scale = ((first ** 2 * weights).sum(dim=(-3, -2, -1)) * (second ** 2 * weights).sum(dim=(-3, -2, -1))).sqrt()
    return covariance / scale.clamp_min(1e-300)


def lowpass_fidelity(edited: torch.Tensor, original: torch.Tensor, region="all", cutoff: float = DEFAULT_CUTOFF,
                     kind: str = "gaussian"):
    """(mse [N], psnr [N]) between the low-pass content of edited and original images inside the region."""
    mse = region_mse(lowpass(edited, cutoff, kind), lowpass(original, cutoff, kind), region)
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-20))  # peak-to-peak range 2 for [-1, 1]
    return mse, psnr


def highpass_correlation(edited: torch.Tensor, reference: torch.Tensor, region="all", cutoff: float = DEFAULT_CUTOFF,
                         kind: str = "gaussian") -> torch.Tensor:
    """Correlation [N] between the edited images' and the reference's high-pass content inside the region."""
    _, edited_high = split_frequencies(edited, cutoff, kind)
    _, reference_high = split_frequencies(reference.expand_as(edited), cutoff, kind)
    return region_correlation(edited_high, reference_high, region)


def editing_report(model, seeds, reference: torch.Tensor, ratios: Sequence[float] = (0, .1, .2, .5, .8, .9),
                   band="high", region="lower-left", time="mid", cutoff: float = DEFAULT_CUTOFF,
                   kind: str = "gaussian", reference_seed: int = 0) -> xr.Dataset:
    """Low-pass fidelity and high-pass correlation of frequency-aware ("aware", `band`) and
    frequency-agnostic ("agnostic", all bands) edits over ratios, inside the region.

    Vars (variant, ratio): lowpass_mse, lowpass_psnr, highpass_correlation (sample means), and the same
    per sample with suffix `_per_sample` (variant, ratio, sample). The original is the ratio-0 edit.
    """
    _check_filter(cutoff, kind)
    ratios = [check_ratio(ratio) for ratio in ratios]
    if not ratios:
        raise ValueError("ratios is empty")
    band = band_for_model(model, band)
    session = EditSession(model, seeds, reference, time=time, reference_seed=reference_seed, band=band, region=region)
    original = session.update(ratio=0.0).cpu()
    reference_image = session.reference.cpu()
    variants = {"aware": band, "agnostic": as_band("all")}
    shape = (len(variants), len(ratios), len(session.seeds))
    mse, psnr, correlation = np.empty(shape), np.empty(shape), np.empty(shape)
    for row, variant_band in enumerate(variants.values()):
        for column, ratio in enumerate(ratios):
            edited = session.update(ratio=ratio, band=variant_band).cpu()
            values = lowpass_fidelity(edited, original, region, cutoff, kind)
            mse[row, column], psnr[row, column] = values[0].numpy(), values[1].numpy()
            correlation[row, column] = highpass_correlation(edited, reference_image, region, cutoff, kind).numpy()
    dims = ("variant", "ratio", "sample")
    data = {"lowpass_mse": (dims[:2], mse.mean(-1)), "lowpass_psnr": (dims[:2], psnr.mean(-1)),
            "highpass_correlation": (dims[:2], correlation.mean(-1)),
            "lowpass_mse_per_sample": (dims, mse), "lowpass_psnr_per_sample": (dims, psnr),
            "highpass_correlation_per_sample": (dims, correlation)}
    edit = session.to_dict()
    edit.pop("ratio")
    edit.update(band=band.to_dict(), baseline=as_band("all").to_dict(), ratios=ratios)
    return xr.Dataset(data, coords={"variant": list(variants), "ratio": np.asarray(ratios),
                                    "sample": np.asarray(session.seeds)},
                      attrs=provenance_attrs(model, analysis="editing_report", edits=[edit], cutoff=cutoff, filter=kind))


def band_spectra(model, seeds, bands=("smallest", "intermediate", "largest", "all"), time=None,
                 cutoff: float = DEFAULT_CUTOFF) -> xr.Dataset:
    """Radial power spectrum of each band's decode (spectral masking, unclamped), averaged over samples.

    Vars: power (band, frequency), high_frequency_fraction (band) = share of non-DC power above `cutoff`
    (sample mean). Tells which alpha band carries the image's fine detail on this model.
    """
    bands = check_bands(bands, model)
    masked = spectral_masking(model, seeds, bands, time=time, clamp=False)
    images = torch.from_numpy(masked["image"].values)  # (band, sample, C, H, W)
    frequencies, power = radial_power_spectrum(images)
    fraction = high_frequency_fraction(images, cutoff)
    return xr.Dataset(
        {"power": (("band", "frequency"), power.mean(axis=1)),
         "high_frequency_fraction": (("band",), fraction.mean(axis=1)),
         "high_frequency_fraction_per_sample": (("band", "sample"), fraction)},
        coords={"band": masked["band"].values, "frequency": frequencies, "sample": masked["sample"].values},
        attrs=provenance_attrs(model, analysis="band_spectra", bands=[band.to_dict() for band in bands],
                               cutoff=cutoff, time=time if time is not None else model.sigma_min,
                               edits=[Mask(band).to_dict() for band in bands]),
    )


def measure_band_aliases(model, seeds, cutoff: float = DEFAULT_CUTOFF) -> dict | None:
    """Which alpha third carries the most, the middle and the least decoded high-frequency power on this
    model over `seeds` (band_spectra of the three thirds, decoded alone): what a checkpoint's meta.json
    records as bands.ALIASES_META_KEY (the training loop writes it, on seeds it never trained on).

    Returns {"high": third, "mid": third, "low": third, "seeds": n, "share": {third: mean share},
    "margins": {"high_over_mid": [difference, standard error], "mid_over_low": [...]}}: the margins are
    paired over the seeds, so a margin within about two standard errors says the two thirds carry the
    same detail and the alias between them is a coin toss (`hkdviz info` says so). None for a model whose
    levels have no block modes to rank."""
    from ..model.koopman import BLOCK_OPERATORS
    if not any(info.operator in BLOCK_OPERATORS for info in model.levels):
        return None
    if any(info.operator not in BLOCK_OPERATORS + ("identity",) for info in model.levels):
        return None  # dense levels: spectral bands are not defined there
    names = ("smallest", "intermediate", "largest")
    per_sample = band_spectra(model, seeds, names, cutoff=cutoff)["high_frequency_fraction_per_sample"].values
    means = per_sample.mean(axis=1)
    order = [int(index) for index in np.argsort(-means, kind="stable")]  # most detail first

    def margin(upper: int, lower: int) -> list[float]:
        difference = per_sample[upper] - per_sample[lower]
        error = float(difference.std(ddof=1) / np.sqrt(difference.size)) if difference.size > 1 else float("nan")
        return [float(difference.mean()), error]

    return {"high": names[order[0]], "mid": names[order[1]], "low": names[order[2]], "seeds": len(per_sample[0]),
            "share": {name: float(value) for name, value in zip(names, means)},
            "margins": {"high_over_mid": margin(order[0], order[1]), "mid_over_low": margin(order[1], order[2])}}


__all__ = ["lowpass", "split_frequencies", "radial_power_spectrum", "high_frequency_fraction", "region_mse",
           "region_correlation", "lowpass_fidelity", "highpass_correlation", "editing_report", "band_spectra",
           "radial_frequency", "DEFAULT_CUTOFF", "measure_band_aliases"]
