"""Issue #19 loss options with known answers: generator smoothness, the time-sampling law, the weight
of the reconstruction term, and the teacher-feature perceptual distance."""
import math

import pytest
import torch

from hkdviz.model import BlockKoopman
from hkdviz.model.config import resolve_config
from hkdviz.train.loss import HKDDistance, HKDLoss, MSEDistance, TeacherFeatureDistance, make_distance
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


# -- teacher-feature distance ----------------------------------------------------------------------
SMALL_MODEL = {"preset": "tiny", "unet": {"img_resolution": 16, "model_channels": 8}}


@pytest.fixture(scope="module")
def teacher():
    from hkdviz.teacher.edm import EDMPrecond
    torch.manual_seed(0)
    teacher = EDMPrecond(resolve_config(SMALL_MODEL))
    with torch.no_grad():  # an untrained EDM U-Net zero-initialises some convolutions: give every one weights
        for parameter in teacher.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return teacher


def test_teacher_features_zero_symmetric_positive(teacher):
    distance = make_distance({"name": "teacher_features", "sigma": 0.5}, teacher=teacher)
    assert isinstance(distance, TeacherFeatureDistance) and distance.config() == {"name": "teacher_features",
                                                                                   "sigma": 0.5}
    torch.manual_seed(1)
    x, y = torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(distance(x, x), torch.zeros(3))
    forward, backward = distance(x, y), distance(y, x)
    assert bool((forward > 0).all())
    torch.testing.assert_close(forward, backward, rtol=1e-6, atol=0)
    # Each level's term is a squared distance of unit vectors: within [0, 4].
    assert bool((forward <= 4).all())
    # The noise level conditions the features.
    assert not torch.allclose(make_distance({"name": "teacher_features", "sigma": 20.0}, teacher=teacher)(x, y), forward)


def test_teacher_features_known_answer_from_the_teacher_encoder(teacher):
    """The distance is the mean over levels of the per-position squared distance between the teacher
    encoder's unit-normalised features at sigma (c_in and ln(sigma) / 4 as in EDM)."""
    sigma = 0.3
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    net = teacher.net
    c_in = 1 / math.sqrt(sigma ** 2 + teacher.sigma_data ** 2)
    with torch.no_grad():
        emb = net.embed(torch.full((2,), math.log(sigma) / 4))
        levels = zip(net.encode(x * c_in, emb), net.encode(y * c_in, emb))
        expected = []
        for a, b in levels:
            a = a / a.norm(dim=1, keepdim=True)
            b = b / b.norm(dim=1, keepdim=True)
            expected.append((a - b).square().sum(1).mean((1, 2)))
        expected = torch.stack(expected).mean(0)
    got = make_distance("teacher_features", teacher=teacher)(x, y)
    assert make_distance("teacher_features", teacher=teacher).sigma == sigma
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_teacher_features_gradient_reaches_the_prediction_only(teacher):
    distance = make_distance({"name": "teacher_features", "sigma": 0.5}, teacher=teacher)
    torch.manual_seed(3)
    prediction = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    target = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    distance(prediction, target).sum().backward()
    assert prediction.grad is not None and bool(prediction.grad.abs().sum() > 0)
    assert target.grad is None  # the target's features carry no graph
    # Inside HKDDistance (the perceptual term) as the loss uses it.
    prediction.grad = None
    total, _, perceptual = HKDDistance(distance, lambda1_start=1e-9, lambda1_end=1e-9)(prediction, target)
    torch.testing.assert_close(perceptual, distance(prediction, target))
    total.sum().backward()
    assert bool(prediction.grad.abs().sum() > 0)
    assert all(not parameter.requires_grad and parameter.grad is None for parameter in distance.network.parameters())
    assert all(parameter.grad is None for parameter in teacher.parameters())  # the loop's teacher is untouched
    assert distance.network is not teacher.net


def test_teacher_features_errors(teacher):
    with pytest.raises(ValueError, match="needs the teacher"):
        make_distance("teacher_features")
    with pytest.raises(ValueError, match="takes 'sigma' only"):
        make_distance({"name": "teacher_features", "sigma": 0.5, "layers": 2}, teacher=teacher)
    with pytest.raises(ValueError, match="positive finite"):
        make_distance({"name": "teacher_features", "sigma": 0.0}, teacher=teacher)
    with pytest.raises(ValueError, match="EDMPrecond teacher"):
        make_distance("teacher_features", teacher=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'teacher_features'"):
        make_distance("fid")


# -- config keys -----------------------------------------------------------------------------------
def test_new_keys_have_defaults_meanings_checks_and_show_in_explain_config():
    defaults = {"generator_smoothness": 0.0, "time_sampling": "uniform", "recon_weight": 1.0, "state_weight": 0.0}
    for key, value in defaults.items():
        assert BASE["hkd"][key] == value and MEANINGS[("hkd",)][key]
    config = resolve_training_config("smoke", overrides=["hkd.time_sampling=log_sigma", "hkd.recon_weight=2",
                                                         "hkd.generator_smoothness=0.1", "hkd.state_weight=1"])
    text = explain_config(config)
    for key in defaults:
        assert any(line.split()[0] == key for line in text.splitlines() if line.startswith("  ")), key
    assert "teacher_features" in text
    from hkdviz.train.presets import PresetError
    for bad, message in (("hkd.time_sampling=sigma", "hkd.time_sampling must be"),
                         ("hkd.recon_weight=-1", "hkd.recon_weight must be >= 0"),
                         ("hkd.generator_smoothness=-0.5", "hkd.generator_smoothness must be >= 0"),
                         ("hkd.state_weight=-1", "hkd.state_weight must be >= 0")):
        with pytest.raises(PresetError, match=message):
            resolve_training_config("smoke", overrides=[bad])
