"""Checkpoints: a directory with model.safetensors (weights only), config.json and meta.json.

Nothing here unpickles: weights are safetensors, the rest is JSON. Loading rebuilds the module from
config.json, then checks every tensor name and shape before copying, and says exactly what is wrong.
`load_checkpoint` does that for every kind (hkd, teacher, classifier); the kind's own loader
(`hkdviz.load`, `load_teacher`, `load_classifier`) hands it the constructor, so this module imports no
network and every package may import it (docs/architecture.md, "Packages and layers").

Integrity: save records the sha256 of model.safetensors in meta.json ("weights_sha256"); load
recomputes it and refuses a mismatch (one flipped bit would otherwise change samples silently).
Checkpoints written before the key existed still load. Load also refuses weights that are not
floating point where the module expects floats, and weights holding NaN or inf.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .atomic import temporary_path, write_json
from .inputs import file_kind, open_regular_file, read_json_file, require_regular_file
from .version import __version__

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
KINDS = ("hkd", "teacher", "classifier")
KIND_NAMES = {"hkd": "model", "teacher": "teacher", "classifier": "classifier"}  # in messages
WEIGHTS_SHA256_KEY = "weights_sha256"

# Shipped checkpoints live in the repository's checkpoints/ folder; HKDVIZ_CHECKPOINTS overrides it
# (for installs that do not carry the folder).
CHECKPOINT_ROOT = Path(os.environ.get("HKDVIZ_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint where one was named (a wrong path or name: bad usage, exit code 2 in the CLI)."""


def resolve_device(device="auto") -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)) or isinstance(device, bool):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a device name ({error}); use 'auto', 'cpu' or 'cuda[:N]'") from None
    if device.type == "meta":
        # A meta tensor has a shape but no values: a model there cannot sample; it only fails later.
        raise ValueError("device 'meta' holds no values; use 'auto', 'cpu' or 'cuda[:N]'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} was requested but CUDA is not available; use device='auto' or 'cpu'")
    return device


def shipped_names() -> list[str]:
    if not CHECKPOINT_ROOT.is_dir():
        return []
    return sorted(entry.name for entry in CHECKPOINT_ROOT.iterdir() if entry.is_dir())


def resolve_checkpoint(name_or_dir, kind: str = "hkd") -> Path:
    """A checkpoint directory from a path, or a shipped name ("default" -> checkpoints/default/<kind>/)."""
    path = Path(name_or_dir)
    candidates = [path] if path.exists() else []
    if not candidates and isinstance(name_or_dir, str) and os.sep not in name_or_dir \
            and (CHECKPOINT_ROOT / name_or_dir).exists():
        candidates = [CHECKPOINT_ROOT / name_or_dir]
    for candidate in candidates:
        if (candidate / WEIGHTS_FILE).exists() or (candidate / CONFIG_FILE).exists():
            return candidate
        if (candidate / kind).is_dir():
            return candidate / kind
        if candidate.is_dir():
            raise CheckpointNotFoundError(f"{candidate}: not a checkpoint directory (no {WEIGHTS_FILE} and no "
                                          f"{kind}/ inside)")
        what = "a file" if candidate.is_file() else file_kind(candidate.stat().st_mode)
        raise CheckpointNotFoundError(f"{candidate}: is {what}; a checkpoint is a directory holding {WEIGHTS_FILE}, "
                              f"{CONFIG_FILE} and {META_FILE}")
    names = shipped_names()
    raise CheckpointNotFoundError(f"checkpoint {str(name_or_dir)!r} not found: no such directory, and not a shipped name "
                          f"(shipped under {CHECKPOINT_ROOT}: {', '.join(names) if names else 'none'})")


# (resolved path, device, inode, size, mtime_ns) -> sha256: a file is hashed once per process while it
# stays the same file (read_checkpoint verifies, then the loaders record the same hash).
_SHA256_CACHE: dict[tuple, str] = {}


def file_sha256(path: Path, error: type[Exception] = CheckpointError) -> str:
    """sha256 of a regular file (hex). Cached per (path, inode, size, mtime): rewriting the file
    (which changes its mtime or inode) invalidates the entry."""
    path = Path(path)
    info = require_regular_file(path, error, "file to hash")
    key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _SHA256_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open_regular_file(path, error, "file to hash") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if len(_SHA256_CACHE) > 256:  # a long-lived process loading many checkpoints: keep it bounded
        _SHA256_CACHE.clear()
    _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def save_checkpoint(module: torch.nn.Module, directory, kind: str, meta: dict | None = None,
                    config: dict | None = None) -> Path:
    """Write weights, config and meta. `config` defaults to module.config."""
    from safetensors.torch import save_file

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in module.state_dict().items()}
    config = module.config if config is None else config
    json.dumps(config)  # a config that is not plain data fails here, before any file is touched
    # Each file is replaced atomically; meta.json goes last and holds the weights' hash, so a kill
    # between two renames leaves a checkpoint that load refuses (hash mismatch) rather than mixes.
    with temporary_path(directory / WEIGHTS_FILE) as temporary:
        save_file(state, str(temporary))
        weights_sha256 = file_sha256(temporary)
    write_json(directory / CONFIG_FILE, config, sort_keys=True)
    full_meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "hkdviz_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "num_parameters": int(sum(tensor.numel() for tensor in state.values())),
        "step": None,
        "dataset": None,
        "metrics": {},
    }
    full_meta.update(meta or {})
    full_meta[WEIGHTS_SHA256_KEY] = weights_sha256  # after the update: a carried-over meta holds an old hash
    write_json(directory / META_FILE, full_meta, sort_keys=True)
    return directory


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"{path}: missing (a checkpoint needs {WEIGHTS_FILE}, {CONFIG_FILE} and {META_FILE})")
    data = read_json_file(path, CheckpointError, what=f"checkpoint {path.name}")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_checkpoint(directory: Path, kind: str) -> tuple[dict, dict, dict]:
    """(state_dict on CPU, config, meta), with format checks. Does not build any module."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = _read_json(directory / META_FILE)
    config = _read_json(directory / CONFIG_FILE)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{directory / META_FILE}: unknown format_version {version!r} "
                              f"(this hkdviz {__version__} reads version {FORMAT_VERSION})")
    if meta.get("kind", kind) != kind:
        raise CheckpointError(f"{directory / META_FILE}: this is a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing (a checkpoint needs {WEIGHTS_FILE}, {CONFIG_FILE} and {META_FILE})")
    require_regular_file(weights, CheckpointError, what="checkpoint weights")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({error})") from None
    # After parsing, so a truncated file is reported as such; a readable file with one flipped bit
    # is caught here.
    verify_weights_sha256(weights, meta, directory / META_FILE)
    return state, config, meta


def verify_weights_sha256(weights: Path, meta: dict, meta_path: Path) -> None:
    """Compare the weights' sha256 with meta.json's "weights_sha256" (skipped when the key is absent:
    checkpoints written before it existed)."""
    expected = meta.get(WEIGHTS_SHA256_KEY)
    if expected is None:
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{meta_path}: {WEIGHTS_SHA256_KEY} must be a 64-digit hex string, got {expected!r}")
    actual = file_sha256(weights)
    if actual != expected.lower():
        raise CheckpointError(f"{weights}: the weights file is damaged or was replaced: its sha256 is {actual}, "
                              f"{meta_path.name} records {expected} (restore the file, or re-save the checkpoint)")


def load_state_checked(module: torch.nn.Module, state: dict, source: Path) -> None:
    """Copy `state` into `module`, failing with every missing, unexpected and mis-shaped tensor named."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{name}: file {tuple(state[name].shape)} vs config {tuple(expected[name].shape)}"
             for name in sorted(set(expected) & set(state)) if state[name].shape != expected[name].shape]
    if not (missing or unexpected or wrong):
        check_tensor_values(state, expected, source)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_short(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches {_short(wrong)}")
        raise CheckpointError(f"{source}: weights do not match {CONFIG_FILE}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def check_tensor_values(state: dict, expected: dict, source: Path) -> None:
    """Refuse integer/bool tensors where the module holds floats (they copy in silently and give
    all-zero images) and floating tensors holding NaN or inf; name every bad tensor."""
    wrong_dtype = [f"{name} ({str(state[name].dtype).replace('torch.', '')})" for name in sorted(expected)
                   if expected[name].is_floating_point() and not state[name].is_floating_point()]
    if wrong_dtype:
        raise CheckpointError(f"{source}: weights must be floating point; these tensors are not: {_short(wrong_dtype)}")
    not_finite = [name for name in sorted(state) if state[name].is_floating_point() and not _all_finite(state[name])]
    if not_finite:
        raise CheckpointError(f"{source}: weights hold NaN or inf in {_short(not_finite)}; the checkpoint is "
                              f"damaged, or the training diverged before it was saved")


def _all_finite(tensor: torch.Tensor) -> bool:
    # numpy where it can: one torch op per tensor pays the thread pool's overhead, hundreds of times on
    # a busy CPU; numpy's single-threaded isfinite does not (measured: docs/hardening.md).
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ... (%d more)' % (len(items) - limit) if len(items) > limit else ''}]"


def load_checkpoint(name_or_dir, kind: str, build, device="auto", dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The one way hkdviz loads a checkpoint of any kind ("hkd", "teacher", "classifier").

    Finds the directory (a path, or a shipped name: "default" -> checkpoints/default/<kind>/), reads and
    verifies its files (`read_checkpoint`), builds the module with `build(config, state, source)` (source:
    the config.json path, for messages), copies the weights in with every tensor checked
    (`load_state_checked`), records the provenance on the module (`checkpoint_path`, `checkpoint_sha256`,
    `meta`), switches it to eval mode without gradients, and places it on `device` in `dtype`.

    `build` is the kind's constructor, handed in by the kind's own loader (`hkdviz.load`,
    `hkdviz.teacher.load_teacher`, `hkdviz.evaluation.load_classifier`): this module builds no network
    itself, so every network package may import it. A `build` that fails with ValueError, KeyError or
    TypeError becomes a CheckpointError naming config.json.
    device: "auto" (CUDA when present), "cpu", "cuda[:N]" or a torch.device. dtype: None (as saved), a
    floating torch.dtype, or its name ("float32", "float16", "bfloat16", "float64")."""
    # Arguments first: a bad dtype or device should not cost reading the weights.
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    dtype = check_dtype(dtype)
    device = resolve_device(device)
    directory = resolve_checkpoint(name_or_dir, kind=kind)
    state, config, meta = read_checkpoint(directory, kind=kind)
    try:
        module = build(config, state, str(directory / CONFIG_FILE))
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{directory / CONFIG_FILE}: cannot build the {KIND_NAMES[kind]} ({error})") from None
    load_state_checked(module, state, directory / WEIGHTS_FILE)
    module.checkpoint_path = str(directory.resolve())
    module.checkpoint_sha256 = file_sha256(directory / WEIGHTS_FILE)
    module.meta = meta
    module.eval().requires_grad_(False)
    return module.to(device=device, dtype=dtype)


def carried_meta(previous: dict, meta: dict | None) -> dict:
    """Meta for a new save of a loaded module: the previous provenance (dataset, metrics, source...)
    updated by `meta`, without the fields save_checkpoint writes afresh (format, version, date, size)."""
    fresh = ("format_version", "kind", "hkdviz_version", "created", "num_parameters")
    return {**{key: value for key, value in previous.items() if key not in fresh}, **(meta or {})}


DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def check_dtype(dtype, name: str = "dtype") -> torch.dtype | None:
    """None, a floating torch.dtype or its name -> torch.dtype (or None), with an error naming `name`."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in DTYPE_NAMES:
            raise ValueError(f"{name} must be one of {', '.join(DTYPE_NAMES)} (or a torch.dtype), got {dtype!r}")
        return DTYPE_NAMES[dtype.removeprefix("torch.")]
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be None, a torch.dtype or one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point dtype ({', '.join(DTYPE_NAMES)}), got {dtype}")
    return dtype
