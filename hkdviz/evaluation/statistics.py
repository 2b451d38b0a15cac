"""Paired block statistics: how the benchmarks compare two methods or two checkpoints.

A quality measure such as local KID is noisy and biased by the sample size, so the benchmarks score
disjoint blocks of seeds and compare methods block by block: each block's difference A - B cancels
what the block shares (the same seeds, the same reference), and the spread of those differences
gives the standard error. Records are what `hkdviz eval` writes per block ("rows": one per method,
with "method", "nfe" and the MEASURES keys); `benchmarks/bench_quality.py` and
`benchmarks/pair_quality.py` are the command lines around these functions.

    summary = summarise(blocks)                       # per method, and HKD - each teacher row
    differences = paired_differences(record_a, record_b)  # A - B per method, over the blocks both hold
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

# (record key, column title, number format)
MEASURES = (("kid_x1e3", "local KID x1e3", "{:.1f}"), ("local_fd", "local FD", "{:.2f}"), ("swd", "SWD", "{:.4f}"))


def label(row: dict) -> str:
    """"HKD 1 NFE", "teacher 15 NFE", "held-out data"."""
    return f"{row['method'].split(' (')[0]} {row['nfe']} NFE" if row["nfe"] else row["method"]


def standard_error(values: Iterable[float]) -> float:
    """The standard error of the mean, std (ddof 1) / sqrt(n); NaN below two values."""
    values = np.asarray(list(values), dtype=np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def paired_summary(differences: Iterable[float], lower_key: str = "lower_in", count_key: str = "blocks") -> dict:
    """{mean, standard_error, lower_key: how many differences are negative, count_key: how many}."""
    differences = np.asarray(list(differences), dtype=np.float64)
    return {"mean": float(differences.mean()), "standard_error": standard_error(differences),
            lower_key: int((differences < 0).sum()), count_key: len(differences)}


def summarise(blocks: list[dict]) -> dict:
    """Per method: mean and standard error over blocks; per teacher row: the paired difference HKD - it
    ("hkd_lower_in": blocks where HKD is lower). A measure missing (NaN) in any block is left out."""
    first_rows = blocks[0]["rows"]
    labels = [label(row) for row in first_rows]
    summary = {"methods": {}, "hkd_minus": {}}
    for index in range(len(first_rows)):
        entry = {}
        for key, _, _ in MEASURES:
            values = np.array([block["rows"][index][key] for block in blocks], dtype=np.float64)
            if np.isnan(values).any():
                continue
            entry[key] = {"mean": float(values.mean()), "standard_error": standard_error(values),
                          "per_block": values.tolist()}
        summary["methods"][labels[index]] = entry
    hkd = 0  # evaluate() scores HKD first
    for index in range(1, len(first_rows)):
        if first_rows[index]["nfe"] is None:  # the held-out data row is a floor, not a competitor
            continue
        entry = {}
        for key, _, _ in MEASURES:
            difference = np.array([block["rows"][hkd][key] - block["rows"][index][key] for block in blocks],
                                  dtype=np.float64)
            if np.isnan(difference).any():
                continue
            entry[key] = paired_summary(difference, lower_key="hkd_lower_in")
        summary["hkd_minus"][labels[index]] = entry
    return summary


def format_summary(summary: dict, num_blocks: int, num_samples: int) -> str:
    lines = [f"{num_blocks} blocks x {num_samples} seeds; mean +- standard error over blocks"]
    width = max(len(name) for name in summary["methods"]) + 2
    lines.append("method".ljust(width) + "".join(title.rjust(22) for _, title, _ in MEASURES))
    for name, entry in summary["methods"].items():
        cells = [f"{pattern.format(entry[key]['mean'])} +- {pattern.format(entry[key]['standard_error'])}"
                 if key in entry else "-" for key, _, pattern in MEASURES]
        lines.append(name.ljust(width) + "".join(cell.rjust(22) for cell in cells))
    lines.append("")
    lines.append("paired difference HKD - teacher (negative: HKD better), mean +- standard error [blocks HKD lower]")
    for name, entry in summary["hkd_minus"].items():
        cells = [f"{pattern.format(entry[key]['mean'])} +- {pattern.format(entry[key]['standard_error'])} "
                 f"[{entry[key]['hkd_lower_in']}/{entry[key]['blocks']}]" if key in entry else "-"
                 for key, _, pattern in MEASURES]
        lines.append(("vs " + name).ljust(width + 3) + "".join(cell.rjust(30) for cell in cells))
    return "\n".join(lines)


def paired_differences(first: dict, second: dict) -> dict:
    """{method label: {measure: {mean, standard_error, first_lower_in, blocks}}} of first - second, over
    the blocks the two records share (matched by first seed). A measure missing in either is left out."""
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
                entry[key] = paired_summary(values, lower_key="first_lower_in")
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


__all__ = ["MEASURES", "label", "standard_error", "paired_summary", "summarise", "format_summary",
           "paired_differences", "format_differences"]
