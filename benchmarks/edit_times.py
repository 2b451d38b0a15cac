"""Editing over edit times: at which sigma does the frequency-aware edit meet the editing target?

    python benchmarks/edit_times.py default
    python benchmarks/edit_times.py runs/a/checkpoint runs/b/checkpoint --seeds 5000-5031 --reference sample:7000

For every checkpoint and every interior point of EDM's Karras grid (19 points by default, so sigma 58.7
down to 0.007), `editing_report` at ratio 0.9: HP = the frequency-aware edit's high-pass correlation with
the reference divided by the all-band baseline's, LP = its low-pass MSE divided by the baseline's (means
over the seeds, inside the region). A time *meets the target* when HP >= 0.5 and LP <= 0.1 (the editing
target of docs/screening.md, Study E). With several checkpoints it also prints, per time, the smallest HP
and the largest LP over them, and the time the Study E rule picks. It also prints each checkpoint's
band-alias reading (bands.describe_aliases) and the three thirds' high-frequency shares on these seeds
(edit_metrics.measure_band_aliases).
Nothing is timed.
"""
from __future__ import annotations

import argparse
import sys

import torch

import hkdviz
from hkdviz.analysis.bands import describe_aliases
from hkdviz.checkpoint import CheckpointError
from hkdviz.analysis.edit_metrics import editing_report, measure_band_aliases
from hkdviz.cli import parse_seeds
from hkdviz.model.hkd import karras_sigmas

if __package__:  # python -m benchmarks.edit_times, or imported as benchmarks.edit_times
    from .bench_editing import load_reference
else:  # python benchmarks/edit_times.py: Python puts this file's directory first on sys.path
    from bench_editing import load_reference

HP_TARGET, LP_TARGET = 0.5, 0.1


def ratios_over_times(model, seeds, reference, times, band, region) -> list[tuple[float, float, float]]:
    """(time, HP, LP) per edit time: aware / baseline at ratio 0.9, sample means."""
    rows = []
    for time in times:
        report = editing_report(model, seeds, reference, ratios=(0.0, 0.9), band=band, region=region, time=time)
        correlation = report["highpass_correlation"].sel(ratio=0.9)
        mse = report["lowpass_mse"].sel(ratio=0.9)
        rows.append((time, float(correlation.sel(variant="aware") / correlation.sel(variant="agnostic")),
                     float(mse.sel(variant="aware") / mse.sel(variant="agnostic"))))
    return rows


def pick_time(tables: list[list[tuple[float, float, float]]]) -> tuple[float | None, float | None]:
    """Study E's rule over checkpoints: (candidate, best). The candidate is, among the times that meet the
    target on every checkpoint, the one with the largest smallest-HP (None if no time does); `best` is the
    time with the largest smallest-HP among those whose LP <= LP_TARGET on every checkpoint (None if none)."""
    times = [row[0] for row in tables[0]]
    smallest_hp = [min(table[index][1] for table in tables) for index in range(len(times))]
    largest_lp = [max(table[index][2] for table in tables) for index in range(len(times))]
    meeting = [index for index in range(len(times)) if smallest_hp[index] >= HP_TARGET and largest_lp[index] <= LP_TARGET]
    quiet = [index for index in range(len(times)) if largest_lp[index] <= LP_TARGET]
    candidate = times[max(meeting, key=lambda index: smallest_hp[index])] if meeting else None
    best = times[max(quiet, key=lambda index: smallest_hp[index])] if quiet else None
    return candidate, best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="shipped names or checkpoint directories")
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(5000, 5032)), help="e.g. 5000-5031 (default)")
    parser.add_argument("--reference", default="sample:7000", help="as bench_editing.py (default sample:7000)")
    parser.add_argument("--band", default="high")
    parser.add_argument("--region", default="lower-left")
    parser.add_argument("--grid", type=int, default=19, help="Karras grid points; its interior points are the times")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.grid < 3:
        parser.error(f"--grid must be >= 3 (the interior of the grid are the times), got {args.grid}")
    torch.set_num_threads(args.threads)
    tables = []
    try:  # every checkpoint first: a wrong name is a usage error before any work
        models = {name: hkdviz.load(name, device="cpu") for name in args.checkpoints}
    except (CheckpointError, ValueError) as error:
        parser.error(str(error))
    for name, model in models.items():
        times = [float(value) for value in karras_sigmas(args.grid, model.sigma_min, model.sigma_max)[1:-1]]
        reference = load_reference(args.reference, model)
        measured = measure_band_aliases(model, args.seeds)  # what the training loop would record
        print(f"{name}: reads {describe_aliases(model)}; on these seeds high-frequency share "
              + ("n/a (no block levels)" if measured is None else
                 ", ".join(f"{third} {share:.3f}" for third, share in measured["share"].items())), flush=True)
        table = ratios_over_times(model, args.seeds, reference, times, args.band, args.region)
        tables.append(table)
        print(f"  {'sigma':>8}  {'HP':>5}  {'LP':>6}  meets")
        for time, hp, lp in table:
            print(f"  {time:8.3f}  {hp:5.2f}  {lp:6.3f}  {'yes' if hp >= HP_TARGET and lp <= LP_TARGET else ''}", flush=True)
    if len(tables) > 1:
        if len({tuple(row[0] for row in table) for table in tables}) > 1:
            print("the checkpoints' time grids differ (other sigma_min / sigma_max): no rule applied")
            return 0
        print(f"\nover {len(tables)} checkpoints: smallest HP, largest LP")
        for index, (time, _, _) in enumerate(tables[0]):
            hp = min(table[index][1] for table in tables)
            lp = max(table[index][2] for table in tables)
            print(f"  {time:8.3f}  {hp:5.2f}  {lp:6.3f}")
    candidate, best = pick_time(tables)
    print(f"\ncandidate (meets HP >= {HP_TARGET} and LP <= {LP_TARGET} on every checkpoint, largest smallest HP): "
          f"{'none' if candidate is None else f'sigma {candidate:.3f}'}; best with LP <= {LP_TARGET} everywhere: "
          f"{'none' if best is None else f'sigma {best:.3f}'}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
