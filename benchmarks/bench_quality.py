"""Quality benchmark: is HKD at 1 NFE better than the teacher at K NFE, beyond the sampling noise?

    python benchmarks/bench_quality.py                                   # shipped default, 6 blocks x 1000
    python benchmarks/bench_quality.py --checkpoint runs/x/export/hkd --blocks 8 --teacher-steps 18,8,3
    python benchmarks/bench_quality.py --json runs/quality.json
    python benchmarks/bench_quality.py --json runs/quality.json --resume  # go on after a stop

One `hkdviz eval` on 1000 seeds cannot rank two methods whose local KID differs by less than its
spread (measured: docs/benchmarks.md, "Quality ranking"). This script scores every method
on B disjoint blocks of unseen seeds (from EVALUATION_FIRST_SEED on, block b = seeds first + b * N ...),
each block against the same held-out reference, and reports per measure (local KID x1e3, local FD, SWD):

- the mean over blocks and its standard error (std / sqrt(B));
- the paired difference HKD - teacher, block by block (same seeds, same reference, so the noise the
  two rows share cancels), its mean and standard error, and in how many blocks HKD was lower.

The reference is fixed across blocks, so a block's spread is the samples' noise only: enough to rank
methods on this reference, not a confidence interval for the population value. Nothing here is
timed; run it on any device (how long a block takes: docs/benchmarks.md). With --resume, a --json record
left by a stopped run of the same settings keeps its blocks and the run goes on from the next one. The statistics live in
hkdviz.evaluation.statistics; this file is the command line around them.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import hkdviz
from hkdviz.checkpoint import CheckpointError, resolve_device
from hkdviz.atomic import write_text
from hkdviz.evaluation.classifier import ClassifierError, load_classifier
from hkdviz.evaluation.evaluate import (EVALUATION_FIRST_SEED, EvaluationError, companion_checkpoint,
                                        evaluate, format_table, held_out_reference, parse_teacher_steps)
from hkdviz.evaluation.statistics import format_summary, label, summarise


def load_models(parser: argparse.ArgumentParser, checkpoints: list[str], teacher: str | None = None,
                classifier: str | None = None, device: str = "auto"):
    """(device, {checkpoint: HKD model}, teacher, teacher path, classifier, classifier path) for a benchmark's
    command line; the teacher and classifier default to those beside the first checkpoint. A wrong name or
    device is a usage error through `parser`: one line, no traceback."""
    try:
        device = resolve_device(device)
        models = {name: hkdviz.load(name, device=device) for name in checkpoints}
        teacher_path = teacher or companion_checkpoint(checkpoints[0], "teacher")
        classifier_path = classifier or companion_checkpoint(checkpoints[0], "classifier")
        if teacher_path is None or classifier_path is None:
            parser.error("no teacher or classifier beside the checkpoint: pass --teacher and --classifier")
        return (device, models, hkdviz.load_teacher(teacher_path, device=device), teacher_path,
                load_classifier(classifier_path, device=device), classifier_path)
    except (CheckpointError, ClassifierError, RuntimeError, ValueError) as error:
        parser.error(str(error))


def write_record(path: str, base: dict, blocks: list[dict], complete: bool) -> None:
    """The --json record: `base`, every block so far, their summary (from 2 blocks on) and whether all the
    requested blocks are in. Written atomically, so a kill mid-write leaves the last record."""
    record = {**base, "complete": complete, "blocks": blocks,
              "summary": summarise(blocks) if len(blocks) > 1 else None}
    write_text(Path(path), json.dumps(record, indent=2) + "\n")


# The settings a resumed record must share with the run that goes on from it.
RESUME_KEYS = ("checkpoint", "teacher", "classifier", "num_samples", "teacher_steps")


def resumed_blocks(path: str, base: dict, first_seed: int) -> list[dict]:
    """The blocks of an earlier --json record at `path` to go on from: [] when there is none. The record
    must have the same settings (RESUME_KEYS) and its blocks must be this run's first blocks (from
    `first_seed`, one every num_samples seeds); anything else is refused (ValueError), not mixed in."""
    if not Path(path).exists():
        return []
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot resume from {path}: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("blocks"), list):
        raise ValueError(f"cannot resume from {path}: not a bench_quality.py --json record")
    for key in RESUME_KEYS:
        if record.get(key) != base[key]:
            raise ValueError(f"cannot resume from {path}: its {key} is {record.get(key)!r}, this run's is "
                             f"{base[key]!r} (write to another --json file)")
    blocks = record["blocks"]
    expected = [first_seed + index * base["num_samples"] for index in range(len(blocks))]
    found = [block.get("first_seed") if isinstance(block, dict) else None for block in blocks]
    if found != expected:
        raise ValueError(f"cannot resume from {path}: its blocks start at seeds {found}, this run's first "
                         f"blocks would start at {expected} (another --first-seed?)")
    if len(blocks) > base["blocks_requested"]:
        raise ValueError(f"cannot resume from {path}: it holds {len(blocks)} blocks, more than the "
                         f"{base['blocks_requested']} asked (--blocks)")
    return blocks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="default", help="HKD checkpoint: shipped name or directory")
    parser.add_argument("--teacher", default=None, help="teacher (default: beside the checkpoint, as hkdviz eval)")
    parser.add_argument("--classifier", default=None, help="feature classifier (default: beside the checkpoint)")
    parser.add_argument("--blocks", type=int, default=6, help="disjoint seed blocks (default 6)")
    parser.add_argument("--num-samples", type=int, default=1000, help="seeds per block and reference size")
    parser.add_argument("--first-seed", type=int, default=EVALUATION_FIRST_SEED)
    parser.add_argument("--teacher-steps", default="8,3",
                        help="Heun steps of the teacher rows (default 8,3 = 15, 5 NFE)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write every block and the summary (rewritten after every block)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the blocks of an earlier --json record of the same settings and go on from there")
    args = parser.parse_args(argv)
    if args.blocks < 2:
        parser.error(f"--blocks must be >= 2 for a standard error, got {args.blocks}")
    if args.num_samples < 8:
        parser.error(f"--num-samples must be >= 8, got {args.num_samples}")
    if args.resume and not args.json:
        parser.error("--resume needs --json PATH (the record to go on from)")
    try:
        teacher_steps = parse_teacher_steps(args.teacher_steps)
    except EvaluationError as error:
        parser.error(str(error))

    device, models, teacher, teacher_path, classifier, classifier_path = load_models(
        parser, [args.checkpoint], args.teacher, args.classifier, args.device)
    model = models[args.checkpoint]
    spec = (model.meta or {}).get("dataset") or "shapes"
    images, description = held_out_reference(spec, 2 * args.num_samples, resolution=model.image_shape[-1],
                                             progress=False)
    reference, data_row = images[:args.num_samples], images[args.num_samples:]
    print(f"checkpoint {args.checkpoint}, teacher {teacher_path}, classifier {classifier_path}, device {device}, "
          f"{platform.processor() or platform.machine()}; reference: {description.get('source', description)}",
          flush=True)

    record_base = {"checkpoint": args.checkpoint, "teacher": str(teacher_path), "classifier": str(classifier_path),
                   "device": str(device), "num_samples": args.num_samples, "teacher_steps": teacher_steps,
                   "blocks_requested": args.blocks}
    blocks = []
    if args.resume:
        try:
            blocks = resumed_blocks(args.json, record_base, args.first_seed)
        except ValueError as error:
            parser.error(str(error))
        if blocks:
            print(f"resuming: {len(blocks)} of {args.blocks} blocks already in {args.json}", flush=True)
    started, start = time.perf_counter(), len(blocks)
    for block in range(start, args.blocks):
        first = args.first_seed + block * args.num_samples
        seeds = list(range(first, first + args.num_samples))
        result = evaluate(model, teacher, classifier, reference, seeds, teacher_steps, data_images=data_row,
                          batch_size=args.batch_size, device=device, progress=False)
        blocks.append({"first_seed": first, "rows": result["rows"]})
        cells = ", ".join(f"{label(row)} {row['kid_x1e3']:.0f}" for row in result["rows"])
        print(f"block {block + 1}/{args.blocks} (seeds {first}..): KID x1e3 {cells} "
              f"[{time.perf_counter() - started:.0f} s]", flush=True)
        if block == start:  # the full table once, for the first block this run scores
            print(format_table(result), flush=True)
        if args.json:  # after every block: a run stopped by a time limit keeps the blocks it finished
            write_record(args.json, record_base, blocks, complete=block + 1 == args.blocks)
    summary = summarise(blocks)
    print()
    print(format_summary(summary, args.blocks, args.num_samples))
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
