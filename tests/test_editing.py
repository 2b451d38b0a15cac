"""Frequency-aware editing, gain/phase edits, zero-shot inpainting/colorization, and the edit metrics."""
import json
import math

import numpy as np
import pytest
import torch

from hkdviz.analysis.bands import band_masks, region_mask, selection_masks
from hkdviz.analysis.edit_metrics import (band_spectra, editing_report, high_frequency_fraction, highpass_correlation,
                                          lowpass, lowpass_fidelity, radial_power_spectrum, region_correlation)
from hkdviz.analysis.editing import (EditSession, colorize, edit_time, editing_sweep, frequency_edit, gain_edit,
                                     inpaint, luminance_basis, phase_edit)
from hkdviz.analysis.interventions import latents_at
from hkdviz.model import karras_sigmas, seed_noise

SEEDS = [0, 1]


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def reference(tiny_model):
    # A structured reference in [-1, 1]: stripes plus a gradient (not another sample of the same model).
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    image = torch.stack([torch.sin(x * 1.3), torch.cos(y * 0.9), (x + y) / 31 - 1]) * 0.9
    return image


@pytest.fixture(scope="module")
def session(tiny_model, reference):
    return EditSession(tiny_model, SEEDS, reference)


def test_mid_time_is_the_karras_midpoint(tiny_model):
    assert edit_time(tiny_model) == pytest.approx(float(karras_sigmas(19, 0.002, 80.0)[9]))
    assert edit_time(tiny_model) == pytest.approx(2.5152, abs=1e-4)
    assert edit_time(tiny_model, 5) == 5.0


def test_ratio_zero_is_exactly_the_sample(tiny_model, session, reference):
    sample = tiny_model.sample(SEEDS)
    assert torch.equal(session.update(ratio=0.0), sample)
    assert torch.equal(frequency_edit(tiny_model, SEEDS, reference, 0.0, band="all", region="all"), sample)


def test_ratio_one_everywhere_is_the_references_reconstruction(tiny_model, reference):
    edited = frequency_edit(tiny_model, SEEDS, reference, 1.0, band="all", region="all", reference_seed=7)
    t_mid = edit_time(tiny_model)
    noisy = reference[None] + t_mid * seed_noise([7], (3, 32, 32))
    with torch.no_grad():
        latents = tiny_model.encode(noisy, t_mid)
        expected = tiny_model.decode(tiny_model.evolve(latents, 0.002 - t_mid)).clamp(-1, 1)
    assert torch.allclose(edited, expected.expand_as(edited), atol=2e-4)


def test_session_matches_the_literal_recipe(tiny_model, session, reference):
    """z = z_A + r M (z_B - z_A) at t_mid, evolved to eps and decoded, against the cached form."""
    ratio, t_mid = 0.6, session.time
    edited = session.update(ratio=ratio, band="high", region="lower-left")
    with torch.no_grad():
        z_a = latents_at(tiny_model, SEEDS, t_mid)
        z_b = tiny_model.encode(reference[None] + t_mid * seed_noise([0], (3, 32, 32)), t_mid)
        masks = selection_masks(tiny_model, "high", "lower-left")
        mixed = [a + ratio * m * (b - a) for a, b, m in zip(z_a, z_b, masks)]
        expected = tiny_model.decode(tiny_model.evolve(mixed, 0.002 - t_mid)).clamp(-1, 1)
    assert torch.allclose(edited, expected, atol=2e-4)
    # Aware and agnostic differ; a different reference noise seed changes the edit.
    assert not torch.allclose(edited, session.update(band="all"), atol=1e-4)
    other = frequency_edit(tiny_model, SEEDS, reference, ratio, reference_seed=1)
    assert not torch.allclose(edited, other, atol=1e-4)
    assert json.loads(json.dumps(session.to_dict()))["band"]["kind"] == "all"


def test_session_masks_combine_band_and_resized_region(tiny_model, session):
    masks = session.masks("high", "lower-left")
    region = torch.nn.functional.avg_pool2d(region_mask("lower-left", 32, 32)[None, None], 4)[0]
    assert torch.allclose(masks[4], band_masks(tiny_model, "high")[4] * region, atol=1e-6)
    assert session.masks("high", "lower-left") is masks  # cached per (band, region)


def test_bad_edit_arguments_name_the_problem(tiny_model, reference):
    with pytest.raises(ValueError, match="ratio must lie in"):
        frequency_edit(tiny_model, SEEDS, reference, 1.5)
    with pytest.raises(ValueError, match="time must lie in"):
        frequency_edit(tiny_model, SEEDS, reference, 0.5, time=100.0)
    with pytest.raises(ValueError, match="time must be 'mid'"):
        frequency_edit(tiny_model, SEEDS, reference, 0.5, time="middle")
    with pytest.raises(ValueError, match="reference must have shape"):
        frequency_edit(tiny_model, SEEDS, reference[:, :16], 0.5)
    with pytest.raises(TypeError, match="reference must be a floating-point"):
        frequency_edit(tiny_model, SEEDS, (reference * 127).to(torch.uint8), 0.5)
    with pytest.raises(ValueError, match=r"reference values must lie in \[-1, 1\]"):
        frequency_edit(tiny_model, SEEDS, reference * 100, 0.5)
    with pytest.raises(ValueError, match="unknown band 'hi'"):
        frequency_edit(tiny_model, SEEDS, reference, 0.5, band="hi")
    with pytest.raises(ValueError, match="unknown region"):
        frequency_edit(tiny_model, SEEDS, reference, 0.5, region="middle")
    with pytest.raises(ValueError, match="one per seed"):
        frequency_edit(tiny_model, SEEDS, reference.expand(3, -1, -1, -1), 0.5)


def test_editing_sweep_dataset(tiny_model, reference):
    ds = editing_sweep(tiny_model, SEEDS, reference, ratios=(0, 0.5, 0.9))
    assert ds["image"].dims == ("variant", "ratio", "sample", "channel", "y", "x")
    assert list(ds["variant"].values) == ["aware", "agnostic"]
    sample = tiny_model.sample(SEEDS).numpy()
    assert np.array_equal(ds["image"].sel(variant="aware", ratio=0).values, sample)
    assert np.array_equal(ds["image"].sel(variant="agnostic", ratio=0).values, sample)
    edit = json.loads(ds.attrs["edits"])[0]
    assert edit["band"]["name"] == "high" and edit["baseline"]["kind"] == "all" and edit["ratios"] == [0, 0.5, 0.9]


def test_gain_and_phase_edits(tiny_model):
    sample = tiny_model.sample(SEEDS)
    assert torch.equal(gain_edit(tiny_model, SEEDS, "high", gain=1.0), sample)
    assert torch.allclose(phase_edit(tiny_model, SEEDS, "high", angle=2 * math.pi), sample, atol=1e-4)
    assert not torch.allclose(gain_edit(tiny_model, SEEDS, "low", gain=3.0), sample, atol=1e-3)
    assert "decode" not in tiny_model.__dict__


def test_inpaint_keeps_known_pixels_and_is_seeded(tiny_model):
    images = tiny_model.sample([10, 11])
    filled = inpaint(tiny_model, images, "lower", seed=3)
    known = region_mask("upper", 32, 32).bool()
    assert torch.equal(filled[..., known], images[..., known])
    assert not torch.allclose(filled[..., ~known], images[..., ~known])
    assert torch.equal(filled, inpaint(tiny_model, images, "lower", seed=3))
    assert not torch.equal(filled, inpaint(tiny_model, images, "lower", seed=4))
    # Per-image generators: an image's result does not depend on the batch around it (up to conv rounding).
    assert torch.allclose(inpaint(tiny_model, images[:1], "lower", seed=3), filled[:1], atol=1e-4)
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        inpaint(tiny_model, images, "lower", sigmas=[1.0, 5.0])
    with pytest.raises(ValueError, match="mask must have shape"):
        inpaint(tiny_model, images, torch.ones(2, 1, 16, 16))


def test_colorize_keeps_luminance(tiny_model):
    basis = luminance_basis()
    assert torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-6)
    assert torch.allclose(basis[:, 0], torch.tensor([0.2989, 0.5870, 0.1140]) / 0.6686, atol=1e-3)
    images = tiny_model.sample([12])
    colored = colorize(tiny_model, images, sigmas=[80.0, 5.0])
    luminance_in = torch.einsum("c,nchw->nhw", basis[:, 0], images)
    luminance_out = torch.einsum("c,nchw->nhw", basis[:, 0], colored)
    unclamped = (colored.abs() < 1).all(dim=1)
    assert torch.allclose(luminance_out[unclamped], luminance_in[unclamped], atol=1e-5)
    gray = torch.einsum("c,nchw->nhw", basis[:, 0], images)[:, None] / basis[:, 0].sum()
    from_gray = colorize(tiny_model, gray.clamp(-1, 1), sigmas=[80.0, 5.0])
    assert from_gray.shape == images.shape


# -- metrics ------------------------------------------------------------------------------------------
def test_filters_and_spectra_known_answers():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    checker = ((x + y) % 2 * 2 - 1).expand(1, 3, 32, 32)          # Nyquist: all high frequency
    slow = torch.cos(2 * math.pi * 2 * x / 32).expand(1, 3, 32, 32)  # 2 cycles per image
    constant = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(lowpass(constant), constant, atol=1e-6)
    assert float(lowpass(checker).abs().max()) < 1e-6
    # Gaussian transfer exp(-f^2 / (2 cutoff^2)) at f = 2/32, cutoff = 1/8: exp(-1/8).
    assert torch.allclose(lowpass(slow, cutoff=0.125), math.exp(-0.125) * slow, atol=1e-6)
    assert torch.allclose(lowpass(slow, cutoff=0.07, kind="ideal"), slow, atol=1e-6)
    assert float(lowpass(slow, cutoff=0.05, kind="ideal").abs().max()) < 1e-6
    assert high_frequency_fraction(checker)[0] == pytest.approx(1.0)
    assert high_frequency_fraction(slow)[0] == pytest.approx(0.0, abs=1e-12)
    frequencies, power = radial_power_spectrum(slow)
    assert frequencies[2] == pytest.approx(2 / 32) and int(np.argmax(power[0, 1:])) + 1 == 2
    frequencies, power = radial_power_spectrum(torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert power.shape == (64, 17) and np.allclose(power.mean(0)[1:], 1.0, atol=0.15)  # white noise is flat


def test_region_metrics_known_answers():
    first = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(region_correlation(first, first, "lower-left"), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(region_correlation(first, -first), -torch.ones(2, dtype=torch.float64))
    mse, psnr = lowpass_fidelity(first, first + 0.0, "left")
    assert torch.equal(mse, torch.zeros(2, dtype=torch.float64))
    shifted_mse, shifted_psnr = lowpass_fidelity(first + 0.1, first, "left")
    assert torch.allclose(shifted_mse, torch.full((2,), 0.01, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(shifted_psnr, torch.full((2,), 10 * math.log10(400), dtype=torch.float64))
    assert torch.allclose(highpass_correlation(first, first[0], "all")[0], torch.tensor(1.0, dtype=torch.float64))


def test_editing_report_and_band_spectra(tiny_model, reference):
    report = editing_report(tiny_model, SEEDS, reference, ratios=(0, 0.9))
    assert report["lowpass_mse"].dims == ("variant", "ratio")
    assert np.all(report["lowpass_mse"].sel(ratio=0).values == 0)
    assert np.all(report["lowpass_mse"].sel(ratio=0.9).values > 0)
    assert report["highpass_correlation_per_sample"].dims == ("variant", "ratio", "sample")
    spectra = band_spectra(tiny_model, SEEDS, ("high", "low"))
    assert spectra["power"].dims == ("band", "frequency") and spectra.sizes["frequency"] == 17
    assert np.all((spectra["high_frequency_fraction"] >= 0) & (spectra["high_frequency_fraction"] <= 1))


def test_edit_times_rule_on_hand_values():
    """benchmarks/edit_times.py's Study E rule: the candidate meets HP >= 0.5 and LP <= 0.1 on every
    checkpoint and has the largest smallest-HP; `best` only needs LP <= 0.1 everywhere."""
    from benchmarks.edit_times import pick_time
    first = [(10.0, 0.60, 0.05), (5.0, 0.90, 0.09), (2.5, 0.95, 0.20)]
    second = [(10.0, 0.55, 0.04), (5.0, 0.52, 0.08), (2.5, 0.99, 0.05)]
    assert pick_time([first, second]) == (10.0, 10.0)   # 5.0 meets too, but its smallest HP is 0.52 < 0.55
    third = [(10.0, 0.40, 0.05), (5.0, 0.45, 0.05), (2.5, 0.99, 0.50)]
    assert pick_time([first, second, third]) == (None, 5.0)  # nothing meets on all three
    assert pick_time([[(1.0, 0.9, 0.5)]]) == (None, None)
