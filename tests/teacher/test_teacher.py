"""The EDM teacher: preconditioning, loss, Heun sampler, ideal denoiser, Teacher save/load."""
import json
import math

import pytest
import torch

import hkdviz
from hkdviz.checkpoint import CheckpointError
from hkdviz.teacher.edm import EDMLoss, EDMPrecond, init_hkd_from_teacher
from hkdviz.teacher.ideal import IdealDenoiser
from hkdviz.teacher.sampler import heun_nfe, heun_trajectory, karras_grid, states_at
from hkdviz.teacher.teacher import Teacher, load_teacher

S0 = 0.5  # std of the single-Gaussian data set N(mu, S0^2 I)

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def tiny_teacher():
    torch.manual_seed(1)
    return EDMPrecond("tiny").eval().requires_grad_(False)


def gaussian_problem(batch=3, shape=(3, 4, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    mu = torch.rand((1, *shape), generator=generator, dtype=torch.float64) * 2 - 1
    x_T = 80 * torch.randn((batch, *shape), generator=generator, dtype=torch.float64)

    def denoiser(x, sigma):
        return (S0 ** 2 * x + sigma ** 2 * mu) / (S0 ** 2 + sigma ** 2)

    def exact(sigmas):
        # PF-ODE solution: x_t = mu + (x_T - mu) sqrt(S0^2 + t^2) / sqrt(S0^2 + T^2).
        scale = torch.sqrt(S0 ** 2 + sigmas ** 2) / math.sqrt(S0 ** 2 + float(sigmas[0]) ** 2)
        return mu[:, None] + (x_T - mu)[:, None] * scale.reshape(1, -1, 1, 1, 1)

    return mu, x_T, denoiser, exact


def relative_error(states, reference, mu):
    difference = (states - reference).flatten(2).norm(dim=2)
    return (difference / (reference - mu[:, None]).flatten(2).norm(dim=2)).max().item()


# -- grid and sampler ---------------------------------------------------------------------------------
def test_karras_grid_matches_edm_formula():
    sigmas = karras_grid(18)
    assert sigmas.dtype == torch.float64 and sigmas.shape == (19,)
    assert sigmas[0].item() == pytest.approx(80.0, rel=1e-12) and sigmas[-1].item() == pytest.approx(0.002, rel=1e-12)
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    step = 7
    expected = (80 ** (1 / 7) + step / 18 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert sigmas[step].item() == pytest.approx(expected, rel=1e-12)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_steps"):
            karras_grid(bad)


def test_heun_is_exactly_the_heun_recursion_and_costs_2n_minus_1_evaluations():
    """On a linear ODE Heun's step is a known scalar factor; the last step is Euler (EDM's NFE)."""
    mu, x_T, denoiser, _ = gaussian_problem()
    calls = []

    def counted(x, sigma):
        calls.append(sigma)
        return denoiser(x, sigma)

    sigmas = karras_grid(18)
    states, nfe = heun_trajectory(counted, x_T, sigmas, return_nfe=True)
    assert nfe == len(calls) == heun_nfe(18) == 35
    # dx/dt = a(t) (x - mu) with a(t) = t / (S0^2 + t^2).
    slope = lambda t: t / (S0 ** 2 + t ** 2)  # noqa: E731
    factor, factors = 1.0, [1.0]
    for step in range(18):
        t, t_next = float(sigmas[step]), float(sigmas[step + 1])
        h = t_next - t
        euler = 1 + h * slope(t)
        factor *= euler if step == 17 else 1 + h / 2 * (slope(t) + slope(t_next) * euler)
        factors.append(factor)
    expected = mu[:, None] + (x_T - mu)[:, None] * torch.tensor(factors, dtype=torch.float64).reshape(1, -1, 1, 1, 1)
    assert states.shape == (3, 19, 3, 4, 4)
    torch.testing.assert_close(states, expected, rtol=1e-12, atol=1e-12)
    # Every step uses both its ends; the final correction adds one evaluation.
    _, nfe_full = heun_trajectory(counted, x_T, sigmas, return_nfe=True, final_correction=True)
    assert nfe_full == heun_nfe(18, final_correction=True) == 36


def test_heun_follows_the_exact_pf_ode_with_second_order_convergence():
    mu, x_T, denoiser, exact = gaussian_problem()
    # EDM's 18-step grid: ~5 % relative error on x_t - mu (the grid's steps near t ~ S0 are ~2x apart).
    sigmas = karras_grid(18)
    assert relative_error(heun_trajectory(denoiser, x_T, sigmas), exact(sigmas), mu) < 0.06
    errors = []
    for steps in (32, 64, 128, 256):
        sigmas = karras_grid(steps)
        errors.append(relative_error(heun_trajectory(denoiser, x_T, sigmas, final_correction=True), exact(sigmas), mu))
    ratios = [coarse / fine for coarse, fine in zip(errors, errors[1:])]
    assert all(3.5 < ratio < 4.6 for ratio in ratios), ratios  # 2nd order: doubling the steps quarters the error
    assert errors[-1] < 1e-3


def test_heun_from_one_data_point_is_exact():
    """The ideal denoiser of one point y is D = y; then x_t = y + (x_T - y) t / T exactly."""
    point = torch.rand(1, 2, 3, 3, dtype=torch.float64)
    x_T = 80 * torch.randn(4, 2, 3, 3, dtype=torch.float64)
    sigmas = karras_grid(5)
    states = states_at(IdealDenoiser(point), x_T, sigmas)
    expected = point[:, None] + (x_T - point)[:, None] * (sigmas / 80).reshape(1, -1, 1, 1, 1)
    torch.testing.assert_close(states, expected, rtol=1e-12, atol=1e-12)
    last = heun_trajectory(IdealDenoiser(point), x_T, sigmas, return_all=False)
    torch.testing.assert_close(last, expected[:, -1], rtol=1e-12, atol=1e-12)


def test_heun_rejects_bad_grids():
    x_T = torch.zeros(1, 1, 2, 2)
    denoiser = IdealDenoiser(torch.zeros(1, 1, 2, 2))
    for sigmas, message in (([0.1, 1.0], "decrease"), ([1.0, 0.0], "positive"), ([[1.0, 0.5]], "1-D"),
                            ([1.0, float("nan")], "finite")):
        with pytest.raises(ValueError, match=message):
            heun_trajectory(denoiser, x_T, sigmas)
    with pytest.raises(TypeError, match="floating"):
        heun_trajectory(denoiser, torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1.0, 0.5])


# -- ideal denoiser -----------------------------------------------------------------------------------
def brute_force_posterior_mean(data, x, sigma, data_labels=None, classes=None):
    distances = ((x[:, None] - data[None]) ** 2).flatten(2).sum(2)  # [N, M]
    logits = -distances / (2 * sigma.reshape(-1, 1) ** 2)
    if classes is not None:
        logits = logits.masked_fill(classes[:, None] != data_labels[None], -torch.inf)
    weights = torch.softmax(logits, dim=1)
    return torch.einsum("nm,mchw->nchw", weights, data)


@pytest.mark.parametrize("sigma", [0.05, 0.7, 80.0, "per-sample"])
def test_ideal_denoiser_matches_brute_force(sigma):
    generator = torch.Generator().manual_seed(3)
    data = torch.rand(10, 2, 3, 3, generator=generator, dtype=torch.float64) * 2 - 1
    x = data[[1, 4, 7, 2]] + 0.5 * torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.3, 2.0, 80.0], dtype=torch.float64) if sigma == "per-sample" else sigma
    expected = brute_force_posterior_mean(data, x, torch.as_tensor(sigma, dtype=torch.float64).expand(4))
    for chunk_size in (3, 10, 64):  # streamed over chunks or in one go
        torch.testing.assert_close(IdealDenoiser(data, chunk_size=chunk_size)(x, sigma), expected, rtol=1e-9, atol=1e-12)
    # float32 data and input: float32 out, same answer to float32 precision.
    denoised = IdealDenoiser(data.float(), chunk_size=4)(x.float(), sigma)
    assert denoised.dtype == torch.float32
    torch.testing.assert_close(denoised, expected.float(), rtol=1e-4, atol=1e-5)


def test_ideal_denoiser_conditional_and_small_sigma():
    generator = torch.Generator().manual_seed(4)
    data = torch.rand(12, 3, 4, 4, generator=generator, dtype=torch.float64)
    labels = torch.arange(12) % 3
    x = data[[0, 5, 9]] + 0.3 * torch.randn(3, 3, 4, 4, generator=generator, dtype=torch.float64)
    classes = torch.tensor([1, 2, 0])
    denoiser = IdealDenoiser(data, labels=labels, chunk_size=5)
    expected = brute_force_posterior_mean(data, x, torch.full((3,), 0.4, dtype=torch.float64), labels, classes)
    torch.testing.assert_close(denoiser(x, 0.4, classes), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(denoiser(x, 0.4, torch.nn.functional.one_hot(classes, 3)), expected, rtol=1e-9, atol=1e-12)
    # At eps the posterior collapses onto the nearest point, even in float32 storage.
    near = data[[6]].float() + 1e-4
    torch.testing.assert_close(IdealDenoiser(data.float())(near, 0.002), data[[6]].float(), rtol=0, atol=1e-6)


def test_ideal_denoiser_bad_input():
    denoiser = IdealDenoiser(torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 1, 2, 2\]"):
        denoiser(torch.zeros(2, 1, 3, 3), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        denoiser(torch.zeros(2, 1, 2, 2), torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        denoiser(torch.zeros(2, 1, 2, 2), -1.0)
    with pytest.raises(ValueError, match="without data labels"):
        denoiser(torch.zeros(2, 1, 2, 2), 1.0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"data must be a tensor \[M, C, H, W\]"):
        IdealDenoiser(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="floating point"):
        IdealDenoiser(torch.zeros(3, 1, 2, 2, dtype=torch.uint8))


# -- EDMPrecond, EDMLoss, HKD initialisation ----------------------------------------------------------
class RecordingNetwork(torch.nn.Module):
    """Stands in for the SongUNet: records its inputs, returns a known F."""

    in_channels, img_resolution = 1, 2

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.inputs = None

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.inputs = (x.clone(), noise_labels.clone())
        return torch.full_like(x, 3.0)


def test_edm_preconditioning_formulas():
    model = EDMPrecond("tiny")
    model.net = RecordingNetwork()
    x = torch.randn(2, 1, 2, 2)
    sigma = torch.tensor([0.02, 7.0])
    denoised = model(x, sigma)
    variance = (sigma ** 2 + 0.25).reshape(-1, 1, 1, 1)
    s = sigma.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(model.net.inputs[0], x / variance.sqrt())
    torch.testing.assert_close(model.net.inputs[1], sigma.log() / 4)
    torch.testing.assert_close(denoised, 0.25 / variance * x + s * 0.5 / variance.sqrt() * 3.0)
    # A number broadcasts; [N, 1, 1, 1] (as EDMLoss passes it) is accepted too.
    torch.testing.assert_close(model(x, 7.0)[1], denoised[1])
    torch.testing.assert_close(model(x, sigma.reshape(-1, 1, 1, 1)), denoised)
    with pytest.raises(ValueError, match="one value per sample"):
        model(x, torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        model(x, 0.0)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 1, 2, 2\]"):
        model(torch.zeros(2, 3, 2, 2), 1.0)


def test_edm_loss_on_hand_made_tensors():
    loss = EDMLoss()
    assert loss.weight(torch.tensor(0.5)).item() == pytest.approx(8.0)  # (0.25 + 0.25) / 0.0625
    images = torch.tensor([[[[0.5, -1.0]]], [[[0.25, 0.0]]]])  # [2, 1, 1, 2]
    sigma = torch.tensor([0.5, 2.0]).reshape(2, 1, 1, 1)
    noise = torch.randn(2, 1, 1, 2)
    zero = lambda x, sigma, labels=None: torch.zeros_like(x)  # noqa: E731
    oracle = lambda x, sigma, labels=None: x - noise * sigma  # noqa: E731  (recovers the images exactly)
    expected = torch.tensor([[[[8 * 0.25, 8 * 1.0]]], [[[4.25 / 1.0 * 0.0625, 0.0]]]])
    torch.testing.assert_close(loss.loss_at(zero, images, sigma, noise), expected)
    torch.testing.assert_close(loss.loss_at(oracle, images, sigma, noise), torch.zeros_like(images), atol=1e-6, rtol=0)
    # __call__ draws sigma = exp(-1.2 + 1.2 n), then the noise, from the generator.
    values = loss(zero, images, generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    drawn_sigma = (torch.randn(2, 1, 1, 1, generator=generator) * 1.2 - 1.2).exp()
    torch.testing.assert_close(values, loss.weight(drawn_sigma) * images ** 2)
    assert values.shape == images.shape


def test_init_hkd_from_teacher(tiny_teacher):
    hkd = hkdviz.build("tiny", unet={"dropout": 0.2})  # dropout is not architecture
    init_hkd_from_teacher(hkd, Teacher(tiny_teacher))
    teacher_state = tiny_teacher.net.state_dict()
    for name, tensor in hkd.unet.state_dict().items():
        assert torch.equal(tensor, teacher_state[name]), name
    with pytest.raises(ValueError, match="unet.model_channels: HKD 16 vs teacher 24"):
        init_hkd_from_teacher(hkdviz.build("tiny", unet={"model_channels": 16}), tiny_teacher)
    with pytest.raises(TypeError, match="EDMPrecond"):
        init_hkd_from_teacher(hkd, IdealDenoiser(torch.zeros(1, 3, 32, 32)))


# -- Teacher -----------------------------------------------------------------------------------------
def test_teacher_noise_is_hkd_noise(tiny_model, tiny_teacher):
    teacher = Teacher(tiny_teacher)
    assert torch.equal(teacher.noise([3, 5, 11]), tiny_model.noise([3, 5, 11]))


def test_teacher_trajectory_and_sample(tiny_teacher):
    teacher = Teacher(tiny_teacher)
    sigmas, states = teacher.trajectory([0, 1, 2], num_steps=2, batch_size=2, progress=False)
    assert sigmas.shape == (3,) and states.shape == (3, 3, 3, 32, 32) and states.dtype == torch.float32
    torch.testing.assert_close(sigmas, karras_grid(2))
    assert torch.equal(states[:, 0], teacher.noise([0, 1, 2]))
    images = teacher.sample([2, 0], num_steps=2, batch_size=1, progress=False)
    # Same seed, same image, whatever the batch.
    torch.testing.assert_close(images, states[[2, 0], -1].clamp(-1, 1), rtol=1e-5, atol=1e-5)
    # Mixed precision changes only the network's arithmetic.
    mixed = teacher.sample([2, 0], num_steps=2, progress=False, autocast_dtype=torch.bfloat16)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, images, rtol=0, atol=0.05)
    # states_at with the same grid is the same solver.
    torch.testing.assert_close(teacher.states_at(teacher.noise([1]), sigmas), states[[1]], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"x_T must have shape \[B, 3, 32, 32\]"):
        teacher.states_at(torch.zeros(1, 3, 16, 16), sigmas)
    with pytest.raises(ValueError, match="decrease strictly"):
        teacher.states_at(teacher.noise([1]), [1.0, 80.0], substeps=2)
    with pytest.raises(ValueError, match="seeds"):
        teacher.sample([], progress=False)


def test_teacher_states_at_with_substeps():
    data = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    teacher = Teacher(IdealDenoiser(data))
    assert teacher.image_shape == (1, 4, 4)
    x_T = teacher.noise([0, 1]).double()
    coarse = torch.tensor([80.0, 1.0, 0.002], dtype=torch.float64)
    refined = teacher.states_at(x_T, coarse, substeps=4)
    fine = torch.cat([karras_grid(4, 1.0, 80.0)[:-1], karras_grid(4, 0.002, 1.0)])
    assert refined.shape == (2, 3, 1, 4, 4)
    torch.testing.assert_close(refined, states_at(teacher.denoiser, x_T, fine)[:, ::4].float())


def test_regenerate_known_answers():
    """With the ideal denoiser of one point y the PF-ODE from x_sigma = x + sigma n is y + (x_sigma - y) t / sigma,
    so it ends at y + (x_sigma - y) eps / sigma whatever x is; with two distant points and a small sigma, each
    image returns to the point it started nearest to (the structure coarser than sigma survives)."""
    point = torch.rand(1, 1, 4, 4, dtype=torch.float64) - 0.5
    teacher = Teacher(IdealDenoiser(point))
    images = torch.rand(3, 1, 4, 4) * 2 - 1
    sigma, eps = 0.7, teacher.sigma_min
    noisy = images + sigma * teacher.noise([5, 6, 7]) / teacher.sigma_max
    expected = (point + (noisy.double() - point) * eps / sigma).float()
    result = teacher.regenerate(images, sigma, seeds=[5, 6, 7], num_steps=4, progress=False)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    # Reproducible by seed, batch-independent, and uint8 images are read as [-1, 1].
    assert torch.equal(teacher.regenerate(images, sigma, seeds=[5, 6, 7], num_steps=4, batch_size=2,
                                          progress=False), result)
    pair = torch.stack([torch.full((1, 4, 4), -0.8), torch.full((1, 4, 4), 0.8)]).double()
    teacher = Teacher(IdealDenoiser(pair))
    near = torch.tensor([0.6, -0.5, 0.9, -1.0]).reshape(4, 1, 1, 1).expand(4, 1, 4, 4)
    as_bytes = ((near + 1) * 127.5).round().to(torch.uint8)
    returned = teacher.regenerate(as_bytes, 0.3, num_steps=8, progress=False)
    torch.testing.assert_close(returned.mean(dim=(1, 2, 3)), torch.tensor([0.8, -0.8, 0.8, -0.8]), rtol=0, atol=0.01)
    with pytest.raises(ValueError, match="sigma must lie"):
        teacher.regenerate(near, 100.0, progress=False)
    with pytest.raises(ValueError, match="one seed per image"):
        teacher.regenerate(near, 0.3, seeds=[1, 2], progress=False)
    with pytest.raises(ValueError, match=r"images must be \[N, 1, 4, 4\]"):
        teacher.regenerate(near[:, :, :2], 0.3, progress=False)


def test_teacher_save_load_bit_identical(tmp_path, tiny_teacher):
    teacher = Teacher(tiny_teacher)
    teacher.save(tmp_path / "teacher", meta={"dataset": "none (untrained test teacher)"})
    loaded = load_teacher(tmp_path / "teacher", device="cpu")
    assert loaded.config == teacher.config
    assert loaded.meta["kind"] == "teacher" and loaded.meta["dataset"].startswith("none")
    assert loaded.checkpoint_sha256 and len(loaded.checkpoint_sha256) == 64
    x = teacher.noise([4, 5])
    assert torch.equal(loaded(x, 3.0), teacher(x, 3.0))
    _, expected = teacher.trajectory([4], num_steps=2, progress=False)
    assert torch.equal(loaded.trajectory([4], num_steps=2, progress=False)[1], expected)
    # Re-saving keeps the provenance but writes fresh format fields.
    loaded.save(tmp_path / "again")
    meta = json.loads((tmp_path / "again" / "meta.json").read_text())
    assert meta["dataset"].startswith("none") and meta["kind"] == "teacher"


def test_teacher_of_ideal_denoiser_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="only a network teacher"):
        Teacher(IdealDenoiser(torch.zeros(2, 3, 32, 32))).save(tmp_path / "ideal")
    assert not (tmp_path / "ideal").exists()


def test_load_teacher_bad_paths(tmp_path, tiny_checkpoint, tiny_teacher):
    with pytest.raises(CheckpointError, match="no-such-teacher.*not found"):
        load_teacher("no-such-teacher")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_teacher(tmp_path)
    with pytest.raises(CheckpointError, match="'hkd' checkpoint, expected 'teacher'"):
        load_teacher(tiny_checkpoint)
    # Weights that do not fit the config: every mis-shaped tensor is named.
    Teacher(tiny_teacher).save(tmp_path / "edited")
    config_path = tmp_path / "edited" / "config.json"
    config = json.loads(config_path.read_text())
    config["unet"]["model_channels"] = 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError,
                       match=r"shape mismatches \[net\.dec\.16x16_block0\.affine\.bias: file \(24,\) vs config \(16,\)"):
        load_teacher(tmp_path / "edited")
    config["unet"]["channel_mult"] = "oops"
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cannot build the teacher"):
        load_teacher(tmp_path / "edited")


@pytest.mark.gpu
def test_teacher_on_gpu_matches_cpu(tiny_teacher):
    cpu = Teacher(tiny_teacher)
    gpu = Teacher(EDMPrecond(tiny_teacher.config)).to("cuda")
    gpu.denoiser.load_state_dict(tiny_teacher.state_dict())
    gpu.denoiser.eval()
    assert torch.equal(gpu.noise([0, 1]).cpu(), cpu.noise([0, 1]))
    _, expected = cpu.trajectory([0, 1], num_steps=4, progress=False)
    _, states = gpu.trajectory([0, 1], num_steps=4, progress=False)
    torch.testing.assert_close(states.cpu(), expected, rtol=1e-3, atol=1e-3)
    ideal = Teacher(IdealDenoiser(torch.rand(64, 3, 32, 32) * 2 - 1)).to("cuda")
    assert ideal.sample([0, 1], num_steps=4, progress=False).device.type == "cuda"
