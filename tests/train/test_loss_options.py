"""Issue #19 loss options with known answers: generator smoothness, the time-sampling law and the weight
of the reconstruction term."""
import math

import pytest
import torch

from hkdviz.model import BlockKoopman
from hkdviz.train.loss import HKDDistance, HKDLoss, MSEDistance
from hkdviz.train.presets import BASE, MEANINGS, explain_config, resolve_training_config

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


class KoopmanOnlyModel(torch.nn.Module):
    """f(x_t, sigma) = x_t, with Koopman levels for the generator penalty to read."""

    def __init__(self, levels):
        super().__init__()
        self.koopman = torch.nn.ModuleList(levels)

    def forward(self, x, sigma, class_labels=None):
        return x


def _level(generator: torch.Tensor, shared: bool = False) -> BlockKoopman:
    channels, height, width = generator.shape
    level = BlockKoopman(channels, height, width, shared=shared)
    with torch.no_grad():
        level.generator.copy_(generator if not shared else generator[:, :1, :1])
    return level


# -- generator smoothness --------------------------------------------------------------------------
def test_smoothness_is_zero_for_a_generator_constant_over_positions():
    constant = torch.tensor([-0.3, 0.1, 2.0, -1.0]).reshape(4, 1, 1).expand(4, 3, 5).clone()
    model = KoopmanOnlyModel([_level(constant), _level(torch.zeros(2, 4, 4))])
    assert HKDLoss.generator_smoothness_penalty(model).item() == 0.0


def test_smoothness_hand_computed_value_and_levels_it_skips():
    # Level a (2 x 2 x 2): channel 0 = [[0, 1], [2, 3]], channel 1 = 0. x differences 1, 1; y differences
    # 2, 2 (channel 1: four zeros): (1 + 1 + 4 + 4) / 8 = 1.25.
    a = torch.zeros(2, 2, 2)
    a[0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    # Level b (2 x 1 x 3): channel 0 = [0, 0, 3], channel 1 = 1: x differences 0, 3, 0, 0, no y: 9 / 4.
    b = torch.zeros(2, 1, 3)
    b[0, 0] = torch.tensor([0.0, 0.0, 3.0])
    b[1] = 1.0
    skipped = [_level(torch.randn(2, 1, 1)),                      # one position: no neighbours
               _level(torch.randn(2, 3, 3), shared=True)]          # shared: not per position
    model = KoopmanOnlyModel([_level(a), _level(b), *skipped])
    assert HKDLoss.generator_smoothness_penalty(model).item() == pytest.approx((1.25 + 2.25) / 2, rel=1e-7)


def test_smoothness_enters_the_loss_with_its_weight_and_its_gradient_flows():
    torch.manual_seed(0)
    model = KoopmanOnlyModel([_level(torch.randn(4, 3, 3)), _level(torch.randn(2, 2, 2))])
    inputs, target = torch.randn(2, 3, 3, 4, 4), torch.randn(2, 3, 4, 4)
    sigmas = torch.tensor([[80.0, 2.0, 0.5], [80.0, 1.0, 0.1]])
    distance = HKDDistance(MSEDistance(), lambda1_start=1.0, lambda1_end=1.0, lambda2=0.0)
    plain, _ = HKDLoss(distance, num_times=2).compute(model, inputs, sigmas, target)
    smooth, stats = HKDLoss(distance, num_times=2, generator_smoothness=0.25).compute(model, inputs, sigmas, target)
    penalty = HKDLoss.generator_smoothness_penalty(model)
    assert stats["loss_smoothness"].item() == pytest.approx(penalty.item())
    assert smooth.item() == pytest.approx(plain.item() + 0.25 * penalty.item(), rel=1e-6)
    smooth.backward()
    for level in model.koopman:
        assert level.generator.grad is not None and bool(level.generator.grad.abs().sum() > 0)
    # d penalty / d generator for one level alone: compare with a finite difference.
    level = _level(torch.randn(2, 2, 3, dtype=torch.float64).float())
    single = KoopmanOnlyModel([level])
    HKDLoss.generator_smoothness_penalty(single).backward()
    step = 1e-3
    with torch.no_grad():
        level.generator[0, 1, 1] += step
        up = HKDLoss.generator_smoothness_penalty(single).item()
        level.generator[0, 1, 1] -= 2 * step
        down = HKDLoss.generator_smoothness_penalty(single).item()
    assert level.generator.grad[0, 1, 1].item() == pytest.approx((up - down) / (2 * step), rel=1e-3)


def test_smoothness_needs_per_position_block_levels():
    model = KoopmanOnlyModel([_level(torch.randn(2, 3, 3), shared=True)])
    with pytest.raises(ValueError, match="per-position block Koopman levels"):
        HKDLoss.generator_smoothness_penalty(model)
    with pytest.raises(ValueError, match="generator_smoothness must be a finite number >= 0"):
        HKDLoss(generator_smoothness=-1)


# -- time sampling ---------------------------------------------------------------------------------
def test_uniform_sampling_is_the_draw_of_before():
    """The default law is today's draw, bit for bit: randint over indices 1..N after a column of zeros."""
    for include_eps in (True, False):
        ours = HKDLoss(include_eps=include_eps).time_indices(64, 19, torch.Generator().manual_seed(7))
        explicit = HKDLoss(include_eps=include_eps, time_sampling="uniform").time_indices(
            64, 19, torch.Generator().manual_seed(7), sigmas=torch.linspace(80, 0.002, 19))
        generator = torch.Generator().manual_seed(7)
        high = 19 if include_eps else 18
        before = torch.cat([torch.zeros(64, 1, dtype=torch.long), torch.randint(1, high, (64, 4), generator=generator)], 1)
        assert torch.equal(ours, before) and torch.equal(explicit, before)


def hand_grid():
    return torch.tensor([math.exp(4.0), math.exp(2.0), math.exp(1.0), 1.0])  # ln sigma = 4, 2, 1, 0


def test_log_sigma_probabilities_on_a_hand_made_grid():
    # Cells between midpoints in ln sigma: node 1 [1.5, 3) = 1.5, node 2 [0.5, 1.5) = 1, eps [0, 0.5) = 0.5.
    probabilities = HKDLoss.log_sigma_probabilities(hand_grid())
    torch.testing.assert_close(probabilities, torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64) / 3.0)
    interior = HKDLoss.log_sigma_probabilities(hand_grid(), include_eps=False)
    torch.testing.assert_close(interior, torch.tensor([0.6, 0.4], dtype=torch.float64))
    with pytest.raises(ValueError, match="decrease strictly"):
        HKDLoss.log_sigma_probabilities(hand_grid().flip(0))
    with pytest.raises(ValueError, match="needs the sigma grid"):
        HKDLoss(time_sampling="log_sigma").time_indices(4, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        HKDLoss(time_sampling="beta")


def _chi_square(indices: torch.Tensor, probabilities: torch.Tensor) -> float:
    counts = torch.bincount(indices.reshape(-1) - 1, minlength=probabilities.numel()).double()
    assert counts.numel() == probabilities.numel()  # no index outside 1..N
    expected = probabilities * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("include_eps", [True, False])
def test_log_sigma_draw_frequencies_follow_the_probabilities(include_eps):
    from scipy.stats import chi2

    from hkdviz.model.hkd import karras_sigmas
    loss = HKDLoss(time_sampling="log_sigma", include_eps=include_eps)
    for grid in (hand_grid(), karras_sigmas(19, 0.002, 80.0).float()):
        probabilities = HKDLoss.log_sigma_probabilities(grid, include_eps)
        indices = loss.time_indices(20_000, grid.numel(), torch.Generator().manual_seed(3), sigmas=grid)
        assert indices.shape == (20_000, 5) and bool((indices[:, 0] == 0).all())
        statistic = _chi_square(indices[:, 1:], probabilities)
        # A fixed seed makes this deterministic; the bound is the 0.1% tail of chi-square (N - 1 dof).
        assert statistic < chi2.ppf(0.999, probabilities.numel() - 1), statistic
        # And it is not the uniform law (on the Karras grid the two differ a lot).
        if grid.numel() > 4:
            uniform = torch.full_like(probabilities, 1 / probabilities.numel())
            assert _chi_square(indices[:, 1:], uniform) > chi2.ppf(0.999999, probabilities.numel() - 1)


# -- reconstruction weight -------------------------------------------------------------------------
def _hand_trajectories():
    values = torch.tensor([[8.0, 4.0, 2.0, 1.0], [0.0, 1.0, 3.0, 3.0]])
    states = values.reshape(2, 4, 1, 1, 1).expand(2, 4, 3, 2, 2).clone()
    sigmas = torch.tensor([80.0, 10.0, 1.0, 0.002])
    indices = torch.tensor([[0, 1, 2, 3, 3], [0, 2, 2, 1, 3]])
    terms = torch.tensor([[49.0, 9.0, 1.0, 0.0, 0.0], [9.0, 0.0, 0.0, 4.0, 0.0]])  # (value - value at eps)^2
    return states, sigmas, indices, terms


def test_recon_weight_one_is_the_plain_mean_bit_for_bit_and_other_weights_known():
    states, sigmas, indices, terms = _hand_trajectories()
    distance = HKDDistance(MSEDistance(), lambda1_start=1.0, lambda1_end=1.0, lambda2=0.0)
    model = KoopmanOnlyModel([])
    torch.manual_seed(0)
    noisy = states + 0.01 * torch.randn_like(states)  # values whose float sums depend on the order
    default, _ = HKDLoss(distance)(model, noisy, sigmas, indices=indices)
    one, _ = HKDLoss(distance, recon_weight=1.0)(model, noisy, sigmas, indices=indices)
    rows = torch.arange(2).unsqueeze(1)
    flat = noisy[rows, indices].reshape(10, 3, 2, 2)
    before = distance(flat, noisy[:, -1].repeat_interleave(5, 0))[0].reshape(2, 5).mean()
    assert torch.equal(default, before) and torch.equal(one, before)
    # r = 3: per sample (3 d_T + sum d_m) / (3 + 4), then the batch mean.
    weighted, stats = HKDLoss(distance, recon_weight=3.0)(model, states, sigmas, indices=indices)
    assert weighted.item() == pytest.approx(((3 * 49 + 10) / 7 + (3 * 9 + 4) / 7) / 2, rel=1e-7)
    assert stats["loss_recon"].item() == pytest.approx(terms[:, 0].mean().item())
    only_consistency, _ = HKDLoss(distance, recon_weight=0.0)(model, states, sigmas, indices=indices)
    assert only_consistency.item() == pytest.approx(terms[:, 1:].mean().item(), rel=1e-7)
    recon_only, _ = HKDLoss(distance, t_consistency=False, recon_weight=5.0)(model, states, sigmas)
    assert recon_only.item() == pytest.approx(29.0)  # one term: its weight cancels
    with pytest.raises(ValueError, match="leaves no loss term"):
        HKDLoss(t_consistency=False, recon_weight=0.0)


# -- config keys -----------------------------------------------------------------------------------
def test_new_keys_have_defaults_meanings_checks_and_show_in_explain_config():
    defaults = {"generator_smoothness": 0.0, "time_sampling": "uniform", "recon_weight": 1.0}
    for key, value in defaults.items():
        assert BASE["hkd"][key] == value and MEANINGS[("hkd",)][key]
    config = resolve_training_config("smoke", overrides=["hkd.time_sampling=log_sigma", "hkd.recon_weight=2",
                                                         "hkd.generator_smoothness=0.1"])
    text = explain_config(config)
    for key in defaults:
        assert any(line.split()[0] == key for line in text.splitlines() if line.startswith("  ")), key
    from hkdviz.train.presets import PresetError
    for bad, message in (("hkd.time_sampling=sigma", "hkd.time_sampling must be"),
                         ("hkd.recon_weight=-1", "hkd.recon_weight must be >= 0"),
                         ("hkd.generator_smoothness=-0.5", "hkd.generator_smoothness must be >= 0")):
        with pytest.raises(PresetError, match=message):
            resolve_training_config("smoke", overrides=[bad])
