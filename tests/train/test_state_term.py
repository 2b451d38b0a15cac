"""The state term (hkd.state_weight): every input's latents, decoded without evolution the way analyses
decode a latent (HKDModel.readout: the head at T, no skip term), against the frozen teacher's D(x_t, t).
Known answers: a teacher-initialised consistency HKD reads out the teacher's D at T less exactly its skip
term c_skip(T) x_T; a "teacher" that is the model's own readout makes the term zero; a zero teacher gives
the readout's own distance to zero; the term's gradient never reaches the generators."""
import copy

import pytest
import torch

import hkdviz
from hkdviz.model import randomize_generators
from hkdviz.teacher.edm import EDMPrecond, init_hkd_from_teacher
from hkdviz.train.loss import HKDDistance, HKDLoss, MSEDistance

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread

SMALL = {"preset": "tiny", "unet": {"img_resolution": 16, "model_channels": 8}}
MSE = HKDDistance(MSEDistance(), lambda1_start=1.0, lambda1_end=1.0, lambda2=0.0)


@pytest.fixture(scope="module")
def pair():
    """(teacher, HKD initialised from it with the consistency head and decoder sigma T, generators random)."""
    torch.manual_seed(0)
    teacher = EDMPrecond(SMALL).eval()
    with torch.no_grad():  # non-trivial weights (EDM zero-initialises some output layers)
        for parameter in teacher.parameters():
            parameter.normal_(0, 0.05)
    config = copy.deepcopy(teacher.config)
    config["output"] = "consistency"
    config["diffusion"]["decoder_sigma"] = config["diffusion"]["sigma_max"]
    model = init_hkd_from_teacher(hkdviz.HKDModel(config), teacher).eval()
    randomize_generators(model, seed=3)  # the readout must not depend on them
    return teacher.requires_grad_(False), model


def _trajectories(model, batch=2, states=4):
    """Random states [B, K, C, H, W] on a decreasing grid from T: values matter, not their realism."""
    generator = torch.Generator().manual_seed(1)
    sigmas = torch.tensor([model.sigma_max, 5.0, 0.5, model.sigma_min])
    images = torch.randn(batch, states, *model.image_shape, generator=generator)
    return images * sigmas.reshape(1, -1, 1, 1, 1).clamp_min(1.0), sigmas


def test_forward_returns_the_readout_of_the_same_pass(pair):
    _, model = pair
    x = model.noise([0, 1])
    sigma = torch.tensor([model.sigma_max, 2.0])
    with torch.no_grad():
        image, latents, readout = model(x, sigma, return_latents=True, return_readout=True)
        torch.testing.assert_close(image, model(x, sigma), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(readout, model.readout(x, sigma), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(readout, model.decode(model.encode(x, sigma)))
        assert len(latents) == len(model.levels)
        image_only, readout_only = model(x, sigma, return_readout=True)
        torch.testing.assert_close(readout_only, readout)
        # With evolution, the one-step image is not the readout (the generators are random here).
        assert (image - readout).abs().max() > 1e-3


def test_teacher_initialised_readout_at_T_is_the_teacher_denoiser_less_its_skip_term(pair):
    """Decoder sigma T and the consistency head make the readout c_out(T) F(x_T, T), the teacher's D(x_T, T)
    without its skip term c_skip(T) x_T: the state term of an x_T-only loss starts at exactly the mean square
    of that term (c_skip(T) = sd^2 / (T^2 + sd^2) ~ 4e-5, x_T ~ 80: ~1e-5), whatever the generators."""
    teacher, model = pair
    x_T = model.noise([0, 1, 2])
    c_skip = float(model.head_coefficients(model.sigma_max)[0])
    with torch.no_grad():
        torch.testing.assert_close(model.readout(x_T, model.sigma_max) + c_skip * x_T, teacher(x_T, model.sigma_max),
                                   rtol=1e-5, atol=1e-5)
    states, sigmas = _trajectories(model, batch=3)
    states[:, 0] = x_T
    loss = HKDLoss(MSE, t_consistency=False, state_weight=1.0, state_teacher=teacher)
    with torch.no_grad():
        _, stats = loss(model, states, sigmas)
    expected = (c_skip * x_T).square().flatten(1).mean(1).mean().item()
    assert 1e-7 < expected < 1e-3 and stats["loss_state"].item() == pytest.approx(expected, rel=1e-3)
    # At the other times the teacher-initialised readout differs, if only slightly for this random teacher
    # (its decoder's noise embedding is that of sigma T, not t).
    with torch.no_grad():
        _, stats = HKDLoss(MSE, state_weight=1.0, state_teacher=teacher)(
            model, states, sigmas, indices=torch.tensor([[0, 1, 2, 2, 1]] * 3))
    assert stats["loss_state"].item() > 0


def test_own_readout_as_teacher_gives_zero_and_zero_teacher_a_known_value(pair):
    _, model = pair
    states, sigmas = _trajectories(model)
    indices = torch.tensor([[0, 1, 2, 3, 1], [0, 3, 3, 2, 1]])
    own = lambda x, sigma, labels=None: model.readout(x, sigma)  # noqa: E731
    with torch.no_grad():
        plain, _ = HKDLoss(MSE)(model, states, sigmas, indices=indices)
        with_own, stats = HKDLoss(MSE, state_weight=5.0, state_teacher=own)(model, states, sigmas, indices=indices)
        assert stats["loss_state"].item() < 1e-10
        torch.testing.assert_close(with_own, plain, rtol=1e-5, atol=1e-6)
        zero = lambda x, sigma, labels=None: torch.zeros_like(x)  # noqa: E731
        weighted, stats = HKDLoss(MSE, state_weight=2.0, state_teacher=zero)(model, states, sigmas, indices=indices)
        rows = torch.arange(2).unsqueeze(1)
        inputs = states[rows, indices].reshape(10, *model.image_shape)
        input_sigmas = sigmas[indices].reshape(10)
        expected = model.readout(inputs, input_sigmas).square().flatten(1).mean(1).mean()
    assert stats["loss_state"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * expected.item(), rel=1e-4)


def test_the_state_term_trains_encoder_and_decoder_but_never_the_generators(pair):
    """The readout the loss scores (forward's return_readout) has no evolution in it: its gradient reaches
    the encoder and decoder only."""
    teacher, model = pair
    model = copy.deepcopy(model).train()
    states, sigmas = _trajectories(model)
    indices = torch.tensor([[0, 1, 2, 3, 1], [0, 3, 3, 2, 1]])
    rows = torch.arange(2).unsqueeze(1)
    inputs, input_sigmas = states[rows, indices].reshape(10, *model.image_shape), sigmas[indices].reshape(10)
    _, readout = model(inputs, input_sigmas, return_readout=True)
    with torch.no_grad():
        target = teacher(inputs, input_sigmas)
    MSE(readout.float(), target.float())[0].mean().backward()
    generators = [parameter.grad for name, parameter in model.named_parameters() if name.startswith("koopman.")]
    others = [parameter.grad for name, parameter in model.named_parameters() if not name.startswith("koopman.")]
    assert generators and all(grad is None or grad.abs().max() == 0 for grad in generators)
    assert sum(float(grad.abs().sum()) for grad in others if grad is not None) > 0


def test_state_weight_is_checked():
    with pytest.raises(ValueError, match="needs state_teacher"):
        HKDLoss(state_weight=1.0)
    with pytest.raises(ValueError, match="state_weight must be a finite number >= 0"):
        HKDLoss(state_weight=-1.0, state_teacher=lambda x, s, labels=None: x)
    loss = HKDLoss(state_weight=0.0, state_teacher=lambda x, s, labels=None: x)
    assert loss.state_teacher is None and loss.config()["state_weight"] == 0.0
