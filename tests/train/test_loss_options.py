"""Issue #19 loss options with known answers: generator smoothness."""

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


# -- config keys -----------------------------------------------------------------------------------
def test_new_keys_have_defaults_meanings_checks_and_show_in_explain_config():
    defaults = {"generator_smoothness": 0.0}
    for key, value in defaults.items():
        assert BASE["hkd"][key] == value and MEANINGS[("hkd",)][key]
    config = resolve_training_config("smoke", overrides=["hkd.generator_smoothness=0.1"])
    text = explain_config(config)
    for key in defaults:
        assert any(line.split()[0] == key for line in text.splitlines() if line.startswith("  ")), key
    from hkdviz.train.presets import PresetError
    for bad, message in (("hkd.generator_smoothness=-0.5", "hkd.generator_smoothness must be >= 0"),):
        with pytest.raises(PresetError, match=message):
            resolve_training_config("smoke", overrides=[bad])
