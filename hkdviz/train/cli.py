"""`hkdviz train teacher|trajectories|hkd|classifier|all` (also `python -m hkdviz.train ...`).

    hkdviz train all --preset default --out runs/default          # the shipped checkpoint (sized for a GPU)
    hkdviz train all --preset default-cpu --out runs/default-cpu  # its CPU-sized variant (2 cores)
    hkdviz train all --preset smoke --out /tmp/smoke              # end-to-end check, quick on a CPU
    hkdviz train hkd --preset default --teacher runs/default/teacher/checkpoint \\
        --trajectories runs/default/trajectories --set hkd.koopman.levels=bottleneck --out runs/ablation
    torchrun --nproc_per_node 8 -m hkdviz.train all --preset cifar10 --set dataset=cifar10:/data/cifar10 --out runs/c10

From Python: `hkdviz.train.run(stage, preset=..., out=..., overrides=[...])`, which this command runs.

Every stage resumes when its output directory already holds a partial run. Layout of `all --out DIR`:
DIR/config.json, DIR/teacher/ (run dir, checkpoint/ inside), DIR/trajectories/, DIR/hkd/ (run dir,
checkpoint/), DIR/classifier/ (checkpoint), DIR/evaluation/, and DIR/export/{hkd,teacher,classifier}
laid out like checkpoints/default/. Bad arguments exit with code 2 and a one-line error; a run that
fails (disk full, out of memory, NaN loss) exits with code 1 and a one-line error; --debug or
HKDVIZ_DEBUG=1 adds the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

STAGES = ("teacher", "trajectories", "hkd", "classifier", "all")


from ..errors import UsageError  # noqa: E402 - one UsageError for every hkdviz command (exit code 2)


def build_parser() -> argparse.ArgumentParser:
    from .presets import PRESETS

    from ..errors import OneLineParser
    parser = OneLineParser(prog="hkdviz train", description="Train an EDM teacher, store its PF-ODE "
                                     "trajectories, distil them into HKD (one GPU, CPU, or many through torchrun).")
    parser.add_argument("stage", choices=STAGES, help="which stage to run ('all' runs every stage in order)")
    parser.add_argument("--preset", default="default", help=f"training preset: {', '.join(PRESETS)} (default: default)")
    parser.add_argument("--config", help="JSON or YAML file with a partial training config (applied after the preset)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set hkd.lr=2e-4 --set dataset=cifar10:/data (repeatable)")
    parser.add_argument("--out", required=True, help="output directory (a run directory; for 'all' the root of every stage)")
    parser.add_argument("--device", default=None,
                        help="auto (CUDA when present), cpu, cuda, cuda:1 (default: the config's, auto)")
    parser.add_argument("--teacher", help="teacher checkpoint directory, or an NVlabs/edm network .pkl (trajectories, hkd, all)")
    parser.add_argument("--trajectories", help="trajectory directory (hkd)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (on a busy machine 1 is often fastest for small models)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to the run directory)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    shown.add_argument("--explain-config", action="store_true",
                       help="print every config key with its resolved value, default and meaning, and exit")
    return parser


def main(argv=None) -> int:
    from ..errors import describe, exit_code, split_debug
    argv, debug = split_debug(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # argparse already printed the message
        return int(exit_request.code or 0)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("hkdviz train: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line: 2 for bad input, 1 for a failed run
        if debug:
            traceback.print_exc()
        print(f"hkdviz train: error: {describe(error)}", file=sys.stderr)
        return 2 if _is_usage_error(error) else exit_code(error)


def _is_usage_error(error: Exception) -> bool:
    from ..checkpoint import CheckpointNotFoundError  # a corrupt checkpoint is a failed run (1), a wrong path usage (2)
    from ..data import DatasetError
    from ..evaluation.classifier import ClassifierError
    from ..model.config import ConfigError
    from .common import TrainingError
    from .presets import PresetError
    known = (UsageError, PresetError, DatasetError, CheckpointNotFoundError, ConfigError, TrainingError, FileNotFoundError,
             ClassifierError)
    return isinstance(error, known)


def _run(args) -> int:
    if args.print_config:
        from .presets import resolve_training_config, scaled
        config = scaled(resolve_training_config(args.preset, args.config, args.overrides))
        if args.device is not None:
            config["device"] = args.device
        print(json.dumps(config, indent=2, sort_keys=True))
        return 0
    if args.explain_config:
        from .presets import explain_config, resolve_training_config, scaled
        config = scaled(resolve_training_config(args.preset, args.config, args.overrides))
        if args.device is not None:
            config["device"] = args.device
        print(explain_config(config))
        return 0
    run(args.stage, preset=args.preset, out=args.out, overrides=args.overrides, config=args.config,
        teacher=args.teacher, trajectories=args.trajectories, device=args.device, progress=not args.no_progress,
        threads=args.threads)
    return 0


def run(stage: str, preset: str = "default", out=None, overrides=(), config=None, teacher=None, trajectories=None,
        device=None, progress: bool = True, threads: int | None = None):
    """Run one training stage, or every stage ("all"), into `out`; what `hkdviz train STAGE` runs.

    stage: teacher, trajectories, hkd, classifier or all; preset: a name in PRESETS; overrides: "key=value"
    strings as for --set (applied after `config`: a partial config, a dict or a JSON/YAML file); teacher: a
    teacher checkpoint directory or an NVlabs/edm .pkl (trajectories, hkd, all); trajectories: a
    trajectory directory (hkd); device: auto, cpu, cuda[:N] (default: the config's); threads: torch CPU
    threads (set for the rest of the process). A stage resumes when `out` already holds a partial run.

    Returns the stage's result: the checkpoint directory (teacher, hkd, classifier: out/checkpoint or
    out), the trajectory directory (trajectories), out/export (all; laid out like checkpoints/default/).
    Raises UsageError (and PresetError, DatasetError, ...) for bad input before any training.
    """
    from .presets import resolve_training_config, scaled

    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    if out is None:
        raise UsageError("run() needs out=, the output directory")
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)  # one "key=value" or several
    resolved = scaled(resolve_training_config(preset, config, overrides))
    if device is not None:
        resolved["device"] = device
    _check_dataset(resolved, stage)
    if stage == "all":
        _check_evaluate_options(resolved)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")

    from ..checkpoint import resolve_device
    from .distributed import init_distributed, shutdown
    try:
        resolve_device(resolved["device"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise UsageError(f"bad --device {resolved['device']!r}: {error}") from None
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        import torch
        torch.set_num_threads(threads)
    context = init_distributed(resolved["device"])
    if context.device.type == "cpu" and threads is None and context.is_main:
        import os
        if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
            print("hkdviz train: note: the machine is busy (load above the core count); --threads 1 is often "
                  "much faster for small models then", file=sys.stderr)
    if context.device.type == "cpu" and context.is_main and stage != "classifier":
        note = cpu_duration_note(resolved, stage=stage)
        if note:
            print(f"hkdviz train: note: {note}", file=sys.stderr)
    try:
        if stage == "teacher":
            return stage_teacher(resolved, out, context, progress)
        if stage == "trajectories":
            stage_trajectories(resolved, out, _required(teacher or resolved["trajectories"]["teacher"], "--teacher"),
                               context, progress)
            return out
        if stage == "hkd":
            return stage_hkd(resolved, out, _required(teacher or resolved["hkd"]["teacher"], "--teacher"),
                             _required(trajectories or resolved["hkd"]["trajectories"], "--trajectories"), context,
                             progress)
        if stage == "classifier":
            return stage_classifier(resolved, out, context, progress, force=True)
        return run_all(resolved, out, context, progress, teacher=teacher)
    finally:
        shutdown(context)


def _required(value, flag: str):
    if not value:
        raise UsageError(f"this stage needs {flag}")
    return value


def _check_dataset(config: dict, stage: str) -> None:
    """Fail before any training when the data set is missing or unreadable."""
    if stage not in ("teacher", "classifier", "all"):
        return
    spec = config["dataset"]
    if isinstance(spec, str) and "REQUIRED" in spec:
        kind = spec.split(":", 1)[0]
        raise UsageError(f"preset {config['preset']!r} needs your local data: --set dataset={kind}:/path/to/data")
    from ..data import load_dataset
    dataset = load_dataset(spec)
    if len(dataset) == 0:
        raise UsageError(f"data set {spec!r} holds no images")


# -- stages -----------------------------------------------------------------------------------------
def stage_teacher(config: dict, out: Path, context, progress: bool) -> Path:
    from .loop import train_teacher
    return train_teacher(config, out, progress=progress, context=context)


def stage_trajectories(config: dict, out: Path, teacher, context, progress: bool) -> dict:
    from .common import RunDirectory, resolve_autocast
    from .trajectories import generate_trajectories

    options = config["trajectories"]
    run = RunDirectory(out, is_main=context.is_main)
    return generate_trajectories(
        str(teacher), out, count=options["count"], first_seed=options["first_seed"], num_steps=options["num_steps"],
        chunk_size=options["chunk_size"], batch_size=options["batch_size"], storage_dtype=options["storage_dtype"],
        rho=options["rho"], context=context, progress=progress, log=run.log,
        autocast_dtype=resolve_autocast("trajectories", options, context.device))


def stage_hkd(config: dict, out: Path, teacher, trajectories, context, progress: bool) -> Path:
    from .loop import train_hkd
    return train_hkd(config, out, teacher=str(teacher), trajectories=str(trajectories), progress=progress,
                     context=context)


# The classifier.* settings (plus the run seed) recorded in meta.json "training", compared on reruns.
TRAINING_SETTINGS = ("num_images", "steps", "batch_size", "learning_rate", "num_held_out", "config", "seed")


def existing_classifier_matches(directory, options: dict, seed: int) -> bool:
    """Whether `directory` already holds a classifier trained with these settings (`train all` reruns
    then reuse it): False when it holds none; ClassifierError naming every differing setting (old ->
    new) when it holds one trained otherwise, so a changed setting is never silently ignored.
    Settings a checkpoint written by an older hkdviz did not record are not compared."""
    from ..checkpoint import META_FILE, WEIGHTS_FILE
    from ..evaluation.classifier import ClassifierError
    from ..inputs import read_json_file
    from .common import canonical_json, describe_differences

    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).exists():
        return False
    meta = read_json_file(directory / META_FILE, ClassifierError, what="classifier meta.json")
    recorded = meta.get("training") if isinstance(meta, dict) else None
    if not isinstance(recorded, dict):
        raise ClassifierError(f"{directory / META_FILE}: no 'training' record; delete {directory} to retrain "
                              f"the classifier")
    asked = {key: options[key] for key in TRAINING_SETTINGS if key != "seed"}
    asked["config"] = dict(asked["config"]) if asked["config"] else None
    asked["seed"] = int(seed)
    differences = [("seed" if key == "seed" else f"classifier.{key}", recorded[key], value)
                   for key, value in asked.items()
                   if key in recorded and canonical_json(recorded[key]) != canonical_json(value)]
    if differences:
        raise ClassifierError(f"{directory} holds a classifier trained with other settings "
                              f"({describe_differences(differences)}); delete {directory} to retrain it with the new "
                              f"settings, or use another --out directory")
    return True


def stage_classifier(config: dict, out: Path, context, progress: bool, force: bool = False) -> Path | None:
    options = config["classifier"]
    if not context.is_main:
        return None
    from ..evaluation.classifier import train_classifier
    if not force and existing_classifier_matches(out, options, seed=int(config["seed"])):
        return out  # already trained with these settings (train all reruns skip it; other settings are refused)
    return train_classifier(config["dataset"], out, num_images=options["num_images"], steps=options["steps"],
                            batch_size=options["batch_size"], num_held_out=options["num_held_out"],
                            learning_rate=options["learning_rate"], config=options["config"] or None,
                            device=context.device, seed=int(config["seed"]), progress=progress)


def stage_evaluate(config: dict, out: Path, context, progress: bool) -> dict | None:
    """`hkdviz eval` on the exported checkpoints: HKD at 1 NFE against the teacher, written to DIR/evaluation/."""
    if not context.is_main:
        return None
    from ..evaluation.evaluate import evaluate
    export = out / "export"
    return evaluate(hkd_model=str(export / "hkd"), teacher=str(export / "teacher"),
                    classifier=str(export / "classifier") if (export / "classifier").exists() else None,
                    out_dir=str(out / "evaluation"), device=context.device, progress=progress,
                    **(config["evaluate"]["options"] or {}))


def _check_evaluate_options(config: dict) -> None:
    if not config["evaluate"]["enabled"]:
        return
    import inspect
    from ..evaluation.evaluate import evaluate
    accepted = set(inspect.signature(evaluate).parameters) - {"hkd_model", "teacher", "classifier", "checkpoint",
                                                               "out_dir", "device", "progress"}
    unknown = sorted(set(config["evaluate"]["options"] or {}) - accepted)
    if unknown:
        raise UsageError(f"evaluate.options has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(accepted))}")


def cpu_duration_note(config: dict, native_bfloat16: bool | None = None, stage: str = "all") -> str | None:
    """What the default presets cost on 2 CPU cores of this kind (presets.estimated_cpu_minutes; `config`
    as run, steps_scale already applied), when that is worth a warning: `default` always (it is sized
    for a GPU), `default-cpu` where the CPU has no native bfloat16 (it is sized for one that has).
    None otherwise. stage: "all" (the whole pipeline) or the one stage the command runs (teacher,
    trajectories, hkd), which is then what the note estimates."""
    from .common import cpu_has_native_bfloat16
    from .presets import PresetError, estimated_cpu_minutes, resolve_training_config

    preset = config["preset"]
    if preset not in ("default", "default-cpu"):
        return None
    native = cpu_has_native_bfloat16() if native_bfloat16 is None else native_bfloat16
    try:
        minutes = estimated_cpu_minutes(config, native)  # the whole pipeline
    except PresetError:  # a model override that was never measured on a CPU
        return ("the default preset is sized for a GPU; no CPU estimate for this model"
                if preset == "default" else None)
    kind = "with native bfloat16" if native else "in float32 (no native bfloat16 on this CPU)"
    if stage != "all":
        if preset == "default-cpu" and native:
            return None
        minutes = estimated_cpu_minutes(config, native, stages=(stage,))
        duration = "under a minute" if minutes < 1 else f"about {minutes:.0f} minutes"
        return (f"the {preset} preset's {stage} stage takes {duration} on 2 CPU cores {kind}"
                + (" (the preset is sized for a GPU)" if preset == "default" else ""))
    if preset == "default":
        alternative = estimated_cpu_minutes(resolve_training_config("default-cpu"), native)
        return (f"the default preset is sized for a GPU (9 minutes on one H200); on 2 CPU cores {kind} the whole "
                f"pipeline takes about {minutes / 60:.1f} hours; --preset default-cpu about {alternative:.0f} minutes")
    if not native:
        return (f"default-cpu is sized for ~90 minutes on 2 CPU cores with native bfloat16; {kind} the whole "
                f"pipeline takes about {minutes:.0f} minutes on 2 cores")
    return None


def _record_metrics(checkpoint: Path, result: dict) -> None:
    """Put the evaluation rows into the exported HKD checkpoint's meta.json (weights untouched)."""
    path = checkpoint / "meta.json"
    meta = json.loads(path.read_text())
    meta.setdefault("metrics", {})["evaluation"] = {"num_samples": result.get("num_samples"),
                                                    "seeds": result.get("seeds"), "target": result.get("target"),
                                                    "rows": result.get("rows", [])}
    from ..atomic import write_text
    from .common import json_default
    write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=json_default) + "\n")


def imported_teacher(teacher, directory: Path, context):
    """An NVlabs/edm pickle given as the teacher, written once as a checkpoint directory (which the
    export and the evaluation copy); any other teacher as it is."""
    from .distributed import barrier
    from ..teacher.edm_import import is_edm_pickle_path
    from ..teacher.teacher import import_edm_teacher

    if not is_edm_pickle_path(teacher):
        return teacher
    if context.is_main and not (directory / "model.safetensors").exists():
        import_edm_teacher(teacher).save(directory)
    barrier(context)
    return directory


def run_all(config: dict, out: Path, context, progress: bool, teacher=None) -> Path:
    """teacher -> trajectories -> hkd -> classifier -> export -> evaluate, each stage resumable; the
    main rank holds the lock on DIR throughout (a second `train all --out DIR` is refused at once)."""
    from .common import RunLock
    with RunLock(out, enabled=context.is_main):
        return _run_all(config, out, context, progress, teacher)


def _run_all(config: dict, out: Path, context, progress: bool, teacher=None) -> Path:
    from ..atomic import replace_directory
    from .common import RunDirectory, json_default, write_pipeline_config
    from .distributed import barrier

    root = RunDirectory(out, is_main=context.is_main)
    write_pipeline_config(root, config, finished=False)
    if teacher is None:
        root.log("== stage 1/5: teacher")
        teacher = stage_teacher(config, out / "teacher", context, progress)
    else:
        root.log(f"== stage 1/5: teacher given ({teacher}), not trained")
        teacher = imported_teacher(teacher, out / "teacher" / "checkpoint", context)
    root.log("== stage 2/5: trajectories")
    stats = stage_trajectories(config, out / "trajectories", teacher, context, progress)
    root.log(f"trajectories: {json.dumps(stats, default=json_default)}")
    root.log("== stage 3/5: hkd")
    hkd = stage_hkd(config, out / "hkd", teacher, out / "trajectories", context, progress)
    classifier = None
    if config["classifier"]["enabled"]:
        root.log("== stage 4/5: classifier")
        classifier = stage_classifier(config, out / "classifier", context, progress)
    barrier(context)
    if context.is_main:
        export = out / "export"
        for name, source in (("hkd", hkd), ("teacher", teacher), ("classifier", classifier)):
            if source is None:
                continue
            replace_directory(source, export / name)  # a failed copy keeps the previous export
        root.log(f"exported the checkpoints to {export} (laid out like checkpoints/default/)")
    if config["evaluate"]["enabled"] and classifier is not None:
        root.log("== stage 5/5: evaluation")
        result = stage_evaluate(config, out, context, progress)
        if result is not None:
            from ..evaluation.evaluate import format_table
            root.log("evaluation (also in evaluation/):\n" + format_table(result))
            _record_metrics(out / "export" / "hkd", result)
    write_pipeline_config(root, config, finished=True)
    barrier(context)
    return out / "export"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
