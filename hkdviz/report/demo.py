"""`hkdviz demo`: the main job. For one checkpoint (CUDA when present) it writes, into --out:

    data/*.nc          spectra, trajectories, band decodes, cumulative effect, editing, samples (netCDF,
                       h5netcdf; open with xarray.open_dataset(path, engine="h5netcdf"))
    figures/*.pdf|png  the paper figures (see `hkdviz figures`), figures/figures.json
    report.html        a standalone report: interactive plotly figures (plotly.js inlined, opens offline)
                       and the paper figures as embedded PNG
    demo.json          timings, files, and the model it used

Without the shipped `default` checkpoint (a checkout that lacks checkpoints/default), `hkdviz demo`
runs on an untrained `tiny` model and says so in a banner (terminal, report and demo.json). How long it
takes: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..atomic import write_json
from .datasets import FILES
from .source import parse_threads


def build_parser() -> argparse.ArgumentParser:
    from hkdviz.errors import OneLineParser
    parser = OneLineParser(prog="hkdviz demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default", help="shipped name or checkpoint directory (default: default)")
    parser.add_argument("--out", default="hkdviz-demo", help="output directory (default: ./hkdviz-demo)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: the checkpoint's sibling, if any)")
    parser.add_argument("--quick", action="store_true", help="fewer seeds and time points (a first look; tests)")
    parser.add_argument("--threads", type=parse_threads, default="auto",
                        help="CPU threads for the model (default auto: 1 for small models on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines (one per data file and figure otherwise)")
    return parser


def interactive_sections(data_dir: Path, figure_dir: Path, figure_results):
    """The report's sections: plotly figures from the saved data, and the paper PNGs."""
    from hkdviz import plot
    from hkdviz.analysis.storage import open_dataset
    from .html import Item, Section

    def load(name):
        path = data_dir / FILES[name]
        return open_dataset(path) if path.exists() else None

    def attempt(items, build, caption, missing):
        try:
            figure = build()
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            items.append(Item("note", f"{missing}: {error}"))
            return
        items.append(Item("plotly", figure, caption))

    sections = []
    spec = load("spectrum")
    items = []
    if spec is None:
        items.append(Item("note", "skipped: spectrum.nc was not computed"))
    else:
        attempt(items, lambda: plot.spectrum_scatter(spec), "Hover a point for its level, position, pair, "
                "|lambda| over one step and frequency; click legend entries to hide levels. Large spectra are "
                "randomly subsampled (the title says how many modes are shown).", "spectrum scatter")
        attempt(items, lambda: plot.eigenvalue_plane(spec), "Discrete eigenvalues exp(lambda dt) and the unit "
                "circle.", "eigenvalue plane")
        attempt(items, lambda: plot.spectrum_histograms(spec), "Per-level histograms.", "histograms")
        attempt(items, lambda: plot.mode_maps(spec, "alpha"), "Mean alpha over pairs per position.", "alpha maps")
        attempt(items, lambda: plot.mode_maps(spec, "beta"), "Mean |beta| over pairs per position.", "beta maps")
    sections.append(Section("Spectrum", "spectrum", items, "Every level's Koopman generator is block diagonal with "
                            "2x2 blocks [[alpha, beta], [-beta, alpha]] per position: eigenvalues alpha +- i beta."))

    items = []
    trajectory = load("trajectory")
    if trajectory is None:
        items.append(Item("note", "skipped: trajectory.nc was not computed"))
    else:
        attempt(items, lambda: plot.trajectory_filmstrip(trajectory), "Decoded Koopman state along the "
                "trajectory; the last column is the one-step sample.", "filmstrip")
        attempt(items, lambda: plot.energy_curves(trajectory), "Mean square latent per level.", "energy")
    sections.append(Section("Trajectories", "trajectories", items))

    items = []
    for name, build, caption in (
            ("band_decodes", plot.band_grid, "Paper Fig. 4: decode of each real-part band alone."),
            ("band_spectra", plot.band_power_spectra, "Which band carries the fine detail on this model."),
            ("cumulative_effect", plot.cumulative_effect, "Share of the image and of the latent energy per band.")):
        data = load(name)
        if data is None:
            items.append(Item("note", f"skipped: {FILES[name]} was not computed"))
        else:
            attempt(items, lambda data=data, build=build: build(data), caption, name)
    sections.append(Section("Spectral masking and cumulative effect", "bands", items))

    items = []
    for name, build, caption in (
            ("editing_sweep", plot.editing_grid, "Paper Fig. 5: frequency-aware vs frequency-agnostic injection."),
            ("editing_metrics", plot.edit_curves, "Inside the edited region."),
            ("zero_shot", plot.zero_shot_grid, "Paper Fig. 6: zero-shot inpainting and colorization."),
            ("samples", plot.method_grid, "One-step samples and, when a teacher is available, the teacher at 35/5/1 "
                                          "NFE from the same noise.")):
        data = load(name)
        if data is None:
            items.append(Item("note", f"skipped: {FILES[name]} was not computed"))
        else:
            attempt(items, lambda data=data, build=build: build(data), caption, name)
    sections.append(Section("Editing and samples", "editing", items))

    items = []
    for result in figure_results:
        png = next((file for file in result.files if file.endswith(".png")), None)
        label = f"{result.stem}{' (paper ' + result.paper + ')' if result.paper else ''}: {result.caption}"
        items.append(Item("png", Path(png), label) if png else Item("note", f"{result.stem}: skipped ({result.skipped})"))
    sections.append(Section("Paper figures", "paper", items, f"PDF and PNG versions are in {figure_dir}."))
    return sections


def main(argv=None) -> int:
    from hkdviz.errors import split_debug
    args = build_parser().parse_args(split_debug(argv)[0])
    from hkdviz.checkpoint import CheckpointError
    from hkdviz.errors import UsageError, describe, exit_code, print_traceback_if_debugging
    from .figures import make_figures
    from .html import write_report
    from .source import print_banner

    started = time.perf_counter()
    out_dir = Path(args.out)
    data_dir, figure_dir = out_dir / "data", out_dir / "figures"
    try:
        # The netCDF data and the paper figures are what `hkdviz figures` makes; the demo keeps the data
        # in out/data, beside the figures folder, and adds the HTML report.
        made = make_figures(args.checkpoint, out=figure_dir, data_out=data_dir, quick=args.quick, device=args.device,
                            teacher=args.teacher, progress=not args.no_progress, threads=args.threads)
    except (UsageError, CheckpointError, RuntimeError) as error:
        print_traceback_if_debugging()
        print(f"hkdviz demo: error: {describe(error)}", file=sys.stderr)
        return exit_code(error)
    source, outcomes, results = made.model, made.datasets, made.figures
    figures_done = time.perf_counter()
    data_seconds = sum(outcome.seconds for outcome in outcomes)
    figure_seconds = sum(result.seconds for result in results)
    timings = {"model": round(figures_done - started - data_seconds - figure_seconds, 2),
               **{outcome.name: round(outcome.seconds, 2) for outcome in outcomes},
               "paper figures": round(figure_seconds, 2)}

    sections = interactive_sections(data_dir, figure_dir, results)
    files = [(f"data/{outcome.path.name}", f"{outcome.name} (netCDF)") for outcome in outcomes if outcome.path]
    files += [(f"figures/{Path(file).name}", result.caption.split(":")[0].split(".")[0])
              for result in results for file in result.files]
    meta = [f"model: {source.description}", source.teacher_description,
            f"output: {out_dir.resolve()}"]
    report = write_report(out_dir / "report.html", "hkdviz demo report", sections, source.banner, meta, files)
    timings["HTML report"] = round(time.perf_counter() - figures_done, 2)

    total = time.perf_counter() - started
    summary = {"model": source.description, "trained": source.trained, "banner": source.banner, "quick": args.quick,
               "teacher": source.teacher_description, "seconds": round(total, 1), "stage_seconds": timings,
               "report": str(report), "data": [str(outcome.path) for outcome in outcomes if outcome.path],
               "figures": [file for result in results for file in result.files],
               "skipped": {**{outcome.name: outcome.skipped for outcome in outcomes if outcome.skipped},
                           **{result.stem: result.skipped for result in results if result.skipped}}}
    write_json(out_dir / "demo.json", summary)

    print(f"\nhkdviz demo finished in {total:.1f} s (model: {source.description})")
    print(f"  report   {report.resolve()}   (open in a browser; works offline)")
    print(f"  data     {data_dir.resolve()}/  ({len(summary['data'])} netCDF files: "
          f"{', '.join(Path(path).name for path in summary['data'])})")
    print(f"  figures  {figure_dir.resolve()}/  ({len(summary['figures'])} files, PDF + PNG)")
    print(f"  summary  {(out_dir / 'demo.json').resolve()}")
    for name, reason in summary["skipped"].items():
        print(f"  skipped  {name}: {reason}")
    if source.banner:
        print_banner(source.banner)
    return 0


if __name__ == "__main__":
    from hkdviz.errors import run_guarded
    sys.exit(run_guarded("hkdviz demo", main))
