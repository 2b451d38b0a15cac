"""`hkdviz teacher import|info`: NVlabs/edm network pickles as hkdviz teacher checkpoints.

    hkdviz teacher import edm-cifar10-32x32-uncond-ve.pkl --out teachers/cifar10-ve
    hkdviz teacher info edm-imagenet-64x64-cond-adm.pkl       # what it is, without writing anything

The import never executes code from the pickle (see hkdviz.teacher.edm_import) and writes a teacher
checkpoint directory (model.safetensors + config.json + meta.json) that `load_teacher`, `hkdviz
train trajectories|hkd --teacher DIR` and `hkdviz eval` read. Only EDMPrecond + DDPM++ networks
can initialise HKD's encoder and decoder; every kind serves as a teacher (docs/teachers.md).
Bad input ends in one line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..checkpoint import CheckpointError
from ..errors import UsageError, run_guarded

DISTILLABLE_NOTE = ("HKD can be initialised from it (EDMPrecond + DDPM++ splits into HKD's encoder and decoder)")
TEACHER_ONLY_NOTE = ("a teacher for sampling, trajectories and evaluation; HKD cannot be initialised from it (only "
                     "EDMPrecond + DDPM++ splits into HKD's encoder and decoder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hkdviz teacher", description="Import NVlabs/edm network pickles as "
                                     "teacher checkpoints (no code from the pickle is ever run).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    importer = commands.add_parser("import", help="write an EDM pickle as a teacher checkpoint directory")
    importer.add_argument("pickle", help="NVlabs/edm network pickle (network-snapshot-*.pkl, edm-*.pkl, baseline-*.pkl)")
    importer.add_argument("--out", required=True, help="teacher checkpoint directory to write")
    importer.add_argument("--key", default="ema", help="which network of the pickle (default: ema)")
    importer.add_argument("--force", action="store_true", help="replace --out if it already holds a checkpoint")
    info = commands.add_parser("info", help="describe an EDM pickle or a teacher checkpoint")
    info.add_argument("source", help="EDM pickle (*.pkl) or teacher checkpoint directory")
    info.add_argument("--key", default="ema", help="which network of a pickle (default: ema)")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


def summary(teacher) -> dict:
    """What a teacher is: kind, image, labels, parameters, sampling range, whether HKD can start from it."""
    from .edm import EDMPrecond

    denoiser = teacher.denoiser
    describe = getattr(denoiser, "describe", None)
    return {
        "kind": describe() if describe else teacher.meta.get("edm_network", "EDMPrecond + SongUNet (DDPM++)"),
        "image_shape": list(teacher.image_shape),
        "label_dim": int(teacher.config["unet"]["label_dim"]),
        "parameters": int(sum(parameter.numel() for parameter in denoiser.parameters())),
        "sigma_min": teacher.sigma_min, "sigma_max": teacher.sigma_max,
        "hkd_distillable": isinstance(denoiser, EDMPrecond),
        "edm_use_fp16": bool(teacher.meta.get("edm_use_fp16", False)),
        "source": teacher.meta.get("source"), "source_sha256": teacher.meta.get("source_sha256"),
    }


def _describe(record: dict) -> str:
    labels = f", class-conditional ({record['label_dim']} classes)" if record["label_dim"] else ""
    image = "x".join(map(str, record["image_shape"]))
    return (f"{record['kind']}, {record['parameters'] / 1e6:.1f}M parameters, images {image}{labels}, "
            f"sampled on sigma [{record['sigma_min']:g}, {record['sigma_max']:g}]\n"
            f"  {DISTILLABLE_NOTE if record['hkd_distillable'] else TEACHER_ONLY_NOTE}")


def command_import(args) -> int:
    from .teacher import import_edm_teacher

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UsageError(f"--out {out} is not empty; pass --force to replace it")
    teacher = import_edm_teacher(args.pickle, device="cpu", key=args.key)
    # Written beside the target and renamed into place: a failed write never leaves half a checkpoint.
    temporary = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        teacher.save(temporary)
        if out.exists():
            shutil.rmtree(out)
        os.replace(temporary, out)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    print(f"wrote {out}: {_describe(summary(teacher))}")
    return 0


def command_info(args) -> int:
    from .edm_import import is_edm_pickle_path
    from .teacher import import_edm_teacher, load_teacher

    if is_edm_pickle_path(args.source):
        teacher = import_edm_teacher(args.source, device="cpu", key=args.key)
    else:
        teacher = load_teacher(args.source, device="cpu")
    record = summary(teacher)
    print(json.dumps(record, indent=2) if args.json else f"{args.source}: {_describe(record)}")
    return 0


def main(argv=None) -> int:
    """The command; `hkdviz teacher` runs it through `errors.run_guarded`, which reports every failure in one
    line with its exit code. A pickle or checkpoint this command cannot read is its bad input (exit 2)."""
    args = build_parser().parse_args(argv)
    try:
        return {"import": command_import, "info": command_info}[args.command](args)
    except CheckpointError as error:  # EDMImportError and NetworkSpecError are CheckpointErrors
        raise UsageError(str(error)) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_guarded("hkdviz teacher", main))
