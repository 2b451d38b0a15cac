"""ipywidgets apps built on hkdviz.analysis and hkdviz.plot (needs the `notebooks` extras).

    from hkdviz.widgets import EditingApp, SpectrumExplorer
    EditingApp(model)          # frequency-aware editing with sliders
    SpectrumExplorer(model)    # select modes on the alpha-beta scatter, see their decode

Both expose `.widget` (what Jupyter displays; the apps display themselves too), programmatic setters
(`EditingApp.set`, `SpectrumExplorer.select_rectangle` / `select_modes` / `select_points`) and the
latency of their last update, `last_update_seconds`. Slider moves are debounced (the last value wins);
on CPU, updates of small models run on one thread (`cpu_threads="auto"`; see widgets/common.py).
"""
from ..exports import lazy_exports

_EXPORTS = {"EditingApp": "editing_app", "SpectrumExplorer": "spectrum_explorer",
            "builtin_references": "references", "image_to_png": "common", "high_band": "editing_app"}

__all__ = sorted(_EXPORTS)


# ipywidgets/plotly load on first use, so importing hkdviz.widgets stays cheap.
__getattr__ = lazy_exports(__name__, _EXPORTS)
