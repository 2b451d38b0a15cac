"""Colour-blind-safe palettes and paper sizes shared by the plotly and matplotlib figures.

Categorical colours are Okabe & Ito (2008), safe for the common colour-vision deficiencies.
Ordered categories with more members than the palette (e.g. 16 U-Net levels) take evenly spaced
viridis colours instead, which stay ordered in lightness. Continuous maps are viridis (sequential)
and cividis (sequential, optimised for deuteranopia); images are never recoloured.
"""
from __future__ import annotations

import contextlib

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
# Yellow (#F0E442) nearly vanishes on white as small markers and thin lines: categories skip it;
# markers end in grey rather than black, which would dominate a dense overlay.
OKABE_ITO_MARKERS = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
OKABE_ITO_LINES = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
REFERENCE = "#4D4D4D"
SEQUENTIAL = "viridis"
SEQUENTIAL_ALT = "cividis"

# Figure widths of two-column papers (NeurIPS/ICML/CVPR are all within a few mm of these).
SINGLE_COLUMN = 3.3   # inches
DOUBLE_COLUMN = 6.9   # inches

# Upper bound on markers in one scatter: ~40k points keep WebGL (and a saved HTML report) responsive.
MAX_POINTS = 40_000


def category_colors(count: int, lines: bool = False) -> list[str]:
    """`count` distinguishable colours: Okabe-Ito while it lasts, else evenly spaced viridis."""
    palette = OKABE_ITO_LINES if lines else OKABE_ITO_MARKERS
    if count <= len(palette):
        return palette[:count]
    from matplotlib import colormaps, colors
    cmap = colormaps[SEQUENTIAL]
    # Stop short of viridis' pale yellow end: thin markers vanish on white there.
    return [colors.to_hex(cmap(0.9 * index / max(count - 1, 1))) for index in range(count)]


def paper_rc(font_size: float = 7.0) -> dict:
    """matplotlib rcParams for print: TrueType (Type 42) fonts so text stays text in PDF/PS,
    small consistent font sizes, thin lines, no top/right spines."""
    return {
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "none",
        "font.size": font_size,
        "axes.titlesize": font_size,
        "axes.labelsize": font_size,
        "xtick.labelsize": font_size - 1,
        "ytick.labelsize": font_size - 1,
        "legend.fontsize": font_size - 1,
        "figure.titlesize": font_size + 1,
        "axes.linewidth": 0.6,
        "lines.linewidth": 1.0,
        "lines.markersize": 3,
        "xtick.major.width": 0.6,
        "ytick.major.width": 0.6,
        "xtick.major.size": 2.5,
        "ytick.major.size": 2.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "image.cmap": SEQUENTIAL,
        "savefig.dpi": 300,
        "figure.dpi": 150,
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.02,
        "axes.prop_cycle": __import__("cycler").cycler(color=OKABE_ITO_LINES),
    }


@contextlib.contextmanager
def paper_style(font_size: float = 7.0):
    """Context manager applying `paper_rc` to the figures created inside it."""
    import matplotlib as mpl
    with mpl.rc_context(paper_rc(font_size)):
        yield


__all__ = ["OKABE_ITO", "OKABE_ITO_MARKERS", "OKABE_ITO_LINES", "REFERENCE", "SEQUENTIAL", "SEQUENTIAL_ALT", "SINGLE_COLUMN",
           "DOUBLE_COLUMN", "MAX_POINTS", "category_colors", "paper_rc", "paper_style"]
