"""Which scales can the teacher re-create? Classify held-out images after a noise round trip.

    python benchmarks/probe_regeneration.py                      # shipped teacher, background head
    python benchmarks/probe_regeneration.py --head shape --sigmas 0.5,2,80 --json probe.json

Each held-out shapes image (labels known) is noised to sigma and solved back to eps by the teacher's
PF-ODE (`Teacher.regenerate`: Heun on the Karras grid, SDEdit's round trip). Structure coarser than
sigma survives the noise; anything finer has to be generated again. The table gives, per class of
one classifier head, the fraction of round-tripped images the shipped classifier still assigns to
their true class, next to its accuracy on the clean images. A class that survives a small sigma but
not a larger one is one whose defining detail lives at that scale; a class lost already at a small
sigma is one the teacher cannot draw at all (the 24-channel default's texture backgrounds: docs/results.md).
At sigma = T (80) nothing of the image survives: that column is the teacher's own class mix.
Nothing is timed (how long it takes: docs/benchmarks.md, "Regeneration probe"). The probe itself is
hkdviz.evaluation.probes.regeneration_probe; this file is its command line.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import hkdviz
from hkdviz.atomic import write_text
from hkdviz.checkpoint import CheckpointError, resolve_device
from hkdviz.evaluation.classifier import ClassifierError, load_classifier
from hkdviz.data import ShapesDataset
from hkdviz.evaluation.evaluate import REFERENCE_SEED, companion_checkpoint
from hkdviz.evaluation.probes import format_regeneration, regeneration_probe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="default", help="teacher: shipped name or directory")
    parser.add_argument("--classifier", default=None, help="classifier (default: beside the teacher)")
    parser.add_argument("--head", default="background", help="classifier head to read (default background)")
    parser.add_argument("--num-images", type=int, default=800, help="held-out shapes images (default 800)")
    parser.add_argument("--sigmas", default="0.25,0.5,1,80", help="noise levels of the round trips")
    parser.add_argument("--num-steps", type=int, default=12, help="Heun steps from sigma to eps (default 12)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    try:
        sigmas = [float(value) for value in args.sigmas.split(",")]
    except ValueError:
        parser.error(f"--sigmas must be comma-separated numbers, got {args.sigmas!r}")
    if args.num_images < 8 or args.num_steps < 1:
        parser.error("--num-images must be >= 8 and --num-steps >= 1")
    try:
        device = resolve_device(args.device)
        teacher = hkdviz.load_teacher(args.teacher, device=device)
        classifier_path = args.classifier or companion_checkpoint(args.teacher, "classifier")
        if classifier_path is None:
            parser.error("no classifier beside the teacher: pass --classifier")
        classifier = load_classifier(classifier_path, device=device)
        if args.head not in classifier.head_names:
            parser.error(f"--head: this classifier has heads {classifier.head_names}, not {args.head!r}")
        if not all(teacher.sigma_min < sigma <= teacher.sigma_max for sigma in sigmas):
            parser.error(f"--sigmas must lie in ({teacher.sigma_min}, {teacher.sigma_max}]")
    except (CheckpointError, ClassifierError, RuntimeError, ValueError) as error:
        parser.error(str(error))
    # The evaluation reference images (seed REFERENCE_SEED): disjoint from every training set.
    images, labels = ShapesDataset(args.num_images, resolution=teacher.image_shape[-1],
                                   seed=REFERENCE_SEED).materialize(progress=False)
    if args.head not in labels:
        parser.error(f"--head: the shapes set labels {sorted(labels)}, not {args.head!r}")
    result = regeneration_probe(teacher, classifier, images, labels[args.head], sigmas, args.head, num_steps=args.num_steps)
    result.update(teacher=str(args.teacher), classifier=str(classifier_path), num_steps=args.num_steps,
                  data={"name": "shapes", "seed": REFERENCE_SEED, "num_images": args.num_images})
    print(format_regeneration(result))
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
