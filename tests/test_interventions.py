"""Interventions: pure edits with known answers, the restoring context manager, masking, cumulative effect."""
import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from hkdviz.analysis.bands import Band, band_masks
from hkdviz.analysis.interventions import (Gain, Mask, Mix, PhaseRotation, apply, cumulative_effect, describe,
                                           intervene, latents_at, spectral_masking)

SEEDS = [0, 1, 2]


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def latents(tiny_model):
    with torch.no_grad():
        return latents_at(tiny_model, SEEDS, None)


def split(latent):
    return latent.split(latent.shape[-3] // 2, dim=-3)


def test_pure_edits_have_known_answers(tiny_model, latents):
    copies = [latent.clone() for latent in latents]
    masks = band_masks(tiny_model, "high")
    kept = apply(latents, [Mask("high")], model=tiny_model)
    assert all(torch.equal(out, latent * mask) for out, latent, mask in zip(kept, latents, masks))
    tripled = apply(latents, [Gain("high", gain=3.0)], model=tiny_model)
    assert all(torch.allclose(out, latent * (1 + 2 * mask)) for out, latent, mask in zip(tripled, latents, masks))
    # Rotation by pi/2 maps (u, v) -> (-v, u) inside the band and leaves the rest alone.
    rotated = apply(latents, [PhaseRotation("high", angle=math.pi / 2)], model=tiny_model)
    for out, latent, mask in zip(rotated, latents, masks):
        (u, v), (u2, v2), m = split(latent), split(out), split(mask)[0].bool().expand_as(split(latent)[0])
        assert torch.allclose(u2[m], -v[m], atol=1e-6) and torch.allclose(v2[m], u[m], atol=1e-6)
        assert torch.equal(u2[~m], u[~m]) and torch.equal(v2[~m], v[~m])
    other = [torch.randn_like(latent) for latent in latents]
    mixed = apply(latents, [Mix("all", other=other, ratio=1.0)], model=tiny_model)
    assert all(torch.allclose(out, target, atol=1e-5) for out, target in zip(mixed, other))
    assert all(torch.equal(a, b) for a, b in zip(latents, copies)), "apply must not modify its inputs"


def test_edits_commute_with_evolution(tiny_model, latents):
    edit = PhaseRotation("mid", region="left", angle=0.7, gain=1.3).resolve(tiny_model)
    tau = -5.0
    first = tiny_model.evolve(apply(latents, [edit]), tau)
    second = apply(tiny_model.evolve(latents, tau), [edit])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(first, second))


def test_unresolved_intervention_needs_a_model(latents):
    with pytest.raises(ValueError, match="resolve"):
        apply(latents, [Gain("high", gain=2.0)])
    with pytest.raises(ValueError, match="ratio must lie in"):
        Mix("all", other=(), ratio=1.5)
    with pytest.raises(TypeError, match="gain must be a real number"):
        Gain("high", gain="2")


def test_intervene_scopes_and_restores(tiny_model):
    plain = tiny_model.sample(SEEDS)
    with intervene(tiny_model, Gain("all", gain=0.0)):
        zeroed = tiny_model.sample(SEEDS)
        assert "decode" in tiny_model.__dict__
    assert "decode" not in tiny_model.__dict__ and "evolve" not in tiny_model.__dict__
    zero_image = tiny_model.decode([torch.zeros(1, i.channels, i.height, i.width) for i in tiny_model.levels])
    assert torch.allclose(zeroed, zero_image.clamp(-1, 1).expand_as(zeroed))
    assert torch.equal(tiny_model.sample(SEEDS), plain)
    with intervene(tiny_model, Mask("all")):
        assert torch.equal(tiny_model.sample(SEEDS), plain)
    # at="latent" edits z_T before evolution; the edit commutes, so it matches at="decode".
    with intervene(tiny_model, Gain("high", gain=0.5), at="latent"):
        early = tiny_model.sample(SEEDS)
    with intervene(tiny_model, Gain("high", gain=0.5)):
        late = tiny_model.sample(SEEDS)
    assert torch.allclose(early, late, atol=1e-4) and not torch.allclose(early, plain, atol=1e-4)


def test_intervene_restores_after_an_exception_and_when_nested(tiny_model):
    plain = tiny_model.sample([5])
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(tiny_model, Gain("all", gain=0.0)):
            with intervene(tiny_model, Gain("low", gain=2.0), at="latent"):
                assert "evolve" in tiny_model.__dict__ and "decode" in tiny_model.__dict__
                raise RuntimeError("boom")
    assert "decode" not in tiny_model.__dict__ and "evolve" not in tiny_model.__dict__
    assert torch.equal(tiny_model.sample([5]), plain)
    with intervene(tiny_model, Gain("all", gain=0.0)):
        with intervene(tiny_model, Gain("all", gain=1.0)):
            pass
        assert "decode" in tiny_model.__dict__  # the outer scope's patch is back after the inner one
    assert "decode" not in tiny_model.__dict__
    with pytest.raises(ValueError, match="at must be one of"):
        with intervene(tiny_model, Mask("all"), at="encode"):
            pass
    with pytest.raises(TypeError, match="Intervention values"):
        with intervene(tiny_model, "high"):
            pass
    assert "decode" not in tiny_model.__dict__


def test_spectral_masking_all_band_reproduces_sample_exactly(tiny_model, tmp_path):
    ds = spectral_masking(tiny_model, SEEDS, ["all", "high", Band.at_levels(6, name="bottleneck")])
    assert ds["image"].dims == ("band", "sample", "channel", "y", "x")
    assert list(ds["band"].values) == ["all", "high", "bottleneck"]
    assert np.array_equal(ds["image"].sel(band="all").values, tiny_model.sample(SEEDS).numpy())
    assert ds["kept_fraction"].sel(band="high").values == pytest.approx(np.full(7, 1 / 3))
    edits = json.loads(ds.attrs["edits"])
    assert edits[1]["type"] == "Mask" and edits[1]["band"]["name"] == "high"
    assert ds.attrs["checkpoint_sha256"] == "untrained"
    path = tmp_path / "masking.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        assert back.identical(ds)


def test_spectral_masking_at_time_decodes_masked_z_t(tiny_model):
    ds = spectral_masking(tiny_model, [3], ["all", "low"], time=10.0, clamp=False)
    with torch.no_grad():
        z_t = latents_at(tiny_model, [3], 10.0)
        low = band_masks(tiny_model, "low")
        expected_all = tiny_model.decode(z_t)
        expected_low = tiny_model.decode([latent * mask for latent, mask in zip(z_t, low)])
    assert np.allclose(ds["image"].sel(band="all").values, expected_all.numpy(), atol=1e-6)
    assert np.allclose(ds["image"].sel(band="low").values, expected_low.numpy(), atol=1e-6)


def test_cumulative_effect_shares(tiny_model):
    ds = cumulative_effect(tiny_model, [0, 1], times=4, progress=False)
    assert ds["effect_share"].dims == ("band", "time") and ds.sizes["time"] == 4
    assert ds["time"].values[0] == pytest.approx(80.0) and ds["time"].values[-1] == pytest.approx(0.002)
    assert np.allclose(ds["effect_share"].sum("band"), 1.0)
    assert np.allclose(ds["energy_share"].sum("band"), 1.0)  # the thirds partition the modes
    assert np.allclose(ds["level_energy_share"].sum("band"), 1.0)
    assert "effect_share" in ds.attrs["definition"]
    # Known answer: a band holding every level carries all the energy; its energy share is 1.
    whole = cumulative_effect(tiny_model, [0], bands=[Band.at_levels(range(7), name="every"), "high"],
                              times=[80.0, 1.0], progress=False)
    assert np.allclose(whole["energy_share"].sel(band="every"), 1.0)
    with torch.no_grad():
        z_t = latents_at(tiny_model, [0], 1.0)
        masks = band_masks(tiny_model, "high")
        expected = sum(float(((z * m) ** 2).sum()) for z, m in zip(z_t, masks)) / sum(float((z ** 2).sum()) for z in z_t)
    assert float(whole["energy_share"].sel(band="high", time=1.0)) == pytest.approx(expected, rel=1e-4)


def test_bad_arguments_name_the_problem(tiny_model):
    with pytest.raises(ValueError, match="unknown band 'treble'"):
        spectral_masking(tiny_model, [0], ["treble"])
    with pytest.raises(ValueError, match=r"time must lie in \[eps, T\]"):
        spectral_masking(tiny_model, [0], ["all"], time=100.0)
    with pytest.raises(ValueError, match="times must lie in"):
        cumulative_effect(tiny_model, [0], times=[80.0, 0.0001], progress=False)
    with pytest.raises(TypeError, match="seeds must be integers"):
        spectral_masking(tiny_model, [0.5], ["all"])
    with pytest.raises(ValueError, match="distinct labels"):
        spectral_masking(tiny_model, [0], ["high", "high"])


def test_describe_is_json(tiny_model):
    text = describe([Gain("high", region="lower-left", gain=2.0), PhaseRotation("low", angle=1.0)])
    data = json.loads(text)
    assert data[0] == {"type": "Gain", "band": {"kind": "quantile", "lower": 2 / 3, "upper": 1.0, "name": "high"},
                       "region": "lower-left", "gain": 2.0}
    assert data[1]["angle"] == 1.0
