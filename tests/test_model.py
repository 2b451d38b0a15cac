"""Known-answer tests of the HKD network and its Koopman evolution."""
import math

import pytest
import torch

import hkdviz
from hkdviz.model import BlockKoopman, DenseKoopman, IdentityKoopman, karras_sigmas
from hkdviz.model.config import ConfigError


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def block_level(seed=0, channels=8, size=3, alpha_scale=0.3, beta_scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    level = BlockKoopman(channels, size, size)
    with torch.no_grad():
        level.generator[: channels // 2] = -alpha_scale * torch.rand(channels // 2, size, size, generator=generator)
        level.generator[channels // 2:] = beta_scale * torch.randn(channels // 2, size, size, generator=generator)
    return level


def test_block_evolution_matches_closed_form_rotation():
    level = block_level()
    latent = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    tau = -0.7
    evolved = level.evolve(latent, tau)
    alpha, beta = level.alpha.double(), level.beta.double()
    w = torch.complex(latent[:, :4], latent[:, 4:])
    expected = torch.exp(torch.complex(alpha * tau, -beta * tau)) * w
    torch.testing.assert_close(evolved[:, :4], expected.real)
    torch.testing.assert_close(evolved[:, 4:], expected.imag)


def test_block_evolution_equals_matrix_exponential_of_dense_generator():
    level = block_level(channels=6, size=2)
    dense = level.dense_generator().double()  # [h, w, d, d]
    latent = torch.randn(3, 6, 2, 2, dtype=torch.float64)
    tau = 1.3
    propagator = torch.linalg.matrix_exp(tau * dense)
    expected = torch.einsum("hwij,njhw->nihw", propagator, latent)
    torch.testing.assert_close(level.evolve(latent, tau), expected)
    # The same operator as a DenseKoopman evolves identically.
    dense_level = DenseKoopman(6, 2, 2)
    with torch.no_grad():
        dense_level.matrix.copy_(dense.float())
    torch.testing.assert_close(dense_level.evolve(latent, tau), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [block_level, lambda: _shared_block_level(), lambda: _dense_level()])
def test_semigroup_law_and_inverse(make):
    level = make()
    latent = torch.randn(2, level.channels, level.height, level.width, dtype=torch.float64)
    a, b = -0.4, -1.1
    torch.testing.assert_close(level.evolve(level.evolve(latent, a), b), level.evolve(latent, a + b))
    torch.testing.assert_close(level.evolve(level.evolve(latent, 2.5), -2.5), latent)


def _shared_block_level():
    level = BlockKoopman(6, 2, 3, shared=True)
    with torch.no_grad():
        level.generator.normal_(generator=torch.Generator().manual_seed(2), std=0.5)
    return level


def _dense_level():
    level = DenseKoopman(4, 2, 2)
    with torch.no_grad():
        level.matrix.normal_(generator=torch.Generator().manual_seed(1), std=0.3)
    return level


def test_evolution_broadcasts_over_times_in_one_call():
    level = block_level()
    latent = torch.randn(5, 8, 3, 3)
    taus = torch.tensor([0.0, -0.5, -2.0, -10.0])
    many = level.evolve(latent, taus[:, None])
    assert many.shape == (4, 5, 8, 3, 3)
    for index, tau in enumerate(taus):
        torch.testing.assert_close(many[index], level.evolve(latent, float(tau)))
    per_sample = level.evolve(latent, torch.linspace(-1, 0, 5))
    assert per_sample.shape == latent.shape
    torch.testing.assert_close(per_sample[0], level.evolve(latent[:1], -1.0)[0])
    assert torch.equal(level.evolve(latent, 0.0), latent)


def test_large_exponents_saturate_instead_of_overflowing():
    level = BlockKoopman(2, 1, 1)
    with torch.no_grad():
        level.generator[0] = 5.0  # alpha * tau = 5 * 80 = 400 would overflow exp in float32
        level.generator[1] = 1.0
    out = level.evolve(torch.ones(1, 2, 1, 1), 80.0)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= math.exp(level.max_exponent) * 2
    decayed = level.evolve(torch.ones(1, 2, 1, 1), -80.0)
    assert torch.isfinite(decayed).all() and decayed.abs().max() < 1e-20


def test_half_precision_latents_are_evolved_in_float32():
    level = block_level()
    latent = torch.randn(1, 8, 3, 3)
    out = level.evolve(latent.bfloat16(), -3.0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), level.evolve(latent, -3.0), rtol=2e-2, atol=2e-2)


def test_identity_level_and_shape_errors():
    level = IdentityKoopman(4, 2, 2)
    latent = torch.randn(3, 4, 2, 2)
    assert level.evolve(latent, torch.zeros(5, 1)).shape == (5, 3, 4, 2, 2)
    with pytest.raises(ValueError, match="does not match"):
        level.evolve(torch.randn(3, 5, 2, 2), 0.0)
    with pytest.raises(ValueError, match="even channel count"):
        BlockKoopman(3, 2, 2)


def test_presets_levels_and_parameter_counts():
    tiny = hkdviz.build("tiny")
    assert tiny.num_parameters() < 1_000_000
    assert [level.name for level in tiny.levels][-1] == "bottleneck"
    for level, module in zip(tiny.levels, tiny.koopman):
        assert module.generator.shape == (level.channels, level.height, level.width)
        assert torch.count_nonzero(module.generator) == 0  # zero init = identity evolution
    cifar = hkdviz.build("cifar10")
    assert len(cifar.levels) == 16
    assert {level.height for level in cifar.levels} == {32, 16, 8}
    assert 50e6 < cifar.num_parameters() < 60e6
    override = hkdviz.build({"preset": "tiny", "koopman": {"levels": "bottleneck"}})
    assert [level.operator for level in override.levels].count("block") == 1


def test_default_preset_is_the_shipped_architecture():
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from hkdviz.model.config import resolve_config
    shipped_directory = Path(__file__).resolve().parents[1] / "checkpoints" / "default" / "hkd"
    shipped = resolve_config(json.loads((shipped_directory / "config.json").read_text()))
    model = hkdviz.build("default")
    assert model.config["preset"] == "default" and shipped["preset"] == "tiny"
    assert {**model.config, "preset": None} == {**shipped, "preset": None}
    assert model.config["unet"]["model_channels"] == 48
    # The shipped weights fit it tensor for tensor (strict: no missing or unexpected keys, same shapes).
    model.load_state_dict(load_file(str(shipped_directory / "model.safetensors")), strict=True)


@pytest.mark.parametrize("channels", [20, 40, 48])
def test_any_even_width_runs(channels):
    # EDM's group count min(32, C // 4) does not divide every width (48 channels: a 144-channel skip
    # concatenation); the largest dividing count below it is used there, EDM's own count elsewhere.
    from hkdviz.model.unet import GroupNorm
    model = hkdviz.build({"preset": "tiny", "unet": {"model_channels": channels}})
    with torch.no_grad():
        image = model.sample([0, 1])
    assert image.shape == (2, 3, 32, 32) and torch.isfinite(image).all()
    assert [GroupNorm(width).num_groups for width in (128, 256, 384, 144, 20)] == [32, 32, 32, 24, 5]


def test_bad_configs_are_named():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        hkdviz.build("huge")
    with pytest.raises(ConfigError, match="unknown config key 'unet.channels'"):
        hkdviz.build({"preset": "tiny", "unet": {"channels": 3}})
    with pytest.raises(ConfigError, match="koopman.operator"):
        hkdviz.build({"koopman": {"operator": "sparse"}})


def test_one_step_sample_equals_decode_of_evolved_intermediate_state(tiny_model):
    """Semigroup in the model: D(exp((eps - t) A) z_t) with z_t = exp((t - T) A) z_T is the sample."""
    model = tiny_model
    seeds = [3, 4]
    z_T = model.encode(model.noise(seeds), model.sigma_max)
    t = 1.7
    with torch.no_grad():
        z_t = model.evolve(z_T, t - model.sigma_max)
        image = model.decode(model.evolve(z_t, model.sigma_min - t)).clamp(-1, 1)
    torch.testing.assert_close(image, model.sample(seeds), rtol=1e-5, atol=1e-5)


def test_seed_determinism_across_batch_size_and_position(tiny_model):
    together = tiny_model.sample([5, 6, 7, 8])
    alone = tiny_model.sample([7])
    reordered = tiny_model.sample([8, 7, 6, 5], batch_size=3)
    torch.testing.assert_close(alone[0], together[2], rtol=0, atol=1e-5)
    torch.testing.assert_close(reordered.flip(0), together, rtol=0, atol=1e-5)
    assert not torch.allclose(together[0], together[1])
    assert together.shape == (4, 3, 32, 32) and together.abs().max() <= 1


def test_bad_inputs_to_model(tiny_model):
    with pytest.raises(ValueError, match="x_t must have shape"):
        tiny_model.encode(torch.randn(2, 3, 16, 16), 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        tiny_model.encode(torch.zeros(1, 3, 32, 32, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        tiny_model.encode(torch.randn(1, 3, 32, 32), 0.0)
    with pytest.raises(ValueError, match="expected 7 latents"):
        tiny_model.decode([torch.randn(1, 24, 32, 32)])
    with pytest.raises(TypeError, match="seeds must be integers"):
        tiny_model.sample([1.5])
    with pytest.raises(ValueError, match="seeds is empty"):
        tiny_model.sample([])


def test_karras_grid_endpoints():
    sigmas = karras_sigmas(16, 0.002, 80.0)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-1] == pytest.approx(0.002)
    assert (sigmas[1:] < sigmas[:-1]).all()
