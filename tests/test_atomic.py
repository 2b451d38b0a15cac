"""Atomic output files: a failed write leaves the previous file byte-identical and no temporary file;
finished files get the mode the user's umask asks for. Each writer hkdviz uses is checked once."""
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hkdviz import atomic
from hkdviz.analysis.storage import StorageError, save_dataset

OLD = b"the previous, good content\n"


def leftovers(directory, keep):
    return sorted(path.name for path in directory.iterdir() if path.name not in keep)


@pytest.fixture
def restore_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


def test_write_bytes_text_json_round_trip(tmp_path):
    assert atomic.write_bytes(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic.write_text(tmp_path / "deeper" / "b.txt", "é\n").read_text(encoding="utf-8") == "é\n"
    atomic.write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert (tmp_path / "c.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert leftovers(tmp_path, {"a.bin", "deeper", "c.json"}) == []


def test_writer_failing_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(OLD)
    with pytest.raises(OSError, match="No space left"):
        with atomic.temporary_path(target) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"half a new fi")  # some bytes are written, then the disk fills up
                raise OSError(28, "No space left on device")
    assert target.read_bytes() == OLD
    assert leftovers(tmp_path, {"figure.png"}) == []


def test_unserialisable_json_touches_nothing(tmp_path):
    target = tmp_path / "demo.json"
    target.write_bytes(OLD)
    with pytest.raises(TypeError):
        atomic.write_json(target, {"value": object()})
    assert target.read_bytes() == OLD
    assert leftovers(tmp_path, {"demo.json"}) == []


def test_failing_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_bytes(OLD)

    def refuse(source, destination):
        raise PermissionError(13, "Permission denied", str(destination))
    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic.write_text(target, "<html>new</html>")
    assert target.read_bytes() == OLD
    assert leftovers(tmp_path, {"report.html"}) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_keeps_the_old_file(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "table.txt").write_bytes(OLD)
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            atomic.write_text(folder / "table.txt", "new")
    finally:
        folder.chmod(0o755)
    assert (folder / "table.txt").read_bytes() == OLD
    assert leftovers(folder, {"table.txt"}) == []


def test_a_directory_is_never_replaced(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError, match="out.json"):
        atomic.write_json(tmp_path / "out.json", {})
    assert (tmp_path / "out.json").is_dir()


@pytest.mark.parametrize("mask, mode", [(0o027, 0o640), (0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_final_mode_follows_the_umask(tmp_path, restore_umask, mask, mode):
    os.umask(mask)
    path = atomic.write_text(tmp_path / "evaluation.json", "{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    with atomic.temporary_path(tmp_path / "chunk.nc") as temporary:
        temporary.write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "chunk.nc").stat().st_mode) == mode


def test_save_dataset_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "spectrum.nc"
    dataset = xr.Dataset({"alpha": ("mode", np.arange(4.0))})
    save_dataset(dataset, target)
    before = target.read_bytes()

    def half_written(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_written)
    with pytest.raises(StorageError, match="spectrum.nc: could not write the dataset"):
        save_dataset(dataset * 2, target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path, {"spectrum.nc"}) == []


def test_paper_figure_failing_midway_keeps_the_old_files(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from hkdviz.plot.paper import save_figure

    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    written = save_figure(figure, tmp_path / "spectrum")
    assert [path.name for path in written] == ["spectrum.pdf", "spectrum.png"]
    before = {path.name: path.read_bytes() for path in written}
    assert before["spectrum.png"].startswith(b"\x89PNG")

    def failing_savefig(self, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89PNG trunc")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="No space left"):
        save_figure(figure, tmp_path / "spectrum")
    assert {path.name: path.read_bytes() for path in written} == before
    assert leftovers(tmp_path, set(before)) == []


@pytest.mark.parametrize("writer", ["html", "figures_manifest", "evaluation"])
def test_report_writers_failing_midway_keep_the_old_file(tmp_path, monkeypatch, writer):
    """report.html, figures.json and evaluation.json/table.txt all go through hkdviz.atomic: a disk
    that fills up after some bytes leaves each previous file as it was."""
    real_open = open

    def filling_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and os.path.basename(str(path)).startswith("."):  # the temporary file
            real_write = handle.write

            def write(data):
                real_write(data[:5])
                raise OSError(28, "No space left on device")
            handle.write = write
        return handle
    if writer == "html":
        from hkdviz.report.html import write_report
        target = tmp_path / "report.html"
        target.write_bytes(OLD)
        monkeypatch.setattr("builtins.open", filling_open)
        with pytest.raises(OSError):
            write_report(target, "title", [])
    elif writer == "figures_manifest":
        from hkdviz.report.figures import write_manifest
        target = tmp_path / "figures.json"
        target.write_bytes(OLD)
        monkeypatch.setattr("builtins.open", filling_open)
        with pytest.raises(OSError):
            write_manifest(target, [])
    else:
        from hkdviz.evaluation import evaluate as evaluate_module
        target = tmp_path / "evaluation.json"
        target.write_bytes(OLD)
        monkeypatch.setattr("builtins.open", filling_open)
        with pytest.raises(OSError):
            evaluate_module.write_json(target, {"rows": []})
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert leftovers(tmp_path, {target.name}) == []


def test_replace_directory_swaps_in_a_copy_and_a_failed_copy_keeps_the_old(tmp_path, monkeypatch, restore_umask):
    import shutil
    os.umask(0o027)
    source, target = tmp_path / "source", tmp_path / "export" / "hkd"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"new weights")
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(OLD)
    (target / "stale.json").write_bytes(b"{}")

    def copy_that_fills_the_disk(src, dst, **kwargs):
        os.makedirs(dst, exist_ok=True)
        (Path(dst) / "model.safetensors").write_bytes(b"new wei")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(shutil, "copytree", copy_that_fills_the_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic.replace_directory(source, target)
    monkeypatch.undo()
    assert sorted(path.name for path in target.iterdir()) == ["model.safetensors", "stale.json"]
    assert (target / "model.safetensors").read_bytes() == OLD
    assert leftovers(target.parent, {"hkd"}) == []
    atomic.replace_directory(source, target)
    assert sorted(path.name for path in target.iterdir()) == ["model.safetensors"]
    assert (target / "model.safetensors").read_bytes() == b"new weights"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert leftovers(target.parent, {"hkd"}) == []


def test_checkpoint_save_failing_midway_keeps_the_old_checkpoint(tiny_model, tmp_path, monkeypatch):
    import safetensors.torch

    import hkdviz
    directory = tmp_path / "checkpoint"
    tiny_model.save(directory)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}

    def half_written(state, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 100)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="No space left"):
        tiny_model.save(directory)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    assert hkdviz.load(directory, device="cpu").checkpoint_sha256 == json.loads(before["meta.json"])["weights_sha256"]


def test_resume_file_write_failing_midway_keeps_the_old_one(tmp_path, monkeypatch):
    import torch

    from hkdviz.train.common import load_resume, save_resume
    path = tmp_path / "resume.pt"
    save_resume(path, {"step": 4})
    before = path.read_bytes()
    real_open = open

    def filling_open(name, mode="r", *args, **kwargs):
        handle = real_open(name, mode, *args, **kwargs)
        if "w" in mode:
            real_write = handle.write

            def write(data):
                real_write(data[:10])
                raise OSError(28, "No space left on device")
            handle.write = write
        return handle
    monkeypatch.setattr("builtins.open", filling_open)
    with pytest.raises(OSError):
        save_resume(path, {"step": 8, "weights": torch.ones(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before and load_resume(path)["step"] == 4
    assert leftovers(tmp_path, {"resume.pt"}) == []
