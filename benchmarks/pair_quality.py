"""Pair two bench_quality.py records: is checkpoint A better than checkpoint B, beyond the sampling noise?

    python benchmarks/bench_quality.py --checkpoint runs/x/export/hkd --classifier default --json new.json
    python benchmarks/bench_quality.py --checkpoint default --json shipped.json
    python benchmarks/pair_quality.py new.json shipped.json

Two bench_quality runs with the same blocks (first seeds, seeds per block) and the same classifier score
every block on the same seeds against the same held-out reference, so their rows can be paired block by
block, as bench_quality pairs HKD with its teacher inside one run. For every method present in both
records (HKD 1 NFE, teacher 15 NFE, ...) this prints the paired difference A - B per measure: its
mean, standard error over blocks, and in how many blocks A was lower (negative: A better). It reads
the JSON files only; nothing is sampled or timed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hkdviz.atomic import write_text
from hkdviz.evaluation.statistics import format_differences, paired_differences


def load_record(path: str) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"pair_quality.py: cannot read {path}: {error}") from None
    if not isinstance(record, dict) or not record.get("blocks"):
        raise SystemExit(f"pair_quality.py: {path} is not a bench_quality.py --json record (no blocks)")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", metavar="A.json", help="bench_quality.py --json record of checkpoint A")
    parser.add_argument("second", metavar="B.json", help="bench_quality.py --json record of checkpoint B")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the differences")
    args = parser.parse_args(argv)
    first, second = load_record(args.first), load_record(args.second)
    if first.get("classifier") != second.get("classifier"):  # paths: the same file may be named two ways
        print(f"warning: the records name different classifiers ({first.get('classifier')} vs "
              f"{second.get('classifier')}); KID and FD pair only if it is the same one", file=sys.stderr)
    try:
        differences = paired_differences(first, second)
    except ValueError as error:
        parser.error(str(error))
    print(format_differences(differences, f"{first.get('checkpoint')} ({args.first})",
                             f"{second.get('checkpoint')} ({args.second})"))
    if args.json:
        write_text(args.json, json.dumps({"first": args.first, "second": args.second,
                                               "differences": differences}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
