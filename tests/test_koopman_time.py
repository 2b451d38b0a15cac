"""Koopman time, evolve_between and the consistency output head: known answers."""
import copy
import math

import numpy as np
import pytest
import torch
import xarray as xr

import hkdviz
from hkdviz.analysis.faithfulness import faithfulness, summarize_faithfulness
from hkdviz.model import randomize_generators
from hkdviz.model.config import ConfigError, resolve_config
from hkdviz.model.koopman import KOOPMAN_TIMES, koopman_time
from hkdviz.teacher.edm import EDMPrecond, init_hkd_from_teacher

TINY = {"preset": "tiny", "unet": {"model_channels": 8}}


def tiny(**overrides) -> hkdviz.HKDModel:
    config = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if key == "time":
            config["koopman"] = {"time": value}
        elif key == "decoder_sigma":
            config["diffusion"] = {"decoder_sigma": value}
        else:
            config[key] = value
    return randomize_generators(hkdviz.build(config), seed=3).eval()


def test_time_maps_known_values():
    sigma = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    assert torch.equal(koopman_time(sigma, "sigma"), sigma)
    expected = torch.tensor([math.log(0.002), 0.0, math.log(80.0)], dtype=torch.float64)
    assert torch.allclose(koopman_time(sigma, "log_sigma"), expected)
    assert torch.allclose(koopman_time(sigma, "karras"), sigma ** (1 / 7))
    with pytest.raises(ValueError, match="unknown Koopman time"):
        koopman_time(sigma, "linear")


def test_old_configs_keep_the_raw_head_and_sigma_time():
    config = resolve_config("tiny")
    assert config["output"] == "raw" and config["koopman"]["time"] == "sigma"
    with pytest.raises(ConfigError, match="koopman.time"):
        resolve_config({"preset": "tiny", "koopman": {"time": "hours"}})
    with pytest.raises(ConfigError, match="output"):
        resolve_config({"preset": "tiny", "output": "residual"})


def test_shipped_checkpoint_loads_as_raw_sigma_and_forward_is_unchanged():
    model = hkdviz.load("default", device="cpu")
    assert model.output == "raw" and model.koopman_time_kind == "sigma"
    x_T = model.noise([5, 6])
    with torch.no_grad():
        expected = model.decode(model.evolve(model.encode(x_T, model.sigma_max), model.sigma_min - model.sigma_max))
        assert torch.equal(model(x_T, model.sigma_max), expected)


@pytest.mark.parametrize("kind", KOOPMAN_TIMES)
def test_evolve_between_semigroup_and_broadcast(kind):
    model = tiny(time=kind)
    with torch.no_grad():
        latents = model.encode(model.noise([0, 1]), model.sigma_max)
        two_legs = model.evolve_between(model.evolve_between(latents, 80.0, 2.5), 2.5, 0.002)
        one_leg = model.evolve_between(latents, 80.0, 0.002)
        for a, b in zip(two_legs, one_leg):
            # float32 phases of |beta tau| ~ 40 rad round at ~1e-6 relative: compare whole tensors.
            assert float((a - b).norm() / b.norm()) < 1e-5
        # Identity when the times agree, and many target times in one call ([K, 1] -> [K, N, ...]).
        for a, b in zip(model.evolve_between(latents, 3.0, 3.0), latents):
            torch.testing.assert_close(a, b)
        targets = torch.tensor([80.0, 2.5, 0.002], dtype=torch.float64).reshape(3, 1)
        many = model.evolve_between(latents, 80.0, targets)
        assert many[0].shape == (3, *latents[0].shape)
        for a, b in zip([latent[2] for latent in many], one_leg):
            torch.testing.assert_close(a, b)
        # tau is the difference of Koopman times: the raw evolve with that tau agrees.
        eps, T = torch.tensor(0.002, dtype=torch.float64), torch.tensor(80.0, dtype=torch.float64)
        tau = float(koopman_time(eps, kind) - koopman_time(T, kind))
        for a, b in zip(model.evolve(latents, tau), one_leg):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="sigma_to"):
        model.evolve_between(latents, 80.0, float("nan"))
    with pytest.raises(ValueError, match="sigma_from"):
        model.evolve_between(latents, -1.0, 1.0)


def test_consistency_head_boundary_and_edm_match():
    model = tiny(output="consistency")
    eps, T, sd = model.sigma_min, model.sigma_max, model.sigma_data
    c_skip, c_out = model.head_coefficients(torch.tensor([eps, T], dtype=torch.float64))
    assert c_skip[0] == 1 and c_out[0] == 0   # boundary condition: f(x_eps, eps) = x_eps
    assert abs(float(c_skip[1]) - sd ** 2 / (T ** 2 + sd ** 2)) < 1e-12
    assert abs(float(c_out[1]) - T * sd / math.sqrt(T ** 2 + sd ** 2)) < 1e-9
    x = torch.randn(2, *model.image_shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x, eps), x)


def test_teacher_initialised_consistency_model_starts_at_the_teacher_denoiser():
    torch.manual_seed(0)
    teacher = EDMPrecond(TINY).eval()
    for parameter in teacher.parameters():  # non-trivial weights (EDM zero-inits some output layers)
        parameter.data.normal_(0, 0.05)
    config = copy.deepcopy(teacher.config)
    config["output"] = "consistency"
    config["diffusion"]["decoder_sigma"] = config["diffusion"]["sigma_max"]
    model = init_hkd_from_teacher(hkdviz.HKDModel(config), teacher).eval()
    x_T = model.noise([0, 1, 2])
    with torch.no_grad():
        expected = teacher(x_T, model.sigma_max)
        torch.testing.assert_close(model(x_T, model.sigma_max), expected, rtol=1e-5, atol=1e-5)
        # The raw head starts elsewhere: the network's F, not the denoised image.
        raw = init_hkd_from_teacher(hkdviz.HKDModel({**config, "output": "raw"}), teacher).eval()
        assert (raw(x_T, model.sigma_max) - expected).abs().max() > 1e-3


def test_trajectory_and_editing_reproduce_the_sample_with_either_head_and_time():
    for model in (tiny(output="consistency", time="log_sigma"), tiny(time="karras")):
        seeds = [4, 9]
        sample = model.sample(seeds)
        ds = hkdviz.trajectory(model, seeds, times=5, progress=False)
        np.testing.assert_allclose(ds["image"].isel(time=-1).values, sample.numpy(), atol=1e-5)
        reference = torch.zeros(model.image_shape)
        edited = hkdviz.frequency_edit(model, seeds, reference, ratio=0.0)
        np.testing.assert_allclose(np.asarray(edited["image"] if isinstance(edited, xr.Dataset) else edited),
                                   sample.numpy(), atol=1e-5)


class _FakeTeacher:
    """PF-ODE states of a linear toy: x_t = x_T * t / T (no data), with D(x, t) = 0."""

    def __init__(self, model):
        self.model = model

    def states_at(self, x_T, sigmas):
        scale = (torch.as_tensor(sigmas, dtype=torch.float32) / sigmas[0]).reshape(1, -1, 1, 1, 1)
        return x_T.unsqueeze(1) * scale.to(x_T.device)

    def __call__(self, x, sigma):
        return torch.zeros_like(x)


def test_faithfulness_known_answers():
    model = tiny(output="consistency", time="log_sigma")
    with torch.no_grad():
        for level in model.koopman:
            level.generator.zero_()  # A = 0: the Koopman path is the constant latent
    ds = faithfulness(model, _FakeTeacher(model), seeds=[0, 1, 2], num_steps=4, batch_size=2, progress=False)
    assert ds.sizes == {"sample": 3, "time": 5, "level": len(model.levels)}
    np.testing.assert_allclose(ds["koopman_error"].values, ds["constant_error"].values, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds["koopman_error"].isel(time=0).values, 0, atol=1e-6)
    # The target x_eps = x_T * eps / T and D = 0: the denoiser's error is the target's own RMS.
    target_rms = (model.noise([0, 1, 2]) * (model.sigma_min / model.sigma_max)).flatten(1).square().mean(1).sqrt()
    np.testing.assert_allclose(ds["denoiser_error"].isel(time=0).values, target_rms.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ds["sample_rmse"].values, ds["sample_rmse_without_koopman"].values, rtol=1e-6)
    summary = summarize_faithfulness(ds)
    assert summary["koopman_contribution"] == pytest.approx(0, abs=1e-6)
    assert summary["koopman_beats_constant"] == 0.0  # ties never count as beating
    # Image space, D = 0: each error is the decoded image's own RMS. A = 0 makes the path state the still one,
    # constant over time; at T the encoder's own latent is the still one too.
    with torch.no_grad():
        still_rms = model.decode(model.encode(model.noise([0, 1, 2]), model.sigma_max)).flatten(1).square().mean(1).sqrt()
    np.testing.assert_allclose(ds["constant_state_error"].values, np.repeat(still_rms.numpy()[:, None], 5, 1), rtol=1e-5)
    np.testing.assert_allclose(ds["path_state_error"].values, ds["constant_state_error"].values, rtol=1e-5)
    np.testing.assert_allclose(ds["readout_error"].isel(time=0).values, still_rms.numpy(), rtol=1e-5)
    assert not np.allclose(ds["readout_error"].isel(time=-1).values, still_rms.numpy())  # x_eps's latent differs
    assert summary["path_state_error_mean"] == pytest.approx(summary["constant_state_error_mean"], rel=1e-5)
    assert {"readout_error_mean", "denoiser_error_mean"} <= set(summary)


def test_summary_counts_pairs_and_picks_the_reference_time():
    times = np.array([80.0, 10.0, 2.1, 0.5, 0.002])
    koopman = np.array([[0, 0.1, 0.2, 0.9, 1.0], [0, 0.5, 0.1, 0.2, 1.0]]).T[None]       # [1, time, level]
    constant = np.array([[0, 0.3, 0.3, 0.3, 0.5], [0, 0.3, 0.3, 0.3, 0.5]]).T[None]
    ds = xr.Dataset({"koopman_error": (("sample", "time", "level"), koopman),
                     "constant_error": (("sample", "time", "level"), constant),
                     "consistency_error": (("sample", "time"), np.ones((1, 5))),
                     "sample_rmse": (("sample",), [0.1]), "sample_rmse_without_koopman": (("sample",), [0.15])},
                    coords={"time": times})
    summary = summarize_faithfulness(ds)
    assert summary["koopman_beats_constant"] == pytest.approx(4 / 8)  # (10,l0) (2.1,l0) (2.1,l1) (0.5,l1)
    assert summary["reference_time"] == 2.1
    assert summary["koopman_error_median_at"] == pytest.approx(0.15)
    assert summary["koopman_contribution"] == pytest.approx(0.5)


def test_trajectory_with_a_teacher_carries_the_faithfulness_pair():
    model = tiny(output="consistency", time="log_sigma")
    teacher = _FakeTeacher(model)
    ds = hkdviz.trajectory(model, [0, 1], times=5, teacher=teacher, progress=False)
    reference = faithfulness(model, teacher, [0, 1], num_steps=4, progress=False)  # the same 5-point Karras grid
    np.testing.assert_allclose(ds["time"].values, reference["time"].values)
    np.testing.assert_allclose(ds["koopman_error"].values, reference["koopman_error"].values, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ds["constant_error"].values, reference["constant_error"].values, rtol=1e-4, atol=1e-6)


def test_faithfulness_map_marks_the_cells_where_the_path_wins():
    """benchmarks/faithfulness_map.py's table, on a hand-made dataset: cell = path/constant, mean over samples."""
    from benchmarks.faithfulness_map import format_map
    path = np.array([[[0.0, 0.5]], [[0.2, 0.9]]]).transpose(1, 0, 2)    # (sample 1, time 2, level 2)
    constant = np.array([[[0.0, 0.6]], [[0.1, 0.9]]]).transpose(1, 0, 2)
    dataset = xr.Dataset({"koopman_error": (("sample", "time", "level"), np.concatenate([path, path])),
                          "constant_error": (("sample", "time", "level"), np.concatenate([constant, constant]))},
                         coords={"time": [80.0, 2.5]})
    lines = format_map(dataset).splitlines()
    assert lines[0].split() == ["sigma", "level", "0", "level", "1"]
    assert lines[1].split() == ["80.000", "0.00/0.00", "0.50/0.60*"]
    assert lines[2].split() == ["2.500", "0.20/0.10", "0.90/0.90"]
