"""Which model and teacher a report is made from, and the loud fallback to an untrained model.

Where a checkout lacks the shipped `default` checkpoint (checkpoints/default/hkd),
`hkdviz.load("default")` raises CheckpointError; reports then build an untrained `tiny` model (with
small random Koopman generators, so its spectrum and trajectories are not degenerate) and say so in a
banner in the terminal, the HTML and the manifest. Only the literal name "default" falls back: any
other name that is not found (a typo such as "defualt") is an error, never a silent random model.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

UNTRAINED_BANNER = ("UNTRAINED MODEL: no trained checkpoint {name!r} was found ({reason}). "
                    "Everything below comes from an untrained 'tiny' HKD model with random Koopman generators: "
                    "the images are noise and the spectra are random. This only demonstrates the pipeline; "
                    "pass --checkpoint DIR with a trained checkpoint.")


@dataclass
class ModelSource:
    model: torch.nn.Module
    checkpoint: str                 # what was asked for
    trained: bool
    description: str                # one line for the terminal and the report
    banner: str | None = None       # set when the model is an untrained stand-in
    teacher: object | None = None
    teacher_description: str = "no teacher checkpoint found"
    notes: list = field(default_factory=list)


def untrained_tiny(device, seed: int = 0):
    """The stand-in model: `hkdviz.build("tiny")` with random decaying/oscillating generators."""
    import hkdviz
    from hkdviz.model import randomize_generators
    torch.manual_seed(seed)
    model = randomize_generators(hkdviz.build("tiny"), seed=seed)
    model.meta = {"dataset": "none (untrained stand-in built by hkdviz.report)"}
    return model.eval().requires_grad_(False).to(device)


FALLBACK_NAME = "default"


def open_model(checkpoint: str = "default", device="auto", fallback: bool = True) -> ModelSource:
    """Load `checkpoint`; when it is the shipped name "default" and missing, fall back to an untrained
    tiny model (fallback=True) with a banner. Any other name, and any path, must exist."""
    import hkdviz
    from hkdviz.checkpoint import CheckpointError, resolve_checkpoint, resolve_device

    device = resolve_device(device)
    try:
        resolve_checkpoint(checkpoint, kind="hkd")
    except CheckpointError as error:
        # Only the *missing* shipped default falls back; a typo, a corrupt checkpoint or a wrong path is an error.
        missing_default = checkpoint == FALLBACK_NAME and not Path(checkpoint).exists()
        if not (fallback and missing_default):
            raise
        model = untrained_tiny(device)
        banner = UNTRAINED_BANNER.format(name=checkpoint, reason=str(error).split(";")[0])
        return ModelSource(model, checkpoint, trained=False, banner=banner,
                           description=f"untrained 'tiny' stand-in ({model.num_parameters():,} parameters) on {device}")
    model = hkdviz.load(checkpoint, device=device)
    step = model.meta.get("step")
    dataset = model.meta.get("dataset")
    trained = step not in (None, 0) or (bool(dataset) and "untrained" not in str(dataset))
    description = (f"{model.checkpoint_path} (preset {model.config.get('preset')}, {model.num_parameters():,} parameters, "
                   f"step {step}, dataset {dataset}) on {device}")
    source = ModelSource(model, checkpoint, trained=trained, description=description)
    if not trained:
        source.banner = (f"UNTRAINED MODEL: checkpoint {model.checkpoint_path} records no training "
                         f"(step {step}, dataset {dataset!r}); its images are not meaningful.")
    return source


def find_teacher(source: ModelSource, teacher=None, device="auto"):
    """Attach a teacher: `teacher` (name or directory) when given, else the checkpoint's sibling
    (checkpoints/<name>/teacher/, or <dir>/../teacher/ for a <dir> named 'hkd'). Missing is not an error."""
    from hkdviz.checkpoint import CheckpointError
    candidates = []
    if teacher is not None:
        candidates.append(teacher)
    elif source.trained:
        path = Path(source.model.checkpoint_path) if source.model.checkpoint_path else None
        if path is not None and path.name == "hkd":
            candidates.append(str(path.parent / "teacher"))
        elif isinstance(source.checkpoint, str) and os.sep not in source.checkpoint:
            candidates.append(source.checkpoint)
    for candidate in candidates:
        try:
            from hkdviz.teacher.teacher import load_teacher
            loaded = load_teacher(candidate, device=device)
        except (CheckpointError, ImportError, FileNotFoundError) as error:
            source.teacher_description = f"no teacher: {candidate} ({error})"
            if teacher is not None:
                raise
            continue
        source.teacher = loaded
        source.teacher_description = f"teacher {loaded.checkpoint_path}"
        return source
    return source


# Below this size a CPU model runs fastest on one thread: its convolutions are too small to split, and
# with more threads than free cores OpenMP's spin-waiting multiplies the cost (measured:
# docs/benchmarks.md, "Other measurements behind code defaults").
SMALL_MODEL_PARAMETERS = 5_000_000


@contextlib.contextmanager
def cpu_threads(model, threads="auto"):
    """Set torch's CPU thread count for a block and restore it: "auto" = 1 for a small model on CPU,
    else unchanged; or an explicit number."""
    previous = torch.get_num_threads()
    if threads == "auto":
        small = sum(parameter.numel() for parameter in model.parameters()) < SMALL_MODEL_PARAMETERS
        wanted = 1 if small and next(model.parameters()).device.type == "cpu" else previous
    else:
        wanted = int(threads)
        if wanted < 1:
            raise ValueError(f"threads must be 'auto' or a positive integer, got {threads!r}")
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)


def parse_threads(text: str):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads must be 'auto' or a positive integer, got {text!r}")
    return value


def print_banner(text: str, stream=None) -> None:
    """A boxed, impossible-to-miss terminal banner (red when the stream is a terminal)."""
    import textwrap
    stream = stream or sys.stderr
    lines = textwrap.wrap(text, 86)
    width = max(len(line) for line in lines) + 4
    color = stream.isatty() if hasattr(stream, "isatty") else False
    start, end = ("\033[1;31m", "\033[0m") if color else ("", "")
    print(start + "!" * width, file=stream)
    for line in lines:
        print(f"! {line:<{width - 4}} !", file=stream)
    print("!" * width + end, file=stream)


__all__ = ["ModelSource", "open_model", "FALLBACK_NAME", "find_teacher", "untrained_tiny", "print_banner",
           "UNTRAINED_BANNER", "cpu_threads", "parse_threads"]
