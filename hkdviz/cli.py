"""`hkdviz` command line: demo | train | eval | figures | info | spectrum | trajectory.

The core commands live here; the others are owned by their packages and dispatched lazily, so
`hkdviz info` does not import the training stack. Every failure is one line on stderr with exit code 2
(bad usage) or 1 (a failed run); `--debug` or HKDVIZ_DEBUG=1 adds the traceback (hkdviz.errors).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from .errors import OneLineParser, UsageError, check_device_option, run_guarded

# More seeds than this on one command line is almost surely a typo (0-999999999); it is refused before
# any list is built. Larger jobs call the Python API in pieces.
MAX_SEEDS = 100_000

# command -> (module, help). Each module exposes main(argv) -> int.
DISPATCHED = {
    "demo": ("hkdviz.report.demo", "the main job: spectra, trajectories, figures and an HTML report for a checkpoint"),
    "train": ("hkdviz.train.cli", "train a teacher, make trajectories, train HKD (see `hkdviz train --help`)"),
    "eval": ("hkdviz.evaluation.evaluate", "quality of HKD at 1 NFE against its teacher at 35/15/5/1 NFE"),
    "figures": ("hkdviz.report.figures", "regenerate the paper figures (PDF + PNG) from saved xarray data"),
    "teacher": ("hkdviz.teacher.cli", "import an NVlabs/edm network pickle as a teacher checkpoint (any EDM kind)"),
    "lens": ("hkdviz.analysis.lens_cli", "fit linear dynamics to a teacher's own U-Net features (a Koopman lens)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hkdviz", description="See inside Hierarchical Koopman Diffusion models.",
                           epilog="Add --debug (or set HKDVIZ_DEBUG=1) to see the traceback of a failure.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in DISPATCHED.items():
        commands.add_parser(name, help=help_text, add_help=False)

    info = commands.add_parser("info", help="describe a checkpoint: config, levels, parameters, metrics")
    info.add_argument("checkpoint", nargs="?", default="default", help="shipped name or checkpoint directory")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")

    spectrum = commands.add_parser("spectrum", help="write every level's Koopman spectrum to a netCDF file")
    spectrum.add_argument("checkpoint", nargs="?", default="default")
    spectrum.add_argument("-o", "--output", required=True, help="output .nc file")
    spectrum.add_argument("--step", type=float, default=1.0, help="time step for discrete eigenvalue magnitudes")
    spectrum.add_argument("--device", default="auto")

    trajectory = commands.add_parser("trajectory", help="write decoded Koopman trajectories to a netCDF file")
    trajectory.add_argument("checkpoint", nargs="?", default="default")
    trajectory.add_argument("-o", "--output", required=True, help="output .nc file")
    trajectory.add_argument("--seeds", default="0-7", help="seeds: '0-7', '1,5,9' or a mix (default 0-7)")
    trajectory.add_argument("--times", type=int, default=16, help="number of time points on the Karras grid")
    trajectory.add_argument("--latents", action="store_true", help="also store every level's latent state")
    trajectory.add_argument("--device", default="auto")
    return parser


def parse_seeds(text: str, limit: int = MAX_SEEDS) -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8]. Seeds lie in [0, 2**63); more than `limit` are refused before any
    list is built."""
    parts = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                first, last = (int(value) for value in part.split("-", 1))
                if last < first:
                    raise ValueError
                parts.append(range(first, last + 1))
            elif part:
                parts.append(range(int(part), int(part) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read seeds {text!r}: use e.g. '0-7' or '1,5,9'") from None
    count = sum(len(part) for part in parts)
    if not count:
        raise argparse.ArgumentTypeError("no seeds given")
    if count > limit:
        raise argparse.ArgumentTypeError(f"seeds {text!r} name {count:,} seeds; at most {limit:,} per command")
    if any(part.start < 0 or part.stop > 2 ** 63 for part in parts):
        raise argparse.ArgumentTypeError(f"seeds {text!r}: every seed must lie in [0, 2**63)")
    return [seed for part in parts for seed in part]


def command_info(args) -> int:
    import hkdviz
    model = hkdviz.load(args.checkpoint, device="cpu")
    summary = {
        "checkpoint": model.checkpoint_path,
        "sha256": model.checkpoint_sha256,
        "preset": model.config["preset"],
        "parameters": model.num_parameters(),
        "image_shape": list(model.image_shape),
        "koopman": model.config["koopman"],
        "diffusion": model.config["diffusion"],
        "levels": [vars(level) for level in model.levels],
        "meta": model.meta,
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=repr))
        return 0
    print(f"checkpoint  {summary['checkpoint']}")
    print(f"sha256      {summary['sha256']}")
    print(f"preset      {summary['preset']} ({model.config['unet']['model_channels']} channels)   "
          f"parameters {summary['parameters']:,}   image {tuple(model.image_shape)}")
    print(f"koopman     {summary['koopman']}")
    print(f"trained     step {model.meta.get('step')!s:.40} on {model.meta.get('dataset')!s:.200}")
    from .analysis.bands import describe_aliases
    print(f"bands       {describe_aliases(model)}")
    print(f"{'level':>5}  {'name':<16} {'channels':>8} {'size':>7}  operator")
    for level in model.levels:
        print(f"{level.index:>5}  {level.name:<16} {level.channels:>8} {level.height:>3}x{level.width:<3}  {level.operator}")
    metrics = model.meta.get("metrics") or {}
    if not isinstance(metrics, dict):  # meta.json is hand-editable: show what is there, do not crash on it
        print(f"metrics     (not a mapping in meta.json) {json.dumps(metrics, default=repr)[:500]}")
        return 0
    metrics = dict(metrics)
    evaluation = metrics.pop("evaluation", None)
    if isinstance(evaluation, dict) and evaluation.get("rows"):
        try:
            print_evaluation_summary(evaluation)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
            print(f"evaluation  (unreadable in meta.json: {type(error).__name__}: {error})")
    elif evaluation is not None:
        metrics["evaluation"] = evaluation
    if metrics:
        print("metrics     " + json.dumps(metrics, default=repr))
    return 0


def print_evaluation_summary(evaluation: dict) -> None:
    """The evaluation recorded in a checkpoint's meta (`hkdviz eval` / `train all`), main columns only."""
    from hkdviz.evaluation.evaluate import COLUMNS, format_rows
    seeds = evaluation.get("seeds") or {}
    where = f", seeds {seeds['first']}..{seeds['last']}" if "first" in seeds and "last" in seeds else ""
    print(f"evaluation  {evaluation.get('num_samples')} samples per method{where} (--json: every measure)")
    columns = [column for column in COLUMNS if column[1] in ("method", "nfe", "kid_x1e3", "local_fd", "swd")]
    print(format_rows(evaluation["rows"], columns))


def command_spectrum(args) -> int:
    import hkdviz
    from hkdviz.analysis.storage import save_dataset
    model = hkdviz.load(args.checkpoint, device=args.device)
    dataset = hkdviz.spectrum(model, step=args.step)
    save_dataset(dataset, args.output)
    print(f"wrote {dataset.sizes['mode']:,} eigenvalue pairs of {len(model.levels)} levels to {args.output}")
    return 0


def command_trajectory(args) -> int:
    import hkdviz
    from hkdviz.analysis.storage import save_dataset
    model = hkdviz.load(args.checkpoint, device=args.device)
    dataset = hkdviz.trajectory(model, seeds=args.seeds, times=args.times, latents=args.latents)
    save_dataset(dataset, args.output)
    print(f"wrote {len(args.seeds)} trajectories x {args.times} times to {args.output}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DISPATCHED:
        # run_guarded takes --debug out of argv and tells the command through hkdviz.errors.debugging().
        module = importlib.import_module(DISPATCHED[argv[0]][0])
        return run_guarded(f"hkdviz {argv[0]}", module.main, argv[1:])
    prog = f"hkdviz {argv[0]}" if argv and argv[0] in ("info", "spectrum", "trajectory") else "hkdviz"
    return run_guarded(prog, _run_core, argv)


def _run_core(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "trajectory":
        try:
            args.seeds = parse_seeds(args.seeds)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    if hasattr(args, "device"):
        check_device_option(args.device)
    if hasattr(args, "output") and not args.output.strip():
        raise UsageError("-o/--output is empty")
    handlers = {"info": command_info, "spectrum": command_spectrum, "trajectory": command_trajectory}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
