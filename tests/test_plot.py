"""hkdviz.plot: pure figure functions on synthetic datasets with known contents (no model needed)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from hkdviz import plot
from hkdviz.plot import data, paper

# -- synthetic data in the analysis modules' formats ---------------------------------------------------
LEVELS = [("32x32_conv", 4, 8, 8), ("16x16_down", 2, 4, 4), ("bottleneck", 3, 2, 2)]  # name, pairs, h, w


def make_spectrum(seed=0, step=1.0):
    """A spectrum dataset like hkdviz.spectrum's: modes in (pair, y, x) C order per level."""
    generator = np.random.default_rng(seed)
    columns = {name: [] for name in ("level", "pair", "y", "x", "alpha", "beta")}
    for index, (_, pairs, height, width) in enumerate(LEVELS):
        pair, y, x = np.meshgrid(np.arange(pairs), np.arange(height), np.arange(width), indexing="ij")
        count = pair.size
        columns["level"].append(np.full(count, index))
        columns["pair"].append(pair.ravel())
        columns["y"].append(y.ravel())
        columns["x"].append(x.ravel())
        columns["alpha"].append(-0.1 * generator.random(count) - 0.01 * index)
        columns["beta"].append(generator.normal(size=count))
    values = {name: np.concatenate(parts) for name, parts in columns.items()}
    alpha, beta = values["alpha"], values["beta"]
    return xr.Dataset(
        {"alpha": ("mode", alpha), "beta": ("mode", beta), "eigenvalue": ("mode", alpha + 1j * beta),
         "magnitude": ("mode", np.exp(alpha * step)), "frequency": ("mode", np.abs(beta) / (2 * np.pi))},
        coords={name: ("mode", values[name]) for name in ("level", "pair", "y", "x")},
        attrs={"step": step, "level_names": json.dumps([level[0] for level in LEVELS])})


def make_images(dims, sizes, coords=None, seed=0):
    generator = np.random.default_rng(seed)
    shape = [sizes[dim] for dim in dims]
    return xr.DataArray(generator.uniform(-1, 1, shape).astype(np.float32), dims=dims, coords=coords or {})


@pytest.fixture(scope="module")
def spec():
    return make_spectrum()


@pytest.fixture(scope="module")
def bands():
    image = make_images(("band", "sample", "channel", "y", "x"), {"band": 4, "sample": 3, "channel": 3, "y": 8, "x": 8},
                        {"band": ["smallest", "intermediate", "largest", "all"], "sample": [5, 6, 7]})
    return xr.Dataset({"image": image})


@pytest.fixture(scope="module")
def trajectory():
    sizes = {"sample": 2, "time": 10, "channel": 3, "y": 8, "x": 8}
    time = np.geomspace(80, 0.002, 10)
    image = make_images(("sample", "time", "channel", "y", "x"), sizes, {"time": time, "sample": [0, 1]})
    energy = xr.DataArray(np.random.default_rng(1).random((2, 10, 3)), dims=("sample", "time", "level"))
    return xr.Dataset({"image": image, "energy": energy, "teacher_image": image * 0.5},
                      coords={"level": np.arange(3), "level_name": ("level", ["a", "b", "c"])})


@pytest.fixture(scope="module")
def effect():
    time = np.geomspace(80, 0.002, 7)
    share = np.random.default_rng(2).random((3, 7))
    share /= share.sum(0)
    return xr.Dataset({"effect_share": (("band", "time"), share), "energy_share": (("band", "time"), share[::-1]),
                       "effect": (("band", "time"), share * 3)},
                      coords={"band": ["smallest", "intermediate", "largest"], "time": time})


@pytest.fixture(scope="module")
def sweep():
    sizes = {"variant": 2, "ratio": 4, "sample": 2, "channel": 3, "y": 8, "x": 8}
    image = make_images(("variant", "ratio", "sample", "channel", "y", "x"), sizes,
                        {"variant": ["aware", "agnostic"], "ratio": [0, 0.1, 0.5, 0.9], "sample": [3, 4]})
    region = np.tril(np.ones((8, 8)), -1)
    return xr.Dataset({"image": image, "reference": make_images(("channel", "y", "x"), sizes),
                       "region": (("y", "x"), region)})


# -- data helpers --------------------------------------------------------------------------------------
def test_to_rgb_maps_range_and_gray():
    images = np.array([-1.0, 0.0, 1.0, 5.0]).reshape(1, 1, 2, 2)
    rgb = data.to_rgb(images)
    assert rgb.shape == (1, 2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, :, 0].ravel().tolist() == [0, 128, 255, 255]  # clipped above 1
    assert (rgb[..., 0] == rgb[..., 2]).all()                      # gray -> equal channels
    with pytest.raises(ValueError, match="1 or 3 channels"):
        data.to_rgb(np.zeros((2, 4, 5, 5)))


def test_subsample_modes_caps_and_keeps_small_levels(spec):
    groups = data.subsample_modes(spec, max_points=60, seed=3)
    counts = {level: len(indices) for level, indices in groups.items()}
    # Equal share 20: the bottleneck (12 modes) is kept whole, the other two split the remaining 48.
    assert counts == {0: 24, 1: 24, 2: 12}
    for level, indices in groups.items():
        assert len(np.unique(indices)) == len(indices)
        assert (spec["level"].values[indices] == level).all()
    again = data.subsample_modes(spec, max_points=60, seed=3)
    assert all((again[level] == groups[level]).all() for level in groups)
    everything = data.subsample_modes(spec, max_points=None)
    assert sum(len(indices) for indices in everything.values()) == spec.sizes["mode"]


def test_level_grid_places_values(spec):
    grid = data.level_grid(spec, 1, "alpha")
    assert grid.shape == (2, 4, 4)
    mask = spec["level"].values == 1
    pair, y, x = (spec[name].values[mask] for name in ("pair", "y", "x"))
    np.testing.assert_array_equal(grid[pair, y, x], spec["alpha"].values[mask])
    with pytest.raises(ValueError, match="no level 9"):
        data.level_grid(spec, 9, "alpha")


def test_bad_spectrum_input_names_the_problem(spec):
    with pytest.raises(ValueError, match="'alpha'"):
        plot.spectrum_scatter(spec.drop_vars("alpha"))
    with pytest.raises(TypeError, match="xarray.Dataset"):
        plot.spectrum_scatter({"alpha": [1.0]})
    with pytest.raises(ValueError, match="pair 7 out of range"):
        plot.mode_map(spec, 0, "alpha", pair=7)


# -- plotly --------------------------------------------------------------------------------------------
def test_spectrum_scatter_traces_and_hover(spec):
    figure = plot.spectrum_scatter(spec)
    assert [trace.type for trace in figure.data] == ["scattergl"] * 3
    assert [trace.name for trace in figure.data] == ["0: 32x32_conv", "1: 16x16_down", "2: bottleneck"]
    assert sum(len(trace.x) for trace in figure.data) == spec.sizes["mode"]
    assert "all 300 modes" in figure.layout.title.text
    level0 = spec["level"].values == 0
    np.testing.assert_allclose(figure.data[0].x, spec["alpha"].values[level0], rtol=1e-6)
    assert figure.data[0].customdata.shape == (256, 5)
    assert "pair" in figure.data[0].hovertemplate and "frequency" in figure.data[0].hovertemplate
    capped = plot.spectrum_scatter(spec, max_points=50)
    assert sum(len(trace.x) for trace in capped.data) == 50
    assert "50 of 300 modes" in capped.layout.title.text


def test_eigenvalue_plane_unit_circle_and_discrete_values(spec):
    figure = plot.eigenvalue_plane(spec, step=0.5)
    circle = figure.data[0]
    assert circle.name == "unit circle"
    np.testing.assert_allclose(np.hypot(circle.x, circle.y), 1.0, atol=1e-12)
    level2 = spec["level"].values == 2
    expected = np.exp((spec["alpha"].values[level2] + 1j * spec["beta"].values[level2]) * 0.5)
    np.testing.assert_allclose(figure.data[3].x, expected.real, rtol=1e-5)
    np.testing.assert_allclose(figure.data[3].y, expected.imag, rtol=1e-5, atol=1e-6)
    assert figure.layout.yaxis.scaleanchor == "x"
    mirrored = plot.eigenvalue_plane(spec, conjugates=True)
    assert len(mirrored.data[3].x) == 2 * level2.sum()


def test_histograms_are_binned_per_level(spec):
    figure = plot.spectrum_histograms(spec, bins=10)
    assert len(figure.data) == 2 * 3 and all(trace.type == "bar" for trace in figure.data)
    for index, (_, pairs, height, width) in enumerate(LEVELS):
        assert sum(figure.data[2 * index].y) == pairs * height * width


def test_mode_map_mean_and_pair(spec):
    grid = data.level_grid(spec, 0, "beta")
    mean = plot.mode_map(spec, 0, "beta")
    np.testing.assert_allclose(mean.data[0].z, np.abs(grid).mean(0), rtol=1e-5)  # |beta| averaged
    single = plot.mode_map(spec, 0, "alpha", pair=2)
    np.testing.assert_allclose(single.data[0].z, data.level_grid(spec, 0, "alpha")[2], rtol=1e-5)
    assert single.layout.yaxis.autorange == "reversed"
    assert len(plot.mode_maps(spec).data) == 3


def test_band_grid_labels(bands):
    figure = plot.band_grid(bands)
    assert len(figure.data) == 1 and figure.data[0].type == "image"
    assert list(figure.layout.xaxis.ticktext) == ["smallest Re", "intermediate Re", "largest Re", "full"]
    assert list(figure.layout.yaxis.ticktext) == ["seed 5", "seed 6", "seed 7"]


def test_filmstrip_frames_and_teacher_rows(trajectory):
    table, rows, columns = plot.tables.filmstrip_table(trajectory, max_frames=4)
    assert table.shape[:2] == (4, 4)  # 2 samples x (HKD + teacher), 4 frames
    assert rows == ["seed 0 HKD", "seed 0 teacher", "seed 1 HKD", "seed 1 teacher"]
    assert columns[0] == "sigma=80" and columns[-1] == "sigma=0.002"
    np.testing.assert_array_equal(table[0, -1], data.to_rgb(trajectory["image"].values[0, -1][None])[0])
    sigma = trajectory["time"].values[0]   # teacher rows are shown as x_t / sqrt(1 + sigma^2)
    scaled = trajectory["teacher_image"].values[0, 0] / np.sqrt(1 + sigma ** 2)
    np.testing.assert_array_equal(table[1, 0], data.to_rgb(scaled[None])[0])
    assert plot.trajectory_filmstrip(trajectory).data[0].type == "image"


def test_cumulative_effect_and_energy(effect, trajectory):
    figure = plot.cumulative_effect(effect)
    assert len(figure.data) == 2 * 3
    assert figure.layout.xaxis.type == "log" and figure.layout.xaxis.autorange == "reversed"
    np.testing.assert_allclose(figure.data[0].y, effect["effect_share"].values[0])
    with pytest.raises(ValueError, match="none of"):
        plot.cumulative_effect(effect[["effect"]].rename({"effect": "other"}))
    energy = plot.energy_curves(trajectory)
    assert [trace.name for trace in energy.data] == ["0: a", "1: b", "2: c"]
    np.testing.assert_allclose(energy.data[1].y, trajectory["energy"].mean("sample").values[:, 1])


def test_editing_grid_layout(sweep):
    table, rows, columns = plot.tables.sweep_table(sweep)
    assert columns == ["reference / region", "0%", "10%", "50%", "90%"]
    assert rows == ["seed 3, frequency-aware", "seed 3, frequency-agnostic", "seed 4, frequency-aware",
                    "seed 4, frequency-agnostic"]
    assert table.shape == (4, 5, 8, 8, 3)
    reference = data.to_rgb(sweep["reference"].values[None])[0]
    np.testing.assert_array_equal(table[0, 0], reference)
    region = sweep["region"].values.astype(bool)
    np.testing.assert_array_equal(table[1, 0][region], reference[region])  # the injected part, unchanged
    assert plot.editing_grid(sweep).data[0].type == "image"
    with pytest.raises(ValueError, match="variant"):
        plot.editing_grid(sweep.rename({"variant": "kind"}))


def test_edit_curves_one_panel_per_metric():
    metrics = xr.Dataset({"lowpass_mse": (("variant", "ratio"), np.arange(8.0).reshape(2, 4)),
                          "highpass_correlation": (("variant", "ratio"), np.ones((2, 4))),
                          "lowpass_mse_per_sample": (("variant", "ratio", "sample"), np.ones((2, 4, 3)))},
                         coords={"variant": ["aware", "agnostic"], "ratio": [0, .1, .5, .9]})
    figure = plot.edit_curves(metrics)
    assert len(figure.data) == 4  # 2 metrics x 2 variants; per-sample variables left out
    assert [trace.name for trace in figure.data[:2]] == ["frequency-aware", "frequency-agnostic"]
    np.testing.assert_allclose(figure.data[1].y, [4, 5, 6, 7])
    assert paper.edit_curves(metrics).axes


# -- matplotlib (print) --------------------------------------------------------------------------------
def test_paper_figures_sizes_and_panels(spec, bands, effect, trajectory, sweep):
    scatter = paper.spectrum_scatter(spec)
    assert scatter.get_size_inches()[0] == pytest.approx(6.9)
    assert sum(axis.get_visible() for axis in scatter.axes) == 3
    plane = paper.eigenvalue_plane(spec)
    assert plane.get_size_inches()[0] == pytest.approx(3.3)
    assert paper.band_grid(bands).get_size_inches()[0] == pytest.approx(3.3)
    assert len(paper.cumulative_effect(effect).axes) == 2
    assert len(paper.spectrum_histograms(spec, "beta").axes) >= 3
    assert len(paper.mode_maps(spec).axes) >= 3
    assert paper.trajectory_filmstrip(trajectory).get_size_inches()[0] == pytest.approx(6.9)
    assert paper.editing_grid(sweep).axes
    assert paper.spectrum_quantiles(spec).axes
    with pytest.raises(ValueError, match="width"):
        paper.spectrum_scatter(spec, width="wide")


def test_save_figure_writes_pdf_with_truetype_fonts(tmp_path, effect):
    files = paper.save_figure(paper.cumulative_effect(effect), tmp_path / "sub" / "effect")
    assert [file.name for file in files] == ["effect.pdf", "effect.png"]
    pdf = files[0].read_bytes()
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf and b"/Type3" not in pdf
    assert files[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_colors_are_colorblind_safe_and_scale():
    from hkdviz.plot import style
    assert style.category_colors(3) == style.OKABE_ITO_MARKERS[:3]
    assert "#F0E442" not in style.category_colors(7)      # no pale yellow markers
    many = style.category_colors(16)
    assert len(set(many)) == 16


def test_plot_imports_no_widgets_and_no_analysis():
    code = ("import sys, hkdviz.plot.paper\n"
            "assert not [m for m in sys.modules if m.startswith('plotly')], 'paper figures must not need plotly'\n"
            "import hkdviz.plot as p\n"
            "[getattr(p, name) for name in p.__all__]\n"
            "bad = [m for m in sys.modules if m.startswith(('ipywidgets', 'hkdviz.analysis', 'hkdviz.widgets'))]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
