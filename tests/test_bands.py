"""Bands and regions: known-answer masks on hand-set generators, serialization, bad input."""
import json

import pytest
import torch
import torch.nn.functional as F

import hkdviz
from hkdviz.analysis.bands import (BAND_NAMES, Band, as_band, band_masks, kept_fraction, region_mask, region_masks,
                                   selection_masks)


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def known_model(**koopman):
    """tiny model whose alpha is a known permutation per level (alpha = -rank / n) and beta = rank - n/2."""
    config = {"preset": "tiny", "koopman": koopman} if koopman else "tiny"
    model = hkdviz.build(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for level in model.koopman:
            if level.kind == "block":
                count = level.alpha.numel()
                alpha_rank = torch.randperm(count, generator=generator).reshape(level.alpha.shape)
                beta_rank = torch.randperm(count, generator=generator).reshape(level.beta.shape)
                level.generator[: level.num_pairs] = -alpha_rank.float() / count
                level.generator[level.num_pairs:] = beta_rank.float() - count / 2
    return model


@pytest.fixture(scope="module")
def model():
    return known_model()


def pair_half(mask):
    pairs = mask.shape[0] // 2
    assert torch.equal(mask[:pairs], mask[pairs:]), "a pair's two channels must share the mask value"
    return mask[:pairs]


def test_quantile_thirds_select_known_alpha_ranks(model):
    for name, (low, high) in {"smallest": (0, 1 / 3), "intermediate": (1 / 3, 2 / 3), "largest": (2 / 3, 1)}.items():
        for level, mask in zip(model.koopman, band_masks(model, name)):
            alpha = level.alpha.detach()
            count = alpha.numel()
            rank = torch.argsort(torch.argsort(alpha.reshape(-1))).reshape(alpha.shape).float()
            expected = (rank >= low * count) & ((rank < high * count) | (high == 1))
            assert torch.equal(pair_half(mask).bool(), expected), (name, level)
            if name == "smallest":  # alpha = -rank_index / n: the smallest third is the most negative alpha
                assert float(alpha[expected].max()) < float(alpha[~expected].min())


def test_thirds_partition_every_level(tiny_model):
    masks = [band_masks(tiny_model, name) for name in ("smallest", "intermediate", "largest")]
    for per_level in zip(*masks):
        assert torch.equal(sum(per_level), torch.ones_like(per_level[0]))


def test_frequency_aliases_follow_the_measured_reading(model):
    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(band_masks(model, a), band_masks(model, b)))
    assert same("high", "largest") and same("high_frequency", "largest")
    assert same("low", "smallest") and same("low_frequency", "smallest")
    assert same("mid", "intermediate")


def test_frequency_band_by_abs_beta(model):
    absolute = Band.frequency(0.0, 10.0, absolute=True)
    ranked = Band.frequency(0.5, 1.0)
    for level, mask_abs, mask_rank in zip(model.koopman, band_masks(model, absolute), band_masks(model, ranked)):
        magnitude = level.beta.detach().abs()
        assert torch.equal(pair_half(mask_abs).bool(), magnitude < 10.0)
        rank = torch.argsort(torch.argsort(magnitude.reshape(-1), stable=True)).reshape(magnitude.shape)
        assert torch.equal(pair_half(mask_rank).bool(), rank >= 0.5 * magnitude.numel())


def test_levels_explicit_and_combinations(model):
    masks = band_masks(model, Band.at_levels(0, 6))
    assert [bool(mask.all()) for mask in masks] == [True, False, False, False, False, False, True]
    assert all(not bool(mask.any()) for mask in masks[1:6])

    explicit = band_masks(model, Band.explicit([(2, 3, 4, 5), (6, 0, 0, 0)]))
    assert float(explicit[2].sum()) == 2 and explicit[2][3, 4, 5] == 1 and explicit[2][3 + 12, 4, 5] == 1
    assert float(explicit[6].sum()) == 2 and float(sum(mask.sum() for mask in explicit)) == 4

    both = band_masks(model, as_band("high") & Band.at_levels(1))
    high = band_masks(model, "high")
    assert torch.equal(both[1], high[1]) and all(not bool(mask.any()) for i, mask in enumerate(both) if i != 1)
    union = band_masks(model, Band.named("low") | "high")
    assert torch.equal(union[0], band_masks(model, "low")[0] + high[0])


def test_explicit_out_of_range_is_a_clear_error(model):
    with pytest.raises(ValueError, match="out of range for level 2"):
        band_masks(model, Band.explicit([(2, 99, 0, 0)]))


def test_identity_and_dense_levels():
    bottleneck_only = hkdviz.build({"preset": "tiny", "koopman": {"levels": "bottleneck"}})
    high = band_masks(bottleneck_only, "high")
    assert all(not bool(mask.any()) for mask in high[:-1]) and kept_fraction(high)[-1] == pytest.approx(1 / 3)
    assert all(bool(mask.all()) for mask in band_masks(bottleneck_only, "all"))
    assert bool(band_masks(bottleneck_only, Band.at_levels(0))[0].all())
    dense = hkdviz.build({"preset": "tiny", "koopman": {"operator": "dense_shared"}})
    assert all(bool(mask.all()) for mask in band_masks(dense, "all"))
    with pytest.raises(ValueError, match="needs block Koopman levels"):
        band_masks(dense, "high")


@pytest.mark.parametrize("band", [
    Band.quantile(0.1, 0.4), Band.frequency(0.5, 2.0, absolute=True, name="fast"), Band.at_levels(1, 3),
    Band.explicit([(0, 1, 2, 3)]), Band.all(), Band.named("high"), (Band.named("low") & Band.at_levels(2)) | "mid",
])
def test_band_serialization_round_trip(band):
    assert Band.from_json(band.to_json()) == band
    assert Band.from_dict(json.loads(json.dumps(band.to_dict()))) == band
    assert as_band(band.to_json()) == band and as_band(band.to_dict()) == band
    hash(band)  # frozen: usable as a cache key


def test_bad_bands_name_the_problem(model):
    with pytest.raises(ValueError, match="unknown band 'hihg'.*smallest.*high_frequency"):
        band_masks(model, "hihg")
    with pytest.raises(ValueError, match="0 <= lower < upper <= 1"):
        Band.quantile(0.5, 0.2)
    with pytest.raises(TypeError, match="band must be"):
        as_band(3)
    with pytest.raises(ValueError, match="unknown band dict keys"):
        Band.from_dict({"kind": "all", "colour": 1})
    with pytest.raises(ValueError, match="not valid JSON"):
        Band.from_json("{nope")
    assert "all" in BAND_NAMES and "smallest" in BAND_NAMES


def test_region_masks_known_values():
    lower_left = region_mask("lower-left", 4, 4)
    assert lower_left.tolist() == [[0.5, 0, 0, 0], [1, 0.5, 0, 0], [1, 1, 0.5, 0], [1, 1, 1, 0.5]]
    assert torch.equal(lower_left + region_mask("upper-right", 4, 4), torch.ones(4, 4))
    assert region_mask("lower", 4, 4)[:, 0].tolist() == [0, 0, 1, 1]
    assert region_mask("left", 4, 4)[0].tolist() == [1, 1, 0, 0]
    assert torch.equal(region_mask("upper", 4, 4) + region_mask("lower", 4, 4), torch.ones(4, 4))
    assert torch.equal(region_mask("right", 4, 4) + region_mask("left", 4, 4), torch.ones(4, 4))


def test_region_resized_per_level_by_area(model):
    image = region_mask("lower-left", 32, 32)
    for info, mask in zip(model.levels, region_masks(model, "lower-left")):
        factor = 32 // info.height
        assert torch.allclose(mask[0], F.avg_pool2d(image[None, None], factor)[0, 0], atol=1e-6)
    combined = selection_masks(model, "high", "lower-left")
    bands = band_masks(model, "high")
    assert torch.allclose(combined[2], bands[2] * F.avg_pool2d(image[None, None], 2)[0], atol=1e-6)
    custom = torch.zeros(32, 32, dtype=torch.bool)
    custom[:16, :16] = True
    assert region_masks(model, custom)[4][0].tolist()[0] == [1, 1, 1, 1, 0, 0, 0, 0]


def test_bad_regions(model):
    with pytest.raises(ValueError, match="unknown region 'bottom'"):
        region_masks(model, "bottom")
    with pytest.raises(ValueError, match=r"region mask must have shape \[32, 32\]"):
        region_masks(model, torch.ones(16, 16))
    with pytest.raises(TypeError, match="region mask must be bool or floating"):
        region_masks(model, torch.ones(32, 32, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        region_masks(model, 2 * torch.ones(32, 32))


def test_aliases_are_read_per_model(model):
    """A checkpoint's measured band_aliases decide what "high" / "mid" / "low" select, in the masks and in
    the provenance alike; bands given by their bounds, and models without the record, are unchanged."""
    import copy
    from hkdviz.analysis.bands import ALIASES, NAMED, band_for_model, model_aliases
    from hkdviz.analysis.interventions import Gain, spectral_masking

    assert model_aliases(model) == ALIASES  # no record: the shipped checkpoints' reading
    assert band_for_model(model, "low") == Band.named("low")
    measured = copy.deepcopy(model)
    measured.meta = {"band_aliases": {"high": "largest", "mid": "smallest", "low": "intermediate", "seeds": 64,
                                      "margins": {"high_over_mid": [0.1, 0.02], "mid_over_low": [0.01, 0.02]}}}
    assert model_aliases(measured)["low_frequency"] == "intermediate"  # the measurement's own keys ride along
    for alias, third in (("low", "intermediate"), ("mid", "smallest"), ("high", "largest")):
        assert all(torch.equal(a, b) for a, b in zip(band_masks(measured, alias), band_masks(measured, third)))
    low = band_for_model(measured, "low")
    assert low.label == "low" and (low.lower, low.upper) == NAMED["intermediate"][1:]
    both = band_for_model(measured, Band.named("low") | "high")
    assert both.parts[0] == low and both.parts[1] == Band.named("high")
    assert band_for_model(measured, Band.quantile(0.0, 0.5, name="low")).upper == 0.5  # bounds given: kept
    gain = Gain("low", gain=2.0).resolve(measured)
    assert gain.band == low and gain.to_dict()["band"]["lower"] == pytest.approx(1 / 3)
    ds = spectral_masking(measured, [0], ["low", "intermediate"], clamp=False)
    recorded = json.loads(ds.attrs["bands"]) if isinstance(ds.attrs["bands"], str) else ds.attrs["bands"]
    assert recorded[0] == low.to_dict()  # the provenance names the modes the masks used
    assert (ds["image"].sel(band="low").values == ds["image"].sel(band="intermediate").values).all()
    for bad in ({"high": "largest", "mid": "largest", "low": "smallest"}, {"high": "largest"}, ["largest"]):
        measured.meta = {"band_aliases": bad}
        with pytest.raises(ValueError, match="band_aliases"):
            band_masks(measured, "low")


def test_measured_aliases_rank_the_thirds_by_their_detail(model):
    """measure_band_aliases orders the three alpha thirds by band_spectra's high-frequency share; a model
    without block levels has nothing to rank."""
    from hkdviz.analysis.edit_metrics import band_spectra, measure_band_aliases
    seeds = [0, 1, 2, 3]
    aliases = measure_band_aliases(model, seeds)
    fractions = band_spectra(model, seeds, ("smallest", "intermediate", "largest"))["high_frequency_fraction"]
    by_detail = sorted(fractions["band"].values, key=lambda name: -float(fractions.sel(band=name)))
    assert [aliases["high"], aliases["mid"], aliases["low"]] == by_detail
    assert aliases["seeds"] == 4 and aliases["share"][by_detail[0]] == pytest.approx(float(fractions.sel(band=by_detail[0])))
    # The margins are paired over the seeds: the mean difference of the per-seed shares and its standard error.
    per_sample = band_spectra(model, seeds, by_detail)["high_frequency_fraction_per_sample"].values
    difference = per_sample[0] - per_sample[1]
    assert aliases["margins"]["high_over_mid"] == pytest.approx([difference.mean(), difference.std(ddof=1) / 2])
    assert aliases["margins"]["mid_over_low"][0] >= 0
    assert measure_band_aliases(hkdviz.build({"preset": "tiny", "koopman": {"operator": "dense_shared"}}), seeds) is None
