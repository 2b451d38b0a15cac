"""The Koopman lens (hkdviz.analysis.lens): known answers first, then the teacher pipeline, plots and CLI.

Known answers: features that evolve exactly by a known generator (eigenvalues recovered exactly, for
every Koopman time and with reduced rank); the PF-ODE of a Gaussian data set (linear in x, with a known
rate in a known time); a nonlinear toy whose residual must be large; the teacher's features equal an
HKD encoder initialised from that teacher; Wasserstein distances of shifted spectra.
"""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from hkdviz.analysis.lens import (LensMoments, TeacherFeatures, compare_spectra, fit_lens, lens, lens_summary,
                                  linearity_and_faithfulness)
from hkdviz.model.koopman import koopman_time
from hkdviz.teacher.sampler import karras_grid

pytestmark = pytest.mark.usefixtures("single_thread")

SIGMAS = karras_grid(18)


def known_generator(channels: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A real generator with eigenvalues -0.05 +- 0.3i, 0.02 +- 0.1i, -0.2, 0.07 (plus -0.1 repeated), in a
    random orthonormal basis; returns it and the reported eigenvalues (imag >= 0, one per pair)."""
    block = torch.zeros(channels, channels, dtype=torch.float64)
    block[0, 0] = block[1, 1] = -0.05
    block[0, 1], block[1, 0] = 0.3, -0.3
    block[2, 2] = block[3, 3] = 0.02
    block[2, 3], block[3, 2] = 0.1, -0.1
    block[4, 4], block[5, 5] = -0.2, 0.07
    for index in range(6, channels):
        block[index, index] = -0.1
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64, generator=generator))[0]
    expected = [-0.05 + 0.3j, 0.02 + 0.1j, -0.2, 0.07] + [-0.1] * (channels - 6)
    return basis @ block @ basis.T, np.sort_complex(np.array(expected, dtype=complex))


def linear_moments(generator: torch.Tensor, times: torch.Tensor, samples: int, seed: int, shape=(4, 4),
                   embed: torch.Tensor | None = None) -> LensMoments:
    """Moments of features z_k = exp((s_k - s_0) G) z_0 (optionally embedded: P z)."""
    channels = generator.shape[0] if embed is None else embed.shape[0]
    moments = LensMoments([(channels, *shape)], times.numel())
    start = torch.randn(samples, generator.shape[0], *shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    for k in range(times.numel()):
        state = torch.einsum("ij,njhw->nihw", torch.linalg.matrix_exp((times[k] - times[0]) * generator), start)
        if embed is not None:
            state = torch.einsum("ij,njhw->nihw", embed, state)
        moments.add(k, [state])
    return moments


def distinct_eigenvalues(ds, level: int = 0) -> np.ndarray:
    rows = (ds["level"].values == level) & (ds["y"].values == 0) & (ds["x"].values == 0)
    return np.sort_complex(ds["eigenvalue"].values[rows])


@pytest.mark.parametrize("kind", ["sigma", "log_sigma", "karras"])
def test_linear_system_recovers_the_generator_exactly(kind):
    # Scale the rates to the time span, so that no mode grows or decays by more than e^3 over the grid.
    span = float(abs(koopman_time(SIGMAS[0], kind) - koopman_time(SIGMAS[-1], kind)))
    generator, expected = known_generator(8)
    times = koopman_time(SIGMAS, kind)
    scale = 3 / span
    training = linear_moments(generator * scale, times, samples=6, seed=1)
    held_out = linear_moments(generator * scale, times, samples=3, seed=2)
    ds = fit_lens(training, SIGMAS, time=kind, held_out=held_out, progress=False)
    found = distinct_eigenvalues(ds) / scale
    assert found.size == expected.size
    np.testing.assert_allclose(found, expected, atol=1e-5)
    assert float(ds["fit_residual"].max()) < 1e-6
    assert float(ds["held_out_error"].max()) < 1e-6
    assert float(ds["path_error"].max()) < 1e-5          # errors of ~1e-7 in G, accumulated over the grid
    assert float(ds["constant_residual"].max()) > 1e-3        # the features do move
    assert ds.attrs["koopman_time"] == kind
    assert kind in ds.attrs["time_unit"] and "per unit of Koopman time" in ds.attrs["time_unit"]
    assert json.loads(ds.attrs["methods_used"]) == ["exponential"]


def test_finite_differences_alone_are_not_exact_on_the_karras_grid():
    # Why the exponential refinement exists: on EDM's non-uniform steps the trapezoid estimate is biased.
    generator, expected = known_generator(6)
    times = koopman_time(SIGMAS, "log_sigma")
    moments = linear_moments(generator * 0.3, times, samples=4, seed=3)
    rough = fit_lens(moments, SIGMAS, time="log_sigma", refine=False, progress=False)
    exact = fit_lens(moments, SIGMAS, time="log_sigma", progress=False)
    rough_error = np.abs(distinct_eigenvalues(rough) / 0.3 - expected).max()
    exact_error = np.abs(distinct_eigenvalues(exact) / 0.3 - expected).max()
    assert exact_error < 1e-6 and rough_error > 100 * exact_error
    assert json.loads(rough.attrs["methods_used"]) == ["finite_difference"]
    assert float(exact["fit_residual"].max()) < 1e-6 < float(rough["fit_residual"].max())


def test_reduced_rank_finds_dynamics_embedded_in_many_channels():
    generator, expected = known_generator(6)
    embed = torch.linalg.qr(torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))[0]
    times = koopman_time(SIGMAS, "log_sigma")
    moments = linear_moments(generator * 0.3, times, samples=4, seed=5, embed=embed)
    ds = fit_lens(moments, SIGMAS, time="log_sigma", rank=6, progress=False)
    assert int(ds["rank"].values[0]) == 6 and ds["basis_level0"].shape == (40, 6)
    np.testing.assert_allclose(distinct_eigenvalues(ds) / 0.3, expected, atol=1e-5)
    assert float(ds["fit_residual"].max()) < 1e-6
    # Too small a rank leaves part of the state out: measured in the full space, that is error.
    cut = fit_lens(moments, SIGMAS, time="log_sigma", rank=3, progress=False)
    assert float(cut["fit_residual"].max()) > 1e-2


class GaussianDenoiser(nn.Module):
    """The exact denoiser of data ~ N(0, s^2 I): D(x; sigma) = s^2 / (s^2 + sigma^2) x."""

    def __init__(self, std: float, image_shape=(3, 4, 4)):
        super().__init__()
        self.std = std
        self.image_shape = image_shape

    def forward(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.std ** 2 / (self.std ** 2 + sigma ** 2) * x


class MixedChannels:
    """A fixed linear feature map: one level, channels mixed by a random 6 x 3 matrix (per position)."""

    level_names = ["mixed"]
    level_shapes = [(6, 4, 4)]

    def __init__(self):
        self.weight = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def __call__(self, x, sigma):
        return [torch.einsum("ij,njhw->nihw", self.weight, x.to(torch.float64))]


def test_gaussian_pf_ode_is_linear_with_known_rate():
    # dx/dsigma = (x - D) / sigma = x sigma / (s^2 + sigma^2), so x(sigma) = exp(u(sigma) - u(T)) x_T with
    # u = ln(s^2 + sigma^2) / 2: in Koopman time u the generator is exactly the identity (all eigenvalues 1),
    # and any linear feature map keeps that (the mixed features live in a 3-dimensional subspace).
    from hkdviz.teacher.teacher import Teacher

    std = 0.5
    teacher = Teacher(GaussianDenoiser(std))
    ds = lens(teacher, seeds=4, held_out_seeds=[10, 11], num_steps=18, rank=3,
              time=lambda sigma: 0.5 * torch.log(std ** 2 + sigma ** 2), features=MixedChannels(), progress=False)
    eigenvalues = distinct_eigenvalues(ds)
    # Heun's local error on the 18-step grid (its last step is Euler) limits the agreement.
    np.testing.assert_allclose(eigenvalues, np.ones(3), atol=2e-2)
    assert float(ds["fit_residual"].max()) < 2e-2
    assert float(ds["held_out_error"].max()) < 2e-2
    assert ds.attrs["koopman_time"] == "custom"


def test_nonlinear_toy_has_a_large_residual():
    # A nonlinear oscillator: each (sample, position) rotates at a speed set by its own amplitude squared.
    # No single linear generator carries every amplitude, so the residual must be large.
    times = koopman_time(SIGMAS, "log_sigma")
    generator = torch.Generator().manual_seed(7)
    radius = 0.5 + 1.5 * torch.rand(8, 1, 4, 4, generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(8, 1, 4, 4, generator=generator, dtype=torch.float64)
    moments = LensMoments([(2, 4, 4)], SIGMAS.numel())
    for k in range(SIGMAS.numel()):
        angle = phase + 0.5 * radius ** 2 * (times[k] - times[0])
        moments.add(k, [torch.cat([radius * angle.cos(), radius * angle.sin()], dim=1)])
    ds = fit_lens(moments, SIGMAS, time="log_sigma", progress=False)
    assert float(np.median(ds["fit_residual"].values)) > 0.2
    assert float(ds["path_error"].values[0, -1]) > 0.5


def test_lens_moments_reject_out_of_order_and_wrong_shapes():
    moments = LensMoments([(2, 3, 3)], 3)
    with pytest.raises(ValueError, match="out of order"):
        moments.add(1, [torch.zeros(1, 2, 3, 3)])
    with pytest.raises(ValueError, match="level 0: features of shape"):
        moments.add(0, [torch.zeros(1, 4, 3, 3)])
    moments.add(0, [torch.ones(1, 2, 3, 3)])
    with pytest.raises(ValueError, match="stopped before the last grid time"):
        fit_lens(moments, SIGMAS[:3], progress=False)


# -- a real (tiny, untrained) teacher ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_teacher():
    from hkdviz.teacher.edm import EDMPrecond
    from hkdviz.teacher.teacher import Teacher
    torch.manual_seed(0)
    return Teacher(EDMPrecond("tiny").eval().requires_grad_(False))


@pytest.fixture(scope="module")
def tiny_lens(tiny_teacher):
    return lens(tiny_teacher, seeds=3, held_out_seeds=[50, 51], num_steps=4, batch_size=2, progress=False)


def test_teacher_features_equal_an_hkd_encoder_initialised_from_the_teacher(tiny_teacher):
    import hkdviz
    from hkdviz.teacher.edm import init_hkd_from_teacher

    model = hkdviz.build("tiny").eval()
    init_hkd_from_teacher(model, tiny_teacher)
    x = tiny_teacher.noise([0, 1]) * 0.05
    features = TeacherFeatures(tiny_teacher)
    assert features.level_names == [info.name for info in model.levels]
    for sigma in (80.0, 2.5, 0.002):
        with torch.no_grad():
            expected = model.encode(x, sigma)
        for mine, theirs in zip(features(x, sigma), expected):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_lens_of_a_teacher_has_the_spectrum_schema(tiny_lens, tmp_path, tiny_model):
    from hkdviz.analysis.spectrum import level_view
    from hkdviz.analysis.storage import open_dataset, save_dataset
    from hkdviz.plot import eigenvalue_plane, spectrum_histograms

    ds = tiny_lens
    names = json.loads(ds.attrs["level_names"])
    assert names == [info.name for info in tiny_model.levels]
    assert ds["eigenvalue"].dtype == np.complex128 and set(ds["level"].values) == set(range(len(names)))
    assert ds.sizes["transition"] == 4 and ds.sizes["time"] == 5 and ds.sizes["fit_level"] == len(names)
    assert json.loads(ds.attrs["seeds"]) == [0, 1, 2] and json.loads(ds.attrs["held_out_seeds"]) == [50, 51]
    view = level_view(ds, "bottleneck")
    channels, height, width = json.loads(ds.attrs["level_shapes"])[-1]
    assert view["alpha"].shape[1:] == (height, width)
    # Shared generator: every position holds the same eigenvalues.
    assert np.allclose(view["alpha"].values, view["alpha"].values[:, :1, :1], equal_nan=True)
    eigenvalue_plane(ds)
    spectrum_histograms(ds)
    for name in ("fit_residual", "held_out_error", "constant_residual", "path_error"):
        values = ds[name].values
        assert np.isfinite(values).all() and (values >= 0).all()
    # G = 0 is one of the fit's starts: the fitted objective never exceeds the constant baseline's.
    fitted = np.square(ds["fit_residual"].values).sum(1)
    assert (fitted <= np.square(ds["constant_residual"].values).sum(1) + 1e-9).all()
    path = save_dataset(ds, tmp_path / "lens.nc")
    back = open_dataset(path)
    np.testing.assert_array_equal(back["eigenvalue"].values, ds["eigenvalue"].values)
    np.testing.assert_array_equal(back["fit_residual"].values, ds["fit_residual"].values)
    summary = lens_summary(back)
    assert len(summary["levels"]) == len(names)


def test_ideal_denoiser_without_a_feature_map_is_refused():
    from hkdviz.teacher.ideal import IdealDenoiser
    from hkdviz.teacher.teacher import Teacher

    teacher = Teacher(IdealDenoiser(torch.zeros(2, 3, 4, 4)))
    with pytest.raises(TypeError, match="no SongUNet"):
        lens(teacher, seeds=1, progress=False)
    with pytest.raises(ValueError, match="overlap"):
        lens(teacher, seeds=[0, 1], held_out_seeds=[1], features=MixedChannels(), progress=False)


def test_class_conditional_teacher_is_refused_by_name():
    from hkdviz.teacher.edm import EDMPrecond
    from hkdviz.teacher.teacher import Teacher

    teacher = Teacher(EDMPrecond({"preset": "tiny", "unet": {"label_dim": 3}}))
    with pytest.raises(ValueError, match="class-conditional"):
        lens(teacher, seeds=1, progress=False)


def test_compare_spectra_known_shift(tiny_lens, tiny_model):
    import hkdviz

    same = compare_spectra(tiny_lens, tiny_lens)
    np.testing.assert_allclose(same["wasserstein_alpha"].values, 0, atol=1e-12)
    shifted = tiny_lens.copy(deep=True)
    shifted["alpha"] = shifted["alpha"] + 0.5
    moved = compare_spectra(tiny_lens, shifted)
    np.testing.assert_allclose(moved["wasserstein_alpha"].values, 0.5, rtol=1e-9)
    np.testing.assert_allclose(moved["wasserstein_abs_beta"].values, 0, atol=1e-12)

    spec = hkdviz.spectrum(tiny_model, progress=False)
    against_hkd = compare_spectra(tiny_lens, spec)
    assert list(against_hkd["level_name"].values) == [info.name for info in tiny_model.levels]
    assert (against_hkd["hkd_modes"].values == [info.channels // 2 * info.height * info.width
                                                 for info in tiny_model.levels]).all()
    other_time = tiny_lens.copy()
    other_time.attrs = dict(tiny_lens.attrs, koopman_time="log_sigma")
    with pytest.raises(ValueError, match="different Koopman times"):
        compare_spectra(other_time, spec)


def test_linearity_next_to_faithfulness(tiny_lens, tiny_teacher, tiny_model):
    import hkdviz

    faith = hkdviz.faithfulness(tiny_model, tiny_teacher, seeds=[0, 1], num_steps=4, progress=False)
    table = linearity_and_faithfulness(tiny_lens, faith)
    assert table["teacher_path_error"].shape == table["hkd_koopman_error"].shape == (len(tiny_model.levels), 5)
    np.testing.assert_array_equal(table["teacher_path_error"].values, tiny_lens["path_error"].values)
    np.testing.assert_allclose(table["hkd_koopman_error"].values,
                               faith["koopman_error"].mean("sample").transpose("level", "time").values)
    with pytest.raises(ValueError, match="different time grids"):
        linearity_and_faithfulness(tiny_lens, faith.isel(time=slice(0, 3)))


def test_lens_plots(tiny_lens, tiny_model):
    import hkdviz
    from hkdviz.plot import lens_comparison_bars, lens_comparison_plane, lens_residuals

    figure = lens_residuals(tiny_lens)
    assert len(figure.data) == 3 * tiny_lens.sizes["fit_level"]
    assert list(figure.data[0].x) == list(tiny_lens["sigma_to"].values)
    path_figure = lens_residuals(tiny_lens, path=True)
    assert list(path_figure.data[0].y) == list(tiny_lens["path_error"].values[0])
    spec = hkdviz.spectrum(tiny_model, progress=False)
    plane = lens_comparison_plane(tiny_lens, spec)
    lens_traces = [trace for trace in plane.data if trace.name == "teacher (lens fit)"]
    assert len(lens_traces) == tiny_lens.sizes["fit_level"]
    assert sum(len(trace.x) for trace in lens_traces) == int(((tiny_lens["y"] == 0) & (tiny_lens["x"] == 0)).sum())
    bars = lens_comparison_bars(compare_spectra(tiny_lens, spec))
    assert list(bars.data[0].y) == list(compare_spectra(tiny_lens, spec)["wasserstein_alpha"].values)
    with pytest.raises(TypeError, match="lens dataset"):
        lens_residuals(spec)


def test_cli_lens_writes_a_dataset(tiny_teacher, tiny_checkpoint, tmp_path, capsys):
    from hkdviz.analysis.storage import open_dataset
    from hkdviz.cli import main

    directory = tmp_path / "teacher"
    tiny_teacher.save(directory)
    output = tmp_path / "lens.nc"
    code = main(["lens", str(directory), "-o", str(output), "--seeds", "2", "--held-out", "40,41", "--steps", "3",
                 "--hkd", str(tiny_checkpoint)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "bottleneck" in printed and "Wasserstein" in printed
    ds = open_dataset(output)
    assert json.loads(ds.attrs["seeds"]) == [0, 1] and json.loads(ds.attrs["held_out_seeds"]) == [40, 41]
    assert "bottleneck" in json.loads(ds.attrs["comparison"])
    assert main(["lens", str(tmp_path / "missing"), "-o", str(tmp_path / "x.nc")]) == 2
    assert "hkdviz lens: error" in capsys.readouterr().err


def test_mode_amplitude_maps_show_where_each_mode_lives(tiny_teacher, tiny_lens):
    # Known answer: two rotating pairs in the standard basis, the first present only in the left half of
    # the image, the second only in the right half: each mode's map is zero where its pair is absent.
    from hkdviz.analysis.lens import ModeAmplitudes, lens_mode_amplitudes
    from hkdviz.analysis.spectrum import level_view
    from hkdviz.plot import mode_map

    generator = torch.zeros(4, 4, dtype=torch.float64)
    generator[0, 0] = generator[1, 1] = -0.05
    generator[0, 1], generator[1, 0] = 0.3, -0.3
    generator[2, 2] = generator[3, 3] = 0.02
    generator[2, 3], generator[3, 2] = 0.1, -0.1
    times = koopman_time(SIGMAS, "log_sigma")
    start = torch.randn(5, 4, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    start[:, :2, :, 3:] = 0      # pair 1 (channels 0, 1): left half only
    start[:, 2:, :, :3] = 0      # pair 2 (channels 2, 3): right half only
    states = [torch.einsum("ij,njhw->nihw", torch.linalg.matrix_exp((t - times[0]) * 0.3 * generator), start)
              for t in times]
    moments = LensMoments([(4, 4, 6)], SIGMAS.numel())
    for k, state in enumerate(states):
        moments.add(k, [state])
    ds = fit_lens(moments, SIGMAS, time="log_sigma", progress=False)
    accumulator = ModeAmplitudes(ds)
    for state in states:
        accumulator.add([state])
    view = level_view(accumulator.result(), 0)
    # Modes sorted by real part: pair 0 is 0.02 + 0.1i (right half), pair 1 is -0.05 + 0.3i (left half).
    np.testing.assert_allclose(view["eigenvalue"].values[:, 0, 0] / 0.3, [0.02 + 0.1j, -0.05 + 0.3j], atol=1e-6)
    amplitude = view["amplitude"].values
    assert amplitude[0][:, :3].max() < 1e-6 < 0.1 < amplitude[0][:, 3:].min()
    assert amplitude[1][:, 3:].max() < 1e-6 < 0.1 < amplitude[1][:, :3].min()

    # On a teacher: one map per mode and position, finite, drawable.
    maps = lens_mode_amplitudes(tiny_teacher, tiny_lens, seeds=2, progress=False)
    assert np.isfinite(maps["amplitude"].values).all() and (maps["amplitude"].values >= 0).all()
    mode_map(maps, 0, "amplitude", pair=0)
