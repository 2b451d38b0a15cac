"""`hkdviz lens TEACHER -o lens.nc`: fit linear dynamics to a teacher's own U-Net features (see lens.py).

TEACHER is a shipped name ("default" -> checkpoints/default/teacher/), a teacher checkpoint directory
or an NVlabs/edm network pickle (.pkl, read without executing anything from it). With --hkd the lens
is fitted in that HKD's Koopman time and its spectrum is compared with the HKD's (printed, and
stored in the output's attrs as JSON under `comparison`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hkdviz lens", description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher", nargs="?", default="default", help="shipped name, teacher directory or EDM .pkl")
    parser.add_argument("-o", "--output", required=True, help="output .nc file")
    parser.add_argument("--seeds", default="64", help="training trajectories: a count (64) or seeds ('0-63,100')")
    parser.add_argument("--held-out", default=None,
                        help="held-out trajectories: a count n (the n seeds after the largest training seed; default "
                             "16), seeds ('100-115'), or 'none'")
    parser.add_argument("--steps", type=int, default=18, help="Karras grid steps of the PF-ODE (18 = 35 NFE)")
    parser.add_argument("--time", default=None, choices=["sigma", "log_sigma", "karras"],
                        help="Koopman time of the fit (default: the --hkd model's, else sigma)")
    parser.add_argument("--rank", type=int, default=128, help="largest generator fitted in full (0 = all channels)")
    parser.add_argument("--hkd", default=None, help="HKD checkpoint (name or directory) to compare the spectrum with")
    parser.add_argument("--batch-size", type=int, default=16, help="trajectories per batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", default="1",
                        help="torch CPU threads ('auto' leaves torch's default; on a shared CPU 1 is fastest here)")
    return parser


def _seeds(text: str) -> list[int]:
    from hkdviz.cli import parse_seeds
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise argparse.ArgumentTypeError(f"--seeds count must be positive, got {count}")
        return list(range(count))
    return parse_seeds(text)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        seeds = _seeds(args.seeds)
        held_out = None
        if args.held_out is not None:
            text = args.held_out.strip().lower()
            if text == "none":
                held_out = []
            elif text.isdigit():
                held_out = [max(seeds) + 1 + index for index in range(int(text))]
            else:
                held_out = _seeds(text)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.threads != "auto":
        try:
            threads = int(args.threads)
        except ValueError:
            threads = 0
        if threads < 1:
            parser.error(f"--threads must be 'auto' or a positive integer, got {args.threads!r}")

    import torch

    import hkdviz
    from hkdviz.checkpoint import CheckpointError
    from hkdviz.teacher.edm_import import EDMImportError
    from hkdviz.teacher.teacher import load_teacher

    from .lens import compare_spectra, lens, lens_summary
    from .storage import save_dataset

    if args.threads != "auto":
        torch.set_num_threads(threads)
    try:
        teacher = load_teacher(args.teacher, device=args.device)
        model = hkdviz.load(args.hkd, device=args.device) if args.hkd else None
        kind = args.time or (model.koopman_time_kind if model is not None else "sigma")
        start = time.perf_counter()
        ds = lens(teacher, seeds=seeds, held_out_seeds=held_out, num_steps=args.steps, time=kind,
                  rank=None if args.rank == 0 else args.rank, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        summary = lens_summary(ds)
        print(f"lens of {teacher!r}: {len(seeds)} trajectories, {args.steps} steps, Koopman time {kind}, "
              f"{seconds:.1f} s")
        print(f"{'level':<16}{'rank':>6}{'fit':>9}{'held out':>10}{'G = 0':>9}   (median relative one-step error)")
        for row in summary["levels"]:
            print(f"{row['name']:<16}{row['rank']:>6}{row['fit_residual']:>9.4f}{row['held_out_error']:>10.4f}"
                  f"{row['constant_residual']:>9.4f}")
        if model is not None:
            comparison = compare_spectra(ds, hkdviz.spectrum(model, progress=False))
            print(f"\nvs HKD {args.hkd} (1-D Wasserstein, per unit of {kind}):")
            print(f"{'level':<16}{'alpha':>10}{'|beta|':>10}")
            for name, alpha, beta in zip(comparison["level_name"].values, comparison["wasserstein_alpha"].values,
                                         comparison["wasserstein_abs_beta"].values):
                print(f"{str(name):<16}{alpha:>10.4f}{beta:>10.4f}")
            ds.attrs["comparison"] = json.dumps(
                {str(name): {"wasserstein_alpha": float(alpha), "wasserstein_abs_beta": float(beta)}
                 for name, alpha, beta in zip(comparison["level_name"].values,
                                              comparison["wasserstein_alpha"].values,
                                              comparison["wasserstein_abs_beta"].values)})
            ds.attrs["hkd_checkpoint_sha256"] = model.checkpoint_sha256 or "untrained"
        path = save_dataset(ds, args.output)
        print(f"wrote {path}")
        return 0
    except (CheckpointError, EDMImportError, ValueError, TypeError, RuntimeError, OSError) as error:
        print(f"hkdviz lens: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
