"""SpectrumExplorer: pick Koopman modes on the alpha-beta scatter and see what they decode to.

    explorer = SpectrumExplorer(model)        # display(explorer) in Jupyter
    explorer.select_rectangle(alpha=(-0.2, -0.05), beta=(-1, 1))   # programmatic, applied at once
    explorer.band_image                        # decode of the selected modes alone [C, H, W]

The scatter (plotly FigureWidget, one trace per level, subsampled for big models) takes box and lasso
selections and clicks. A box (or the alpha/beta range sliders) selects every mode of the visible
levels inside the rectangle, drawn or not; a lasso or a click selects exactly the drawn points. The
selection is decoded by spectral masking: the seed's evolved latents z_eps keep the selected modes
and lose the rest (HKD sec. 4); the complement is shown beside it. Without anywidget (which plotly's
FigureWidget needs) the figure is static and the sliders do the selecting.
"""
from __future__ import annotations

import numpy as np
import torch

from ..analysis.interventions import latents_at
from ..model.koopman import BLOCK_OPERATORS
from ..plot.data import check_spectrum, subsample_modes
from ..plot.spectrum import spectrum_scatter
from .common import (DEFAULT_DEBOUNCE_SECONDS, DISPLAY_PIXELS, Debouncer, Stopwatch, WidgetApp, captioned,
                     check_widget_seeds, escape, figure_widget_support, image_to_png, image_widget,
                     resolve_thread_count, synchronize)

DEFAULT_MAX_POINTS = 5000  # drawn markers; the FigureWidget ships them to the browser over the comm
SELECTION_STYLE = {"type": "rect", "xref": "x", "yref": "y", "line": {"color": "#D55E00", "width": 1.5},
                   "fillcolor": "rgba(213, 94, 0, 0.08)"}


class SpectrumExplorer(WidgetApp):
    """Scatter of alpha vs beta with mode selection and the selection's decode; `.widget` to display."""

    def __init__(self, model, seeds=(0, 1, 2, 3), spectrum=None, max_points: int = DEFAULT_MAX_POINTS,
                 debounce_seconds: float = DEFAULT_DEBOUNCE_SECONDS, display_pixels: int = DISPLAY_PIXELS,
                 interactive: bool | None = None, cpu_threads="auto"):
        import ipywidgets

        from ..analysis.spectrum import spectrum as compute_spectrum

        seeds = check_widget_seeds(seeds)
        self.model = model
        self.display_pixels = display_pixels
        self.cpu_threads = resolve_thread_count(cpu_threads, model)  # threads for an update; None = unchanged
        self.spectrum = compute_spectrum(model, progress=False) if spectrum is None else spectrum
        check_spectrum(self.spectrum)
        if self.spectrum.sizes.get("mode", 0) == 0:
            raise ValueError("the model has no Koopman modes to explore (every level is an identity level)")
        self._level = self.spectrum["level"].values.astype(np.int64)
        self._pair = self.spectrum["pair"].values.astype(np.int64)
        self._y = self.spectrum["y"].values.astype(np.int64)
        self._x = self.spectrum["x"].values.astype(np.int64)
        self._alpha = self.spectrum["alpha"].values
        self._beta = self.spectrum["beta"].values
        self._block_levels = {info.index for info in model.levels if info.operator in BLOCK_OPERATORS}
        self.stopwatch = Stopwatch()
        self.last_error: str | None = None
        self.selected_modes = np.zeros(0, dtype=np.int64)
        self.selection_kind = "rectangle"
        self.band_image: torch.Tensor | None = None
        self.complement_image: torch.Tensor | None = None
        self._latents: dict[int, list[torch.Tensor]] = {}
        self._holding = False
        self._pending_points: dict[int, list[int]] = {}
        self._shown_seed = None
        self._samples: dict[int, torch.Tensor] = {}
        self._debouncer = Debouncer(self._apply_from_event, debounce_seconds)

        # The figure: the plot module's scatter, one trace per level; trace k draws modes _trace_modes[k].
        static = spectrum_scatter(self.spectrum, max_points=max_points)
        self._trace_modes = list(subsample_modes(self.spectrum, max_points).values())
        if [len(trace.x) for trace in static.data] != [len(modes) for modes in self._trace_modes]:
            raise RuntimeError("spectrum_scatter and subsample_modes disagree on the drawn modes")  # pragma: no cover
        static.update_layout(dragmode="select", height=460, margin={"t": 50, "b": 40},
                             title="Koopman spectrum: box/lasso-select or click modes")
        supported, reason = figure_widget_support()
        self.interactive = supported if interactive is None else (interactive and supported)
        if self.interactive:
            import plotly.graph_objects as go

            self.figure = go.FigureWidget(static)
            for trace in self.figure.data:
                trace.on_selection(self._on_selection)
                trace.on_click(self._on_click)
            plot_view = self.figure
            note = ""
        else:
            self.figure = static
            plot_view = ipywidgets.Output()
            plot_view.append_display_data(static)
            why = reason or "interactive=False"
            note = (f"<span style='color:#b00'>Interactive selection is off ({escape(why)}): plotly's FigureWidget "
                    f"needs <code>pip install anywidget</code>. The figure is static; select with the sliders.</span>")
        self._base_shapes = tuple(self.figure.layout.shapes or ())

        style = {"description_width": "70px"}
        layout = ipywidgets.Layout(width="440px")
        alpha_range = _padded_range(self._alpha)
        beta_range = _padded_range(self._beta)
        initial_alpha = (alpha_range[0], float(np.quantile(self._alpha, 1 / 3)))
        if initial_alpha[1] <= initial_alpha[0]:
            initial_alpha = alpha_range
        step_alpha = (alpha_range[1] - alpha_range[0]) / 200
        step_beta = (beta_range[1] - beta_range[0]) / 200
        self.alpha_slider = ipywidgets.FloatRangeSlider(
            value=initial_alpha, min=alpha_range[0], max=alpha_range[1], step=step_alpha, description="alpha",
            readout_format=".3g", style=style, layout=layout)
        self.beta_slider = ipywidgets.FloatRangeSlider(
            value=beta_range, min=beta_range[0], max=beta_range[1], step=step_beta, description="beta",
            readout_format=".3g", style=style, layout=layout)
        levels = sorted(set(self._level.tolist()))
        names = {info.index: info.name for info in model.levels}
        self.level_dropdown = ipywidgets.Dropdown(
            options=[("all levels", "all")] + [(f"{level}: {names.get(level, level)}", level) for level in levels],
            value="all", description="level", style=style, layout=layout)
        self.seed_dropdown = ipywidgets.Dropdown(options=seeds, value=seeds[0], description="seed", style=style,
                                                 layout=layout)
        self.controls = {"alpha": self.alpha_slider, "beta": self.beta_slider, "level": self.level_dropdown,
                         "seed": self.seed_dropdown}
        for name, control in self.controls.items():
            control.add_class(f"hkdviz-spectrum-{name}")
            control.observe(self._on_seed_change if name == "seed" else self._on_change, names="value")

        self.sample_view = image_widget(None, "hkdviz-spectrum-sample", display_pixels)
        self.band_view = image_widget(None, "hkdviz-spectrum-band", display_pixels)
        self.complement_view = image_widget(None, "hkdviz-spectrum-complement", display_pixels)
        self.status = ipywidgets.HTML()
        self.status.add_class("hkdviz-status")
        images = ipywidgets.HBox([captioned(self.sample_view, "sample (all modes)"),
                                  captioned(self.band_view, "selected modes only"),
                                  captioned(self.complement_view, "all but the selection")])
        parts = [ipywidgets.HTML(note)] if note else []
        parts += [plot_view, ipywidgets.HBox([ipywidgets.VBox([self.alpha_slider, self.beta_slider]),
                                              ipywidgets.VBox([self.level_dropdown, self.seed_dropdown])]),
                  images, self.status]
        self.widget = ipywidgets.VBox(parts)
        self.widget.add_class("hkdviz-spectrum-explorer")
        self._select_from_sliders(raise_errors=True)

    # -- public API (latency, flush, close: WidgetApp) ------------------------------------------------
    @property
    def sample_image(self) -> torch.Tensor:
        seed = self.seed_dropdown.value
        if seed not in self._samples:
            self._samples[seed] = self._decode_masked(self._latents_for(seed), None)[0]
        return self._samples[seed]

    @property
    def band(self):
        """The selection as an explicit `Band` (level, pair, y, x), e.g. for spectral_masking."""
        from ..analysis.bands import Band

        modes = self.selected_modes
        return Band.explicit(zip(self._level[modes].tolist(), self._pair[modes].tolist(),
                                 self._y[modes].tolist(), self._x[modes].tolist()), name="selection")

    def select_rectangle(self, alpha=None, beta=None, level=None, exclude=()) -> torch.Tensor:
        """Select every mode with alpha and beta inside the ranges (None keeps a range) of one level or
        all (but the `exclude`d levels); returns the selection's decode [C, H, W]."""
        changes = {}
        for value, slider, name in ((alpha, self.alpha_slider, "alpha"), (beta, self.beta_slider, "beta")):
            if value is not None:
                low, high = (float(bound) for bound in value)
                if not low <= high:
                    raise ValueError(f"{name} range must be (low, high) with low <= high, got {value}")
                # Widen the slider if asked for more than it spans (box selections can reach past the data).
                slider.min, slider.max = min(slider.min, low), max(slider.max, high)
                changes[slider] = (low, high)
        if level is not None:
            allowed = [option[1] for option in self.level_dropdown.options]
            if level not in allowed:
                raise ValueError(f"level must be one of {allowed}, got {level!r}")
            changes[self.level_dropdown] = level
        self._set_controls(changes)
        self._debouncer.cancel()
        self._select_from_sliders(raise_errors=True, exclude=exclude)
        return self.band_image

    def select_modes(self, modes, kind: str = "modes") -> torch.Tensor:
        """Select the given mode indices (positions along the spectrum's `mode` dimension)."""
        modes = np.unique(np.asarray(modes, dtype=np.int64).reshape(-1))
        if modes.size and (modes.min() < 0 or modes.max() >= self._level.size):
            raise ValueError(f"mode indices must lie in [0, {self._level.size}), got {modes.min()}..{modes.max()}")
        self._debouncer.cancel()
        self.figure.layout.shapes = self._base_shapes  # the slider rectangle no longer describes the selection
        self._commit(modes, kind, raise_errors=True)
        return self.band_image

    def select_points(self, points: dict) -> torch.Tensor:
        """Select drawn points: {trace index: [point indices]} (what a lasso or click reports)."""
        modes = []
        for trace, indices in points.items():
            if not 0 <= int(trace) < len(self._trace_modes):
                raise ValueError(f"trace index must lie in [0, {len(self._trace_modes)}), got {trace}")
            indices = np.asarray(list(indices), dtype=np.int64)
            if indices.size and (indices.min() < 0 or indices.max() >= len(self._trace_modes[int(trace)])):
                raise ValueError(f"point indices out of range for trace {trace} "
                                 f"({len(self._trace_modes[int(trace)])} points)")
            modes.append(self._trace_modes[int(trace)][indices])
        return self.select_modes(np.concatenate(modes) if modes else [], kind="points")

    def set(self, seed=None) -> None:
        if seed is not None:
            allowed = list(self.seed_dropdown.options)
            if seed not in allowed:
                raise ValueError(f"seed must be one of {allowed}, got {seed!r}")
            self._set_controls({self.seed_dropdown: seed})
            self._commit(self.selected_modes, self.selection_kind, raise_errors=True)

    # -- events -------------------------------------------------------------------------------------
    def _apply_from_event(self) -> None:
        self._select_from_sliders(raise_errors=False)

    def _on_seed_change(self, change) -> None:
        if not self._holding:  # a dropdown choice, not a drag: no debounce
            self._commit(self.selected_modes, self.selection_kind, raise_errors=False)

    def _on_selection(self, trace, points, selector) -> None:
        # plotly calls this once per trace, in trace order, for one selection event: gather, then commit.
        index = self.figure.data.index(trace)
        self._pending_points[index] = list(points.point_inds)
        if index == len(self.figure.data) - 1:
            pending, self._pending_points = self._pending_points, {}
            if selector is not None and getattr(selector, "type", "") == "box" and selector.xrange and selector.yrange:
                self.select_rectangle_from_box(selector.xrange, selector.yrange)
            else:
                self._guarded(lambda: self.select_points(pending))

    def _on_click(self, trace, points, state) -> None:
        index = self.figure.data.index(trace)
        if points.point_inds:
            self._pending_points[index] = list(points.point_inds)
        if index == len(self.figure.data) - 1:
            pending, self._pending_points = self._pending_points, {}
            if pending:
                self._guarded(lambda: self.select_points(pending))

    def select_rectangle_from_box(self, xrange, yrange) -> None:
        """A box drawn on the scatter: the alpha/beta rectangle over the levels left visible."""
        hidden = {self._trace_level(index) for index, trace in enumerate(self.figure.data)
                  if trace.visible not in (None, True)}
        self._guarded(lambda: self.select_rectangle(alpha=sorted(xrange), beta=sorted(yrange), exclude=hidden))

    def _guarded(self, action) -> None:
        try:
            action()
        except Exception:
            pass  # the status line already shows the error (set by _commit)

    # -- selection and decoding ---------------------------------------------------------------------
    def _trace_level(self, index: int) -> int:
        modes = self._trace_modes[index]
        return int(self._level[modes[0]]) if len(modes) else -1

    def _rectangle(self):
        return (tuple(self.alpha_slider.value), tuple(self.beta_slider.value), self.level_dropdown.value)

    def _select_from_sliders(self, raise_errors: bool, exclude=()) -> None:
        (alpha_low, alpha_high), (beta_low, beta_high), level = self._rectangle()
        keep = (self._alpha >= alpha_low) & (self._alpha <= alpha_high) & \
               (self._beta >= beta_low) & (self._beta <= beta_high)
        if level != "all":
            keep &= self._level == level
        if exclude:
            keep &= ~np.isin(self._level, list(exclude))
        self._draw_rectangle(alpha_low, alpha_high, beta_low, beta_high)
        self._commit(np.flatnonzero(keep), "rectangle", raise_errors)

    def _draw_rectangle(self, x0, x1, y0, y1) -> None:
        shape = dict(SELECTION_STYLE, x0=x0, x1=x1, y0=y0, y1=y1)
        self.figure.layout.shapes = self._base_shapes + (shape,)

    def _latents_for(self, seed: int) -> list[torch.Tensor]:
        if seed not in self._latents:
            with torch.no_grad():
                self._latents = {seed: latents_at(self.model, [seed], None)}  # keep one seed: latents can be big
        return self._latents[seed]

    def masks(self, modes: np.ndarray) -> list[torch.Tensor]:
        """Per-level keep masks [d, h, w] for mode indices (both channels of each pair); modes of
        non-block levels are skipped (dense modes are not channel pairs)."""
        masks = []
        for info in self.model.levels:
            mask = torch.zeros(info.channels, info.height, info.width, dtype=torch.bool)
            if info.index in self._block_levels:
                chosen = modes[self._level[modes] == info.index]
                pair = torch.from_numpy(self._pair[chosen])
                y, x = torch.from_numpy(self._y[chosen]), torch.from_numpy(self._x[chosen])
                mask[pair, y, x] = True
                mask[pair + info.channels // 2, y, x] = True
            masks.append(mask.to(self.model.device))
        return masks

    @torch.no_grad()
    def _decode_masked(self, latents, masks) -> torch.Tensor:
        if masks is None:
            return self.model.decode(latents).float().clamp(-1, 1).cpu()
        # Selection and complement in one batch of two: one decoder call per update.
        stacked = [torch.cat([latent * mask, latent * ~mask]) for latent, mask in zip(latents, masks)]
        return self.model.decode(stacked).float().clamp(-1, 1)

    def _show(self, modes: np.ndarray) -> None:
        """Decode the selection and its complement and show them (and the sample when the seed changed)."""
        seed = self.seed_dropdown.value
        images = self._decode_masked(self._latents_for(seed), self.masks(modes))
        synchronize(images.device)
        images = images.cpu()
        self.band_image, self.complement_image = images[0], images[1]
        self.band_view.value = image_to_png(self.band_image, self.display_pixels)
        self.complement_view.value = image_to_png(self.complement_image, self.display_pixels)
        if self._shown_seed != seed:
            self.sample_view.value = image_to_png(self.sample_image, self.display_pixels)
            self._shown_seed = seed

    def _commit(self, modes: np.ndarray, kind: str, raise_errors: bool) -> None:
        elapsed = self._run_update(lambda: self._show(modes), raise_errors)
        if elapsed is None:
            return
        self.selected_modes, self.selection_kind = modes, kind
        skipped = int(np.count_nonzero(~np.isin(self._level[modes], list(self._block_levels))))
        levels = np.unique(self._level[modes]).tolist()
        self.status.value = (f"{kind}: {modes.size:,} of {self._level.size:,} modes selected in "
                             f"{len(levels)} level(s)" + (f" ({skipped:,} on non-block levels ignored)" if skipped else "")
                             + f" · update {elapsed * 1000:.0f} ms")


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    pad = 0.02 * (high - low) if high > low else max(1e-3, 1e-3 * abs(low))
    return low - pad, high + pad
