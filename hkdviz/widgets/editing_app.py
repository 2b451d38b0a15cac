"""EditingApp: frequency-aware editing with sliders (HKD sec. 4), built on analysis.editing.EditSession.

    app = EditingApp(model)           # display(app) or display(app.widget) in Jupyter
    app.set(ratio=0.8, band=(0.67, 1.0), region="lower-left")   # programmatic, applied at once
    app.last_update_seconds

Controls: edit time (the Karras grid), ratio r in [0, 1], band (a range of alpha-rank quantiles, per
level; it starts on the checkpoint's "high"-frequency third, bands.model_aliases), level (all, or one), region,
reference image, seed.
The encoder work lives in a cached EditSession per (seed, reference, time): moving ratio, band, level
or region only re-mixes, evolves and decodes. Slider moves are debounced (the last value always wins).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from ..analysis.bands import NAMED, REGIONS, Band, model_aliases, recorded_aliases
from ..analysis.editing import EditSession
from ..model.hkd import karras_sigmas
from ..model.koopman import BLOCK_OPERATORS
from .common import (DEFAULT_DEBOUNCE_SECONDS, DISPLAY_PIXELS, Debouncer, Stopwatch, WidgetApp, captioned,
                     check_widget_seeds, escape, image_to_png, image_widget, resolve_thread_count, synchronize)
from .references import collect_references

SESSION_CACHE = 6    # EditSessions kept (each holds one seed's latents twice)
MASK_CACHE = 64      # band x region masks kept per session; dragging the band slider makes many


def high_band(model) -> tuple[float, float]:
    """The alpha-rank range of the model's "high"-frequency third (bands.model_aliases: measured when the
    checkpoint was trained, else the shipped checkpoints' reading), rounded to the slider's step."""
    _, lower, upper = NAMED[model_aliases(model)["high"]]
    return round(lower, 2), round(upper, 2)


class EditingApp(WidgetApp):
    """Sliders for frequency-aware editing; `.widget` is the ipywidgets box to display."""

    def __init__(self, model, reference=None, seeds=(0, 1, 2, 3), times: int = 19, ratio: float = 0.5,
                 band=None, level="all", region: str = "lower-left", reference_seed: int = 0,
                 debounce_seconds: float = DEFAULT_DEBOUNCE_SECONDS, display_pixels: int = DISPLAY_PIXELS,
                 cpu_threads="auto"):
        import ipywidgets

        if isinstance(times, bool) or not isinstance(times, int) or times < 3:
            raise ValueError(f"times must be an integer >= 3 (points of the Karras grid), got {times!r}")
        seeds = check_widget_seeds(seeds)
        self.model = model
        self.reference_seed = reference_seed
        self.display_pixels = display_pixels
        self.cpu_threads = resolve_thread_count(cpu_threads, model)  # threads for an update; None = unchanged
        self.references = collect_references(model, reference)
        # Odd counts put the Karras midpoint ("mid", editing's default time) exactly on the grid.
        self.times = karras_sigmas(times, model.sigma_min, model.sigma_max).tolist()
        self.stopwatch = Stopwatch()
        self.last_error: str | None = None
        self.edited_image: torch.Tensor | None = None
        self._sessions: OrderedDict = OrderedDict()
        self._originals: dict[int, torch.Tensor] = {}
        self._shown = {"seed": None, "reference": None}
        self._holding = False
        self._debouncer = Debouncer(self._apply_from_event, debounce_seconds)

        block_levels = [info for info in model.levels if info.operator in BLOCK_OPERATORS]
        _check_ratio(ratio)
        high = high_band(model)
        source = ("measured when it was trained" if recorded_aliases(model)
                  else "hkdviz's reading of the shipped checkpoints; <code>band_spectra</code> measures any")
        band = _check_band(high if band is None else band)
        if level != "all" and level not in [info.index for info in block_levels]:
            raise ValueError(f"level must be 'all' or the index of a block Koopman level "
                             f"{[info.index for info in block_levels]}, got {level!r}")
        if region not in REGIONS:
            raise ValueError(f"region must be one of {list(REGIONS)}, got {region!r}")
        style = {"description_width": "90px"}
        layout = ipywidgets.Layout(width="420px")
        self.time_slider = ipywidgets.SelectionSlider(
            options=[(f"{sigma:.3g}", index) for index, sigma in enumerate(self.times)], value=times // 2,
            description="time σ", continuous_update=True, style=style, layout=layout)
        self.ratio_slider = ipywidgets.FloatSlider(value=ratio, min=0.0, max=1.0, step=0.05, description="ratio r",
                                                   readout_format=".2f", style=style, layout=layout)
        self.band_slider = ipywidgets.FloatRangeSlider(value=tuple(band), min=0.0, max=1.0, step=0.01,
                                                       description="band α-rank", readout_format=".2f",
                                                       style=style, layout=layout)
        self.level_dropdown = ipywidgets.Dropdown(
            options=[("all levels", "all")] + [(f"{info.index}: {info.name} ({info.height}px)", info.index)
                                               for info in block_levels],
            value=level, description="level", style=style, layout=layout)
        self.region_dropdown = ipywidgets.Dropdown(options=list(REGIONS), value=region, description="region",
                                                   style=style, layout=layout)
        self.reference_dropdown = ipywidgets.Dropdown(options=list(self.references), description="reference",
                                                      style=style, layout=layout)
        self.seed_dropdown = ipywidgets.Dropdown(options=seeds, value=seeds[0], description="seed",
                                                 style=style, layout=layout)
        self.controls = {"time": self.time_slider, "ratio": self.ratio_slider, "band": self.band_slider,
                         "level": self.level_dropdown, "region": self.region_dropdown,
                         "reference": self.reference_dropdown, "seed": self.seed_dropdown}
        for name, control in self.controls.items():
            control.add_class(f"hkdviz-{name}")
            control.observe(self._on_change, names="value")

        self.original_view = image_widget(None, "hkdviz-original", display_pixels)
        self.reference_view = image_widget(None, "hkdviz-reference", display_pixels)
        self.edited_view = image_widget(None, "hkdviz-edited", display_pixels)
        self.status = ipywidgets.HTML()
        self.status.add_class("hkdviz-status")
        images = ipywidgets.HBox([captioned(self.original_view, "original"),
                                  captioned(self.reference_view, "reference"),
                                  captioned(self.edited_view, "edited")])
        self.widget = ipywidgets.VBox([
            ipywidgets.HTML("<b>Frequency-aware editing</b>: inject the reference's Koopman modes of the chosen "
                            f"band into the region at the edit time (band = alpha-rank quantiles; [{high[0]:.2f}, "
                            f"{high[1]:.2f}], the {escape(model_aliases(model)['high'])} alpha third, is this "
                            f"checkpoint's high-frequency band: {source})."),
            ipywidgets.HBox([ipywidgets.VBox(list(self.controls.values())[:4]),
                             ipywidgets.VBox(list(self.controls.values())[4:])]),
            images, self.status])
        self.widget.add_class("hkdviz-editing-app")
        self._apply(raise_errors=True)

    # -- public API (latency, flush, close: WidgetApp) ------------------------------------------------
    @property
    def time(self) -> float:
        return self.times[self.time_slider.value]

    @property
    def values(self) -> dict:
        return {"time": self.time, "ratio": self.ratio_slider.value, "band": tuple(self.band_slider.value),
                "level": self.level_dropdown.value, "region": self.region_dropdown.value,
                "reference": self.reference_dropdown.value, "seed": self.seed_dropdown.value}

    @property
    def original_image(self) -> torch.Tensor:
        return self._original(self.seed_dropdown.value)

    @property
    def reference_image(self) -> torch.Tensor:
        return self.references[self.reference_dropdown.value]

    def set(self, time=None, ratio=None, band=None, level=None, region=None, reference=None, seed=None) -> torch.Tensor:
        """Set any controls as a user would, then apply once, synchronously. `time` is "mid" or a sigma
        value (the nearest grid point is used). Returns the edited image [C, H, W] in [-1, 1]."""
        changes = {}
        if time is not None:
            changes[self.time_slider] = self._time_index(time)
        if ratio is not None:
            changes[self.ratio_slider] = _check_ratio(ratio)
        if band is not None:
            changes[self.band_slider] = _check_band(band)
        for value, control, name in ((level, self.level_dropdown, "level"), (region, self.region_dropdown, "region"),
                                     (reference, self.reference_dropdown, "reference"),
                                     (seed, self.seed_dropdown, "seed")):
            if value is None:
                continue
            allowed = [option[1] if isinstance(option, tuple) else option for option in control.options]
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
            changes[control] = value
        self._set_controls(changes)
        self._debouncer.cancel()
        self._apply(raise_errors=True)
        return self.edited_image

    # -- internals ----------------------------------------------------------------------------------
    def _time_index(self, time) -> int:
        if time == "mid":
            return len(self.times) // 2
        if isinstance(time, bool) or not isinstance(time, (int, float)):
            raise TypeError(f"time must be 'mid' or a sigma value, got {time!r}")
        if not self.model.sigma_min <= time <= self.model.sigma_max:
            raise ValueError(f"time must lie in [eps, T] = [{self.model.sigma_min}, {self.model.sigma_max}], got {time}")
        return min(range(len(self.times)), key=lambda index: abs(self.times[index] - time))

    def _band(self) -> Band | None:
        lower, upper = self.band_slider.value
        if upper <= lower:
            return None  # an empty band edits nothing
        band = Band.quantile(lower, upper)
        level = self.level_dropdown.value
        return band if level == "all" else band & Band.at_levels(level)

    def _session(self) -> EditSession:
        key = (self.seed_dropdown.value, self.reference_dropdown.value, self.time_slider.value)
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        session = EditSession(self.model, [key[0]], self.references[key[1]], time=self.times[key[2]],
                              reference_seed=self.reference_seed)
        self._sessions[key] = session
        while len(self._sessions) > SESSION_CACHE:
            self._sessions.popitem(last=False)
        return session

    def _original(self, seed: int) -> torch.Tensor:
        if seed not in self._originals:
            with torch.no_grad():
                self._originals[seed] = self.model.sample([seed])[0].cpu()
        return self._originals[seed]

    def _apply_from_event(self) -> None:
        self._apply(raise_errors=False)

    def _apply(self, raise_errors: bool) -> None:
        elapsed = self._run_update(self._update, raise_errors)
        if elapsed is None:
            return
        band = self._band()
        ratio = self.ratio_slider.value if band is not None else 0.0
        band_text = "empty band (no edit)" if band is None else band.label
        self.status.value = (f"σ={self.time:.3g} · r={ratio:.2f} · {escape(band_text)} · "
                             f"{self.region_dropdown.value} · update {elapsed * 1000:.0f} ms")

    def _update(self) -> None:
        """Edit with the current control values and show it (the original and reference when they changed)."""
        session = self._session()
        band = self._band()
        ratio = self.ratio_slider.value if band is not None else 0.0
        masks = getattr(session, "_masks", None)
        if isinstance(masks, dict) and len(masks) > MASK_CACHE:
            masks.clear()
        image = session.update(ratio=ratio, band=band if band is not None else "all",
                               region=self.region_dropdown.value)[0]
        synchronize(image.device)
        self.edited_image = image.cpu()
        self.edited_view.value = image_to_png(self.edited_image, self.display_pixels)
        seed, reference = self.seed_dropdown.value, self.reference_dropdown.value
        if self._shown["seed"] != seed:
            self.original_view.value = image_to_png(self._original(seed), self.display_pixels)
            self._shown["seed"] = seed
        if self._shown["reference"] != reference:
            self.reference_view.value = image_to_png(self.references[reference], self.display_pixels)
            self._shown["reference"] = reference


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
    return float(ratio)


def _check_band(band) -> tuple[float, float]:
    try:
        lower, upper = (float(value) for value in band)
    except (TypeError, ValueError):
        raise ValueError(f"band must be (lower, upper) alpha-rank quantiles, got {band!r}") from None
    if not 0.0 <= lower <= upper <= 1.0:
        raise ValueError(f"band must be (lower, upper) with 0 <= lower <= upper <= 1, got {band!r}")
    return lower, upper
