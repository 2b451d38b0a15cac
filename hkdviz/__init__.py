"""hkdviz: see inside Hierarchical Koopman Diffusion models.

    import hkdviz
    model = hkdviz.load("default")            # CUDA when present
    images = model.sample(seeds=[0, 1, 2])    # one step, [N, C, H, W] in [-1, 1]
    spec = hkdviz.spectrum(model)             # xarray.Dataset over eigenvalue pairs
    traj = hkdviz.trajectory(model, seeds=[0], times=16)
"""
from .version import __version__
from .checkpoint import CheckpointError
from .model import ConfigError, HKDModel, build, load

__all__ = ["__version__", "load", "build", "HKDModel", "CheckpointError", "ConfigError"]


def __getattr__(name):
    # Analysis and training pull in xarray/scipy: import them on first use so `import hkdviz` stays light.
    lazy = {
        "spectrum": ("hkdviz.analysis.spectrum", "spectrum"),
        "trajectory": ("hkdviz.analysis.trajectory", "trajectory"),
        "frequency_edit": ("hkdviz.analysis.editing", "frequency_edit"),
        "faithfulness": ("hkdviz.analysis.faithfulness", "faithfulness"),
        "lens": ("hkdviz.analysis.lens", "lens"),
        "load_teacher": ("hkdviz.teacher.teacher", "load_teacher"),
        "load_classifier": ("hkdviz.evaluation.classifier", "load_classifier"),
        "spectral_masking": ("hkdviz.analysis.interventions", "spectral_masking"),
        "intervene": ("hkdviz.analysis.interventions", "intervene"),
        "Band": ("hkdviz.analysis.bands", "Band"),
        "open_dataset": ("hkdviz.analysis.storage", "open_dataset"),
    }
    if name in lazy:
        import importlib
        module_name, attribute = lazy[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'hkdviz' has no attribute {name!r}")
