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

import numpy as np

from hkdviz.atomic import write_text

if __package__:  # python -m benchmarks.pair_quality, or imported as benchmarks.pair_quality
    from .bench_quality import MEASURES, _standard_error, label
else:  # python benchmarks/pair_quality.py: Python puts this file's directory first on sys.path
    from bench_quality import MEASURES, _standard_error, label


def load_record(path: str) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"pair_quality.py: cannot read {path}: {error}") from None
    if not isinstance(record, dict) or not record.get("blocks"):
        raise SystemExit(f"pair_quality.py: {path} is not a bench_quality.py --json record (no blocks)")
    return record


def paired_differences(first: dict, second: dict) -> dict:
    """{method label: {measure: {mean, standard_error, first_lower_in, blocks}}} of first - second, over
    the blocks the two records share (matched by first seed)."""
    if first.get("num_samples") != second.get("num_samples"):
        raise ValueError(f"the records have different block sizes ({first.get('num_samples')} vs "
                         f"{second.get('num_samples')} seeds): their blocks cannot be paired")
    second_blocks = {block["first_seed"]: block for block in second["blocks"]}
    pairs = [(block, second_blocks[block["first_seed"]]) for block in first["blocks"]
             if block["first_seed"] in second_blocks]
    if len(pairs) < 2:
        raise ValueError(f"the records share {len(pairs)} block(s) (matched by first seed); pairing needs 2 or more")
    result = {}
    for row in pairs[0][0]["rows"]:
        name = label(row)
        entry = {}
        for key, _, _ in MEASURES:
            values = []
            for block_a, block_b in pairs:
                row_a = next((r for r in block_a["rows"] if label(r) == name), None)
                row_b = next((r for r in block_b["rows"] if label(r) == name), None)
                if row_a is None or row_b is None or row_a[key] is None or row_b[key] is None:
                    break
                values.append(row_a[key] - row_b[key])
            else:
                difference = np.array(values, dtype=np.float64)
                entry[key] = {"mean": float(difference.mean()), "standard_error": _standard_error(difference),
                              "first_lower_in": int((difference < 0).sum()), "blocks": len(difference)}
        if entry:
            result[name] = entry
    return result


def format_differences(differences: dict, first_name: str, second_name: str) -> str:
    lines = ["paired difference A - B (negative: A better), mean +- standard error [blocks A lower]",
             f"A = {first_name}", f"B = {second_name}"]
    width = max(len(name) for name in differences) + 2
    lines.append("method".ljust(width) + "".join(title.rjust(30) for _, title, _ in MEASURES))
    for name, entry in differences.items():
        cells = [f"{pattern.format(entry[key]['mean'])} +- {pattern.format(entry[key]['standard_error'])} "
                 f"[{entry[key]['first_lower_in']}/{entry[key]['blocks']}]" if key in entry else "-"
                 for key, _, pattern in MEASURES]
        lines.append(name.ljust(width) + "".join(cell.rjust(30) for cell in cells))
    return "\n".join(lines)


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
