"""Shared training infrastructure: run directories, EMA, resume files, RNG state, batch order.

A run directory (EDM style) holds
    config.json    the full training config (plain JSON)
    log.txt        human-readable log
    stats.jsonl    one JSON object per logging interval (step, images, loss terms, images/s)
    resume.pt      everything needed to continue exactly (model, EMA, optimizer, RNG, step), atomic
    checkpoint/    the EMA weights in the core checkpoint format (hkdviz.load / load_teacher read it)

Determinism: the batch order is a pure function of (seed, step) (one permutation per epoch), the
per-rank random draws come from one seeded torch.Generator per rank, and the resume file carries
every RNG state, so a run resumed after a kill reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

import copy
import datetime
import io
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import TEMPORARY_SUFFIX, write_bytes, write_text
from ..inputs import read_json_file, require_regular_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not guarded
    fcntl = None

RESUME_FILE = "resume.pt"
CONFIG_FILE = "config.json"
STATS_FILE = "stats.jsonl"
LOG_FILE = "log.txt"
LOCK_FILE = ".hkdviz.lock"
CHECKPOINT_DIR = "checkpoint"
RESUME_FORMAT = 1


class TrainingError(RuntimeError):
    """A training run that cannot start or continue; the message says why."""


# -- files ---------------------------------------------------------------------------------------
def json_default(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


class RunDirectory:
    """config.json, log.txt and stats.jsonl of one run. Only the main rank writes."""

    def __init__(self, path, is_main: bool = True, echo: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        self.echo = echo
        if is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    def lock(self) -> "RunLock":
        """The exclusive lock of this run directory (taken by the main rank only)."""
        return RunLock(self.path, enabled=self.is_main)

    def relative(self, path) -> str:
        """`path` relative to this run directory when it lies beside it (same parent tree), so moving
        the whole tree keeps config.json valid; the resolved absolute path otherwise. A value that is
        no existing path (a shipped checkpoint name such as "default") is kept as given."""
        if not Path(path).expanduser().exists():
            return str(path)
        target = Path(path).expanduser().resolve()
        here = self.path.resolve()
        if target.is_relative_to(here.parent):
            return os.path.relpath(target, here)
        return str(target)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files (".<name>.<random>.tmp", see hkdviz.atomic) that a killed run
        left in this directory and its checkpoint folders. Call it only while holding the lock."""
        removed = []
        if self.is_main and self.path.is_dir():
            for folder in [self.path, *sorted(self.path.glob(f"{CHECKPOINT_DIR}*"))]:
                for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
                    if stale.is_file():
                        stale.unlink()
                        removed.append(stale)
        return removed

    @property
    def resume_path(self) -> Path:
        return self.path / RESUME_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def write_config(self, config: dict) -> None:
        if self.is_main:
            write_text(self.path / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True, default=json_default) + "\n")

    def log(self, message: str) -> None:
        if not self.is_main:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path / LOG_FILE, "a") as handle:
            handle.write(f"{stamp} {message}\n")
        if self.echo:
            from tqdm.auto import tqdm
            tqdm.write(message, file=sys.stderr)

    def append_stats(self, record: dict) -> None:
        if self.is_main:
            with open(self.path / STATS_FILE, "a") as handle:
                handle.write(json.dumps(record, default=json_default) + "\n")

    def truncate_stats(self, last_step: int) -> None:
        """Drop records past `last_step`: a kill after a log line but before the next resume file
        would otherwise leave lines that the resumed run writes again."""
        path = self.path / STATS_FILE
        if not self.is_main or not path.exists():
            return
        require_regular_file(path, TrainingError, what="stats file")
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line
            if record.get("step", 0) <= last_step:
                kept.append(line)
        write_text(path, "".join(line + "\n" for line in kept))


def write_pipeline_config(run: RunDirectory, config: dict, finished: bool) -> None:
    """DIR/config.json of `train all`: written when a pipeline starts in a fresh directory (so it
    documents the run while it goes), and replaced once a pipeline has finished. A rerun that a stage
    refuses (changed settings) therefore leaves the previous, still valid file alone."""
    path = run.path / CONFIG_FILE
    if run.is_main and (finished or not path.exists()):
        write_text(path, json.dumps(config, indent=2, sort_keys=True, default=json_default) + "\n")


def read_stats(path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE
    require_regular_file(path, TrainingError, what="stats file")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- EMA -----------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of weights with EDM's half-life in images and ramp-up:
    half-life = min(halflife_images, images_seen * rampup_ratio), beta = 0.5^(batch / half-life)."""

    def __init__(self, model: torch.nn.Module, halflife_images: float, rampup_ratio: float | None = 0.05):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.halflife_images = float(halflife_images)
        self.rampup_ratio = rampup_ratio

    def beta(self, batch_images: int, images_seen: int) -> float:
        halflife = self.halflife_images
        if self.rampup_ratio is not None:
            halflife = min(halflife, images_seen * self.rampup_ratio)
        return 0.5 ** (batch_images / max(halflife, 1e-8))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch_images: int, images_seen: int) -> None:
        beta = self.beta(batch_images, images_seen)
        averages = list(self.module.parameters())
        # One fused kernel per dtype/device group instead of one per tensor (matters on GPUs).
        torch._foreach_lerp_(averages, [parameter.detach() for parameter in model.parameters()], 1.0 - beta)
        for average, current in zip(self.module.buffers(), model.buffers()):
            average.copy_(current)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


# -- RNG and resume state -------------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, rank, purpose): independent streams per rank."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (dropout draws from torch's global generator)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def global_rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # Plain lists/ints so torch.load(weights_only=True) can read it back.
        "numpy": [numpy_state[0], numpy_state[1].tolist(), int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    version, values, *rest = state["python"]
    random.setstate((version, tuple(values), *rest))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"format": RESUME_FORMAT, **state}, buffer)
    write_bytes(Path(path), buffer.getvalue())


def load_resume(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    require_regular_file(path, TrainingError, what="resume file")  # a FIFO here would block torch.load
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: say which and why
        raise TrainingError(f"{path}: cannot read the resume file ({type(error).__name__}: {error}); "
                            f"delete it to start the run over") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise TrainingError(f"{path}: not an hkdviz resume file (format {found!r})")
    return state


# Keys whose values never change the computed numbers: a resumed run may change them.
RUNTIME_KEYS = ("log_every", "resume_every", "checkpoint_every", "num_workers", "progress", "device")


# Keys added after run directories were first written, with the value that keeps the old behaviour:
# a run written before the key existed still resumes while the key holds that value.
NEUTRAL_VALUES = {"lr_cooldown_steps": 0, "generator_smoothness": 0, "time_sampling": "uniform", "recon_weight": 1,
                  "state_weight": 0}


def without_runtime(config: dict, extendable: tuple[str, ...] = ()) -> dict:
    """The config without the keys a resumed run may change: RUNTIME_KEYS, plus `extendable`
    (keys such as "steps" that the caller's loop allows to change, see TrainingLoop.extendable),
    and without NEUTRAL_VALUES keys that hold their neutral value."""
    config = copy.deepcopy(config)
    config.pop("device", None)
    for section in config.values():
        if isinstance(section, dict):
            for key in RUNTIME_KEYS + tuple(extendable):
                section.pop(key, None)
            for key, neutral in NEUTRAL_VALUES.items():
                if key in section and section[key] == neutral:
                    del section[key]
    return config


INPUTS_KEY = "inputs"  # config.json entry: content identity (sha256) of path-valued inputs, by dotted key


def config_differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf that differs; lists compare as a whole.
    A key absent on one side shows as None there."""
    if isinstance(old, dict) and isinstance(new, dict):
        differences = []
        for key in sorted(set(old) | set(new), key=str):
            differences += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return differences
    if canonical_json(old) != canonical_json(new):
        return [(prefix.rstrip("."), old, new)]
    return []


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=json_default)


def describe_differences(differences, limit: int = 6) -> str:
    def short(value):
        text = canonical_json(value)
        if len(text) <= 100:
            return text
        # A long string is mostly a path, told apart by its end; anything else by its start.
        return '"...' + text[-96:] if isinstance(value, str) else text[:96] + "..."
    shown = [f"{key}: {short(old)} -> {short(new)}" for key, old, new in differences[:limit]]
    if len(differences) > limit:
        shown.append(f"... ({len(differences) - limit} more)")
    return "; ".join(shown)


def _same_input(run: "RunDirectory", key: str, old, new, old_inputs: dict, new_inputs: dict) -> bool:
    """Whether two values of a path-valued key name the same input: the same location (a relative
    value is relative to the run directory), or the same content identity recorded in both configs
    (a moved directory)."""
    if isinstance(old, str) and isinstance(new, str):
        def located(value):
            return (run.path / Path(value).expanduser()).resolve()
        if located(old) == located(new):
            return True
    recorded = old_inputs.get(key)
    return recorded is not None and recorded == new_inputs.get(key)


def check_resume_config(run: RunDirectory, config: dict, extendable: tuple[str, ...] = (),
                        path_keys: tuple[str, ...] = ()) -> None:
    """A resumed run must continue the same config (apart from RUNTIME_KEYS and `extendable`).

    path_keys: dotted keys holding input paths (e.g. "hkd.teacher"); they match when they name the
    same location or the same content (config[INPUTS_KEY][key], a sha256), so a moved run tree resumes.
    The refusal names every differing key with its old and new value."""
    path = run.path / CONFIG_FILE
    if not path.exists():
        return
    saved = read_json_file(path, TrainingError, what="run config")
    if not isinstance(saved, dict):
        raise TrainingError(f"{path}: corrupt (not a JSON object); delete it to resume, or use another --out")
    saved, config = copy.deepcopy(saved), copy.deepcopy(config)
    old_inputs, new_inputs = saved.pop(INPUTS_KEY, None) or {}, config.pop(INPUTS_KEY, None) or {}
    differences = [(key, old, new) for key, old, new
                   in config_differences(without_runtime(saved, extendable), without_runtime(config, extendable))
                   if not (key in path_keys and _same_input(run, key, old, new, old_inputs, new_inputs))]
    if differences:
        raise TrainingError(f"{run.path} holds a run with a different config ({describe_differences(differences)}); "
                            f"use another --out directory, or delete {RESUME_FILE} and {CONFIG_FILE} there to start "
                            f"over")


class RunLock:
    """An exclusive, non-blocking lock on a run directory (fcntl.flock on DIR/.hkdviz.lock), held for a
    whole stage: a second run on the same directory is refused at once, naming the holder's PID.
    The kernel drops the lock when the holder exits, even after kill -9, so a stale file never blocks.
    Not re-entrant: one holder per directory (stages of `train all` lock their own subdirectories)."""

    def __init__(self, directory, enabled: bool = True):
        self.directory = Path(directory)
        self.enabled = enabled and fcntl is not None
        self.descriptor: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    def acquire(self) -> "RunLock":
        if not self.enabled or self.descriptor is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise TrainingError(f"{self.directory} is in use by another hkdviz run (PID {holder}); wait for it to "
                                f"finish or stop it, or use another --out directory") from None
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self.descriptor = descriptor
        return self

    def release(self) -> None:
        if self.descriptor is not None:
            # The file stays: removing it would let a third process lock a new inode while a second
            # one still holds the old, both believing they own the directory.
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exception) -> bool:
        self.release()
        return False


# -- batch order ---------------------------------------------------------------------------------
class BatchOrder:
    """Which data indices global batch `step` holds: consecutive slices of a stream of per-epoch
    permutations of range(length), epoch e shuffled by (seed, e). Rank r of W takes the r-th
    contiguous part, so the ranks' shards are disjoint and together equal the global batch; the
    position is a function of the step alone (nothing to store for resume)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        if length < 1:
            raise TrainingError("the training data set is empty")
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self._epoch = None
        self._permutation = None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            if self.shuffle:
                self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.length)
            else:
                self._permutation = np.arange(self.length)
            self._epoch = epoch
        return self._permutation

    def global_batch(self, step: int, batch_size: int) -> np.ndarray:
        start = step * batch_size
        indices = []
        while len(indices) < batch_size:
            epoch, offset = divmod(start + len(indices), self.length)
            take = min(batch_size - len(indices), self.length - offset)
            indices.extend(self.permutation(epoch)[offset:offset + take].tolist())
        return np.asarray(indices, dtype=np.int64)

    def rank_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        if batch_size % world_size:
            raise TrainingError(f"batch size {batch_size} is not divisible by the world size {world_size}")
        local = batch_size // world_size
        return self.global_batch(step, batch_size)[rank * local:(rank + 1) * local]


# -- devices and timing ----------------------------------------------------------------------------
def configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, None: None, "none": None}
CPU_AUTOCAST_CHOICES = (True, False, "auto")


def cpu_has_native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's bf16
    convolutions beat float32; elsewhere bf16 on the CPU is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_autocast(section: str, options: dict, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype a stage runs its network in, from `<section>.autocast` (the dtype on
    CUDA) and `<section>.cpu_autocast` (true | false | "auto": whether that dtype also applies on
    the CPU; "auto" = when the CPU has native bfloat16). On the CPU only bfloat16 is offered."""
    autocast = options.get("autocast")
    if autocast not in AUTOCAST_DTYPES:
        raise TrainingError(f"{section}.autocast must be 'bfloat16', 'float16' or null, got {autocast!r}")
    dtype = AUTOCAST_DTYPES[autocast]
    if device.type == "cuda" or dtype is None:
        return dtype
    on_cpu = options.get("cpu_autocast", False)
    if on_cpu not in CPU_AUTOCAST_CHOICES:
        raise TrainingError(f"{section}.cpu_autocast must be true, false or \"auto\", got {on_cpu!r}")
    if device.type != "cpu" or on_cpu is False or (on_cpu == "auto" and not cpu_has_native_bfloat16()):
        return None
    if dtype is not torch.bfloat16:
        raise TrainingError(f"{section}.cpu_autocast needs {section}.autocast = 'bfloat16' (got {autocast!r}): "
                            f"the CPU runs mixed precision in bfloat16 only")
    return dtype


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed


__all__ = ["RunDirectory", "EMA", "BatchOrder", "TrainingError", "save_resume", "load_resume", "read_stats",
           "derive_seed", "seed_everything", "global_rng_state", "set_global_rng_state",
           "check_resume_config", "configure_backend", "RunLock", "config_differences"]
