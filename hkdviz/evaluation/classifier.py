"""A small CNN classifier whose features stand in for Inception's in weights-free quality measures.

FID needs Inception weights that cannot be downloaded here, so hkdviz trains its own feature
extractor on the training data's labels (shape kind, and background texture as a second head for
the shapes set) in a minute or two on CPU. Its penultimate layer feeds local KID and the local
Frechet distance (never called FID), its softmax the recognisability of samples (quality.py).

    path = train_classifier("shapes", "runs/classifier")        # minutes on CPU (docs/training.md)
    classifier = load_classifier(path)                           # or "default"
    classifier.features(images)      # [N, F] penultimate activations (images in [-1, 1] or uint8)
    classifier.predict(images)       # [N] class indices of the main head
    classifier.probabilities(images) # [N, K] softmax of the main head

Held-out accuracy: for procedural sets (a spec with a "seed", i.e. shapes) the held-out images come
from the same spec with seed CLASSIFIER_HELD_OUT_SEED, disjoint from the training images whatever
their number; for file-based sets a seeded random split of the loaded images is held out.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import load_checkpoint, resolve_device, save_checkpoint
from ..data.base import to_unit_range

ARCHITECTURE = "hkdviz-cnn-v1"
# Held-out images of procedural data sets use this seed; training runs use small seeds (0 by default).
CLASSIFIER_HELD_OUT_SEED = 1_000_000

CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "architecture": ARCHITECTURE,
    "in_channels": 3,
    "resolution": 32,
    "widths": [32, 48, 64, 72],  # stem at full resolution, then one stride-2 stage per later width
    "blocks_per_stage": 2,       # 3x3 convolutions per downsampled stage (the first one strides)
    "feature_dim": 128,          # penultimate layer: the features of KID / local FD
    "groups": 8,                 # GroupNorm groups: batch-independent features, unlike BatchNorm
    "heads": {},                 # head name -> list of class names
    "main_head": None,           # the head predict/probabilities use by default (None: the first)
    # `features` divides by this: the RMS of the raw features on held-out data, set after training,
    # so KID's polynomial kernel (x.y / d + 1)^3 sees unit-scale features whatever the training did.
    "feature_scale": 1.0,
}

# Sized to train in minutes on 2 CPU cores; its time and held-out accuracy: docs/training.md, "Budgets".
TRAIN_DEFAULTS = {"num_images": 20_000, "steps": 1_000, "batch_size": 128, "num_held_out": 2_000,
                  "learning_rate": 2e-3, "warmup_steps": 50}


class ClassifierError(ValueError):
    """Bad input to the classifier or its training; the message names the problem."""


def _conv_block(in_channels: int, out_channels: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1),
                         nn.GroupNorm(math.gcd(groups, out_channels), out_channels), nn.SiLU())


def resolve_classifier_config(config: Mapping[str, Any] | None = None, **overrides: Any) -> dict:
    """The full config: defaults updated by `config` and `overrides`, checked."""
    result = copy.deepcopy(CLASSIFIER_DEFAULTS)
    for source in (config or {}), overrides:
        unknown = sorted(set(source) - set(CLASSIFIER_DEFAULTS))
        if unknown:
            raise ClassifierError(f"unknown classifier config key(s) {unknown}; known: {sorted(CLASSIFIER_DEFAULTS)}")
        result.update(copy.deepcopy(dict(source)))
    if result["architecture"] != ARCHITECTURE:
        raise ClassifierError(f"unknown classifier architecture {result['architecture']!r} "
                              f"(this hkdviz builds {ARCHITECTURE!r})")
    widths = result["widths"]
    if (not isinstance(widths, (list, tuple)) or len(widths) < 2
            or not all(isinstance(width, int) and width > 0 for width in widths)):
        raise ClassifierError(f"widths must be a list of >= 2 positive integers, got {widths!r}")
    heads = result["heads"]
    if not isinstance(heads, Mapping) or not heads:
        raise ClassifierError("a classifier needs at least one head: {name: [class names]}")
    for name, classes in heads.items():
        if not isinstance(classes, (list, tuple)) or len(classes) < 2:
            raise ClassifierError(f"head {name!r} needs a list of >= 2 class names, got {classes!r}")
    result["heads"] = {str(name): [str(label) for label in classes] for name, classes in heads.items()}
    # Stored explicitly: config.json is written with sorted keys, which would reorder the heads.
    if result["main_head"] is None:
        result["main_head"] = next(iter(result["heads"]))
    if not isinstance(result["feature_scale"], (int, float)) or not result["feature_scale"] > 0:
        raise ClassifierError(f"feature_scale must be a positive number, got {result['feature_scale']!r}")
    if result["main_head"] not in result["heads"]:
        raise ClassifierError(f"main_head {result['main_head']!r} is not one of the heads {list(result['heads'])}")
    result["widths"] = list(widths)
    return result


class ImageClassifier(nn.Module):
    """Conv stem, stride-2 stages, global average pool, a SiLU feature layer, one linear head per label.

    Inputs: [N, C, H, W] float in [-1, 1] (uint8 is converted as the data sets do), H = W = resolution.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, **overrides: Any):
        super().__init__()
        self.config = resolve_classifier_config(config, **overrides)
        config = self.config
        widths, groups = config["widths"], config["groups"]
        layers = [_conv_block(config["in_channels"], widths[0], 1, groups)]
        for previous, width in zip(widths[:-1], widths[1:]):
            layers.append(_conv_block(previous, width, 2, groups))
            layers.extend(_conv_block(width, width, 1, groups) for _ in range(config["blocks_per_stage"] - 1))
        self.trunk = nn.Sequential(*layers)
        self.feature_layer = nn.Sequential(nn.Linear(widths[-1], config["feature_dim"]), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(config["feature_dim"], len(classes))
                                    for name, classes in config["heads"].items()})
        # Provenance, set by load_classifier.
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.meta: dict = {}

    # -- properties --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def head_names(self) -> list[str]:
        return list(self.config["heads"])

    @property
    def main_head(self) -> str:
        return self.config["main_head"]

    @property
    def feature_dim(self) -> int:
        return int(self.config["feature_dim"])

    def class_names(self, head: str | None = None) -> list[str]:
        return list(self.config["heads"][self._head(head)])

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head for a batch already on the device: {head: [N, K]}."""
        features = self._features(images)
        return {name: head(features) for name, head in self.heads.items()}

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_layer(self.trunk(images).mean(dim=(2, 3)))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Penultimate activations / feature_scale, [N, feature_dim] float32, on the device `images` came from."""
        scale = float(self.config["feature_scale"])
        return self._batched(images, batch_size, lambda batch: self._features(batch) / scale)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, head: str | None = None, batch_size: int = 500) -> torch.Tensor:
        layer = self.heads[self._head(head)]
        return self._batched(images, batch_size, lambda batch: layer(self._features(batch)))

    @torch.no_grad()
    def features_and_probabilities(self, images: torch.Tensor, head: str | None = None,
                                   batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features as `features`, softmax of one head as `probabilities`) from one pass of the network."""
        features, probabilities = self.features_and_all_probabilities(images, batch_size)
        return features, probabilities[self._head(head)]

    @torch.no_grad()
    def features_and_all_probabilities(self, images: torch.Tensor,
                                       batch_size: int = 500) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(features as `features`, {head: softmax [N, K]} for every head) from one pass of the network."""
        scale = float(self.config["feature_scale"])
        sizes = [layer.out_features for layer in self.heads.values()]

        def every(batch):
            raw = self._features(batch)
            return torch.cat([raw / scale] + [layer(raw).softmax(dim=1) for layer in self.heads.values()], dim=1)
        features, *probabilities = self._batched(images, batch_size, every).split([self.feature_dim, *sizes], dim=1)
        return features, dict(zip(self.heads.keys(), probabilities))

    def probabilities(self, images: torch.Tensor, head: str | None = None, batch_size: int = 500) -> torch.Tensor:
        """Softmax [N, K] of one head (the main head by default)."""
        return self.logits(images, head, batch_size).softmax(dim=1)

    def predict(self, images: torch.Tensor, head: str | None = None, batch_size: int = 500) -> torch.Tensor:
        """Predicted class indices [N] int64 of one head (the main head by default)."""
        return self.logits(images, head, batch_size).argmax(dim=1)

    def _head(self, head: str | None) -> str:
        if head is None:
            return self.main_head
        if head not in self.config["heads"]:
            raise ClassifierError(f"no head {head!r}; this classifier has {self.head_names}")
        return head

    def _batched(self, images: torch.Tensor, batch_size: int, function) -> torch.Tensor:
        images = self.check_images(images)
        if batch_size < 1:
            raise ClassifierError(f"batch_size must be >= 1, got {batch_size}")
        was_training = self.training
        self.eval()
        try:
            outputs = [function(to_unit_range(images[start:start + batch_size], self.device)).float()
                       for start in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(outputs).to(images.device)

    def check_images(self, images) -> torch.Tensor:
        """Raise a ClassifierError naming the problem unless `images` is a [N, C, S, S] tensor this
        classifier reads (uint8 or floating point, C and S as configured, N >= 1)."""
        if not isinstance(images, torch.Tensor):
            raise ClassifierError(f"images must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
        expected = (self.config["in_channels"], self.config["resolution"], self.config["resolution"])
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ClassifierError(f"images must have shape [N, {', '.join(map(str, expected))}], "
                                  f"got {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
            raise ClassifierError(f"images must be uint8 or floating point in [-1, 1], got {images.dtype}")
        if len(images) == 0:
            raise ClassifierError("images is empty")
        return images

    def extra_repr(self) -> str:
        parameters = sum(p.numel() for p in self.parameters())
        return f"heads={ {name: len(c) for name, c in self.config['heads'].items()} }, parameters={parameters:,}"


# -- training ----------------------------------------------------------------------------------------
def _label_heads(dataset, labels: Mapping[str, torch.Tensor]) -> dict[str, tuple[list[str], torch.Tensor]]:
    """{head: (class names, labels [N])} from what `materialize` returned.

    The main "label" is dropped where another key carries the same values (shapes: label == shape);
    keys without any label (-1 everywhere) are skipped.
    """
    heads = {}
    main = labels.get("label")
    for key, values in labels.items():
        if key == "label" and any(other != "label" and torch.equal(values, labels[other]) for other in labels):
            continue
        if bool((values < 0).all()):
            continue
        names = getattr(dataset, f"{key}_names", None)
        if names is None and main is not None and torch.equal(values, main):
            names = getattr(dataset, "label_names", None)
        if names is None:
            names = [str(index) for index in range(int(values.max()) + 1)]
        if int(values.max()) >= len(names):
            raise ClassifierError(f"label {key!r} has value {int(values.max())} but only {len(names)} class names")
        heads[key] = (list(names), values)
    if not heads:
        raise ClassifierError(f"data set {getattr(dataset, 'name', '?')!r} has no labels; the classifier needs "
                              "labelled images (e.g. the default 'shapes' set)")
    # The main head first: "shape" for shapes, else "label".
    order = sorted(heads, key=lambda key: (0 if main is not None and torch.equal(heads[key][1], main) else 1))
    return {key: heads[key] for key in order}


def _held_out_split(dataset, num_images: int, num_held_out: int, seed: int, progress: bool):
    """(train images, train labels, held-out images, held-out labels, held-out description)."""
    from ..data import load_dataset

    spec = dataset.spec
    if "seed" in spec:  # procedural: a seed nobody trains with gives disjoint images
        if spec["seed"] == CLASSIFIER_HELD_OUT_SEED:
            raise ClassifierError(f"seed {CLASSIFIER_HELD_OUT_SEED} is reserved for the classifier's held-out images")
        train_images, train_labels = dataset.materialize(np.arange(num_images), progress=progress)
        held_out_set = load_dataset(spec, num_images=num_held_out, seed=CLASSIFIER_HELD_OUT_SEED)
        held_images, held_labels = held_out_set.materialize(progress=progress)
        return train_images, train_labels, held_images, held_labels, held_out_set.spec
    total = len(dataset)
    if total < 2:
        raise ClassifierError(f"data set {spec} has {total} image(s); need at least 2 to hold some out")
    num_held_out = min(num_held_out, max(1, total // 5))
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).numpy()
    held = np.sort(order[:num_held_out])
    train = np.sort(order[num_held_out:num_held_out + num_images])
    train_images, train_labels = dataset.materialize(train, progress=progress)
    held_images, held_labels = dataset.materialize(held, progress=progress)
    return train_images, train_labels, held_images, held_labels, {
        **spec, "held_out": f"{num_held_out} images by a seeded random split (seed {seed})"}


def _accuracy(model: ImageClassifier, images: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {head: float((model.predict(images, head=head).cpu() == labels[head]).float().mean())
            for head in model.head_names}


def train_classifier(dataset_spec: str | Mapping[str, Any] = "shapes", out_dir=None, *,
                     num_images: int = TRAIN_DEFAULTS["num_images"], steps: int = TRAIN_DEFAULTS["steps"],
                     batch_size: int = TRAIN_DEFAULTS["batch_size"],
                     num_held_out: int = TRAIN_DEFAULTS["num_held_out"],
                     learning_rate: float = TRAIN_DEFAULTS["learning_rate"],
                     heads: Sequence[str] | None = None, config: Mapping[str, Any] | None = None,
                     device="auto", seed: int = 0, progress: bool = True) -> Path:
    """Train the feature classifier on a labelled data set and save it (kind "classifier") to out_dir.

    heads: which label keys to learn (default: all the set has; shapes -> "shape", "background").
    meta.json records the held-out accuracy per head, the held-out images and the training time.
    """
    from tqdm.auto import tqdm

    from ..data import load_dataset

    if out_dir is None:
        raise ClassifierError("train_classifier needs out_dir (where to save the checkpoint)")
    for name, value, minimum in (("num_images", num_images, 1), ("steps", steps, 1),
                                 ("batch_size", batch_size, 1), ("num_held_out", num_held_out, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ClassifierError(f"{name} must be an integer >= {minimum}, got {value!r}")
    device = resolve_device(device)
    started, started_cpu = time.perf_counter(), time.process_time()

    dataset = load_dataset(dataset_spec)
    if dataset.spec.get("xflip"):  # training flips on its own; mirrors must not straddle the split
        dataset = load_dataset(dataset.spec, xflip=False)
    if "num_images" in dataset.spec:  # procedural: render exactly what is needed
        dataset = load_dataset(dataset.spec, num_images=num_images)
    train_images, train_labels, held_images, held_labels, held_spec = _held_out_split(
        dataset, num_images, num_held_out, seed, progress)
    label_heads = _label_heads(dataset, train_labels)
    if heads is not None:
        missing = [head for head in heads if head not in label_heads]
        if missing or not heads:
            raise ClassifierError(f"heads {list(heads)!r}: the data set has label heads {list(label_heads)}")
        label_heads = {head: label_heads[head] for head in heads}
    model_config = resolve_classifier_config(config, in_channels=dataset.num_channels,
                                             resolution=dataset.resolution,
                                             heads={key: names for key, (names, _) in label_heads.items()})

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = ImageClassifier(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    warmup = min(TRAIN_DEFAULTS["warmup_steps"], max(1, steps // 10))
    # Linear warm-up then cosine decay to zero: a short fixed budget converges better than a constant rate.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup)
                                                 * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps)))
    generator = torch.Generator().manual_seed(seed)
    targets = {key: values for key, (_, values) in label_heads.items()}
    model.train()
    bar = tqdm(range(steps), desc="classifier", disable=not progress)
    for step in bar:
        index = torch.randint(len(train_images), (batch_size,), generator=generator)
        batch = to_unit_range(train_images[index])
        flip = torch.rand(batch_size, generator=generator) < 0.5  # mirror images keep their labels
        batch[flip] = batch[flip].flip(-1)
        logits = model(batch.to(device))
        loss = sum(F.cross_entropy(logits[key], targets[key][index].to(device)) for key in targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == steps - 1:  # reading the loss synchronises a GPU: not every step
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    model.eval()
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu

    accuracy = _accuracy(model, held_images, held_labels)
    model.config["feature_scale"] = 1.0
    raw = model.features(held_images)
    model.config["feature_scale"] = float(raw.square().mean().sqrt().clamp_min(1e-12))
    chance = {key: float(torch.bincount(held_labels[key], minlength=len(names)).max() / len(held_images))
              for key, (names, _) in label_heads.items()}
    meta = {
        "step": steps,
        "dataset": {**dataset.spec, "num_images": num_images} if "num_images" in dataset.spec else dataset.spec,
        "metrics": {"held_out_accuracy": accuracy, "held_out_majority_baseline": chance,
                    "held_out_images": int(len(held_images)), "train_seconds": round(train_seconds, 1),
                    # CPU time of this process: the wall time above also counts waiting for a busy machine.
                    "train_cpu_seconds": round(train_cpu_seconds, 1)},
        "held_out": held_spec,
        "training": {"num_images": num_images, "steps": steps, "batch_size": batch_size,
                     "learning_rate": learning_rate, "seed": seed, "device": str(device),
                     "num_held_out": num_held_out, "config": dict(config) if config else None},
    }
    return save_checkpoint(model, out_dir, kind="classifier", meta=meta, config=model.config)


def load_classifier(name_or_dir="default", device="auto") -> ImageClassifier:
    """A trained classifier from a shipped name ("default" -> checkpoints/default/classifier/) or a directory
    (`hkdviz.checkpoint.load_checkpoint`)."""
    return load_checkpoint(name_or_dir, "classifier", lambda config, state, source: ImageClassifier(config), device)


__all__ = ["ARCHITECTURE", "CLASSIFIER_DEFAULTS", "CLASSIFIER_HELD_OUT_SEED", "ClassifierError", "ImageClassifier",
           "load_classifier", "resolve_classifier_config", "train_classifier"]
