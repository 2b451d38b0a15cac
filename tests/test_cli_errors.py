"""The CLI's failures: one line on stderr naming the problem, exit code 2 for bad usage and 1 for a failed run,
never a traceback (unless --debug or HKDVIZ_DEBUG=1). Most cases call hkdviz.cli.main in-process; a few run
the real `python -m hkdviz` to see what a shell sees."""
import errno
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hkdviz import cli
from hkdviz.errors import describe, exit_code

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("single_thread")


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, *needles: str) -> None:
    # Notes (`hkdviz train: note: the machine is busy ...`) are advice and progress bars are progress, not the error.
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and ": note: " not in line and "%|" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("hkdviz"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture(scope="module")
def corrupt_checkpoint(tiny_checkpoint, tmp_path_factory):
    directory = tmp_path_factory.mktemp("corrupt") / "hkd"
    shutil.copytree(tiny_checkpoint, directory)
    (directory / "model.safetensors").write_bytes(b"truncated")
    return directory


@pytest.fixture(scope="module")
def corrupt_teacher(corrupt_checkpoint, tmp_path_factory):
    directory = tmp_path_factory.mktemp("corrupt") / "teacher"
    shutil.copytree(corrupt_checkpoint, directory)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "kind": "teacher"}))
    return directory


# (arguments with {ckpt}/{corrupt}/{tmp} placeholders, exit code, substrings of the one stderr line)
CASES = [
    (["info", "{tmp}/missing"], 2, ["not found"]),
    (["info", "defualt"], 2, ["checkpoint 'defualt' not found", "shipped under"]),
    (["info", "{corrupt}"], 1, ["corrupt or truncated safetensors file"]),
    (["frobnicate"], 2, ["invalid choice"]),
    (["spectrum", "{ckpt}"], 2, ["-o/--output"]),
    (["spectrum", "{ckpt}", "-o", "{tmp}/s.nc", "--bogus"], 2, ["unrecognized arguments: --bogus"]),
    (["spectrum", "{ckpt}", "-o", "{tmp}/s.nc", "--step", "nan"], 2, ["step must be a finite number, got nan"]),
    (["spectrum", "{ckpt}", "-o", "{tmp}/s.nc", "--step", "x"], 2, ["invalid float value: 'x'"]),
    (["spectrum", "{ckpt}", "-o", "{tmp}/s.nc", "--device", "meta"], 2, ["--device meta", "holds no values"]),
    (["spectrum", "{ckpt}", "-o", "{tmp}/s.nc", "--device", "gpu"], 2, ["--device gpu"]),
    (["spectrum", "{ckpt}", "-o", ""], 2, ["-o/--output is empty"]),
    (["spectrum", "{corrupt}", "-o", "{tmp}/s.nc"], 1, ["corrupt or truncated"]),
    (["trajectory", "{ckpt}", "-o", "{tmp}/t.nc", "--seeds", "9-3"], 2, ["cannot read seeds"]),
    (["trajectory", "{ckpt}", "-o", "{tmp}/t.nc", "--seeds", "0-999999999"], 2,
     ["1,000,000,000 seeds; at most 100,000 per command"]),
    (["trajectory", "{ckpt}", "-o", "{tmp}/t.nc", "--seeds", "18446744073709551616"], 2, ["[0, 2**63)"]),
    (["trajectory", "{ckpt}", "-o", "{tmp}/t.nc", "--seeds", ","], 2, ["no seeds given"]),
    (["trajectory", "{ckpt}", "-o", "{tmp}/t.nc", "--times", "0"], 2, ["times must be >= 2"]),
    (["figures", "--checkpoint", "defualt", "--out", "{tmp}/figs"], 2, ["checkpoint 'defualt' not found"]),
    (["figures", "--checkpoint", "{corrupt}", "--out", "{tmp}/figs"], 1, ["corrupt or truncated"]),
    (["figures", "--checkpoint", "{ckpt}", "--device", "meta", "--out", "{tmp}/figs"], 2, ["--device meta"]),
    (["figures", "--only", "fig99", "--data", "{tmp}"], 2, ["unknown figure ['fig99']"]),
    (["figures", "--threads", "zero"], 2, ["--threads must be 'auto' or a positive integer"]),
    (["demo", "--checkpoint", "defualt", "--out", "{tmp}/demo", "--no-progress"], 2, ["checkpoint 'defualt' not found"]),
    (["demo", "--checkpoint", "{tmp}", "--out", "{tmp}/demo", "--no-progress"], 2, ["not a checkpoint directory"]),
    (["train", "hkd", "--preset", "smoke", "--set", "hkd.lr=NaN", "--out", "{tmp}/run"], 2, ["hkd.lr must be finite, got nan"]),
    (["train", "teacher", "--preset", "smoke", "--set", "teacher.batch_size=null", "--out", "{tmp}/run"], 2,
     ["teacher.batch_size must be an integer, got None"]),
    (["train", "teacher", "--preset", "smoke", "--set", "model.unet.channel_mult=[]", "--out", "{tmp}/run"], 2,
     ["unet.channel_mult must be a non-empty list of integers, got []"]),
    (["train", "all", "--preset", "smoke", "--set", 'teacher.xflip="yes"', "--out", "{tmp}/run"], 2,
     ["teacher.xflip must be true or false, got 'yes'"]),
    (["train", "all"], 2, ["--out"]),
    (["train", "trajectories", "--preset", "smoke", "--teacher", "{teacher}", "--out", "{tmp}/run"], 1,
     ["corrupt or truncated"]),
]


@pytest.mark.parametrize("arguments, code, needles", CASES, ids=[" ".join(case[0])[:60] for case in CASES])
def test_cli_failure_is_one_line_with_the_right_exit_code(arguments, code, needles, tiny_checkpoint, corrupt_checkpoint,
                                                          corrupt_teacher, tmp_path, capsys):
    places = {"{ckpt}": str(tiny_checkpoint), "{corrupt}": str(corrupt_checkpoint), "{teacher}": str(corrupt_teacher),
              "{tmp}": str(tmp_path)}
    argv = []
    for item in arguments:
        for key, value in places.items():
            item = item.replace(key, value)
        argv.append(item)
    started = time.perf_counter()
    result, _, err = run(argv, capsys)
    assert result == code, err
    assert_one_line(err, *needles)
    assert time.perf_counter() - started < 60  # a refused command is refused at once (no billion-element list)
    assert not (tmp_path / "figs").exists() and not (tmp_path / "demo").exists()  # nothing written for bad usage


def test_failed_writes_and_memory_are_exit_1_one_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import hkdviz.analysis.storage as storage

    def full_disk(dataset, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(storage, "save_dataset", full_disk)
    code, _, err = run(["spectrum", tiny_checkpoint, "-o", tmp_path / "s.nc"], capsys)
    assert code == 1
    assert_one_line(err, "No space left on device", str(tmp_path / "s.nc"), "free space")

    def read_only(dataset, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(storage, "save_dataset", read_only)
    code, _, err = run(["trajectory", tiny_checkpoint, "-o", tmp_path / "t.nc", "--seeds", "0", "--times", "2"], capsys)
    assert code == 1
    assert_one_line(err, "Permission denied", "writable")

    import hkdviz.analysis.spectrum as spectrum_module

    def no_memory(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(spectrum_module, "spectrum", no_memory)
    code, _, err = run(["spectrum", tiny_checkpoint, "-o", tmp_path / "s.nc"], capsys)
    assert code == 1
    assert_one_line(err, "out of memory")


def test_exit_codes_of_error_kinds():
    from hkdviz.analysis.storage import StorageError
    from hkdviz.checkpoint import CheckpointError, CheckpointNotFoundError
    from hkdviz.model import ConfigError
    assert exit_code(CheckpointNotFoundError("x")) == 2 and exit_code(CheckpointError("x")) == 1
    assert exit_code(StorageError("x")) == 1 and exit_code(ConfigError("x")) == 2
    # Inputs are checked up front (CheckpointNotFoundError, --data, config files): an OSError is the run's failure.
    assert exit_code(FileNotFoundError("x")) == 1 and exit_code(OSError(errno.EIO, "I/O error")) == 1
    assert exit_code(MemoryError()) == 1 and exit_code(ValueError("x")) == 2 and exit_code(KeyError("x")) == 1
    assert "unexpected; rerun with --debug" in describe(KeyError("level"))
    # hkdviz's own error classes say what is wrong themselves, whatever their base class.
    from hkdviz.train.common import TrainingError
    text = "hkd.lr_cooldown_steps must lie in [0, hkd.steps = 3], got 600"
    assert describe(TrainingError(text)) == text


def test_train_cli_refuses_a_cooldown_longer_than_the_run_up_front(capsys):
    from hkdviz.train.cli import main
    code = main(["hkd", "--preset", "default", "--set", "hkd.steps=3", "--out", "/nonexistent/run",
                 "--teacher", "/nonexistent/teacher", "--trajectories", "/nonexistent/trajectories"])
    error = capsys.readouterr().err
    assert code == 2 and "hkd.lr_cooldown_steps (600) must not exceed hkd.steps (3)" in error, error
    assert "unexpected" not in error and "trajectory" not in error  # refused before any path is read


@pytest.mark.parametrize("meta_change", [
    {"metrics": "garbage"},
    {"metrics": [1, 2, 3]},
    {"metrics": {"evaluation": "not a mapping"}},
    {"metrics": {"evaluation": {"rows": "x"}}},
    {"metrics": {"evaluation": {"rows": [{"method": 3}], "seeds": {"first": "a"}}}},
    {"metrics": {"evaluation": {"rows": [1, 2]}}},
    {"step": {"nested": [1]}, "dataset": ["a", "list"]},
    {"metrics": None, "step": None},
    {"band_aliases": {"high": "largest"}},
    {"band_aliases": "largest"},
])
def test_info_survives_malformed_meta_fields(tiny_checkpoint, tmp_path, capsys, meta_change):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta.update(meta_change)
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    for extra in ([], ["--json"]):
        code, out, err = run(["info", checkpoint, *extra], capsys)
        assert code == 0, err
        assert "Traceback" not in err and "level" in out and "error" not in err


def test_info_names_the_band_aliases_and_their_source(tiny_checkpoint, tmp_path, capsys):
    code, out, _ = run(["info", tiny_checkpoint], capsys)
    assert code == 0 and "high = largest, mid = intermediate, low = smallest (not recorded" in out
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["band_aliases"] = {"high": "largest", "mid": "smallest", "low": "intermediate"}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    code, out, _ = run(["info", checkpoint], capsys)
    assert code == 0 and "high = largest, mid = smallest, low = intermediate (measured when trained)" in out
    meta["band_aliases"]["margins"] = {"high_over_mid": [0.25, 0.02], "mid_over_low": [0.011, 0.051]}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    code, out, _ = run(["info", checkpoint], capsys)  # a margin within two standard errors is a tie
    assert code == 0 and "mid and low not separated, +0.011 +- 0.051: name the thirds instead" in out
    assert "high and mid" not in out
    meta["band_aliases"] = {"high": "largest"}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    code, out, _ = run(["info", checkpoint], capsys)
    assert code == 0 and "unreadable band_aliases" in out


def test_figures_one_bad_netcdf_fails_only_its_figures(tiny_model, tmp_path, capsys):
    import hkdviz
    from hkdviz.analysis.storage import save_dataset
    data = tmp_path / "data"
    data.mkdir()
    save_dataset(hkdviz.trajectory(tiny_model, seeds=[0], times=3, progress=False), data / "trajectory.nc")
    (data / "spectrum.nc").write_bytes(b"\x89HDF\r\n\x1a\n this is not a netCDF file")
    code, out, err = run(["figures", "--data", data, "--out", tmp_path / "out", "--formats", "png",
                          "--only", "spectrum_scatter,trajectory_filmstrip"], capsys)
    assert code == 1
    assert (tmp_path / "out" / "trajectory_filmstrip.png").exists()       # the good file still gives its figure
    assert not (tmp_path / "out" / "spectrum_scatter.png").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert "warning: spectrum_scatter skipped: cannot read" in lines[0] and str(data / "spectrum.nc") in lines[0]
    assert "1 figure(s) failed (spectrum_scatter)" in lines[1]
    manifest = json.loads((tmp_path / "out" / "figures.json").read_text())
    failed = {entry["stem"]: entry["failed"] for entry in manifest["figures"]}
    assert failed == {"spectrum_scatter": True, "trajectory_filmstrip": False}


def test_only_the_literal_default_falls_back(tmp_path, monkeypatch, capsys):
    import hkdviz.checkpoint as checkpoint
    from hkdviz.report.source import open_model
    monkeypatch.setattr(checkpoint, "CHECKPOINT_ROOT", tmp_path / "no-shipped-checkpoints")
    source = open_model("default", device="cpu")
    assert not source.trained and "UNTRAINED MODEL" in source.banner
    for typo in ("defualt", "Default", "default "):
        with pytest.raises(checkpoint.CheckpointNotFoundError, match="not found"):
            open_model(typo, device="cpu")
    # The CLI says so on stderr (the banner) and still works with the stand-in.
    code, _, err = run(["figures", "--checkpoint", "default", "--quick", "--out", tmp_path / "figs", "--device", "cpu",
                        "--only", "spectrum_quantiles", "--formats", "png"], capsys)
    assert code == 0 and "UNTRAINED MODEL" in err and "no trained checkpoint 'default'" in " ".join(err.split())
    code, _, err = run(["figures", "--checkpoint", "defualt", "--out", tmp_path / "typo"], capsys)
    assert code == 2 and "UNTRAINED" not in err and not (tmp_path / "typo").exists()


def python_cli(*arguments, env=None):
    import os
    return subprocess.run([sys.executable, "-m", "hkdviz", *map(str, arguments)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, **(env or {})})


def test_traceback_only_when_debugging(corrupt_checkpoint, tmp_path):
    quiet = python_cli("spectrum", corrupt_checkpoint, "-o", tmp_path / "s.nc")
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1 and quiet.stderr.startswith("hkdviz spectrum: error:")
    loud = python_cli("spectrum", corrupt_checkpoint, "-o", tmp_path / "s.nc", "--debug")
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "corrupt or truncated" in loud.stderr
    environment = python_cli("figures", "--checkpoint", corrupt_checkpoint, "--out", tmp_path / "f",
                             env={"HKDVIZ_DEBUG": "1"})
    assert environment.returncode == 1 and "corrupt or truncated" in environment.stderr


def test_seed_count_is_refused_before_any_list_is_built():
    started = time.perf_counter()
    with pytest.raises(Exception, match="at most 100,000"):
        cli.parse_seeds("0-999999999999999")
    assert time.perf_counter() - started < 1
    assert cli.parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert torch.tensor(cli.parse_seeds("5")).tolist() == [5]
