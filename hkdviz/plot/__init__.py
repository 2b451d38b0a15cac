"""Figures from hkdviz data: pure functions, xarray datasets (or tensors) in, figures out.

Interactive (plotly `go.Figure`), importable as `hkdviz.plot.<name>`:
    spectrum_scatter, eigenvalue_plane, spectrum_histograms, mode_map, mode_maps   (spectrum datasets)
    band_grid, editing_grid, zero_shot_grid, method_grid, trajectory_filmstrip, image_grid,
    sample_grid                                                                     (images)
    cumulative_effect, energy_curves, band_power_spectra, edit_curves               (curves)
Print (matplotlib `Figure`, two-column paper sizes, TrueType fonts): `hkdviz.plot.paper.<name>`,
saved with `hkdviz.plot.paper.save_figure(figure, "out/stem")` -> stem.pdf + stem.png.

Nothing here builds or runs a model, and nothing imports ipywidgets: widgets build on these.
Colours are colour-blind safe (Okabe-Ito, viridis, cividis; `hkdviz.plot.style`).
"""
import importlib

_EXPORTS = {
    "spectrum_scatter": "spectrum", "eigenvalue_plane": "spectrum", "spectrum_histograms": "spectrum",
    "mode_map": "spectrum", "mode_maps": "spectrum",
    "band_grid": "images", "trajectory_filmstrip": "images", "image_grid": "images", "sample_grid": "images",
    "method_grid": "images",
    "editing_grid": "editing", "edit_curves": "editing", "zero_shot_grid": "editing",
    "cumulative_effect": "curves", "energy_curves": "curves", "band_power_spectra": "curves",
    "to_rgb": "data", "subsample_modes": "data",
    "lens_residuals": "lens", "lens_comparison_plane": "lens", "lens_comparison_bars": "lens",
}

__all__ = sorted(_EXPORTS) + ["paper", "style", "data", "tables"]


def __getattr__(name):
    # plotly and matplotlib load on first use, so `import hkdviz.plot` stays cheap.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in ("paper", "style", "data", "tables", "spectrum", "images", "editing", "curves", "lens"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
