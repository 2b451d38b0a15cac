"""Run directories: one run at a time (lock), refusals that name the differing keys and write nothing,
moved run trees that still resume, a NaN abort whose advice works, classifier settings never ignored."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hkdviz.train.common import (RunDirectory, RunLock, TrainingError, check_resume_config, config_differences,
                                 read_stats)
from hkdviz.train.loop import HKDLoop, TeacherLoop
from hkdviz.train.presets import resolve_training_config
from hkdviz.train.trajectories import generate_trajectories

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.unet.img_resolution=16", "model.unet.model_channels=8", "dataset.resolution=16",
         "dataset.num_images=48"]

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.timeout(120)]


def small_config(*overrides):
    return resolve_training_config("smoke", overrides=[*SMALL, "device=cpu", *overrides])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tree holding an untrained small teacher checkpoint and its trajectories, like `train all` makes."""
    from hkdviz.model.config import resolve_config
    from hkdviz.teacher.edm import EDMPrecond
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tree")
    EDMPrecond(resolve_config(small_config()["model"])).save(root / "teacher" / "checkpoint",
                                                             meta={"dataset": "none (untrained test teacher)"})
    generate_trajectories(str(root / "teacher" / "checkpoint"), root / "trajectories", count=8, num_steps=3,
                          chunk_size=8, batch_size=8, device="cpu", progress=False)
    return root


def hold_lock_in_another_process(directory: Path):
    """Start a process that takes the run lock on `directory` and sleeps; returns it once it holds the lock."""
    code = ("import sys, time; from hkdviz.train.common import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code, str(directory)], cwd=REPO, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


# -- locks -------------------------------------------------------------------------------------------
def test_second_run_on_a_locked_directory_is_refused_at_once_naming_the_pid(tmp_path):
    run = tmp_path / "run"
    holder = hold_lock_in_another_process(run)
    try:
        started = time.perf_counter()
        with pytest.raises(TrainingError, match=f"{run} is in use by another hkdviz run \\(PID {holder.pid}\\)"):
            TeacherLoop(small_config("teacher.steps=1", "teacher.batch_size=4"), run, progress=False, echo=False).train()
        assert time.perf_counter() - started < 5  # refused before building the model or loading data
        assert not (run / "config.json").exists() and not (run / "stats.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    # kill -9 of the holder frees the lock (the kernel drops it): the run now goes through.
    TeacherLoop(small_config("teacher.steps=1", "teacher.batch_size=4"), run, progress=False, echo=False).train()
    assert [record["step"] for record in read_stats(run)] == [1]


def test_lock_is_released_after_a_run_and_after_a_failure(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(TrainingError, match="in use by another hkdviz run"):
            RunLock(run).acquire()
    with RunLock(run):  # released by the block above
        pass
    broken = small_config()
    broken["teacher"]["steps"] = 0  # past the preset checks: the loop itself refuses it, inside the lock
    with pytest.raises(TrainingError, match="steps must be >= 1"):
        TeacherLoop(broken, run, progress=False, echo=False).train()
    RunLock(run).acquire().release()  # the failed run let go of it


def test_concurrent_trajectory_generation_is_refused(tmp_path, inputs):
    out = tmp_path / "trajectories"
    holder = hold_lock_in_another_process(out)
    try:
        with pytest.raises(TrainingError, match=f"PID {holder.pid}"):
            generate_trajectories(str(inputs / "teacher" / "checkpoint"), out, count=4, num_steps=3, chunk_size=4,
                                  device="cpu", progress=False)
        assert not (out / "trajectories.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_train_all_cli_is_refused_with_exit_code_2(tmp_path, capsys):
    from hkdviz.train.cli import main
    holder = hold_lock_in_another_process(tmp_path / "all")
    try:
        code = main(["all", "--preset", "smoke", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "all")])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert f"in use by another hkdviz run (PID {holder.pid})" in capsys.readouterr().err
    assert not (tmp_path / "all" / "config.json").exists()


# -- refusals name the keys and write nothing ---------------------------------------------------------
def test_config_differences_are_dotted_with_old_and_new_values():
    old = {"seed": 0, "teacher": {"lr": 0.001, "betas": [0.9, 0.99], "nested": {"a": 1}}}
    new = {"seed": 0, "teacher": {"lr": 0.5, "betas": [0.9, 0.999], "nested": {"a": 1, "b": 2}}}
    assert config_differences(old, new) == [("teacher.betas", [0.9, 0.99], [0.9, 0.999]),
                                            ("teacher.lr", 0.001, 0.5), ("teacher.nested.b", None, 2)]


def test_refused_resume_names_the_keys_and_keeps_config_json(tmp_path):
    config = small_config("teacher.steps=2", "teacher.batch_size=4", "teacher.resume_every=1", "teacher.lr=0.001")
    TeacherLoop(config, tmp_path / "run", progress=False, echo=False).train(stop_at=1)
    before = (tmp_path / "run" / "config.json").read_bytes()
    changed = small_config("teacher.steps=2", "teacher.batch_size=4", "teacher.resume_every=1", "teacher.lr=0.5",
                           "seed=7")
    with pytest.raises(TrainingError, match=r"different config \(seed: 0 -> 7; teacher.lr: 0.001 -> 0.5\)"):
        TeacherLoop(changed, tmp_path / "run", progress=False, echo=False).train()
    assert (tmp_path / "run" / "config.json").read_bytes() == before


def test_refused_train_all_rerun_keeps_the_root_config(tmp_path):
    from hkdviz.train.cli import run_all
    from hkdviz.train.common import write_pipeline_config
    from hkdviz.train.distributed import init_distributed
    config = small_config("teacher.steps=2", "teacher.batch_size=4", "teacher.resume_every=1")
    out = tmp_path / "all"
    TeacherLoop(config, out / "teacher", progress=False, echo=False).train(stop_at=1)
    write_pipeline_config(RunDirectory(out, echo=False), config, finished=False)
    before = (out / "config.json").read_bytes()
    changed = small_config("teacher.steps=2", "teacher.batch_size=4", "teacher.resume_every=1", "teacher.lr=0.5")
    with pytest.raises(TrainingError, match="teacher.lr: "):
        run_all(changed, out, init_distributed("cpu"), progress=False)
    assert (out / "config.json").read_bytes() == before
    RunLock(out).acquire().release()  # and the refused run released the root lock


# -- moved run trees ------------------------------------------------------------------------------------
def test_hkd_run_tree_moved_as_a_whole_resumes(tmp_path, inputs):
    tree = tmp_path / "tree"
    shutil.copytree(inputs, tree)
    config = small_config("hkd.steps=3", "hkd.batch_size=4", "hkd.resume_every=1")

    def loop(root):
        return HKDLoop(config, root / "hkd", teacher=str(root / "teacher" / "checkpoint"),
                       trajectories=str(root / "trajectories"), progress=False, echo=False)
    loop(tree).train(stop_at=1)
    saved = json.loads((tree / "hkd" / "config.json").read_text())
    assert saved["hkd"]["teacher"] == "../teacher/checkpoint" and saved["hkd"]["trajectories"] == "../trajectories"
    moved = tmp_path / "moved"
    tree.rename(moved)
    assert loop(moved).train() == moved / "hkd" / "checkpoint"
    assert [record["step"] for record in read_stats(moved / "hkd")][-1] == 3


def test_hkd_run_directory_moved_alone_resumes_by_input_identity(tmp_path, inputs):
    config = small_config("hkd.steps=3", "hkd.batch_size=4", "hkd.resume_every=1")
    kwargs = dict(teacher=str(inputs / "teacher" / "checkpoint"), trajectories=str(inputs / "trajectories"),
                  progress=False, echo=False)
    HKDLoop(config, tmp_path / "first" / "hkd", **kwargs).train(stop_at=1)
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    (tmp_path / "first" / "hkd").rename(tmp_path / "elsewhere" / "deeper" / "hkd")
    HKDLoop(config, tmp_path / "elsewhere" / "deeper" / "hkd", **kwargs).train()
    # ... but a teacher with other weights is still a different config, and the refusal says so.
    other = tmp_path / "other_teacher"
    shutil.copytree(inputs / "teacher" / "checkpoint", other)
    from hkdviz.teacher.teacher import load_teacher
    teacher = load_teacher(other, device="cpu")
    with torch.no_grad():
        next(teacher.denoiser.parameters()).add_(1.0)
    teacher.save(other)
    HKDLoop(config, tmp_path / "third" / "hkd", **kwargs).train(stop_at=1)
    with pytest.raises(TrainingError, match=r"hkd.teacher: .*-> \"[^\"]*other_teacher\""):
        HKDLoop(config, tmp_path / "third" / "hkd", **{**kwargs, "teacher": str(other)}).train()


def test_old_absolute_path_configs_still_resume(tmp_path, inputs):
    """A run directory written before paths were stored relative: absolute paths, no input identity."""
    run = RunDirectory(tmp_path / "hkd", echo=False)
    teacher = str(inputs / "teacher" / "checkpoint")
    old = {"seed": 0, "hkd": {"teacher": teacher, "lr": 1}}
    run.write_config(old)
    check_resume_config(run, {"seed": 0, "hkd": {"teacher": run.relative(teacher), "lr": 1}},
                        path_keys=("hkd.teacher",))
    with pytest.raises(TrainingError, match="hkd.teacher"):
        check_resume_config(run, {"seed": 0, "hkd": {"teacher": "/somewhere/else", "lr": 1}}, path_keys=("hkd.teacher",))


# -- NaN abort --------------------------------------------------------------------------------------------
def test_nan_loss_message_advises_a_fresh_run_that_is_not_refused(tmp_path, monkeypatch):
    config = small_config("teacher.steps=4", "teacher.batch_size=4", "teacher.log_every=2", "teacher.lr=0.01")

    def nan_loss(self, model, indices, step, offset):
        loss = model(torch.zeros(len(indices), 3, 16, 16), torch.ones(len(indices))).sum() * float("nan")
        return loss, {"loss": loss.detach()}
    monkeypatch.setattr(TeacherLoop, "round_loss", nan_loss)
    with pytest.raises(TrainingError) as refusal:
        TeacherLoop(config, tmp_path / "run", progress=False, echo=False).train()
    message = str(refusal.value)
    assert "loss became non-finite before step 2 (at teacher.lr = 0.01)" in message
    assert "--set teacher.lr=0.0025 and another --out directory" in message and "rerun to resume" not in message
    monkeypatch.undo()
    # Following the advice works: the lower lr in a fresh directory starts (the old one is refused).
    lower = small_config("teacher.steps=1", "teacher.batch_size=4", "teacher.lr=0.0025")
    TeacherLoop(lower, tmp_path / "fresh", progress=False, echo=False).train()
    with pytest.raises(TrainingError, match="teacher.lr: 0.01 -> 0.0025"):
        TeacherLoop(small_config("teacher.steps=4", "teacher.batch_size=4", "teacher.log_every=2",
                                 "teacher.lr=0.0025"), tmp_path / "run", progress=False, echo=False).train()


# -- classifier settings on a rerun ----------------------------------------------------------------------
def test_changed_classifier_settings_are_refused_on_a_rerun(tmp_path):
    from hkdviz.evaluation.classifier import ClassifierError
    from hkdviz.train.cli import stage_classifier
    from hkdviz.train.distributed import init_distributed
    context = init_distributed("cpu")
    config = small_config("classifier.steps=2", "classifier.num_images=32", "classifier.num_held_out=16",
                          "classifier.batch_size=8")
    out = tmp_path / "classifier"
    assert stage_classifier(config, out, context, progress=False) == out
    weights = (out / "model.safetensors").read_bytes()
    assert stage_classifier(config, out, context, progress=False) == out  # the same settings: reused as it is
    changed = small_config("classifier.steps=3", "classifier.num_images=32", "classifier.num_held_out=16",
                           "classifier.batch_size=8", "classifier.learning_rate=0.01")
    with pytest.raises(ClassifierError, match=r"other settings \(classifier.steps: 2 -> 3; "
                                              r"classifier.learning_rate: 0.002 -> 0.01\); delete .* to retrain"):
        stage_classifier(changed, out, context, progress=False)
    assert (out / "model.safetensors").read_bytes() == weights


def test_temporaries_a_kill_left_behind_are_removed_under_the_lock(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    stale = [run / ".resume.pt.k3j2x9.tmp", run / "checkpoint" / ".model.safetensors.a8d0q1.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (run / "notes.tmp").write_bytes(b"the user's own file")  # not one of ours: kept
    TeacherLoop(small_config("teacher.steps=1", "teacher.batch_size=4"), run, progress=False, echo=False).train()
    assert not any(path.exists() for path in stale)
    assert (run / "notes.tmp").exists()
    assert not list(run.glob(".*.tmp")) and not list((run / "checkpoint").glob(".*.tmp"))
