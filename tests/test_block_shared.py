"""The "block_shared" Koopman operator: one alpha/beta per channel pair, shared by every position of a
level. Known answers: it evolves bit for bit like a "block" level holding the broadcast copy of its
generator, so a block_shared model and its block twin agree on everything downstream (samples,
trajectories, spectrum, bands, editing, faithfulness), and it survives a save/load round trip."""
import json
import math

import numpy as np
import pytest
import torch

import hkdviz
from hkdviz.analysis.bands import band_masks
from hkdviz.analysis.spectrum import level_view
from hkdviz.model import BlockKoopman, randomize_generators
from hkdviz.model.config import ConfigError
from hkdviz.model.koopman import make_level

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def shared_level(seed=0, channels=8, size=3, dtype=torch.float32):
    level = BlockKoopman(channels, size, size, shared=True).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        level.generator[: channels // 2] = -0.3 * torch.rand(channels // 2, 1, 1, generator=generator)
        level.generator[channels // 2:] = 2.0 * torch.randn(channels // 2, 1, 1, generator=generator)
    return level


def block_twin(level):
    """A per-position "block" level whose generator is the broadcast copy of a shared level's."""
    twin = BlockKoopman(level.channels, level.height, level.width).to(level.generator.dtype)
    with torch.no_grad():
        twin.generator.copy_(level.generator.expand_as(twin.generator))
    return twin


def test_parameter_shape_kind_and_factory():
    level = make_level("block_shared", 6, 4, 5)
    assert level.kind == "block_shared" and level.shared
    assert level.generator.shape == (6, 1, 1) and torch.count_nonzero(level.generator) == 0
    assert level.alpha.shape == level.beta.shape == (3, 4, 5)
    assert make_level("block", 6, 4, 5).generator.shape == (6, 4, 5)
    with pytest.raises(ValueError, match="even channel count"):
        make_level("block_shared", 5, 2, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_evolves_bit_for_bit_like_the_block_level_with_the_broadcast_generator(dtype):
    level = shared_level(dtype=torch.float32)
    twin = block_twin(level)
    latent = torch.randn(5, 8, 3, 3, generator=torch.Generator().manual_seed(3)).to(dtype)
    for tau in (-0.7, 0.0, 2.5, torch.linspace(-3, 1, 5), torch.tensor([[-80.0], [-1e-3], [4.0]])):
        assert torch.equal(level.evolve(latent, tau), twin.evolve(latent, tau))


def test_semigroup_law_and_inverse():
    level = shared_level().double()
    latent = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(level.evolve(level.evolve(latent, -0.4), -1.1), level.evolve(latent, -1.5))
    torch.testing.assert_close(level.evolve(level.evolve(latent, 2.5), -2.5), latent)


def test_single_pair_closed_form_at_every_position():
    # One pair (alpha, beta) = (-0.5, 3): w = u + i v -> e^{alpha tau} e^{-i beta tau} w at every position.
    level = BlockKoopman(2, 2, 3, shared=True).double()
    with torch.no_grad():
        level.generator.copy_(torch.tensor([-0.5, 3.0], dtype=torch.float64).reshape(2, 1, 1))
    latent = torch.randn(4, 2, 2, 3, dtype=torch.float64)
    tau = 0.8
    u, v = latent[:, 0], latent[:, 1]
    growth, angle = math.exp(-0.5 * tau), 3.0 * tau
    expected_u = growth * (math.cos(angle) * u + math.sin(angle) * v)
    expected_v = growth * (math.cos(angle) * v - math.sin(angle) * u)
    evolved = level.evolve(latent, tau)
    torch.testing.assert_close(evolved[:, 0], expected_u, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(evolved[:, 1], expected_v, rtol=1e-14, atol=1e-14)
    # The dense form is the same 2x2 block at every position.
    block = torch.tensor([[-0.5, 3.0], [-3.0, -0.5]], dtype=torch.float64)
    assert torch.equal(level.dense_generator(), block.expand(2, 3, 2, 2))


def test_gradient_reaches_the_shared_parameter_summed_over_positions():
    level = shared_level(channels=2, size=2).double()
    twin = block_twin(level)
    latent = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    level.evolve(latent, -0.6).square().sum().backward()
    twin.evolve(latent, -0.6).square().sum().backward()
    assert level.generator.grad.shape == (2, 1, 1)
    torch.testing.assert_close(level.generator.grad, twin.generator.grad.sum((1, 2), keepdim=True))


# -- whole models: a block_shared model and its block twin ------------------------------------------------
def model_pair(seed=0):
    """A randomised tiny block_shared model, and a block model with the same networks whose generators
    are the broadcast copies."""
    torch.manual_seed(seed)
    shared = hkdviz.build({"preset": "tiny", "koopman": {"operator": "block_shared"}})
    randomize_generators(shared, seed=seed)
    twin = hkdviz.build("tiny")
    state = {name: value.expand_as(twin.state_dict()[name]) if name.startswith("koopman.") else value
             for name, value in shared.state_dict().items()}
    twin.load_state_dict(state)
    return shared.eval(), twin.eval()


@pytest.fixture(scope="module")
def models():
    return model_pair()


def test_config_schema_and_randomize(models):
    shared, twin = models
    assert [info.operator for info in shared.levels] == ["block_shared"] * len(shared.levels)
    for level in shared.koopman:
        assert level.generator.shape == (level.channels, 1, 1)
        assert bool((level.alpha < 0).all()) and bool((level.beta != 0).all())
    with pytest.raises(ConfigError, match="'block', 'block_shared', 'dense', 'dense_shared'"):
        hkdviz.build({"preset": "tiny", "koopman": {"operator": "shared"}})
    with pytest.raises(ConfigError, match="even channel counts"):
        hkdviz.build({"preset": "tiny", "unet": {"model_channels": 23}, "koopman": {"operator": "block_shared"}})


def test_samples_and_trajectory_equal_the_block_twin(models):
    shared, twin = models
    seeds = [0, 5]
    assert torch.equal(shared.sample(seeds), twin.sample(seeds))
    ours = hkdviz.trajectory(shared, seeds, times=4, latents=True, progress=False)
    theirs = hkdviz.trajectory(twin, seeds, times=4, latents=True, progress=False)
    for name in ours.data_vars:
        np.testing.assert_array_equal(ours[name].values, theirs[name].values, err_msg=name)


def test_spectrum_has_one_copy_per_position(models):
    shared, twin = models
    ours = hkdviz.spectrum(shared, eigenvectors=True, progress=False)
    theirs = hkdviz.spectrum(twin, eigenvectors=True, progress=False)
    assert json.loads(ours.attrs["level_operators"]) == ["block_shared"] * len(shared.levels)
    for name in ("level", "pair", "y", "x"):
        np.testing.assert_array_equal(ours[name].values, theirs[name].values)
    for name in ("alpha", "beta", "eigenvalue", "magnitude", "frequency", "right_eigenvector", "left_eigenvector"):
        np.testing.assert_array_equal(ours[name].values, theirs[name].values, err_msg=name)
    # Level view: the (pair, 1, 1) parameter at every position.
    level = 2
    view = level_view(ours, level)
    pairs = shared.koopman[level].num_pairs
    generator = shared.koopman[level].generator.detach().double().numpy()
    assert view.attrs["operator"] == "block_shared" and view["alpha"].shape == (pairs, 16, 16)
    np.testing.assert_array_equal(view["alpha"].values, np.broadcast_to(generator[:pairs], (pairs, 16, 16)))
    np.testing.assert_array_equal(view["beta"].values, np.broadcast_to(generator[pairs:], (pairs, 16, 16)))


def test_bands_and_editing_equal_the_block_twin(models):
    shared, twin = models
    for band in ("high", "low", {"kind": "frequency", "lower": 0.1, "upper": 0.5, "absolute": True},
                 {"kind": "explicit", "modes": [[0, 1, 2, 3], [3, 0, 0, 0]]}):
        ours, theirs = band_masks(shared, band), band_masks(twin, band)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), band
    # A shared level's quantile band keeps whole pairs: every position of a pair is in or out together.
    mask = band_masks(shared, "high")[0]
    assert bool(((mask == mask[:, :1, :1])).all()) and 0 < int(mask[:, 0, 0].sum()) < mask.shape[0]
    reference = torch.zeros(shared.image_shape)
    ours = hkdviz.frequency_edit(shared, [1, 2], reference, ratio=0.3)
    theirs = hkdviz.frequency_edit(twin, [1, 2], reference, ratio=0.3)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


class _FakeTeacher:
    """PF-ODE states of a linear toy: x_t = x_T * t / T, with D(x, t) = 0 (as in test_koopman_time)."""

    def states_at(self, x_T, sigmas):
        scale = (torch.as_tensor(sigmas, dtype=torch.float32) / sigmas[0]).reshape(1, -1, 1, 1, 1)
        return x_T.unsqueeze(1) * scale.to(x_T.device)

    def __call__(self, x, sigma):
        return torch.zeros_like(x)


def test_faithfulness_equals_the_block_twin(models):
    shared, twin = models
    ours = hkdviz.faithfulness(shared, _FakeTeacher(), seeds=[0, 1], num_steps=3, batch_size=2, progress=False)
    theirs = hkdviz.faithfulness(twin, _FakeTeacher(), seeds=[0, 1], num_steps=3, batch_size=2, progress=False)
    for name in ours.data_vars:
        np.testing.assert_array_equal(ours[name].values, theirs[name].values, err_msg=name)


def test_save_load_round_trip(models, tmp_path):
    shared, _ = models
    shared.save(tmp_path / "shared", meta={"dataset": "none (test)"})
    loaded = hkdviz.load(tmp_path / "shared", device="cpu")
    assert loaded.config["koopman"]["operator"] == "block_shared"
    for ours, theirs in zip(shared.koopman, loaded.koopman):
        assert theirs.kind == "block_shared" and torch.equal(ours.generator, theirs.generator)
    assert torch.equal(loaded.sample([3, 4]), shared.sample([3, 4]))


def test_widgets_accept_shared_levels_and_equal_the_block_twin(models):
    from hkdviz.widgets import EditingApp, SpectrumExplorer
    shared, twin = models
    images = {}
    for name, model in (("shared", shared), ("twin", twin)):
        explorer = SpectrumExplorer(model, seeds=[0], max_points=300, debounce_seconds=0.05)
        app = EditingApp(model, seeds=[0], times=5, level=1, debounce_seconds=0.05)
        try:
            assert explorer._block_levels == set(range(len(model.levels)))
            images[name] = (explorer.select_rectangle(alpha=(-0.04, 0.0), beta=(-0.5, 0.5), level="all"),
                            app.set(ratio=0.7, band=(0.5, 1.0)))
        finally:
            explorer.close()
            app.close()
    assert "ignored" not in explorer.status.value
    for ours, theirs in zip(images["shared"], images["twin"]):
        assert torch.equal(ours, theirs)


def test_plot_keeps_the_model_s_list_of_shared_operators():
    """plot/lens.py spells the shared operators out (plot/ imports no model): the two lists agree."""
    from hkdviz.model.koopman import SHARED_OPERATORS
    from hkdviz.plot import lens

    assert lens.SHARED_OPERATORS == SHARED_OPERATORS
