"""Evaluation probes: how closely an HKD follows its teacher, and what the teacher can re-create.

`fidelity_probe`: each one-step HKD sample has a target, the teacher's sample of the same seed at its most
steps; the probe gives the per-image RMSE to it (on training and unseen seeds) and, per classifier head,
the class mix of targets, samples and held-out data and how often a sample keeps its target's class.
`regeneration_probe`: held-out images noised to sigma and solved back by the teacher (`Teacher.regenerate`),
then classified: per class, which noise levels the class survives. `benchmarks/probe_fidelity.py` and
`benchmarks/probe_regeneration.py` are their command lines; what they found: docs/results.md.
"""
from __future__ import annotations

import torch

from .evaluate import per_image_rmse
from .statistics import standard_error


def _rmse(images: torch.Tensor, targets: torch.Tensor) -> dict:
    per_image = per_image_rmse(images, targets)
    return {"mean": float(per_image.mean()), "standard_error": standard_error(per_image.numpy()),
            "count": len(per_image)}


def _class_mix(predicted: torch.Tensor, num_classes: int) -> list[float]:
    return (torch.bincount(predicted, minlength=num_classes).double() / len(predicted)).tolist()


def fidelity_probe(models: dict, teacher, classifier, unseen_seeds, training_seeds: dict, num_steps: int = 18,
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


def format_fidelity(result: dict) -> str:
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


def regeneration_probe(teacher, classifier, images: torch.Tensor, labels: torch.Tensor, sigmas, head: str,
                       num_steps: int = 12, batch_size: int = 200, progress: bool = True) -> dict:
    """{"classes", "count", "clean", "sigmas": {sigma: per-class accuracy}} for one head (lists per class)."""
    names = classifier.class_names(head)
    masks = [labels == index for index in range(len(names))]

    def per_class(predicted: torch.Tensor) -> list[float | None]:
        return [float((predicted[mask] == index).double().mean()) if mask.any() else None
                for index, mask in enumerate(masks)]

    result = {"head": head, "classes": names, "count": [int(mask.sum()) for mask in masks],
              "clean": per_class(classifier.predict(images, head=head).cpu()), "sigmas": {}}
    for sigma in sigmas:
        regenerated = teacher.regenerate(images, sigma, num_steps=num_steps, batch_size=batch_size, progress=progress)
        result["sigmas"][str(sigma)] = per_class(classifier.predict(regenerated, head=head).cpu())
    return result


def format_regeneration(result: dict) -> str:
    columns = ["clean"] + [f"sigma {sigma}" for sigma in result["sigmas"]]
    rows = [[result["clean"][index]] + [values[index] for values in result["sigmas"].values()]
            for index in range(len(result["classes"]))]
    width = max(len(name) for name in result["classes"]) + 2
    lines = [f"fraction classified as their true {result['head']} after the round trip (n per class in brackets)",
             "class".ljust(width + 6) + "".join(column.rjust(11) for column in columns)]
    for name, count, values in zip(result["classes"], result["count"], rows):
        cells = "".join(("-" if value is None else f"{value:.2f}").rjust(11) for value in values)
        lines.append(f"{name.ljust(width)}[{count:4d}]" + cells)
    return "\n".join(lines)


__all__ = ["fidelity_probe", "format_fidelity", "regeneration_probe", "format_regeneration"]
