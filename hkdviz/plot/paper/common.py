"""Shared pieces of the print (matplotlib) figures: figure creation, saving, image montages."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...atomic import temporary_path
from ..data import GUTTER, montage
from ..style import DOUBLE_COLUMN, SINGLE_COLUMN, paper_rc, paper_style

WIDTHS = {"single": SINGLE_COLUMN, "double": DOUBLE_COLUMN}
FORMATS = ("pdf", "png")


def figure_width(width) -> float:
    """'single' (3.3 in), 'double' (6.9 in) or a number of inches."""
    if isinstance(width, str):
        if width not in WIDTHS:
            raise ValueError(f"width must be 'single', 'double' or inches, got {width!r}")
        return WIDTHS[width]
    width = float(width)
    if not 0 < width < 40:
        raise ValueError(f"width must be a positive number of inches, got {width}")
    return width


def new_figure(width, height: float, rows: int = 1, columns: int = 1, **subplot_kw):
    """A matplotlib Figure (not registered with pyplot, so nothing leaks between calls) in paper style."""
    from matplotlib.figure import Figure
    import matplotlib as mpl
    with mpl.rc_context(paper_rc()):
        figure = Figure(figsize=(figure_width(width), height), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False, **subplot_kw)
    return figure, axes


def styled(function):
    """Run a figure-building function under the paper rcParams (fonts, sizes, palette)."""
    import functools
    import matplotlib as mpl

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(paper_rc()):
            return function(*args, **kwargs)
    return wrapper


def save_figure(figure, stem, formats=FORMATS, dpi: int = 300) -> list[Path]:
    """Write `figure` as stem.pdf / stem.png / ... under the paper rcParams.

    Saving through here matters for PDFs: fonts are embedded as TrueType (pdf.fonttype 42), so text
    stays selectable and editable; matplotlib's default (Type 3) is refused by some venues.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with paper_style():
        for extension in formats:
            path = stem.with_name(f"{stem.name}.{extension}")
            with temporary_path(path) as temporary:  # a failed save keeps the previous figure file
                figure.savefig(temporary, dpi=dpi, format=extension)
            written.append(path)
    return written


def draw_image_table(axis, table: np.ndarray, row_labels, column_labels, gutter: int = GUTTER,
                     column_label_rotation: float = 0.0) -> None:
    """Draw uint8 [R, C, H, W, 3] as one montage in `axis`, labels as ticks (rows left, columns top)."""
    rows, columns, height, width, _ = table.shape
    axis.imshow(montage(table, gutter), interpolation="nearest")
    axis.set_xticks([column * (width + gutter) + (width - 1) / 2 for column in range(columns)])
    axis.set_xticklabels(column_labels, rotation=column_label_rotation)
    axis.set_yticks([row * (height + gutter) + (height - 1) / 2 for row in range(rows)])
    axis.set_yticklabels(row_labels)
    axis.xaxis.tick_top()
    axis.tick_params(length=0, pad=2)
    for spine in axis.spines.values():
        spine.set_visible(False)


def grid_height(width_inches: float, rows: int, columns: int, label_height: float = 0.22,
                label_width: float = 0.0) -> float:
    """Figure height for a montage of square cells filling `width_inches` (minus a row-label margin)."""
    cell = (width_inches - label_width) / columns
    return rows * cell + label_height


__all__ = ["WIDTHS", "FORMATS", "figure_width", "new_figure", "styled", "save_figure", "draw_image_table",
           "grid_height"]
