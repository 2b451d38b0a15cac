"""Reports: `hkdviz figures` (paper figures from saved xarray data) and `hkdviz demo` (netCDF data,
figures and a standalone HTML report for one checkpoint).

    hkdviz demo [--checkpoint default] [--out hkdviz-demo] [--device auto]
    hkdviz figures --checkpoint default --out DIR [--data DIR]

The figures from Python (the same call the command makes; nothing heavy is imported until first use):

    from hkdviz.report import make_figures
    report = make_figures("default", out="paper-figures", only=["spectrum_scatter"], quick=True)
    report.written, report.failed, report.manifest

Modules: `source` (model/teacher lookup with the untrained fallback), `datasets` (compute and save the
netCDF files), `figures` (render PDF/PNG from them; `make_figures`), `html` (standalone HTML), `demo`
(all of it).
"""
from ..exports import lazy_exports

_LAZY = {"make_figures": "figures", "FigureReport": "figures", "FigureResult": "figures", "FIGURES": "figures"}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
