"""Pick the steps_scale that fills a time budget, from throughput measured on this machine.

    python scripts/plan_scale.py --bench bench_train.json --seconds 330 [--fixed 60] [--preset default] [--set K=V ...]

Reads the rates that benchmarks/bench_train.py wrote (--json) and the training config (preset and
--set overrides as for `hkdviz train all`), prints the chosen scale on stdout and the estimate per
stage on stderr. scripts/gpu_session.sh uses it so that a GPU call trains as long a run as fits its
limit instead of a guessed one. On an H200 bench_train's rates read below a real run's (measured:
docs/benchmarks.md), so the estimate errs on the safe side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hkdviz.train.presets import PresetError, resolve_training_config, steps_scale_for_budget  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="bench_train.py --json output")
    parser.add_argument("--seconds", type=float, required=True, help="time budget for the whole `train all` run")
    parser.add_argument("--fixed", type=float, default=60.0, help="seconds that do not scale (rendering, evaluation)")
    parser.add_argument("--maximum", type=float, default=16.0, help="largest scale to pick")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        bench = json.loads(Path(args.bench).read_text())
        rates = {"teacher_images_per_second": bench["teacher"]["images_per_second"],
                 "trajectories_per_second": bench["trajectories"]["images_per_second"],
                 "hkd_samples_per_second": bench["hkd"]["samples_per_second"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(f"cannot read the rates from {args.bench}: {error}")
    try:
        config = resolve_training_config(args.preset, overrides=args.overrides)
        scale, estimate = steps_scale_for_budget(config, rates, args.seconds, args.fixed, maximum=args.maximum)
    except PresetError as error:
        parser.error(str(error))
    stages = ", ".join(f"{name} {value:.0f} s" for name, value in estimate.items())
    print(f"steps_scale {scale:g} fits {args.seconds:.0f} s: {stages} (rates: "
          + ", ".join(f"{name} {value:.0f}" for name, value in rates.items()) + ")", file=sys.stderr)
    print(f"{scale:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
