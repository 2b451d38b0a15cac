"""Reports: `hkdviz figures` (paper figures from saved xarray data) and `hkdviz demo` (netCDF data,
figures and a standalone HTML report for one checkpoint).

    hkdviz demo [--checkpoint default] [--out hkdviz-demo] [--device auto]
    hkdviz figures --checkpoint default --out DIR [--data DIR]

Modules: `source` (model/teacher lookup with the untrained fallback), `datasets` (compute and save the
netCDF files), `figures` (render PDF/PNG from them), `html` (standalone HTML), `demo` (all of it).
"""
