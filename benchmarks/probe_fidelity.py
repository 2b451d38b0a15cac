"""How faithfully does HKD follow its teacher? Seed by seed, class by class, on training and unseen seeds.

    python benchmarks/probe_fidelity.py                                   # shipped HKD against its teacher
    python benchmarks/probe_fidelity.py --checkpoint default --checkpoint runs/x/export/hkd --json f.json

HKD distils the teacher's PF-ODE map x_T -> x_eps, so each of its one-step samples has a target: the
teacher's sample of the same seed at its most steps (18 Heun steps, 35 NFE). Distribution measures
(KID, FD, SWD in `hkdviz eval`) cannot see whether HKD hits its targets; this probe does, for one or
more HKD checkpoints distilled from the same teacher:

- RMSE: mean per-image pixel RMS difference to the target (images in [-1, 1]), with its standard
  error, on the first --train-seeds of the checkpoint's own trajectory seeds (from its meta) and on as
  many unseen ones (1,000,000,000 on): the gap between the two is how much the distillation overfits
  its trajectory set;
- per classifier head (shapes: shape and background): the class mix of the targets, of each
  checkpoint and of held-out data, and per target class the fraction of seeds the checkpoint draws in
  the same class ("kept"): where HKD departs from its teacher, and into which mix.

Nothing is timed (how long it takes: docs/benchmarks.md, "Fidelity probe"). The probe itself is
hkdviz.evaluation.probes.fidelity_probe; this file is its command line.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from hkdviz.atomic import write_text
from hkdviz.evaluation.evaluate import EVALUATION_FIRST_SEED, held_out_reference, training_seeds
from hkdviz.evaluation.probes import fidelity_probe, format_fidelity

if __package__:  # python -m benchmarks.probe_fidelity, or imported as benchmarks.probe_fidelity
    from .bench_quality import load_models
else:  # python benchmarks/probe_fidelity.py: Python puts this file's directory first on sys.path
    from bench_quality import load_models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", default=None,
                        help="HKD checkpoint: shipped name or directory (repeat to compare; default: default)")
    parser.add_argument("--teacher", default=None, help="teacher (default: beside the first checkpoint)")
    parser.add_argument("--classifier", default=None, help="classifier (default: beside the first checkpoint)")
    parser.add_argument("--num-samples", type=int, default=1000, help="unseen seeds (default 1000)")
    parser.add_argument("--train-seeds", type=int, default=256,
                        help="training seeds per checkpoint for the RMSE (default 256; 0 skips them)")
    parser.add_argument("--num-steps", type=int, default=18, help="teacher Heun steps of the target (default 18)")
    parser.add_argument("--first-seed", type=int, default=EVALUATION_FIRST_SEED, help="first unseen seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    checkpoints = args.checkpoint or ["default"]
    if args.num_samples < 2 or args.train_seeds < 0 or args.num_steps < 1:
        parser.error("--num-samples must be >= 2, --train-seeds >= 0 and --num-steps >= 1")
    if len(set(checkpoints)) != len(checkpoints):
        parser.error(f"a checkpoint is given twice: {checkpoints}")
    device, models, teacher, teacher_path, classifier, classifier_path = load_models(
        parser, checkpoints, args.teacher, args.classifier, args.device)
    first_model = next(iter(models.values()))
    spec = (first_model.meta or {}).get("dataset") or "shapes"
    data_images, _ = held_out_reference(spec, args.num_samples, resolution=first_model.image_shape[-1], progress=False)
    training = dict.fromkeys(models)  # name -> the first --train-seeds of its trajectory seeds, or None
    for name, model in models.items():
        trained = training_seeds(model) if args.train_seeds else None
        if trained is not None:
            training[name] = list(trained[:args.train_seeds])
        elif args.train_seeds:
            print(f"note: {name} records no trajectory seeds; only unseen seeds for it", file=sys.stderr)
    print(f"teacher {teacher_path}, classifier {classifier_path}, device {device}", flush=True)
    seeds = range(args.first_seed, args.first_seed + args.num_samples)
    result = fidelity_probe(models, teacher, classifier, seeds, training, num_steps=args.num_steps, data_images=data_images)
    print(format_fidelity(result))
    if args.json:
        write_text(args.json, json.dumps({"checkpoints": checkpoints, "teacher": str(teacher_path),
                                               "classifier": str(classifier_path), **result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
