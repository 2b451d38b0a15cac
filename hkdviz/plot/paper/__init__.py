"""Print figures (matplotlib) for papers: 3.3 in single column / 6.9 in double column widths,
TrueType (Type 42) text in PDFs via `save_figure`, colour-blind-safe palettes, scatter points
rasterized inside vector PDFs. Same names as the interactive figures in `hkdviz.plot`.

    from hkdviz.plot import paper
    figure = paper.spectrum_scatter(spec)           # matplotlib.figure.Figure
    paper.save_figure(figure, "figures/spectrum")   # figures/spectrum.pdf + .png
"""
from .common import FORMATS, figure_width, save_figure
from .curves import band_power_spectra, cumulative_effect, energy_curves, faithfulness_curves, lens_curves
from .editing import edit_curves, editing_grid, inpainting_grid
from .images import band_grid, image_grid, method_grid, sample_strip, trajectory_filmstrip
from .spectrum import eigenvalue_plane, mode_maps, spectrum_histograms, spectrum_quantiles, spectrum_scatter

__all__ = ["FORMATS", "figure_width", "save_figure", "band_power_spectra", "cumulative_effect", "energy_curves",
           "faithfulness_curves", "lens_curves", "edit_curves",
           "editing_grid", "inpainting_grid", "band_grid", "image_grid", "method_grid", "sample_strip",
           "trajectory_filmstrip", "eigenvalue_plane", "mode_maps", "spectrum_histograms", "spectrum_quantiles",
           "spectrum_scatter"]
