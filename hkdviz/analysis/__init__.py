"""Analysis: read a model, write xarray datasets (spectra, trajectories, ...). Imported lazily."""
from ..exports import lazy_exports

_EXPORTS = {
    "spectrum": "spectrum", "level_view": "spectrum",
    "trajectory": "trajectory", "time_grid": "trajectory",
    "provenance_attrs": "storage", "save_dataset": "storage", "open_dataset": "storage", "StorageError": "storage",
    "Band": "bands", "band_masks": "bands", "region_masks": "bands",
    "intervene": "interventions", "spectral_masking": "interventions", "cumulative_effect": "interventions",
    "EditSession": "editing", "frequency_edit": "editing", "editing_sweep": "editing",
    "inpaint": "editing", "colorize": "editing",
    "faithfulness": "faithfulness", "summarize_faithfulness": "faithfulness",
    "lens": "lens", "lens_summary": "lens", "compare_spectra": "lens", "linearity_and_faithfulness": "lens",
    "lens_mode_amplitudes": "lens",
    "editing_report": "edit_metrics", "band_spectra": "edit_metrics", "radial_power_spectrum": "edit_metrics",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)
