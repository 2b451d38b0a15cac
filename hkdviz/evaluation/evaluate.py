"""`hkdviz eval`: HKD at 1 NFE against its teacher at 35, 15, 5 and 1 NFE, on the same seeds.

Every method samples the same seeds (HKD and the teacher draw x_T identically), then each sample
set is scored against held-out data with the weights-free measures of quality.py: local KID (x1e3),
local FD (classifier features: not FID), pixel SWD, recognisability (mean max-softmax confidence,
class-histogram entropy and KL to the reference), pixel statistics (high-frequency share, contrast,
mean neighbour difference: read against the held-out row, they tell blur from noise) and wall time
per image. The classifier's other heads get their own class KL (shapes: background as well as shape).
Each sampled row is also compared seed by seed with the teacher at the most steps (35 NFE), the
distillation target: mean per-image pixel RMSE and the fraction of seeds predicted the same class.
A "held-out data" row scores a second held-out set the same way: the floor that finite sample sizes
allow.

Held-out reference: for procedural sets (shapes) the images come from the training spec with its
seed replaced by REFERENCE_SEED = 2,000,000; image i of a shapes set depends only on (seed, i), so
these are disjoint from any training set (seed 0 by default) and from the classifier's held-out
images (seed 1,000,000), whatever the sizes. Indices [0, N) are the reference, [N, 2N) the
"held-out data" row. CIFAR-10 uses its test batch. Other sets need explicit reference images.

Seeds: EVALUATION_FIRST_SEED = 1,000,000,000 on, by default. Training trajectories use seeds from 0
(every preset; cifar10's million included), and an HKD fits its own training seeds measurably better
than new ones (measured: docs/results.md, "Seeds"), so scoring it on them would flatter it. When the checkpoint's meta
records its trajectory seeds and they overlap the evaluation seeds, the result says so in its notes.

    hkdviz eval default                           # shipped HKD, teacher and classifier
    hkdviz eval runs/x/export/hkd --num-samples 1000 --json eval.json
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..atomic import write_json, write_text

REFERENCE_SEED = 2_000_000
DEFAULT_TEACHER_STEPS = (18, 8, 3, 1)
DEFAULT_NUM_SAMPLES = 1000
EVALUATION_FIRST_SEED = 1_000_000_000  # beyond every preset's trajectory seeds (module docstring)


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked; the message names the problem."""


# Seeds on which `hkdviz eval` measures the Koopman dynamics' faithfulness (each costs a 35-NFE teacher
# trajectory plus 19 encoder and one-step passes).
DEFAULT_FAITHFULNESS_SAMPLES = 64


def heun_nfe(num_steps: int) -> int:
    """Network evaluations of EDM's Heun sampler: N steps cost 2N - 1 (the last step is Euler)."""
    return 2 * int(num_steps) - 1


# -- the held-out reference ----------------------------------------------------------------------------
def parse_dataset_spec(spec) -> Any:
    """A data set spec from checkpoint metadata: a dict, a spec string, or the "key=value, ..." form
    the training loop writes into meta.json."""
    if isinstance(spec, str) and "=" in spec and ":" not in spec.split("=", 1)[0]:
        options = {}
        for part in spec.split(","):
            key, _, value = part.strip().partition("=")
            value = value.strip()
            python_words = {"True": True, "False": False, "None": None}  # written by str() of a value
            try:
                options[key.strip()] = python_words[value] if value in python_words else json.loads(value)
            except json.JSONDecodeError:
                options[key.strip()] = value
        return options
    return spec


def held_out_reference(dataset_spec="shapes", num_images: int = DEFAULT_NUM_SAMPLES, resolution: int | None = None,
                       progress: bool = True) -> tuple[torch.Tensor, dict]:
    """(uint8 images [num_images, C, H, W], description) held out from the training data `dataset_spec`.

    Procedural sets: the same spec with seed REFERENCE_SEED, indices [0, num_images). CIFAR-10: the
    test batch. Anything else raises EvaluationError (give reference images explicitly).
    """
    from ..data import DatasetError, load_dataset

    try:
        dataset = load_dataset(parse_dataset_spec(dataset_spec))
    except DatasetError as error:
        raise EvaluationError(f"cannot build the held-out reference from data set {dataset_spec!r}: {error}") from None
    spec = dict(dataset.spec)
    if "seed" in spec:
        if spec["seed"] == REFERENCE_SEED:
            raise EvaluationError(f"the training data uses seed {REFERENCE_SEED}, which evaluation reserves for "
                                  "held-out images; give reference images explicitly")
        overrides = {"num_images": int(num_images), "seed": REFERENCE_SEED, "xflip": False}
        if resolution is not None and "resolution" in spec:
            overrides["resolution"] = int(resolution)
        dataset = load_dataset(spec, **overrides)
        description = {**dataset.spec,
                       "note": f"training seed {spec['seed']} replaced by the held-out seed {REFERENCE_SEED}"}
    elif spec.get("name") == "cifar10":
        dataset = load_dataset({**spec, "train": False, "xflip": False})
        description = {**dataset.spec, "note": "CIFAR-10 test batch"}
    else:
        raise EvaluationError(f"no held-out split is known for data set {spec.get('name', spec)!r}; "
                              "pass reference images explicitly (--reference SPEC)")
    count = min(int(num_images), len(dataset))
    images, _ = dataset.materialize(range(count), progress=progress)
    description["count"] = count
    return images, description


# -- loading by name -------------------------------------------------------------------------------------
def training_seeds(hkd_model) -> range | None:
    """The trajectory seeds the HKD was trained on, from its meta's trajectory record (first_seed ..
    first_seed + count - 1; first_seed 0 when an older meta does not record it); None when unknown."""
    record = (getattr(hkd_model, "meta", None) or {}).get("trajectories") or {}
    if "count" not in record:
        return None
    first = int(record.get("first_seed", 0))
    return range(first, first + int(record["count"]))


def training_seed_overlap(hkd_model, seeds: Sequence[int]) -> int:
    """How many of `seeds` the HKD was trained on (training_seeds); 0 when unknown."""
    trained = training_seeds(hkd_model)
    return 0 if trained is None else sum(1 for seed in seeds if int(seed) in trained)


def per_image_rmse(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[N] pixel RMS difference of each image from its target (float64)."""
    return (images.double() - targets.double()).square().flatten(1).mean(1).sqrt()


def _load_hkd(value, device):
    if isinstance(value, (str, Path)):
        from ..model.hkd import load
        return load(value, device=device)
    return value


def _load_teacher(value, device):
    if isinstance(value, (str, Path)):
        from ..teacher.teacher import load_teacher
        return load_teacher(value, device=device)
    return value


def _load_classifier(value, device):
    if isinstance(value, (str, Path)):
        from .classifier import load_classifier
        return load_classifier(value, device=device)
    return value


def _teacher_sampler(teacher, batch_size: int):
    """teacher.sample(seeds, num_steps), passing batch_size and progress=False where it takes them
    (hkdviz's Teacher does; a minimal stand-in need not): evaluate draws its own progress bars."""
    import inspect

    try:
        parameters = inspect.signature(teacher.sample).parameters
    except (TypeError, ValueError):
        parameters = {}
    extra = {key: value for key, value in (("batch_size", batch_size), ("progress", False)) if key in parameters}
    return lambda seeds, num_steps: teacher.sample(seeds, num_steps, **extra)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _chunks(seeds: Sequence[int], size: int) -> list[list[int]]:
    return [list(seeds[start:start + size]) for start in range(0, len(seeds), size)]


def _checked_images(images, count: int, shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise EvaluationError(f"{what} returned {type(images).__name__}, expected a [N, C, H, W] tensor")
    if len(images) != count or tuple(images.shape[1:]) != tuple(shape):
        raise EvaluationError(f"{what} returned shape {tuple(images.shape)}, expected [{count}, "
                              f"{', '.join(map(str, shape))}]")
    return images.detach().float().cpu()


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(hkd_model=None, teacher=None, classifier=None, reference_images=None, seeds=None,
             teacher_steps: Sequence[int] = DEFAULT_TEACHER_STEPS, *, checkpoint=None,
             num_samples: int = DEFAULT_NUM_SAMPLES, data_images=None, inception=None, batch_size: int = 250,
             device="auto", out_dir=None, seed: int = 0, progress: bool = True,
             faithfulness_samples: int = DEFAULT_FAITHFULNESS_SAMPLES) -> dict:
    """Score HKD (1 NFE) and the teacher at `teacher_steps` Heun steps on the same seeds.

    hkd_model, teacher, classifier: objects, or shipped names / checkpoint directories (`checkpoint`
    is an alias of hkd_model). teacher None: HKD only; classifier None: SWD only.
    reference_images: [N, C, H, W] (uint8 or [-1, 1]); None builds the held-out reference from the
    HKD checkpoint's training data set (module docstring), plus the "held-out data" row.
    seeds: default EVALUATION_FIRST_SEED + range(num_samples), never an HKD's training seeds.
    data_images: a second real set for the "held-out data" row.
    inception: an InceptionFeatures (quality.load_inception) adds an FID column. out_dir: also write
    evaluation.json and table.txt there (and faithfulness.nc).
    faithfulness_samples: with a teacher, the first that many seeds also measure how faithful HKD's
    Koopman dynamics are to the teacher's PF-ODE (hkdviz.analysis.faithfulness): result["faithfulness"]
    holds the summary, result["faithfulness_dataset"] the xarray Dataset (not in evaluation.json). 0: skip.

    Returns {"rows": [{method, num_steps, nfe, kid_x1e3, kid_std_x1e3, local_fd, swd, confidence,
    class_entropy, class_kl, class_kl_by_head, high_frequency_share, contrast, gradient, seconds_per_image,
    rmse_to_target, target_agreement, target_agreement_by_head[, fid]}], "num_samples", "seeds",
    "reference", "target", "classifier_main_head", ...}. The target is the teacher at max(teacher_steps):
    the other sampled rows get their seed-by-seed pixel RMSE to it and the fraction of seeds whose
    predicted class (main head; every head in target_agreement_by_head) matches its sample's.
    """
    from ..checkpoint import resolve_device
    from .quality import QualityReference

    if hkd_model is None:
        hkd_model = checkpoint
    if hkd_model is None:
        raise EvaluationError("evaluate needs an HKD model (an object, a shipped name or a checkpoint directory)")
    device = resolve_device(device)
    hkd_model = _load_hkd(hkd_model, device)
    teacher = _load_teacher(teacher, device)
    classifier = _load_classifier(classifier, device)
    image_shape = tuple(hkd_model.image_shape)

    seeds = (list(range(EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + int(num_samples))) if seeds is None
             else [int(value) for value in seeds])
    if len(seeds) < 4:
        raise EvaluationError(f"need at least 4 seeds for the distribution measures, got {len(seeds)}")
    teacher_steps = [int(steps) for steps in teacher_steps]
    if any(steps < 1 for steps in teacher_steps):
        raise EvaluationError(f"teacher_steps must be positive step counts, got {teacher_steps}")

    notes = []
    overlap = training_seed_overlap(hkd_model, seeds)
    if overlap:
        notes.append(f"{overlap} of the {len(seeds)} seeds are among the HKD's training trajectory seeds: its row "
                     f"is optimistic (choose seeds from {EVALUATION_FIRST_SEED:,} on)")
    if reference_images is None:
        meta_dataset = (getattr(hkd_model, "meta", None) or {}).get("dataset")
        spec = meta_dataset if meta_dataset else "shapes"
        try:
            images, reference = held_out_reference(spec, 2 * len(seeds), resolution=image_shape[-1], progress=progress)
        except EvaluationError:
            if meta_dataset is None:
                raise
            notes.append(f"checkpoint data set {meta_dataset!r} has no known held-out split; used shapes")
            images, reference = held_out_reference("shapes", 2 * len(seeds), resolution=image_shape[-1],
                                                   progress=progress)
        half = len(images) // 2
        if len(images) >= 2 * len(seeds):
            reference_images, data_images = images[:len(seeds)], (images[len(seeds):] if data_images is None
                                                                  else data_images)
        else:  # a small held-out split (e.g. a test batch): half reference, half "held-out data"
            reference_images, data_images = images[:half], images[half:] if data_images is None else data_images
            notes.append(f"held-out split has {len(images)} images: {half} reference, {len(images) - half} data row")
        reference["reference_indices"] = [0, len(reference_images)]
        reference["data_row_indices"] = [len(reference_images), len(reference_images) + len(data_images)]
    else:
        reference = {"source": "given by the caller", "count": int(len(reference_images))}
    if not isinstance(reference_images, torch.Tensor) or tuple(reference_images.shape[1:]) != image_shape:
        got = (tuple(reference_images.shape) if isinstance(reference_images, torch.Tensor)
               else type(reference_images).__name__)
        raise EvaluationError(f"reference images must be [N, {', '.join(map(str, image_shape))}] like the model's "
                              f"samples, got {got}")

    quality = QualityReference(reference_images, classifier, inception=inception, seed=seed)
    # The teacher at its most steps is the distillation target: every other sample set is also compared
    # with it seed by seed (pixel RMSE, class agreement), which the distribution measures cannot see.
    target = None  # {"num_steps", "images", "predictions"} once the target has been sampled

    def score(method: str, num_steps, nfe, images, seconds) -> dict:
        measures, predictions = quality.measure(images, return_predictions=True)
        row = {"method": method, "num_steps": num_steps, "nfe": nfe,
               "kid_x1e3": None if measures["kid"] is None else 1e3 * measures["kid"],
               "kid_std_x1e3": None if measures["kid_std"] is None else 1e3 * measures["kid_std"],
               "local_fd": measures["local_fd"], "swd": measures["swd"], "confidence": measures["confidence"],
               "class_entropy": measures["class_entropy"], "class_kl": measures["class_kl"],
               "class_kl_by_head": measures["class_kl_by_head"],
               "high_frequency_share": measures["high_frequency_share"], "contrast": measures["contrast"],
               "gradient": measures["gradient"], "seconds_per_image": None if seconds is None else seconds / len(images),
               "rmse_to_target": None, "target_agreement": None, "target_agreement_by_head": None}
        if "fid" in measures:
            row["fid"] = measures["fid"]
        if target is not None and nfe is not None:  # sampled from the same seeds as the target
            row["rmse_to_target"] = float(per_image_rmse(images, target["images"]).mean())
            if predictions:
                agreement = {head: float((predicted == target["predictions"][head]).double().mean())
                             for head, predicted in predictions.items()}
                row["target_agreement_by_head"] = agreement
                row["target_agreement"] = agreement[classifier.main_head]
        return row, predictions

    from tqdm.auto import tqdm

    def sample_teacher_timed(steps: int) -> tuple[torch.Tensor, float]:
        _synchronize()
        started = time.perf_counter()
        chunks = tqdm(_chunks(seeds, batch_size), desc=f"teacher {steps} steps", disable=not progress, leave=False)
        samples = torch.cat([sample_teacher(chunk, steps).cpu() for chunk in chunks])
        _synchronize()
        return _checked_images(samples, len(seeds), image_shape, "teacher.sample"), time.perf_counter() - started

    def teacher_method(steps: int) -> str:
        return "teacher (Heun)" if steps > 1 else "teacher (Euler)"

    teacher_rows = {}  # position in teacher_steps -> row
    if teacher is not None and teacher_steps:
        sample_teacher = _teacher_sampler(teacher, batch_size)
        sample_teacher(seeds[:1], 1)
        # The target is sampled first so that HKD and the shorter runs can be compared with it as they come.
        position = teacher_steps.index(max(teacher_steps))
        steps = teacher_steps[position]
        images, seconds = sample_teacher_timed(steps)
        teacher_rows[position], predictions = score(teacher_method(steps), steps, heun_nfe(steps), images, seconds)
        target = {"num_steps": steps, "nfe": heun_nfe(steps), "images": images, "predictions": predictions}

    # HKD: one step. A one-seed warm-up first, so the timing excludes one-off kernel set-up.
    hkd_model.sample(seeds[:1])
    _synchronize()
    started = time.perf_counter()
    samples = torch.cat([hkd_model.sample(chunk, batch_size=batch_size).cpu()
                         for chunk in tqdm(_chunks(seeds, batch_size), desc="HKD 1 step", disable=not progress,
                                           leave=False)])
    _synchronize()
    rows = [score("HKD (one step)", 1, 1, _checked_images(samples, len(seeds), image_shape, "hkd_model.sample"),
                  time.perf_counter() - started)[0]]

    if teacher is not None:
        for position, steps in enumerate(teacher_steps):
            if position not in teacher_rows:
                images, seconds = sample_teacher_timed(steps)
                teacher_rows[position] = score(teacher_method(steps), steps, heun_nfe(steps), images, seconds)[0]
        rows += [teacher_rows[position] for position in range(len(teacher_steps))]
    else:
        notes.append("no teacher: only HKD is scored")
    if classifier is None:
        notes.append("no classifier: local KID, local FD and recognisability are not measured")
    if data_images is not None and len(data_images) >= 4:
        rows.append(score("held-out data", None, None, data_images, None)[0])

    faithfulness_dataset = None
    if teacher is not None and faithfulness_samples and callable(getattr(teacher, "states_at", None)):
        from ..analysis.faithfulness import faithfulness, summarize_faithfulness
        faithfulness_dataset = faithfulness(hkd_model, teacher, seeds[:faithfulness_samples],
                                            batch_size=max(1, min(batch_size, 16)), progress=progress)

    result = {
        "rows": rows,
        "num_samples": len(seeds),
        "seeds": seeds if len(seeds) <= 16 else {"first": seeds[0], "last": seeds[-1], "count": len(seeds)},
        "reference": reference,
        "target": None if target is None else {"method": "teacher", "num_steps": target["num_steps"],
                                               "nfe": target["nfe"]},
        "hkd": getattr(hkd_model, "checkpoint_path", None),
        "teacher": getattr(teacher, "checkpoint_path", None) if teacher is not None else None,
        "classifier": getattr(classifier, "checkpoint_path", None) if classifier is not None else None,
        "classifier_main_head": classifier.main_head if classifier is not None else None,
        "classifier_held_out_accuracy": ((getattr(classifier, "meta", None) or {}).get("metrics") or {}).get(
            "held_out_accuracy") if classifier is not None else None,
        "inception": getattr(inception, "path", None),
        "device": str(device),
        "measures": ("KID and FD are computed on the local classifier's penultimate features (not Inception): "
                     "they rank models on this data set but are not comparable with published FID/KID. "
                     "SWD: sliced Wasserstein distance of multi-scale 7x7 pixel patches."),
        "notes": notes,
    }
    if faithfulness_dataset is not None:
        result["faithfulness"] = summarize_faithfulness(faithfulness_dataset)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "evaluation.json", result)
        write_text(out_dir / "table.txt", format_table(result) + "\n")
        if faithfulness_dataset is not None:
            from ..analysis.storage import save_dataset
            save_dataset(faithfulness_dataset, out_dir / "faithfulness.nc")
    if faithfulness_dataset is not None:
        result["faithfulness_dataset"] = faithfulness_dataset
    return result


# -- the table -------------------------------------------------------------------------------------------
COLUMNS = (  # (header, key, format)
    ("method", "method", "{}"),
    ("steps", "num_steps", "{:d}"),
    ("NFE", "nfe", "{:d}"),
    ("local KID x1e3", "kid_x1e3", None),
    ("local FD", "local_fd", "{:.3f}"),
    ("SWD", "swd", "{:.4f}"),
    ("confidence", "confidence", "{:.3f}"),
    ("class KL", "class_kl", "{:.4f}"),
    ("class entropy", "class_entropy", "{:.3f}"),
    ("HF share", "high_frequency_share", "{:.3f}"),
    ("contrast", "contrast", "{:.3f}"),
    ("|grad|", "gradient", "{:.3f}"),
    ("s / image", "seconds_per_image", "{:.2e}"),
)


def _cell(row: Mapping, key, pattern: str | None) -> str:
    if key == "kid_x1e3":
        if row.get("kid_x1e3") is None:
            return "-"
        return f"{row['kid_x1e3']:.2f} ± {row['kid_std_x1e3']:.2f}"
    if isinstance(key, tuple):  # (dict key, entry): a per-head value
        value = (row.get(key[0]) or {}).get(key[1])
    else:
        value = row.get(key)
    return "-" if value is None else pattern.format(value)


def format_rows(rows: Sequence[Mapping], columns=COLUMNS) -> str:
    """Evaluation rows as an aligned text table of `columns` ((header, key, format) as in COLUMNS)."""
    cells = [[header for header, _, _ in columns]]
    cells += [[_cell(row, key, pattern) for _, key, pattern in columns] for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(columns))]
    lines = []
    for number, line in enumerate(cells):
        parts = [text.ljust(width) if column == 0 else text.rjust(width)
                 for column, (text, width) in enumerate(zip(line, widths))]
        lines.append("  ".join(parts).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_table(result: Mapping) -> str:
    """The rows as an aligned text table, then what the measures are and what the reference was."""
    columns = list(COLUMNS)
    if any("fid" in row for row in result["rows"]):
        columns.insert(4, ("FID (Inception)", "fid", "{:.3f}"))
    # The other heads' class KL after the main head's (shapes: the background head), then the
    # seed-by-seed comparison with the target (the teacher at its most steps).
    heads = list(next((row["class_kl_by_head"] for row in result["rows"] if row.get("class_kl_by_head")), {}))
    position = [key for _, key, _ in columns].index("class_kl") + 1
    other_heads = [head for head in heads if head != result.get("classifier_main_head")]
    columns[position:position] = [(f"KL {head}", ("class_kl_by_head", head), "{:.4f}") for head in other_heads]
    target = result.get("target")
    if target:
        columns[-1:-1] = [(f"class = {target['nfe']} NFE", "target_agreement", "{:.3f}"),
                          (f"RMSE to {target['nfe']} NFE", "rmse_to_target", "{:.4f}")]
    lines = format_rows(result["rows"], columns).split("\n")
    lines.append("")
    footer = [f"{result['num_samples']} samples per method on the same seeds; reference: "
              f"{_describe_reference(result.get('reference') or {})}.",
              result["measures"],
              "Lower is better for KID, FD, SWD and class KL; higher for confidence. 'held-out data' scores "
              "real images: the floor for this sample size.",
              "HF share (of the power above 0.125 cycles/px), contrast (per-image std) and |grad| (mean "
              "neighbour difference) describe the images themselves: below the held-out row means blurrier, "
              "above means noisier or harsher."]
    if other_heads:
        footer.append(f"class KL is the classifier's main head ({result.get('classifier_main_head')}); "
                      + ", ".join(f"KL {head}" for head in other_heads) + " the same for its other heads.")
    if target:
        footer.append(f"class = {target['nfe']} NFE and RMSE to {target['nfe']} NFE compare each sample with the "
                      f"teacher's {target['nfe']}-NFE sample of the same seed (the distillation target): the "
                      f"fraction whose predicted {result.get('classifier_main_head') or 'main-head'} class is the "
                      "same, and the mean per-image pixel RMS difference (images in [-1, 1]).")
    faithful = result.get("faithfulness")
    if faithful:
        footer.append(
            f"Faithfulness of the Koopman dynamics to the teacher's PF-ODE ({faithful['num_samples']} seeds, EDM's "
            f"18-step grid): the linear latent path beats the constant latent in "
            f"{100 * faithful['koopman_beats_constant']:.0f}% of (level, grid time) pairs; median relative path "
            f"error at sigma {faithful['reference_time']:.2g}: {faithful['koopman_error_median_at']:.2f} (constant "
            f"latent {faithful['constant_error_median_at']:.2f}); one-step map from the teacher's states, RMS to its "
            f"end: {faithful['consistency_error_mean']:.3f} (at T {faithful['consistency_error_at_T']:.3f}); Koopman "
            f"contribution (RMS to the target with A = 0 / with A, minus 1): {100 * faithful['koopman_contribution']:+.1f}%."
            + (f" Decoded latents against the teacher's current estimate D(x_t, t), RMS over the grid: the encoder's "
               f"own {faithful['readout_error_mean']:.3f}, the Koopman path's {faithful['path_state_error_mean']:.3f}, "
               f"the constant latent's {faithful['constant_state_error_mean']:.3f}."
               if "path_state_error_mean" in faithful else ""))
    footer += [f"note: {note}" for note in result.get("notes", [])]
    lines.extend(textwrap.fill(text, width=100, subsequent_indent="  ") for text in footer)
    return "\n".join(lines)


def _describe_reference(reference: Mapping) -> str:
    if "reference_indices" in reference and "seed" in reference:
        first, stop = reference["reference_indices"]
        text = f"{reference.get('name', 'data')} images {first}..{stop - 1} of seed {reference['seed']}"
        if "data_row_indices" in reference:
            first, stop = reference["data_row_indices"]
            text += f" (held-out data row: images {first}..{stop - 1})"
        return text
    return ", ".join(f"{key}={value}" for key, value in reference.items() if key != "note")


# -- command line ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hkdviz eval",
        description="Quality of HKD at 1 NFE against its teacher at 35/15/5/1 NFE on the same seeds, with "
                    "weights-free local measures (KID and FD on a local classifier's features, pixel SWD, "
                    "recognisability, pixel statistics) and wall time per image.")
    parser.add_argument("checkpoint", help="HKD checkpoint: a shipped name (e.g. default) or a directory")
    parser.add_argument("--teacher", default=None,
                        help="teacher name or directory (default: the same shipped name, or a teacher/ folder beside "
                             "the checkpoint); 'none' skips the teacher")
    parser.add_argument("--classifier", default=None,
                        help="feature classifier name or directory (default: as for --teacher); 'none' gives SWD only")
    parser.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES, help="samples per method (default 1000)")
    parser.add_argument("--first-seed", type=int, default=EVALUATION_FIRST_SEED,
                        help="seeds are first-seed .. first-seed + N - 1 (default 1,000,000,000: beyond the training "
                             "trajectories' seeds, which start at 0)")
    parser.add_argument("--teacher-steps", default=",".join(map(str, DEFAULT_TEACHER_STEPS)),
                        help="Heun step counts of the teacher rows (N steps = 2N - 1 NFE; default 18,8,3,1)")
    parser.add_argument("--reference", default=None,
                        help="data set spec whose held-out images are the reference (default: the checkpoint's "
                             "training set; shapes when unknown)")
    parser.add_argument("--inception", default=None, metavar="PATH",
                        help="local Inception weights file: adds a real FID column (needs torch-fidelity; "
                             "nothing is downloaded)")
    parser.add_argument("--faithfulness", type=int, default=DEFAULT_FAITHFULNESS_SAMPLES, metavar="N",
                        help="seeds (the first N) on which the Koopman dynamics' faithfulness to the teacher's PF-ODE is "
                             f"measured (default {DEFAULT_FAITHFULNESS_SAMPLES}; 0 skips)")
    parser.add_argument("--faithfulness-nc", default=None, metavar="PATH",
                        help="also write the per-seed, per-level, per-time faithfulness dataset (netCDF)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def companion_checkpoint(checkpoint: str, kind: str) -> str | None:
    """Where the teacher/classifier of `checkpoint` lives: the same shipped name, or a <kind>/ folder
    beside an exported hkd/ folder (NAME/hkd -> NAME/<kind>). None when there is none."""
    from ..checkpoint import CHECKPOINT_ROOT, CheckpointError, resolve_checkpoint

    path = Path(checkpoint)
    if not path.exists():  # a shipped name
        candidates = [CHECKPOINT_ROOT / checkpoint / kind]
    else:
        directory = resolve_checkpoint(checkpoint, kind="hkd")
        candidates = [directory.parent / kind, path / kind]
    for candidate in candidates:
        try:  # a folder of that name that is no checkpoint (e.g. a training run) does not count
            return str(resolve_checkpoint(str(candidate), kind=kind)) if candidate.is_dir() else None
        except CheckpointError:
            continue
    return None


def parse_teacher_steps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or any(value < 1 for value in steps):
        raise EvaluationError(f"--teacher-steps {text!r}: give positive integers such as 18,8,3,1")
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    try:
        return _run(args)
    except Exception as error:
        if not _is_usage_error(error):
            raise
        print(f"hkdviz eval: error: {error}", file=sys.stderr)
        return 2


def _is_usage_error(error: Exception) -> bool:
    from ..checkpoint import CheckpointError
    from ..model.config import ConfigError
    from .classifier import ClassifierError
    from ..data import DatasetError
    from .quality import QualityError
    return isinstance(error, (EvaluationError, CheckpointError, ConfigError, ClassifierError, DatasetError,
                              QualityError, FileNotFoundError))


def _run(args) -> int:
    from ..checkpoint import resolve_checkpoint, resolve_device
    from .quality import load_inception

    if args.num_samples < 4:
        raise EvaluationError(f"--num-samples must be >= 4, got {args.num_samples}")
    if args.batch_size < 1:
        raise EvaluationError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.first_seed < 0:
        raise EvaluationError(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.json is not None and not Path(args.json).expanduser().resolve().parent.is_dir():
        raise EvaluationError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    steps = parse_teacher_steps(args.teacher_steps)
    try:
        device = resolve_device(args.device)
    except RuntimeError as error:
        raise EvaluationError(f"--device {args.device}: {error}") from None
    resolve_checkpoint(args.checkpoint, kind="hkd")  # fail early, with the checkpoint's own message
    # Inception before any sampling, so a missing package or file fails in a second, not after minutes.
    inception = load_inception(args.inception, device) if args.inception else None

    chosen = {}
    for kind in ("teacher", "classifier"):
        value = getattr(args, kind)
        if value is not None and value.lower() == "none":
            chosen[kind] = None
        elif value is not None:
            chosen[kind] = value
        else:
            chosen[kind] = companion_checkpoint(args.checkpoint, kind)
            if chosen[kind] is None:
                print(f"hkdviz eval: note: no {kind} found for {args.checkpoint!r} (pass --{kind})", file=sys.stderr)

    model = _load_hkd(args.checkpoint, device)
    teacher = _load_teacher(chosen["teacher"], device) if chosen["teacher"] else None
    classifier = _load_classifier(chosen["classifier"], device) if chosen["classifier"] else None
    progress = not args.quiet
    seeds = list(range(args.first_seed, args.first_seed + args.num_samples))
    reference_images = data_images = None
    if args.reference is not None:
        images, description = held_out_reference(args.reference, 2 * len(seeds), resolution=model.image_shape[-1],
                                                 progress=progress)
        half = min(len(seeds), len(images) // 2)
        reference_images, data_images = images[:half], images[half:half + len(seeds)]
    if args.faithfulness < 0:
        raise EvaluationError(f"--faithfulness must be >= 0, got {args.faithfulness}")
    result = evaluate(model, teacher, classifier, reference_images, seeds, steps, data_images=data_images,
                      inception=inception, batch_size=args.batch_size, device=device, progress=progress,
                      faithfulness_samples=args.faithfulness)
    faithfulness_dataset = result.pop("faithfulness_dataset", None)
    if args.faithfulness_nc is not None and faithfulness_dataset is not None:
        from ..analysis.storage import save_dataset
        save_dataset(faithfulness_dataset, Path(args.faithfulness_nc).expanduser())
        print(f"wrote {args.faithfulness_nc}")
    if args.reference is not None:
        result["reference"] = {**description, "reference_indices": [0, half],
                               "data_row_indices": [half, half + len(data_images)]}
    print(format_table(result))
    if args.json is not None:
        write_json(Path(args.json).expanduser(), result)
        print(f"wrote {args.json}")
    return 0


__all__ = ["DEFAULT_TEACHER_STEPS", "EVALUATION_FIRST_SEED", "EvaluationError", "REFERENCE_SEED",
           "companion_checkpoint", "evaluate", "format_rows", "format_table", "held_out_reference", "heun_nfe", "main",
           "parse_dataset_spec", "parse_teacher_steps", "per_image_rmse", "training_seed_overlap",
           "training_seeds"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
