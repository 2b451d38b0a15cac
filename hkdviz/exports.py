"""Lazy package exports: a package's `__getattr__` that imports the module holding a name on first use.

The packages above the model (analysis, teacher, evaluation, train, report, widgets) pull in xarray,
scipy, plotly or ipywidgets; importing them lazily keeps `import hkdviz` and `hkdviz info` light.

    __getattr__ = lazy_exports(__name__, {"load_teacher": "teacher", ...})   # name -> module in the package
"""
from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str]):
    """A module-level `__getattr__` for `package`: `names[name]` is the submodule that defines `name`."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__all__ = ["lazy_exports"]
