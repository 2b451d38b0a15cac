"""Training loops: the EDM teacher and the HKD student, on one shared skeleton.

    train_teacher(config, out_dir)   EDMLoss on images (xflip), Adam with lr ramp-up (and an optional
                                     linear cool-down at the end), EMA
    train_hkd(config, out_dir)       HKDLoss on teacher trajectories, Adam (constant lr, or an
                                     optional linear cool-down at the end), EMA,
                                     gradient clipping, encoder/decoder from the teacher

`config` is the full training config of presets.py (plain JSON); each loop reads the shared keys
(seed, model, dataset) and its own section. Runs resume from `out_dir/resume.pt` when it exists
and continue exactly as the uninterrupted run would have (see common.py). Under torchrun every
rank computes its shard of the global batch and DDP averages the gradients.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import save_checkpoint
from .common import (EMA, INPUTS_KEY, BatchOrder, RunDirectory, TrainingError, canonical_json, check_resume_config,
                     configure_backend, derive_seed, global_rng_state, load_resume, resolve_autocast, save_resume,
                     seed_everything, set_global_rng_state, synchronize)
from .distributed import DistributedContext, all_reduce_mean, barrier, init_distributed, unwrap_model, wrap_model
from ..evaluation.evaluate import EVALUATION_FIRST_SEED

# The seeds a new HKD checkpoint's band aliases are measured on: past every preset's training seeds, and
# enough that the paired margins between thirds resolve real differences (docs/results.md, "Which band
# carries the fine detail").
BAND_ALIAS_SEEDS = range(EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + 64)


class TrainingLoop:
    """The skeleton: build, resume, step (with gradient accumulation), log, save. Subclasses give
    the model, the data and the loss of one round of a step."""

    kind = "abstract"     # checkpoint kind
    section = "abstract"  # config section
    # What one batch entry is, for the log: an image for the teacher, a sample of 5 decodes (4 trajectory
    # times + x_T) for HKD. stats.jsonl keeps the key "images_per_second" for both (entries per second).
    unit = "images"
    # Whether a resumed run may change "steps": only when no schedule depends on the total step
    # count (then a run extended from N to M steps equals an uninterrupted M-step run).
    steps_extendable = False
    # Dotted config keys holding input paths: a resume accepts them when they name the same location
    # or the same content (see common.check_resume_config), so a moved run tree still resumes.
    path_keys: tuple[str, ...] = ()

    def __init__(self, config: dict, out_dir, device="auto", progress: bool = True,
                 context: DistributedContext | None = None, echo: bool = True):
        self.config = copy.deepcopy(config)
        if self.section not in self.config:
            raise TrainingError(f"the training config has no {self.section!r} section")
        self.options = self.config[self.section]
        # The loops read every key of their section directly (no defaults repeated here): a hand-built
        # config that skipped resolve_training_config is named here, not as a KeyError mid-run.
        from .presets import BASE
        missing = [key for key in ("seed", "model", "dataset") if key not in self.config]
        missing += [f"{self.section}.{key}" for key in BASE[self.section] if key not in self.options]
        if missing:
            raise TrainingError(f"the training config lacks {', '.join(missing)}; build it with "
                                "hkdviz.train.presets.resolve_training_config, which fills every key from BASE")
        self.context = context or init_distributed(device)
        self.device = self.context.device
        self.progress = progress
        self.run = RunDirectory(out_dir, is_main=self.context.is_main, echo=echo)
        self.seed = int(self.config["seed"])
        configure_backend(self.device)
        # Mixed precision on CUDA, and on the CPU where `cpu_autocast` asks for it (bf16 with native
        # support it is faster on an AVX512-BF16 CPU: docs/benchmarks.md, "Training").
        self.autocast_dtype = resolve_autocast(self.section, self.options, self.device)
        # channels_last pays off with cuDNN only (on the CPU it slows the bf16 convolutions down).
        self.channels_last = bool(self.options["channels_last"]) and self.device.type == "cuda"

    # -- subclass interface -------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def build_data(self) -> int:
        """Prepare the data; return the number of training items (for the batch order)."""
        raise NotImplementedError

    def prepare_step(self, step: int, local_size: int) -> None:
        """Per-step draws before the rounds (HKD draws its time indices for the whole global batch here)."""

    def round_loss(self, model, indices: np.ndarray, step: int, offset: int) -> tuple[torch.Tensor, dict]:
        """Mean loss over the items `indices`, which start at position `offset` of this rank's share of
        step `step`, and detached stats."""
        raise NotImplementedError

    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups; a group's "lr_scale" multiplies the scheduled lr."""
        return [{"params": list(self.model.parameters()), "lr_scale": 1.0}]

    def learning_rate(self, images_seen: int) -> float:
        """lr, times a linear ramp-up over `lr_rampup_images` (where the section has it) and a linear
        cool-down to zero over the last `lr_cooldown_steps` steps (a warmup-stable-decay schedule;
        the last step runs at lr / lr_cooldown_steps)."""
        rampup = float(self.options.get("lr_rampup_images", 0))  # only the teacher's section has a ramp-up
        scale = min(images_seen / rampup, 1.0) if rampup > 0 else 1.0
        if self.cooldown_steps:
            remaining = self.total_steps - images_seen // self.batch_size
            scale *= min(remaining / self.cooldown_steps, 1.0)
        return float(self.options["lr"]) * scale

    @property
    def cooldown_steps(self) -> int:
        steps = int(self.options["lr_cooldown_steps"])
        if not 0 <= steps <= self.total_steps:
            raise TrainingError(f"{self.section}.lr_cooldown_steps must lie in [0, {self.section}.steps = "
                                f"{self.total_steps}], got {steps}")
        return steps

    @property
    def extendable(self) -> tuple[str, ...]:
        """Section keys a resumed run may change (a cool-down ends at `steps`, so it fixes them)."""
        return ("steps",) if self.steps_extendable and not self.cooldown_steps else ()

    def run_config(self) -> dict:
        """What config.json records and a resume must match: the shared keys and this stage's section
        (another stage's settings may change between reruns of `train all`)."""
        return {key: copy.deepcopy(self.config[key]) for key in ("seed", "model", "dataset", self.section)}

    def checkpoint_meta(self) -> dict:
        return {}

    def model_config(self) -> dict:
        return unwrap_model(self.model).config

    # -- shared machinery ---------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.options["batch_size"])

    @property
    def total_steps(self) -> int:
        return int(self.options["steps"])

    def rounds(self, local: np.ndarray) -> list[np.ndarray]:
        per_device = self.options["batch_per_device"] or len(local)
        return [local[start:start + per_device] for start in range(0, len(local), per_device)]

    def setup(self) -> None:
        context = self.context
        if self.batch_size % context.world_size:
            raise TrainingError(f"{self.section}.batch_size {self.batch_size} is not divisible by the "
                                f"{context.world_size} ranks")
        if self.total_steps < 1:
            raise TrainingError(f"{self.section}.steps must be >= 1, got {self.total_steps}")
        seed_everything(derive_seed(self.seed, 1))  # the same initial weights on every rank
        self.model = self.build_model().to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train().requires_grad_(True)
        network = getattr(self.model, "net", None) or getattr(self.model, "unet", None)
        if getattr(network, "map_augment", None) is not None:
            # No augmentation pipeline here: the augment embedding (augment_dim > 0 in EDM's presets)
            # never receives gradients; freezing it keeps DDP from waiting for them.
            network.map_augment.requires_grad_(False)
        self.ema = EMA(self.model, self.options["ema_halflife_images"], self.options["ema_rampup_ratio"])
        self.optimizer = torch.optim.Adam(self.parameter_groups(), lr=self.learning_rate(0),
                                          betas=tuple(self.options["betas"]),
                                          eps=float(self.options["eps"]),
                                          fused=True if self.device.type == "cuda" else None)
        self.wrapped = wrap_model(self.model, context)
        seed_everything(derive_seed(self.seed, context.rank, 5))  # per-rank global draws (dropout)
        # One generator per rank (on the device) for the loss's random draws, and one CPU generator,
        # identical on every rank, for draws made for the whole global batch (HKD's time indices).
        self.generator = torch.Generator(self.device).manual_seed(derive_seed(self.seed, context.rank, 2))
        self.cpu_generator = torch.Generator().manual_seed(derive_seed(self.seed, 3))
        self.order = BatchOrder(self.build_data(), seed=derive_seed(self.seed, 4))
        self.step = 0
        self.accumulated: dict[str, float] = {}
        self.accumulated_steps = 0

    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "cpu_generator": self.cpu_generator.get_state(), "global_rng": global_rng_state(),
                "accumulated": dict(self.accumulated), "accumulated_steps": self.accumulated_steps}

    def load_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.cpu_generator.set_state(state["cpu_generator"])
        set_global_rng_state(state["global_rng"])
        self.accumulated = dict(state["accumulated"])
        self.accumulated_steps = int(state["accumulated_steps"])

    RANK_KEYS = ("generator", "global_rng")  # the state that differs between ranks

    def try_resume(self) -> bool:
        """Load out_dir/resume.pt if it exists. One file holds the shared state (model, EMA, optimizer,
        step, shared generator) and every rank's own RNG state, written atomically by rank 0."""
        path = self.run.resume_path
        if not path.exists():
            return False
        state = load_resume(path, map_location=self.device)
        ranks = state.get("ranks")
        if not isinstance(ranks, list):
            raise TrainingError(f"{path}: no per-rank state in this resume file; delete it to start over")
        if len(ranks) != self.context.world_size:
            raise TrainingError(f"{path} was written by {len(ranks)} process(es), this run has "
                                f"{self.context.world_size}: resume with the same number of processes")
        self.load_state({**state, **ranks[self.context.rank]})
        return True

    def save_resume_files(self) -> None:
        state = self.state()
        mine = {key: state.pop(key) for key in self.RANK_KEYS}
        ranks = [mine]
        if self.context.enabled:
            import torch.distributed as dist
            ranks = [None] * self.context.world_size
            dist.all_gather_object(ranks, mine)
        if self.context.is_main:
            save_resume(self.run.resume_path, {**state, "ranks": ranks})

    def train_step(self) -> dict:
        step = self.step
        images_seen = step * self.batch_size
        learning_rate = self.learning_rate(images_seen)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate * group.get("lr_scale", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        local = self.order.rank_batch(step, self.batch_size, self.context.rank, self.context.world_size)
        self.prepare_step(step, len(local))
        parts = self.rounds(local)
        stats_sum: dict[str, float] = {}
        offset = 0
        for round_index, part in enumerate(parts):
            last = round_index == len(parts) - 1
            sync = self.wrapped.no_sync() if (self.context.enabled and not last) else _null_context()
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    loss, stats = self.round_loss(self.wrapped, part, step, offset)
                (loss * (len(part) / len(local))).backward()
            offset += len(part)
            # Stats stay tensors (on the device) until a log line: no GPU sync per step.
            for key, value in stats.items():
                stats_sum[key] = stats_sum.get(key, 0.0) + value.detach() * (len(part) / len(local))
        clip = self.options["grad_clip"]
        if clip:
            stats_sum["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.optimizer.step()
        self.step += 1
        self.ema.update(self.model, self.batch_size, self.step * self.batch_size)
        stats_sum["lr"] = learning_rate
        return stats_sum

    def log_interval(self, seconds: float, steps: int) -> dict:
        keys = sorted(self.accumulated)
        values = torch.tensor([float(self.accumulated[key]) for key in keys], dtype=torch.float64)
        if self.context.enabled:
            values = all_reduce_mean(values.to(self.device), self.context).cpu()
        bad = [key for key, value in zip(keys, values.tolist()) if not math.isfinite(value)]
        if bad:
            # No NaN scrubbing per step (it costs a kernel per tensor): stop and say how to recover.
            # A rerun with the same config would diverge the same way, and one with another lr is refused
            # as a changed config: the way out is a fresh run directory.
            lr = float(self.options["lr"])
            raise TrainingError(f"{self.section}: {', '.join(bad)} became non-finite before step {self.step} (at "
                                f"{self.section}.lr = {lr:g}); this run cannot continue with these settings. Start "
                                f"a fresh run with a lower learning rate, e.g. --set {self.section}.lr={lr / 4:g} and "
                                f"another --out directory")
        record = {"step": self.step, "images": self.step * self.batch_size}
        record.update({key: float(value) / max(self.accumulated_steps, 1) for key, value in zip(keys, values.tolist())})
        record["seconds"] = seconds
        record["images_per_second"] = steps * self.batch_size / seconds if seconds > 0 else None
        self.accumulated, self.accumulated_steps = {}, 0
        return record

    def train(self, stop_at: int | None = None) -> Path | None:
        """Train to `steps` (resuming when a resume file exists) and write the EMA checkpoint.

        stop_at: stop after that step as if killed (no final save): tests and time-boxed runs use it.
        Returns the checkpoint directory (None when stopped early).
        """
        # The lock comes first: a second run on this directory is refused before it builds anything.
        with self.run.lock():
            self.run.remove_stale_temporaries()  # what a kill mid-write left behind
            return self._train(stop_at)

    def _train(self, stop_at: int | None) -> Path | None:
        from tqdm.auto import tqdm

        self.setup()
        if self.context.is_main:
            check_resume_config(self.run, self.run_config(), self.extendable, self.path_keys)
        barrier(self.context)
        resumed = self.try_resume()
        if self.step > self.total_steps:
            raise TrainingError(f"{self.run.path} holds a run already at step {self.step}, past {self.section}.steps = "
                                f"{self.total_steps}: ask for at least {self.step} steps, or use another --out directory")
        self.run.write_config(self.run_config())
        self.run.truncate_stats(self.step)
        parameters = sum(parameter.numel() for parameter in self.model.parameters())
        self.run.log(f"{self.section}: {'resumed at' if resumed else 'starting at'} step {self.step}/{self.total_steps}, "
                     f"{parameters:,} parameters, global batch {self.batch_size} on {self.context.world_size} rank(s), "
                     f"device {self.device}{', autocast ' + str(self.autocast_dtype) if self.autocast_dtype else ''}")
        log_every = int(self.options["log_every"])
        resume_every = int(self.options["resume_every"])
        checkpoint_every = self.options["checkpoint_every"]
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.section, unit="step",
                   disable=not self.progress or not self.context.is_main)
        interval_start, interval_steps = time.perf_counter(), 0
        while self.step < self.total_steps:
            stats = self.train_step()
            for key, value in stats.items():
                self.accumulated[key] = self.accumulated.get(key, 0.0) + value
            self.accumulated_steps += 1
            interval_steps += 1
            bar.update(1)
            if self.step % log_every == 0 or self.step == self.total_steps:
                synchronize(self.device)
                record = self.log_interval(time.perf_counter() - interval_start, interval_steps)
                interval_start, interval_steps = time.perf_counter(), 0
                self.run.append_stats(record)
                bar.set_postfix({"loss": f"{record.get('loss', float('nan')):.4g}",
                                 f"{self.unit}/s": f"{record['images_per_second'] or 0:.0f}"})
                self.run.log(f"{self.section} step {record['step']}: loss {record.get('loss', float('nan')):.5g}, "
                             f"{record['images_per_second'] or 0:.1f} {self.unit}/s")
            if self.step % resume_every == 0 or self.step == self.total_steps:
                self.save_resume_files()
            if checkpoint_every and self.step % int(checkpoint_every) == 0 and self.step < self.total_steps:
                self.save_checkpoint(self.run.path / f"checkpoint-{self.step:07d}")
            if stop_at is not None and self.step >= stop_at and self.step < self.total_steps:
                bar.close()
                return None
        bar.close()
        directory = self.save_checkpoint(self.run.checkpoint_path)
        barrier(self.context)
        return directory

    def save_checkpoint(self, directory: Path) -> Path:
        if self.context.is_main:
            meta = {"step": self.step, "images": self.step * self.batch_size, **self.checkpoint_meta()}
            save_checkpoint(self.ema.module, directory, kind=self.kind, meta=meta, config=self.model_config())
            self.run.log(f"{self.section}: wrote the EMA checkpoint {directory}")
        return directory


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


# -- data sources -----------------------------------------------------------------------------------
class ImageSource:
    """Training images by data-set index, float32 [-1, 1] on the device, with EDM's xflip doubling
    (index N + i mirrors image i). Small sets are materialised once (uint8) on the device."""

    def __init__(self, spec, xflip: bool, device: torch.device, memory_limit_bytes: int = 4 << 30,
                 progress: bool = True):
        from ..data import load_dataset
        self.dataset = load_dataset(spec)
        self.raw_length = len(self.dataset)
        self.xflip = bool(xflip)
        self.device = device
        shape = (self.dataset.num_channels, self.dataset.resolution, self.dataset.resolution)
        self.image_shape = shape
        size = self.raw_length * int(np.prod(shape))
        self.images = None
        if size <= memory_limit_bytes:
            images, labels = self.dataset.materialize(progress=progress)
            self.images = images.to(device)
            self.labels = labels["label"].to(device)

    def __len__(self) -> int:
        return self.raw_length * (2 if self.xflip else 1)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        raw = indices % self.raw_length
        mirrored = indices >= self.raw_length
        if self.images is not None:
            images = self.images[raw.to(self.device)]
            labels = self.labels[raw.to(self.device)]
        else:
            items = [self.dataset[int(index)] for index in raw]
            images = torch.stack([item[0] for item in items]).to(self.device)
            labels = torch.stack([item[1] for item in items]).to(self.device)
            images = ((images + 1) * 127.5).round().to(torch.uint8)
        if bool(mirrored.any()):
            mirrored = mirrored.to(self.device)
            images = torch.where(mirrored.reshape(-1, 1, 1, 1), images.flip(-1), images)
        return images.to(torch.float32) / 127.5 - 1.0, labels


class TeacherLoop(TrainingLoop):
    kind = "teacher"
    section = "teacher"
    # Without a cool-down the learning rate and the EMA depend on the images seen only: `--set
    # teacher.steps=M` continues a finished N-step run exactly as an M-step run would go.
    steps_extendable = True

    def build_model(self):
        from ..model.config import resolve_config
        from ..teacher.edm import EDMPrecond
        return EDMPrecond(resolve_config(self.config["model"]))

    def build_data(self) -> int:
        from ..teacher.edm import EDMLoss
        options = self.options
        self.loss = EDMLoss(P_mean=options["P_mean"], P_std=options["P_std"],
                            sigma_data=self.model.sigma_data)
        self.source = ImageSource(self.config["dataset"], options["xflip"], self.device,
                                  int(options["data_memory_limit_mb"]) << 20,
                                  progress=self.progress and self.context.is_main)
        expected = self.model.image_shape
        if self.source.image_shape != tuple(expected):
            raise TrainingError(f"the data set's images are {self.source.image_shape} but the model expects {tuple(expected)} "
                                f"(set dataset resolution or model.unet.img_resolution/in_channels to match)")
        return len(self.source)

    def round_loss(self, model, indices, step, offset):
        images, labels = self.source.batch(indices)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        class_labels = None
        label_dim = self.model.config["unet"]["label_dim"]
        if label_dim:
            class_labels = torch.nn.functional.one_hot(labels.clamp(min=0), label_dim).to(torch.float32)
        loss = self.loss(model, images, class_labels=class_labels, generator=self.generator)
        loss = loss.float().mean()
        return loss, {"loss": loss.detach()}

    def checkpoint_meta(self) -> dict:
        return {"dataset": _dataset_name(self.config["dataset"]), "training": {"teacher": self.options},
                "metrics": {}}


class HKDLoop(TrainingLoop):
    kind = "hkd"
    section = "hkd"
    unit = "samples"
    path_keys = ("hkd.teacher", "hkd.trajectories")

    def __init__(self, config: dict, out_dir, teacher=None, trajectories=None, **kwargs):
        super().__init__(config, out_dir, **kwargs)
        self.teacher_path = teacher or self.options["teacher"]
        self.trajectory_path = trajectories or self.options["trajectories"]
        if not self.teacher_path:
            raise TrainingError("HKD training needs a teacher checkpoint (hkd.teacher or --teacher)")
        if not self.trajectory_path:
            raise TrainingError("HKD training needs a trajectory directory (hkd.trajectories or --trajectories)")

    def run_config(self) -> dict:
        config = {key: copy.deepcopy(self.config[key]) for key in ("seed", "model", "hkd")}
        # Relative to the run directory where they lie beside it (`train all`'s layout), so a moved
        # tree keeps matching; the content identity lets a resume accept a moved input anyway.
        config["hkd"]["teacher"] = self.run.relative(self.teacher_path)
        config["hkd"]["trajectories"] = self.run.relative(self.trajectory_path)
        inputs = {}
        if getattr(self, "teacher_sha256", None):
            inputs["hkd.teacher"] = self.teacher_sha256
        if getattr(self, "data", None) is not None:
            inputs["hkd.trajectories"] = hashlib.sha256(canonical_json(self.data.manifest).encode()).hexdigest()
        if inputs:
            config[INPUTS_KEY] = inputs
        return config

    def build_model(self):
        from ..model.config import resolve_config
        from ..model.hkd import HKDModel
        from ..teacher.edm import init_hkd_from_teacher

        teacher = self._load_teacher()
        self.teacher_sha256 = teacher.checkpoint_sha256
        if self.options["init_from_teacher"] and hasattr(teacher.denoiser, "network_spec"):
            raise TrainingError(f"{self.teacher_path}: a {teacher.denoiser.describe()} teacher cannot initialise HKD's "
                                "encoder and decoder (only EDMPrecond + DDPM++ splits into them; docs/teachers.md); "
                                "use it for trajectories, or set hkd.init_from_teacher=false to train HKD from scratch")
        config = copy.deepcopy(teacher.config)
        config["koopman"].update(self.options["koopman"] or {})
        config["unet"]["dropout"] = float(self.options["dropout"])
        # The output head and the decoder's fixed noise level are HKD's own (the teacher has neither).
        config["output"] = self.options["output"]
        if self.options["decoder_sigma"] is not None:
            decoder_sigma = self.options["decoder_sigma"]
            config["diffusion"]["decoder_sigma"] = (config["diffusion"]["sigma_max"] if decoder_sigma == "sigma_max"
                                                    else float(decoder_sigma))
        model = HKDModel(resolve_config(config))
        if self.options["init_from_teacher"]:
            init_hkd_from_teacher(model, teacher)
        if model.config["unet"]["label_dim"]:
            raise TrainingError("class-conditional HKD training is not supported yet (model.unet.label_dim > 0)")
        return model

    def parameter_groups(self) -> list[dict]:
        # The Koopman generators may learn at their own rate (hkd.generator_lr_scale): with teacher-initialised
        # networks and zero generators, the shared lr leaves A small while the networks adapt around it.
        generators = [parameter for name, parameter in self.model.named_parameters() if name.startswith("koopman.")]
        others = [parameter for name, parameter in self.model.named_parameters() if not name.startswith("koopman.")]
        groups = [{"params": others, "lr_scale": 1.0}]
        if generators:
            groups.append({"params": generators, "lr_scale": float(self.options["generator_lr_scale"])})
        return groups

    @property
    def total_steps(self) -> int:
        epochs = self.options["epochs"]
        if epochs:
            return max(1, math.ceil(float(epochs) * self._count / self.batch_size))
        return int(self.options["steps"])

    def setup(self) -> None:
        from .loss import HKDDistance, HKDLoss, make_distance
        from .trajectories import TrajectoryDataset, read_manifest

        options = self.options
        self._count = int(read_manifest(self.trajectory_path)["count"])
        distance = HKDDistance(make_distance(options["distance"], device=self.device, teacher=self._distance_teacher()),
                               lambda1_start=options["lambda1_start"], lambda1_end=options["lambda1_end"],
                               lambda2=options["lambda2"])
        self.loss = HKDLoss(distance, num_times=options["num_times"], t_consistency=options["t_consistency"],
                            include_eps=options["include_eps"], latent_weight=options["latent_weight"],
                            time_sampling=options["time_sampling"], recon_weight=options["recon_weight"],
                            generator_smoothness=options["generator_smoothness"],
                            state_weight=options["state_weight"], state_teacher=self._state_teacher())
        self.data = TrajectoryDataset(self.trajectory_path,
                                      memory_limit_bytes=int(options["data_memory_limit_mb"]) << 20,
                                      progress=self.progress and self.context.is_main)
        super().setup()
        self._teacher = None  # the model and the distance hold what they need of it

    def _load_teacher(self):
        """The teacher checkpoint, read once per setup: build_model and a feature distance share it."""
        if getattr(self, "_teacher", None) is None:
            from ..teacher.teacher import load_teacher
            self._teacher = load_teacher(self.teacher_path, device="cpu")
        return self._teacher

    def _distance_teacher(self):
        """The teacher for a distance that reads its features (hkd.distance "teacher_features"), else None."""
        distance = self.options["distance"]
        name = distance.get("name") if isinstance(distance, dict) else distance
        return self._load_teacher() if name == "teacher_features" else None

    def _state_teacher(self):
        """The frozen teacher denoiser the state term (hkd.state_weight > 0) reads, on the training device;
        None when the term is off."""
        if not self.options["state_weight"] > 0:
            return None
        denoiser = copy.deepcopy(self._load_teacher().denoiser)  # private: nothing may move or train it
        if not isinstance(denoiser, torch.nn.Module):
            raise TrainingError("hkd.state_weight needs a teacher network (an EDM denoiser module), got "
                                f"{type(denoiser).__name__}")
        return denoiser.to(self.device).float().eval().requires_grad_(False)

    def build_data(self) -> int:
        data = self.data
        manifest = data.manifest
        if tuple(manifest["image_shape"]) != tuple(self.model.image_shape):
            raise TrainingError(f"trajectories hold {tuple(manifest['image_shape'])} images, the model makes "
                                f"{tuple(self.model.image_shape)}")
        stored_sha = manifest.get("teacher", {}).get("checkpoint_sha256")
        if stored_sha and self.teacher_sha256 and stored_sha != self.teacher_sha256:
            self.run.log(f"warning: the trajectories in {self.trajectory_path} came from another teacher "
                         f"(sha256 {stored_sha[:12]}) than {self.teacher_path} ({self.teacher_sha256[:12]})")
        if data.states is not None and self.device.type == "cuda":
            data.states = data.states.to(self.device)  # gathers then never leave the GPU
        self.sigmas = data.sigmas.to(self.device)
        return len(data)

    def prepare_step(self, step: int, local_size: int) -> None:
        # Drawn for the global batch with a generator shared by all ranks, then sliced: training on
        # W ranks sees exactly the time indices of single-process training.
        times = self.loss.time_indices(self.batch_size, self.data.num_states, generator=self.cpu_generator,
                                       sigmas=self.data.sigmas)
        start = self.context.rank * local_size
        self._step_times = times[start:start + local_size]

    def round_loss(self, model, indices, step, offset):
        samples = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        times = self._step_times[offset:offset + len(samples)]
        if self.data.states is not None:
            location = self.data.states.device
            inputs = self.data.gather(samples.to(location), times.to(location))
            target = self.data.gather(samples.to(location), torch.full((len(samples), 1), self.data.num_states - 1,
                                                                      device=location))[:, 0]
        else:
            full = self.data.gather(samples)
            rows = torch.arange(len(samples)).unsqueeze(1)
            inputs, target = full[rows, times], full[:, -1]
        inputs, target = inputs.to(self.device), target.to(self.device)
        input_sigmas = self.sigmas[times.to(self.device)]
        progress = step / self.total_steps
        loss, stats = self.loss.compute(model, inputs, input_sigmas, target, progress)
        return loss, stats

    def checkpoint_meta(self) -> dict:
        from ..analysis.bands import ALIASES_META_KEY
        from ..analysis.edit_metrics import measure_band_aliases
        meta = {"dataset": _dataset_name(self.config["dataset"]),
                "teacher": {"path": str(self.teacher_path), "sha256": self.teacher_sha256},
                "trajectories": {"path": str(self.trajectory_path), "count": self._count,
                                 "first_seed": int(self.data.manifest["first_seed"]),
                                 "num_steps": int(self.data.manifest["num_steps"])},
                "training": {"hkd": self.options, "loss": self.loss.config()}, "metrics": {}}
        # Which alpha third is "high"/"low" is a property of the trained weights: measured here, read by
        # every analysis of the checkpoint (bands.model_aliases).
        aliases = measure_band_aliases(self.ema.module, BAND_ALIAS_SEEDS)
        if aliases is not None:
            meta[ALIASES_META_KEY] = aliases
        return meta


def _dataset_name(spec) -> str:
    if isinstance(spec, str):
        return spec
    return ", ".join(f"{key}={value}" for key, value in spec.items()) if isinstance(spec, dict) else str(spec)


def train_teacher(config: dict, out_dir, device="auto", progress: bool = True, stop_at: int | None = None,
                  context: DistributedContext | None = None) -> Path | None:
    """Train the EDM teacher; returns out_dir/checkpoint (the EMA weights, kind "teacher")."""
    return TeacherLoop(config, out_dir, device=device, progress=progress, context=context).train(stop_at=stop_at)


def train_hkd(config: dict, out_dir, teacher=None, trajectories=None, device="auto", progress: bool = True,
              stop_at: int | None = None, context: DistributedContext | None = None) -> Path | None:
    """Train HKD on stored teacher trajectories; returns out_dir/checkpoint (kind "hkd", hkdviz.load reads it)."""
    return HKDLoop(config, out_dir, teacher=teacher, trajectories=trajectories, device=device, progress=progress,
                   context=context).train(stop_at=stop_at)


__all__ = ["TrainingLoop", "TeacherLoop", "HKDLoop", "ImageSource", "train_teacher", "train_hkd"]
