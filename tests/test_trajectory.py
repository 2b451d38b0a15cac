"""Koopman trajectories: time grids, the semigroup law, chunking, the teacher protocol."""
import numpy as np
import pytest
import torch
import xarray as xr

from hkdviz.analysis.storage import open_dataset, save_dataset
from hkdviz.analysis.trajectory import time_grid, trajectory
from hkdviz.model import karras_sigmas

SEEDS = [3, 0, 11]

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def reference(tiny_model):
    """One trajectory with latents, shared by several tests."""
    return trajectory(tiny_model, SEEDS, times=6, latents=True, progress=False)


def test_time_grid_from_count(tiny_model):
    grid = time_grid(tiny_model, 18)
    assert grid.dtype == np.float64 and grid.shape == (18,)
    assert grid[0] == tiny_model.sigma_max and grid[-1] == tiny_model.sigma_min  # exact ends
    assert (np.diff(grid) < 0).all()
    np.testing.assert_allclose(grid, karras_sigmas(18, 0.002, 80.0).numpy(), rtol=1e-12)


def test_time_grid_explicit_values(tiny_model):
    np.testing.assert_array_equal(time_grid(tiny_model, [80, 1.0, 0.002]), [80.0, 1.0, 0.002])
    np.testing.assert_array_equal(time_grid(tiny_model, torch.tensor([5.0, 0.5])), [5.0, 0.5])
    np.testing.assert_array_equal(time_grid(tiny_model, np.array([40.0])), [40.0])
    # float32 rounding of the ends is accepted and clipped onto [eps, T].
    assert time_grid(tiny_model, np.float32([80.0, 0.002]))[-1] == 0.002


@pytest.mark.parametrize("times, error, message", [
    (1, ValueError, ">= 2"),
    (0, ValueError, ">= 2"),
    (True, TypeError, "bool"),
    ("16", TypeError, "times must be"),
    (2.5, TypeError, "times must be"),
    ([100.0, 1.0], ValueError, r"\[0.002, 80\]"),
    ([1.0, 0.001], ValueError, r"\[0.002, 80\]"),
    ([1.0, 2.0], ValueError, "strictly decreasing"),
    ([1.0, 1.0], ValueError, "strictly decreasing"),
    ([[1.0, 0.5]], ValueError, "1-D"),
    ([], ValueError, "1-D"),
    ([1.0, float("nan")], ValueError, "NaN"),
    (["a", "b"], TypeError, "times must be"),
])
def test_bad_times(tiny_model, times, error, message):
    with pytest.raises(error, match=message):
        time_grid(tiny_model, times)
    with pytest.raises(error, match=message):
        trajectory(tiny_model, [0], times=times, progress=False)


def test_structure(reference, tiny_model):
    assert reference["image"].dims == ("sample", "time", "channel", "y", "x")
    assert reference["image"].shape == (3, 6, 3, 32, 32)
    assert reference["energy"].dims == ("sample", "time", "level")
    np.testing.assert_array_equal(reference["seed"].values, SEEDS)
    np.testing.assert_array_equal(reference["time"].values, time_grid(tiny_model, 6))
    assert list(reference["level_name"].values) == [info.name for info in tiny_model.levels]
    assert reference.attrs["seeds"] == "[3, 0, 11]" and reference.attrs["checkpoint_sha256"] == "untrained"
    assert reference["latent_bottleneck"].dims == ("sample", "time", "bottleneck_channel", "bottleneck_y", "bottleneck_x")
    assert float(reference["image"].max()) <= 1 and float(reference["image"].min()) >= -1


def test_state_at_eps_is_the_sample(reference, tiny_model):
    sample = tiny_model.sample(SEEDS).numpy()
    np.testing.assert_allclose(reference["image"].isel(time=-1).values, sample, atol=1e-5, rtol=0)
    # ... and not trivially so: earlier states differ.
    assert np.abs(reference["image"].isel(time=0).values - sample).max() > 1e-2


def test_semigroup_from_an_intermediate_state(reference, tiny_model):
    # z_t from the trajectory, evolved by (eps - t) and decoded, gives the one-step sample.
    index = 3
    sigma = float(reference["time"][index])
    latents = [torch.from_numpy(reference[f"latent_{info.name}"].isel(time=index).values) for info in tiny_model.levels]
    with torch.no_grad():
        image = tiny_model.decode(tiny_model.evolve(latents, tiny_model.sigma_min - sigma)).clamp(-1, 1)
    np.testing.assert_allclose(image.numpy(), tiny_model.sample(SEEDS).numpy(), atol=1e-5, rtol=0)


def test_intermediate_state_and_energy(reference, tiny_model):
    index = 2
    sigma = float(reference["time"][index])
    with torch.no_grad():
        z_T = tiny_model.encode(tiny_model.noise(SEEDS), tiny_model.sigma_max)
        z_t = tiny_model.evolve(z_T, sigma - tiny_model.sigma_max)
        image = tiny_model.decode(z_t).clamp(-1, 1)
    np.testing.assert_allclose(reference["image"].isel(time=index).values, image.numpy(), atol=1e-5, rtol=0)
    for info, latent in zip(tiny_model.levels, z_t):
        np.testing.assert_allclose(reference[f"latent_{info.name}"].isel(time=index).values, latent.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(reference["energy"].isel(time=index, level=info.index).values,
                                   latent.square().mean(dim=(1, 2, 3)).numpy(), rtol=1e-5)
    # Decaying generators (alpha <= 0, evolving backwards in sigma): energy grows from T to eps.
    energy = reference["energy"].values
    assert (energy[:, -1] >= energy[:, 0] * (1 - 1e-6)).all()


@pytest.mark.parametrize("batch_size", [2, 12])
def test_chunked_equals_unchunked(reference, tiny_model, batch_size):
    # 2 < 6 times: time chunks of 2 per sample; 12: chunks of 2 samples x all 6 times, then 1 sample.
    chunked = trajectory(tiny_model, SEEDS, times=6, latents=True, batch_size=batch_size, progress=True)
    for name in ("image", "energy", "latent_32x32_conv", "latent_bottleneck"):
        np.testing.assert_allclose(chunked[name].values, reference[name].values, rtol=1e-4, atol=1e-5)


class ScalingTeacher:
    """PF-ODE of data concentrated at 0: x_t = x_T * t / T exactly. Records its calls."""

    def __init__(self, sigma_max: float):
        self.sigma_max = sigma_max
        self.calls = []

    def states_at(self, x_T, sigmas):
        self.calls.append((x_T.shape[0], sigmas.clone()))
        return x_T[:, None] * (sigmas.to(x_T.dtype) / self.sigma_max)[None, :, None, None, None]


def test_teacher_protocol(tiny_model):
    teacher = ScalingTeacher(tiny_model.sigma_max)
    times = [40.0, 1.0, 0.002]  # does not start at T: the teacher is asked for T too
    ds = trajectory(tiny_model, SEEDS, times=times, teacher=teacher, batch_size=2, progress=False)
    assert [count for count, _ in teacher.calls] == [2, 1]  # batch_size samples per teacher call
    np.testing.assert_array_equal(teacher.calls[0][1].numpy(), [80.0, 40.0, 1.0, 0.002])
    noise = tiny_model.noise(SEEDS)
    expected = noise[:, None] * torch.tensor(times)[None, :, None, None, None] / tiny_model.sigma_max
    np.testing.assert_allclose(ds["teacher_image"].values, expected.numpy(), rtol=1e-6)
    assert ds["latent_consistency"].dims == ("sample", "time", "level")
    # Known answer for one sample, time and level.
    sample, index, level = 1, 1, 6
    with torch.no_grad():
        x_t = expected[sample:sample + 1, index]
        teacher_latent = tiny_model.encode(x_t, times[index])[level]
        z_T = tiny_model.encode(noise[sample:sample + 1], tiny_model.sigma_max)
        z_t = tiny_model.evolve(z_T, times[index] - tiny_model.sigma_max)[level]
    ratio = ((teacher_latent - z_t).norm() / z_t.norm()).item()
    assert ratio > 0
    np.testing.assert_allclose(ds["latent_consistency"].values[sample, index, level], ratio, rtol=1e-4)


def test_teacher_errors(tiny_model):
    with pytest.raises(TypeError, match="states_at"):
        trajectory(tiny_model, [0], times=3, teacher=object(), progress=False)

    class WrongShape:
        def states_at(self, x_T, sigmas):
            return x_T

    with pytest.raises(ValueError, match=r"\[N, K, C, H, W\]"):
        trajectory(tiny_model, [0], times=3, teacher=WrongShape(), progress=False)


@pytest.mark.parametrize("seeds, error", [([], ValueError), ([1.5], TypeError), ([-1], ValueError),
                                          ("0", TypeError), ([True], TypeError)])
def test_bad_seeds(tiny_model, seeds, error):
    with pytest.raises(error, match="seeds"):
        trajectory(tiny_model, seeds, times=3, progress=False)


def test_not_a_model():
    with pytest.raises(TypeError, match="HKD model"):
        trajectory("tiny", [0], progress=False)


def test_bad_batch_size(tiny_model):
    with pytest.raises(ValueError, match="batch_size"):
        trajectory(tiny_model, [0], times=3, batch_size=0, progress=False)


def test_round_trip(tiny_model, tmp_path):
    ds = trajectory(tiny_model, [5], times=3, teacher=ScalingTeacher(tiny_model.sigma_max), latents=True,
                    progress=False)
    path = save_dataset(ds, tmp_path / "trajectory.nc")
    with xr.open_dataset(path, engine="h5netcdf") as plain:
        xr.testing.assert_identical(plain.load(), ds)
    xr.testing.assert_identical(open_dataset(path), ds)


@pytest.mark.gpu
def test_cuda_trajectory_and_spectrum(tiny_model):
    import copy

    from hkdviz.analysis.spectrum import spectrum

    model = copy.deepcopy(tiny_model).to("cuda")
    # TF32 convolutions pick batch-dependent algorithms (differences ~1e-3): compare in true float32.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ds = trajectory(model, SEEDS, times=4, progress=False)
        sample = model.sample(SEEDS).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    np.testing.assert_allclose(ds["image"].isel(time=-1).values, sample, atol=1e-5, rtol=0)
    cpu = trajectory(tiny_model, SEEDS, times=4, progress=False)
    np.testing.assert_allclose(ds["image"].values, cpu["image"].values, atol=1e-4, rtol=0)
    on_gpu, on_cpu = spectrum(model), spectrum(tiny_model)
    on_gpu.attrs, on_cpu.attrs = {}, {}  # `created` differs
    xr.testing.assert_identical(on_gpu, on_cpu)
