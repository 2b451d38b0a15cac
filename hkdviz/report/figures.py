"""`hkdviz figures`: publication-ready PDF + PNG figures, drawn from saved xarray (netCDF) data.

    hkdviz figures --checkpoint default --out DIR            # compute DIR/data/*.nc, then draw
    hkdviz figures --data DIR/data --out DIR                 # draw from existing netCDF files only

From Python: hkdviz.report.make_figures(checkpoint, out=..., data=..., only=[...]), which this command runs.

Files written into --out (each as .pdf and .png; sizes for two-column papers: 3.3 in / 6.9 in):

    figure stem              data file              content
    spectrum_scatter         spectrum.nc            alpha vs beta, one panel per level
    spectrum_eigenvalues     spectrum.nc            discrete eigenvalues exp(lambda dt) and the unit circle
    spectrum_histograms_alpha, spectrum_histograms_beta   spectrum.nc   per-level histograms
    spectrum_quantiles       spectrum.nc            5/25/50/75/95 % of alpha and beta per level
    mode_maps_alpha, mode_maps_beta                 spectrum.nc   per-level (y, x) maps, mean over pairs
    trajectory_filmstrip     trajectory.nc          decoded Koopman state over sigma (+ teacher rows)
    latent_energy            trajectory.nc          mean square latent per level over sigma
    band_decodes             band_decodes.nc        paper Fig. 4: rows = samples, columns = smallest /
                                                    intermediate / largest real-part band + full
    band_power_spectra       band_spectra.nc        radial power spectrum of each band's decode
    cumulative_effect        cumulative_effect.nc   share of image and latent energy per band over sigma
    editing_sweep            editing_sweep.nc       paper Fig. 5: frequency-aware vs agnostic, 10-90 %
    editing_metrics          editing_metrics.nc     low-pass MSE / high-pass correlation vs ratio
    zero_shot_editing        zero_shot.nc           paper Fig. 6: inpainting and colorization
    samples_nfe              samples.nc             one-step HKD vs teacher at 35 / 5 / 1 NFE
    faithfulness             faithfulness.nc        Koopman path vs the encoder's own latents of teacher
                                                    states, per level; one-step error from each state
    lens                     lens.nc                the Koopman lens: how linear the teacher's own features
                                                    are, per level (one step and the path from T)

plus figures.json (what was drawn from which file, what was skipped and why). A figure whose data
file is missing is skipped with a message; figures from an untrained model carry a red note. A data
file that cannot be read (corrupt, truncated, not netCDF) or drawn from fails only its own figures:
each is named in a warning on stderr, the others are drawn, and the command exits with code 1.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_json
from ..inputs import InputFileError, read_json_file
from .datasets import FILES, QUICK
from .source import cpu_threads, parse_threads


@dataclass(frozen=True)
class FigureSpec:
    stem: str
    dataset: str
    caption: str
    paper: str = ""          # the paper figure it reproduces


def _paper():
    from hkdviz.plot import paper
    return paper


# stem -> (spec, builder(dataset) -> matplotlib Figure)
def _builders():
    paper = _paper()
    return {
        "spectrum_scatter": lambda ds: paper.spectrum_scatter(ds),
        "spectrum_eigenvalues": lambda ds: paper.eigenvalue_plane(ds),
        "spectrum_histograms_alpha": lambda ds: paper.spectrum_histograms(ds, "alpha"),
        "spectrum_histograms_beta": lambda ds: paper.spectrum_histograms(ds, "beta"),
        "spectrum_quantiles": lambda ds: paper.spectrum_quantiles(ds),
        "mode_maps_alpha": lambda ds: paper.mode_maps(ds, "alpha"),
        "mode_maps_beta": lambda ds: paper.mode_maps(ds, "beta"),
        "trajectory_filmstrip": lambda ds: paper.trajectory_filmstrip(ds),
        "latent_energy": lambda ds: paper.energy_curves(ds),
        "band_decodes": lambda ds: paper.band_grid(ds),
        "band_power_spectra": lambda ds: paper.band_power_spectra(ds),
        "cumulative_effect": lambda ds: paper.cumulative_effect(ds, width="double"),
        "editing_sweep": lambda ds: paper.editing_grid(ds),
        "editing_metrics": lambda ds: paper.edit_curves(ds, width="double"),
        "zero_shot_editing": lambda ds: paper.inpainting_grid(ds),
        "samples_nfe": lambda ds: paper.method_grid(ds),
        "faithfulness": lambda ds: paper.faithfulness_curves(ds),
        "lens": lambda ds: paper.lens_curves(ds),
    }


FIGURES = [
    FigureSpec("spectrum_scatter", "spectrum", "Koopman spectrum per level: real part alpha (growth/decay) against "
               "imaginary part beta (angular frequency) of every 2x2 block."),
    FigureSpec("spectrum_eigenvalues", "spectrum", "Discrete eigenvalues exp((alpha +- i beta) dt) on the complex "
               "plane with the unit circle (inside = decaying over one step)."),
    FigureSpec("spectrum_histograms_alpha", "spectrum", "Histogram of alpha per level."),
    FigureSpec("spectrum_histograms_beta", "spectrum", "Histogram of beta per level."),
    FigureSpec("spectrum_quantiles", "spectrum", "alpha and beta per level: 5-95 % range (thin), interquartile "
               "range (thick), median (dot)."),
    FigureSpec("mode_maps_alpha", "spectrum", "Mean alpha over pairs at every position of every level."),
    FigureSpec("mode_maps_beta", "spectrum", "Mean |beta| over pairs at every position of every level."),
    FigureSpec("trajectory_filmstrip", "trajectory", "Decoded Koopman state D(z_t) along the trajectory, "
               "sigma from T to eps (teacher PF-ODE states below each row when a teacher is available)."),
    FigureSpec("latent_energy", "trajectory", "Mean square latent per level along the trajectory."),
    FigureSpec("band_decodes", "band_decodes", "Spectral masking: each level's eigenvalue pairs sorted by real "
               "part; decoding only the smallest / intermediate / largest third, and all of them (full).",
               paper="Fig. 4"),
    FigureSpec("band_power_spectra", "band_spectra", "Radial power spectrum of each band's decode; the legend "
               "gives each band's share of power above 1/8 cycle per pixel."),
    FigureSpec("cumulative_effect", "cumulative_effect", "Cumulative effect of the bands over time: share of the "
               "decoded image ||D(M_g z_t) - D(0)|| and of the latent energy carried by each band."),
    FigureSpec("editing_sweep", "editing_sweep", "Frequency-aware editing (high-frequency band of the reference "
               "injected into the lower-left half at t_mid) vs the frequency-agnostic baseline (all bands), "
               "at ratios 10/20/50/80/90 % (0 % = the unedited sample).", paper="Fig. 5"),
    FigureSpec("editing_metrics", "editing_metrics", "Inside the edited region: low-pass MSE to the original "
               "(kept global structure) and high-pass correlation with the reference (transferred detail)."),
    FigureSpec("zero_shot_editing", "zero_shot", "Zero-shot inpainting of a centred square and colorization with "
               "the one-step map (Consistency Models' Algorithm 4).", paper="Fig. 6"),
    FigureSpec("samples_nfe", "samples", "One-step HKD samples against the teacher's Heun samples at 35 / 5 / 1 "
               "NFE from the same noise."),
    FigureSpec("faithfulness", "faithfulness", "Faithfulness of the Koopman dynamics to the teacher's PF-ODE: per "
               "level, the relative error of the linear latent path exp((s(t) - s(T)) A) E(x_T, T) to the encoder's "
               "own latents E(x_t, t) of the teacher's states (solid) against a constant latent (dashed); and the "
               "one-step map's RMS to the teacher's end from each state."),
    FigureSpec("lens", "lens", "The Koopman lens of the teacher: one linear generator per U-Net level fitted to the "
               "teacher's own features along its PF-ODE, in the model's Koopman time; relative error of one fitted "
               "step and of the whole linear path from T (solid) against constant features (dashed)."),
]
SPECS = {spec.stem: spec for spec in FIGURES}


@dataclass
class FigureResult:
    stem: str
    dataset: str
    files: list = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None
    caption: str = ""
    paper: str = ""
    failed: bool = False     # skipped because its data could not be read or drawn (not merely absent)


def is_untrained(ds) -> bool:
    """Whether a dataset's provenance says it came from an untrained model."""
    meta = ds.attrs.get("checkpoint_meta", "")
    return ds.attrs.get("checkpoint_sha256") == "untrained" or "untrained" in str(meta)


def render_figures(data_dir, out_dir, formats=("pdf", "png"), only=None, progress=None) -> list[FigureResult]:
    """Draw every figure (or those in `only`) from the netCDF files in data_dir into out_dir."""
    from hkdviz.analysis.storage import StorageError, open_dataset
    from hkdviz.plot.paper import save_figure
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    specs = [spec for spec in FIGURES if only is None or spec.stem in only]
    builders = _builders()
    cache, results = {}, []
    for spec in specs:
        start = time.perf_counter()
        result = FigureResult(spec.stem, FILES[spec.dataset], caption=spec.caption, paper=spec.paper)
        path = data_dir / FILES[spec.dataset]
        if spec.dataset not in cache:
            try:
                cache[spec.dataset] = open_dataset(path) if path.exists() else None
            except (StorageError, OSError, ValueError) as error:  # one bad file fails only its own figures
                cache[spec.dataset] = error
        ds = cache[spec.dataset]
        if ds is None:
            result.skipped = f"no data file {path}"
        elif isinstance(ds, Exception):
            result.skipped = f"cannot read {path}: {' '.join(str(ds).split())}"
            result.failed = True
        else:
            try:
                figure = builders[spec.stem](ds)
                if is_untrained(ds):
                    figure.text(0.0, 0.0, "untrained model", color="#D55E00", fontsize=5, ha="left", va="bottom")
                result.files = [str(file) for file in save_figure(figure, out_dir / spec.stem, formats)]
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
                result.skipped = f"cannot draw from {path}: {type(error).__name__}: {error}"
                result.failed = True
        result.seconds = time.perf_counter() - start
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def write_manifest(path, results, datasets=None, source=None) -> Path:
    """figures.json: every figure (files, data file, caption, or why it was skipped), the datasets computed
    and the model. Entries of an earlier manifest for figures not redrawn now (--only) are kept."""
    path = Path(path)
    figures = [asdict(result) for result in results]
    if path.exists():
        try:
            earlier = read_json_file(path, what="figure manifest")
        except InputFileError:  # unreadable: rewritten from the figures drawn now
            earlier = {}
        if not isinstance(earlier, dict):
            earlier = {}
        drawn = {result.stem for result in results}
        kept = [entry for entry in earlier.get("figures", []) if entry.get("stem") not in drawn]
        figures = sorted(kept + figures, key=lambda entry: list(SPECS).index(entry["stem"])
                         if entry.get("stem") in SPECS else len(SPECS))
    manifest = {
        "figures": figures,
        "datasets": [{"name": outcome.name, "file": str(outcome.path) if outcome.path else None,
                      "seconds": round(outcome.seconds, 2), "skipped": outcome.skipped} for outcome in datasets or []],
        "model": None if source is None else {"description": source.description, "trained": source.trained,
                                               "banner": source.banner, "teacher": source.teacher_description},
    }
    write_json(path, manifest)
    return path


def compute_all(source, data_dir, names=None, settings=None, on_done=None) -> list:
    """Compute and save the datasets `names` (default: all) for a ModelSource."""
    from .datasets import STEPS, compute_dataset
    outcomes = []
    for name in names or list(STEPS):
        outcome = compute_dataset(name, source.model, data_dir, teacher=source.teacher, settings=settings)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


FORMATS = ("pdf", "png", "svg", "eps", "jpg", "tif")


@dataclass
class FigureReport:
    """What `make_figures` did: every figure it drew or skipped, the data it computed, the model."""
    figures: list                     # FigureResult per figure asked for, in FIGURES order
    datasets: list                    # DatasetOutcome per netCDF file computed ([] when drawn from `data`)
    data_dir: Path                    # where the netCDF files are
    manifest: Path                    # out/figures.json
    model: object | None = None       # the ModelSource the data came from (None when drawn from `data`)

    @property
    def written(self) -> list:
        """The figures that were drawn (their files exist)."""
        return [result for result in self.figures if result.files]

    @property
    def failed(self) -> list:
        """The figures whose data file could not be read or drawn from (not those merely without data)."""
        return [result for result in self.figures if result.failed]

    @property
    def ok(self) -> bool:
        """At least one figure drawn and none failed: what `hkdviz figures` exits 0 for."""
        return bool(self.written) and not self.failed


def _checked_names(values, known, what) -> list | None:
    """`values` (None, a comma-separated string or a list) as a list, every item one of `known`."""
    from hkdviz.errors import UsageError
    if values is None:
        return None
    items = [item.strip() for item in values.split(",")] if isinstance(values, str) else [str(item) for item in values]
    items = [item for item in items if item]
    unknown = [item for item in items if item not in known]
    if unknown or not items:
        raise UsageError(f"unknown {what} {unknown or values!r}; choose from {', '.join(known)}")
    return items


def make_figures(checkpoint="default", out="figures", data=None, only=None, quick=False, device="auto",
                 teacher=None, formats=("pdf", "png"), progress=True, threads="auto", data_out=None) -> FigureReport:
    """Compute the netCDF data from a checkpoint (or take it from `data`) and draw the paper figures into
    `out` with out/figures.json; what `hkdviz figures` runs.

    checkpoint: a shipped name or a checkpoint directory ("default" falls back to an untrained stand-in
    with a banner when the shipped model is missing); data: draw from the netCDF files in this directory
    instead (no model is loaded); only: figure stems (FIGURES) to draw, default all; quick: fewer seeds
    and time points; teacher: teacher checkpoint for the NFE rows (default: the checkpoint's sibling);
    formats: file types per figure; progress: print one line per data file and figure; threads: torch
    CPU threads while computing ("auto": 1 for small models on CPU). Whatever `progress` says, the
    untrained-model banner and a warning per failed figure go to stderr (the report holds both too:
    report.model.banner, report.failed). data_out: where the netCDF files computed from the checkpoint
    go (default out/data; `hkdviz demo` keeps them beside its figures folder).

    Raises UsageError for bad arguments (unknown stem or format, a `data` directory that is missing or
    holds none of the data files, a bad device), CheckpointError when the model cannot be loaded. A data
    file that cannot be read or drawn from does not raise: its figures are marked failed in the report.
    """
    from hkdviz.errors import UsageError, check_device_option
    only = _checked_names(only, list(SPECS), "figure")
    formats = _checked_names(formats, list(FORMATS), "format")
    out_dir = Path(out)
    say = print if progress else (lambda *args, **kwargs: None)
    source, outcomes = None, []
    if data is not None and data_out is not None:
        raise UsageError("data_out names where computed data go; with `data` nothing is computed")
    if data is not None:
        data_dir = Path(data)
        if not data_dir.is_dir():
            raise UsageError(f"data directory {data_dir} is not a directory")
        if not any((data_dir / file).exists() for file in FILES.values()):
            raise UsageError(f"{data_dir} holds none of the data files ({', '.join(FILES.values())}); "
                             f"compute them from a checkpoint (no data / no --data)")
    else:
        from .source import find_teacher, open_model, print_banner
        data_dir = out_dir / "data" if data_out is None else Path(data_out)
        check_device_option(device)
        source = find_teacher(open_model(checkpoint, device), teacher, device)
        if source.banner:  # loud even when quiet: an untrained stand-in must never pass for the model
            print_banner(source.banner)
        say(f"model: {source.description}\n{source.teacher_description}")
        needed = sorted({SPECS[stem].dataset for stem in only}) if only else None
        with cpu_threads(source.model, threads):
            outcomes = compute_all(source, data_dir, needed, QUICK if quick else None, on_done=lambda outcome: say(
                f"  data {outcome.name:<18} {'skipped: ' + outcome.skipped if outcome.skipped else outcome.path} "
                f"({outcome.seconds:.1f} s)"))

    def report(result):
        where = result.skipped and f"skipped: {result.skipped}" or ", ".join(Path(file).name for file in result.files)
        say(f"  figure {result.stem:<26} {where} ({result.seconds:.1f} s)")
        if result.failed:
            print(f"hkdviz figures: warning: {result.stem} skipped: {result.skipped}", file=sys.stderr)

    results = render_figures(data_dir, out_dir, formats, only, progress=report)
    manifest = write_manifest(out_dir / "figures.json", results, outcomes, source)
    written = [result for result in results if result.files]
    say(f"wrote {len(written)} of {len(results)} figures ({', '.join(formats)}) to {out_dir}; data in {data_dir}; "
        f"manifest {manifest}")
    if source is not None and source.banner:
        from .source import print_banner
        print_banner(source.banner)
    return FigureReport(results, outcomes, data_dir, manifest, source)


def build_parser() -> argparse.ArgumentParser:
    from hkdviz.errors import OneLineParser
    parser = OneLineParser(prog="hkdviz figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default", help="shipped name or checkpoint directory (default: default)")
    parser.add_argument("--out", default="hkdviz-figures", help="output directory (default: ./hkdviz-figures)")
    parser.add_argument("--data", default=None, help="draw from the netCDF files in this directory instead of "
                                                     "computing them (no model is loaded)")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint for the NFE comparison and the teacher "
                                                        "trajectory (default: the checkpoint's sibling, if any)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--formats", default="pdf,png", help="comma-separated: pdf, png, svg, ... (default pdf,png)")
    parser.add_argument("--only", default=None, help="comma-separated figure stems to draw (default: all)")
    parser.add_argument("--quick", action="store_true", help="compute the data from fewer seeds and time points")
    parser.add_argument("--threads", type=parse_threads, default="auto",
                        help="CPU threads for the model (default auto: 1 for small models on CPU)")
    return parser


def _parse_list(text, known, what):
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if known is not None and item not in known]
    if unknown or not items:
        raise SystemExit(f"hkdviz figures: error: unknown {what} {unknown or text!r}; choose from {', '.join(known)}")
    return items


def main(argv=None) -> int:
    """`hkdviz figures`: the arguments parsed, `make_figures` called, its outcome as an exit code (0 when
    every figure asked for was drawn, 1 when one failed or none was drawn, 2 for bad usage)."""
    from hkdviz.checkpoint import CheckpointError
    from hkdviz.errors import UsageError, describe, exit_code, print_traceback_if_debugging, split_debug
    args = build_parser().parse_args(split_debug(argv)[0])
    only = _parse_list(args.only, list(SPECS), "figure")
    formats = _parse_list(args.formats, list(FORMATS), "format")
    try:
        report = make_figures(checkpoint=args.checkpoint, out=args.out, data=args.data, only=only, quick=args.quick,
                              device=args.device, teacher=args.teacher, formats=formats, progress=True,
                              threads=args.threads)
    except (UsageError, CheckpointError, RuntimeError) as error:
        print_traceback_if_debugging()
        print(f"hkdviz figures: error: {describe(error)}", file=sys.stderr)
        return exit_code(error)
    if report.failed:
        print(f"hkdviz figures: error: {len(report.failed)} figure(s) failed "
              f"({', '.join(result.stem for result in report.failed)}); see the warnings above", file=sys.stderr)
        return 1
    return 0 if report.written else 1


if __name__ == "__main__":
    from hkdviz.errors import run_guarded
    sys.exit(run_guarded("hkdviz figures", main))
