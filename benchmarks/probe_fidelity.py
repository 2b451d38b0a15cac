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

Nothing is timed; 2 CPU cores take ~5 minutes for two checkpoints at the defaults.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from hkdviz.atomic import write_text
from hkdviz.train.evaluate import (EVALUATION_FIRST_SEED, held_out_reference, per_image_rmse,
                                   training_seeds)

if __package__:  # python -m benchmarks.probe_fidelity, or imported as benchmarks.probe_fidelity
    from .bench_quality import _standard_error, load_models
else:  # python benchmarks/probe_fidelity.py: Python puts this file's directory first on sys.path
    from bench_quality import _standard_error, load_models


def _rmse(images: torch.Tensor, targets: torch.Tensor) -> dict:
    per_image = per_image_rmse(images, targets)
    return {"mean": float(per_image.mean()), "standard_error": _standard_error(per_image.numpy()),
            "count": len(per_image)}


def _class_mix(predicted: torch.Tensor, num_classes: int) -> list[float]:
    return (torch.bincount(predicted, minlength=num_classes).double() / len(predicted)).tolist()


def probe(models: dict, teacher, classifier, unseen_seeds, training_seeds: dict, num_steps: int = 18,
          data_images: torch.Tensor | None = None, batch_size: int = 250) -> dict:
    """models: {name: HKD model (anything with .sample(seeds, batch_size=))}; training_seeds: {name: seeds
    that model was trained on, or None}. Returns {"heads": {head: {"classes", "target", "data"?,
    "models": {name: {"mix", "kept"}}}}, "rmse": {name: {"unseen", "training"?}}, "num_unseen"}."""
    unseen_seeds = list(unseen_seeds)

    samples = {}  # seeds -> teacher samples: checkpoints of one run share their training seeds

    def teacher_sample(seeds):
        key = tuple(seeds)
        if key not in samples:
            samples[key] = teacher.sample(list(key), num_steps, batch_size=batch_size, progress=False).cpu()
        return samples[key]

    def predictions(images):
        return {head: probabilities.argmax(dim=1).cpu() for head, probabilities
                in classifier.features_and_all_probabilities(images)[1].items()}

    targets = teacher_sample(unseen_seeds)
    target_classes = predictions(targets)
    heads = {}
    for head, predicted in target_classes.items():
        names = classifier.class_names(head)
        heads[head] = {"classes": names, "target": _class_mix(predicted, len(names)), "models": {}}
    if data_images is not None:
        for head, predicted in predictions(data_images).items():
            heads[head]["data"] = _class_mix(predicted, len(heads[head]["classes"]))
    result = {"heads": heads, "rmse": {}, "num_unseen": len(unseen_seeds), "num_steps": num_steps}
    for name, model in models.items():
        images = model.sample(unseen_seeds, batch_size=batch_size).cpu()
        rmse = {"unseen": _rmse(images, targets)}
        if training_seeds.get(name):
            seeds = list(training_seeds[name])
            rmse["training"] = _rmse(model.sample(seeds, batch_size=batch_size).cpu(), teacher_sample(seeds))
        result["rmse"][name] = rmse
        for head, predicted in predictions(images).items():
            target = target_classes[head]
            kept = [float((predicted[target == index] == index).double().mean()) if (target == index).any() else None
                    for index in range(len(heads[head]["classes"]))]
            heads[head]["models"][name] = {"mix": _class_mix(predicted, len(heads[head]["classes"])), "kept": kept}
    return result


def format_probe(result: dict) -> str:
    lines = [f"RMSE to the teacher's {result['num_steps']}-step sample of the same seed (mean +- standard error)"]
    width = max([len(name) for name in result["rmse"]] + [12]) + 2
    for name, rmse in result["rmse"].items():
        cells = [f"{part} seeds ({value['count']}): {value['mean']:.4f} +- {value['standard_error']:.4f}"
                 for part, value in sorted(rmse.items(), reverse=True)]
        lines.append(f"  {name.ljust(width)}" + "   ".join(cells))
    for head, entry in result["heads"].items():
        lines.append("")
        lines.append(f"{head}: class mix of {result['num_unseen']} unseen seeds; 'kept' = of the seeds whose "
                     "teacher sample is in that class, the fraction drawn in it too")
        rows = [("teacher", entry["target"])] + ([("held-out data", entry["data"])] if "data" in entry else [])
        for name, values in entry["models"].items():
            rows += [(f"{name} mix", values["mix"]), (f"{name} kept", values["kept"])]
        column = min(12, max(len(name) for name in entry["classes"])) + 2  # long names are cut to fit
        label_width = max(len(label) for label, _ in rows) + 2
        lines.append(" " * (label_width + 2) + "".join(name[:column - 1].rjust(column) for name in entry["classes"]))
        for label, values in rows:
            cells = "".join(("-" if value is None else f"{value:.3f}").rjust(column) for value in values)
            lines.append(f"  {label.ljust(label_width)}{cells}")
    return "\n".join(lines)


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
    result = probe(models, teacher, classifier, seeds, training, num_steps=args.num_steps, data_images=data_images)
    print(format_probe(result))
    if args.json:
        write_text(args.json, json.dumps({"checkpoints": checkpoints, "teacher": str(teacher_path),
                                               "classifier": str(classifier_path), **result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
