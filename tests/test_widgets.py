"""Widget apps, headless: drive the controls as a user would and check what they display.

Known answers come from the analysis library: the EditingApp's edit equals `frequency_edit` with the
same settings, the SpectrumExplorer's decode equals `spectral_masking` of the same explicit band.
"""
import asyncio
import io

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from hkdviz.analysis.bands import Band  # noqa: E402
from hkdviz.analysis.editing import frequency_edit  # noqa: E402
from hkdviz.analysis.interventions import spectral_masking  # noqa: E402
from hkdviz.widgets.common import Debouncer, image_to_png  # noqa: E402
from hkdviz.widgets.editing_app import EditingApp  # noqa: E402
from hkdviz.widgets.spectrum_explorer import SpectrumExplorer  # noqa: E402


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def app(tiny_model):
    app = EditingApp(tiny_model, seeds=[0, 3], times=7, debounce_seconds=0.05)
    yield app
    app.close()


@pytest.fixture(scope="module")
def explorer(tiny_model):
    explorer = SpectrumExplorer(tiny_model, seeds=[0, 5], max_points=600, debounce_seconds=0.05)
    yield explorer
    explorer.close()


# -- pieces ------------------------------------------------------------------------------------------
def test_image_to_png_maps_range_and_upscales():
    image = torch.stack([torch.full((2, 4), -1.0), torch.full((2, 4), 1.0), torch.zeros(2, 4)])
    array = pixels(image_to_png(image, display_pixels=16))
    assert array.shape == (8, 16, 3)  # nearest upscaling by 16 // 4 = 4
    assert (array[..., 0] == 0).all() and (array[..., 1] == 255).all() and (array[..., 2] == 128).all()
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        image_to_png(torch.zeros(2, 3, 4, 4))


def test_debouncer_applies_last_value_once_inside_a_loop():
    calls = []
    state = {"value": 0}
    debouncer = Debouncer(lambda: calls.append(state["value"]), delay=0.05)

    async def drag():
        for value in range(1, 6):
            state["value"] = value
            debouncer.trigger()
            await asyncio.sleep(0.005)
        assert calls == [] and debouncer.pending
        await asyncio.sleep(0.2)

    asyncio.run(drag())
    assert calls == [5]
    debouncer.trigger()  # no running loop: applied at once
    assert calls == [5, 5]
    with pytest.raises(ValueError, match="delay"):
        Debouncer(lambda: None, delay=-1)


# -- EditingApp --------------------------------------------------------------------------------------
def test_editing_app_shows_images_and_records_latency(app):
    assert app.original_view.value and app.reference_view.value and app.edited_view.value
    assert app.last_update_seconds is not None and app.last_update_seconds > 0
    assert app.time == pytest.approx(app.times[3])  # the Karras midpoint of 7 points
    assert "update" in app.status.value and app.last_error is None


def test_ratio_zero_shows_the_original(app, tiny_model):
    edited = app.set(ratio=0.0)
    assert torch.equal(edited, tiny_model.sample([0])[0].cpu())
    assert app.edited_view.value == app.original_view.value


def test_slider_move_updates_the_displayed_edit(app, tiny_model):
    app.set(ratio=0.2, band=(0.0, 0.33), level="all", region="lower-left", reference="shapes 0", seed=0)
    before = app.edited_view.value
    count = len(app.update_seconds)
    app.ratio_slider.value = 0.8  # as the browser would: no running loop here, so applied at once
    assert len(app.update_seconds) == count + 1
    assert app.edited_view.value != before
    assert np.abs(pixels(app.edited_view.value).astype(int) - pixels(before).astype(int)).max() > 0
    expected = frequency_edit(tiny_model, [0], app.reference_image, 0.8, time=app.time,
                              band=Band.quantile(0.0, 0.33), region="lower-left")[0]
    torch.testing.assert_close(app.edited_image, expected.cpu(), rtol=0, atol=1e-6)
    assert "r=0.80" in app.status.value


def test_level_band_region_and_seed_match_frequency_edit(app, tiny_model):
    edited = app.set(ratio=1.0, band=(0.5, 1.0), level=2, region="upper", reference="stripes", seed=3,
                     time=app.times[1])
    band = Band.quantile(0.5, 1.0) & Band.at_levels(2)
    expected = frequency_edit(tiny_model, [3], app.references["stripes"], 1.0, time=app.times[1], band=band,
                              region="upper")[0]
    torch.testing.assert_close(edited, expected.cpu(), rtol=0, atol=1e-6)
    assert app.values["seed"] == 3 and app.values["level"] == 2
    assert app.original_view.value == image_to_png(tiny_model.sample([3])[0])


def test_empty_band_edits_nothing(app):
    edited = app.set(ratio=1.0, band=(0.4, 0.4), seed=0)
    assert torch.equal(edited, app.original_image)
    assert "empty band" in app.status.value


def test_cached_session_skips_the_encoder(app, tiny_model, monkeypatch):
    app.set(ratio=0.5, band=(0.0, 0.33), level="all", region="lower-left", reference="shapes 1", seed=0,
            time="mid")
    calls = []
    original = tiny_model.encode
    monkeypatch.setattr(tiny_model, "encode", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    app.set(ratio=0.9)
    app.set(band=(0.2, 0.6), level=1)
    app.set(region="left")
    assert calls == [], "ratio, band, level and region must reuse the cached encoder features"
    app.set(time=app.times[2])
    assert len(calls) == 2  # a new edit time encodes the noise and the reference once each


def test_debounced_slider_drag_applies_once_with_the_last_value(app):
    app.set(ratio=0.1, band=(0.0, 0.33), level="all", region="lower-left", seed=0, time="mid")
    count = len(app.update_seconds)

    async def drag():
        for value in (0.2, 0.3, 0.4, 0.6):
            app.ratio_slider.value = value
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)

    asyncio.run(drag())
    assert len(app.update_seconds) == count + 1
    assert "r=0.60" in app.status.value
    torch.testing.assert_close(app.edited_image, app.set(ratio=0.6), rtol=0, atol=0)


def test_editing_app_rejects_bad_values(app, tiny_model):
    with pytest.raises(ValueError, match="ratio"):
        app.set(ratio=1.5)
    with pytest.raises(ValueError, match="region"):
        app.set(region="nowhere")
    with pytest.raises(ValueError, match="band"):
        app.set(band=(0.7, 0.2))
    with pytest.raises(ValueError, match="time"):
        app.set(time=1000.0)
    with pytest.raises(ValueError, match="seed"):
        app.set(seed=99)
    with pytest.raises(ValueError, match=r"reference 'mine' must have shape \[3, 32, 32\]"):
        EditingApp(tiny_model, reference={"mine": torch.zeros(3, 16, 16)})
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        EditingApp(tiny_model, reference=torch.full((3, 32, 32), 5.0))
    with pytest.raises(ValueError, match="times"):
        EditingApp(tiny_model, times=2)
    with pytest.raises(ValueError, match="region must be one of"):
        EditingApp(tiny_model, region="middle")
    with pytest.raises(ValueError, match="level must be 'all' or the index"):
        EditingApp(tiny_model, level=42)
    with pytest.raises(ValueError, match="band must be"):
        EditingApp(tiny_model, band="high")


def test_updates_run_on_the_requested_cpu_threads(app, tiny_model, monkeypatch):
    assert app.cpu_threads == 1  # "auto": a small model on CPU updates on one thread
    seen = []
    decode = tiny_model.decode
    monkeypatch.setattr(tiny_model, "decode", lambda *args, **kwargs: seen.append(torch.get_num_threads())
                        or decode(*args, **kwargs))
    before = torch.get_num_threads()
    app.set(ratio=0.35)
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="cpu_threads"):
        EditingApp(tiny_model, cpu_threads=0)


def test_user_reference_comes_first(tiny_model):
    reference = torch.linspace(-1, 1, 32).expand(3, 32, 32).clone()
    app = EditingApp(tiny_model, reference=reference, seeds=[1], times=5)
    try:
        assert app.values["reference"] == "given"
        assert torch.equal(app.reference_image, reference)
        assert {"stripes", "checkerboard"} <= set(app.references)
    finally:
        app.close()


def test_the_app_starts_on_the_checkpoints_high_band(tiny_model):
    """The band slider starts on the model's measured "high"-frequency third: the largest alpha without a
    record (the shipped checkpoints' reading), the intermediate third when meta.json says so."""
    import copy
    from hkdviz.widgets import high_band
    assert high_band(tiny_model) == (0.67, 1.0)
    measured = copy.deepcopy(tiny_model)
    measured.meta = {"band_aliases": {"high": "intermediate", "mid": "largest", "low": "smallest"}}
    assert high_band(measured) == (0.33, 0.67)
    app = EditingApp(measured, seeds=[1], times=5)
    try:
        assert app.values["band"] == (0.33, 0.67)
        assert "intermediate alpha third" in app.widget.children[0].value
        assert "measured when it was trained" in app.widget.children[0].value
    finally:
        app.close()


# -- SpectrumExplorer --------------------------------------------------------------------------------
def test_explorer_figure_is_a_widget_with_one_trace_per_level(explorer, tiny_model):
    import plotly.graph_objects as go
    assert isinstance(explorer.figure, go.FigureWidget)
    assert len(explorer.figure.data) == len(tiny_model.levels)
    assert sum(len(trace.x) for trace in explorer.figure.data) == 600  # subsampled from 34,560 modes
    assert explorer.sample_view.value and explorer.band_view.value and explorer.last_update_seconds > 0


def test_rectangle_selection_matches_spectral_masking(explorer, tiny_model):
    explorer.set(seed=5)
    image = explorer.select_rectangle(alpha=(-0.03, 0.0), beta=(-0.4, 0.8))
    alpha, beta = explorer.spectrum["alpha"].values, explorer.spectrum["beta"].values
    inside = np.flatnonzero((alpha >= -0.03) & (alpha <= 0.0) & (beta >= -0.4) & (beta <= 0.8))
    assert np.array_equal(explorer.selected_modes, inside) and 0 < inside.size < alpha.size
    expected = spectral_masking(tiny_model, [5], bands=[explorer.band])["image"].values[0, 0]
    np.testing.assert_allclose(image.numpy(), expected, rtol=0, atol=1e-6)
    assert explorer.alpha_slider.value == pytest.approx((-0.03, 0.0))
    assert f"{inside.size:,} of" in explorer.status.value


def test_everything_selected_decodes_the_sample(explorer, tiny_model):
    explorer.set(seed=0)
    image = explorer.select_rectangle(alpha=(-1.0, 1.0), beta=(-10.0, 10.0), level="all")
    torch.testing.assert_close(image, tiny_model.sample([0])[0].cpu(), rtol=0, atol=1e-5)
    zero = tiny_model.decode([torch.zeros(1, i.channels, i.height, i.width) for i in tiny_model.levels])
    torch.testing.assert_close(explorer.complement_image, zero[0].clamp(-1, 1), rtol=0, atol=1e-5)


def test_lasso_box_and_click_events_from_the_frontend(explorer):
    figure = explorer.figure
    # A lasso over drawn points of traces 1 and 4, as plotly.js reports it.
    figure._js2py_pointsCallback = {
        "event_type": "plotly_selected",
        "points": {"xs": [0, 0, 0], "ys": [0, 0, 0], "point_indexes": [3, 7, 2], "trace_indexes": [1, 1, 4]},
        "selector": {"type": "lasso", "selector_state": {"xs": [0, 1, 1], "ys": [0, 0, 1]}}}
    expected = np.sort(np.concatenate([explorer._trace_modes[1][[3, 7]], explorer._trace_modes[4][[2]]]))
    assert explorer.selection_kind == "points" and np.array_equal(explorer.selected_modes, expected)
    before = explorer.band_view.value
    # A box: every mode inside the rectangle, drawn or not; the sliders follow it.
    figure._js2py_pointsCallback = {
        "event_type": "plotly_selected", "points": {"xs": [], "ys": [], "point_indexes": [], "trace_indexes": []},
        "selector": {"type": "box", "selector_state": {"xrange": [-0.02, -0.01], "yrange": [0.5, -0.5]}}}
    assert explorer.selection_kind == "rectangle"
    assert explorer.alpha_slider.value == pytest.approx((-0.02, -0.01))
    assert explorer.beta_slider.value == pytest.approx((-0.5, 0.5))
    assert explorer.band_view.value != before
    # A click on one point.
    figure._js2py_pointsCallback = {
        "event_type": "plotly_click", "points": {"xs": [0], "ys": [0], "point_indexes": [5], "trace_indexes": [2]},
        "device_state": {}}
    assert np.array_equal(explorer.selected_modes, explorer._trace_modes[2][[5]])
    assert "1 of" in explorer.status.value


def test_slider_drag_selects_a_rectangle(explorer):
    explorer.select_rectangle(alpha=(-0.05, 0.0), beta=(-3.0, 3.0), level="all")
    count = len(explorer.update_seconds)
    explorer.level_dropdown.value = 6  # no running loop: applied at once
    assert len(explorer.update_seconds) == count + 1
    assert set(explorer.spectrum["level"].values[explorer.selected_modes].tolist()) == {6}
    assert explorer.figure.layout.shapes[-1].x0 == pytest.approx(-0.05)


def test_explorer_rejects_bad_selections(explorer):
    with pytest.raises(ValueError, match="mode indices"):
        explorer.select_modes([10 ** 9])
    with pytest.raises(ValueError, match="trace index"):
        explorer.select_points({99: [0]})
    with pytest.raises(ValueError, match="alpha range"):
        explorer.select_rectangle(alpha=(1.0, -1.0))
    with pytest.raises(ValueError, match="seed"):
        explorer.set(seed=42)


def test_explorer_falls_back_to_a_static_figure_without_figurewidget(tiny_model, monkeypatch):
    import plotly.graph_objects as go

    import hkdviz.widgets.spectrum_explorer as module
    monkeypatch.setattr(module, "figure_widget_support",
                        lambda: (False, "ImportError: No module named 'anywidget'"))
    explorer = SpectrumExplorer(tiny_model, seeds=[0], max_points=100)
    try:
        assert type(explorer.figure) is go.Figure and not explorer.interactive
        assert "anywidget" in explorer.widget.children[0].value
        image = explorer.select_rectangle(alpha=(-1.0, 1.0), beta=(-10.0, 10.0))
        torch.testing.assert_close(image, tiny_model.sample([0])[0].cpu(), rtol=0, atol=1e-5)
    finally:
        explorer.close()
