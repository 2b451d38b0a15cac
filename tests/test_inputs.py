"""Input files are refused fast and clearly when they are not regular files (FIFOs, devices,
directories), when JSON is oversized, and when a zip member would expand implausibly."""
import io
import json
import os
import time
import zipfile

import numpy as np
import pytest

from hkdviz.inputs import (InputFileError, open_regular_file, read_bytes_limited, read_json_file,
                           require_regular_file)

pytestmark = pytest.mark.timeout(30)  # a regression here would hang on a FIFO, not fail


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


def test_regular_file_passes(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": [1, 2]}')
    assert require_regular_file(path).st_size == 13
    assert read_json_file(path) == {"a": [1, 2]}
    with open_regular_file(path) as handle:
        assert handle.read() == b'{"a": [1, 2]}'


@pytest.mark.parametrize("kind, expected", [("fifo", "a FIFO"), ("zero", "a character device"),
                                            ("directory", "a directory"), ("missing", "missing")])
def test_non_regular_inputs_are_refused_at_once(tmp_path, fifo, kind, expected):
    path = {"fifo": fifo, "zero": "/dev/zero", "directory": tmp_path, "missing": tmp_path / "none.json"}[kind]
    started = time.perf_counter()
    for reader in (require_regular_file, open_regular_file, read_json_file,
                   lambda path: read_bytes_limited(path, 100)):
        with pytest.raises(InputFileError, match=f"{path}: .*{expected}"):
            reader(path)
    assert time.perf_counter() - started < 5


def test_socket_is_refused(tmp_path):
    import socket
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(InputFileError, match="is a socket, not a regular file"):
            read_json_file(path)


def test_error_class_and_role_are_the_callers(fifo):
    class CallerError(ValueError):
        pass
    with pytest.raises(CallerError, match="the trajectory manifest is a FIFO"):
        read_json_file(fifo, CallerError, what="trajectory manifest")
    (fifo.parent / "bad.json").write_text("{")
    with pytest.raises(CallerError, match="bad.json: not valid JSON, a corrupt trajectory manifest"):
        read_json_file(fifo.parent / "bad.json", CallerError, what="trajectory manifest")


def test_json_size_cap(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"x": "y" * 2000}))
    with pytest.raises(InputFileError, match=r"big.json: the JSON file is 2,00\d bytes, more than the 1,000 allowed"):
        read_json_file(path, limit=1000)
    assert read_json_file(path)["x"] == "y" * 2000  # under the default 16 MiB


@pytest.mark.parametrize("content, message", [(b"{not json", "not valid JSON"),
                                              (b"\xff\xfe{}", "not valid JSON, not even UTF-8 text"),
                                              (b"[" * 100_000 + b"]" * 100_000, "the JSON file nests too deeply")])
def test_bad_json_is_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=f"bad.json: {message}"):
        read_json_file(path)


# -- data sets: zip bombs and FIFOs in image folders ---------------------------------------------------
def png_bytes(seed=0, size=8):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_zip_bomb_member_is_refused_from_the_directory_alone(tmp_path, monkeypatch):
    from hkdviz.data import DatasetError, load_dataset
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("00000.png", png_bytes())
        archive.writestr("00001.png", b"\x89PNG" + b"\x00" * (64 << 20))  # 64 MiB of zeros -> ~64 kB deflated
    assert path.stat().st_size < 1 << 20
    decompressed = []
    real_read = zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda self, name, *a: decompressed.append(name) or real_read(self, name, *a))
    started = time.perf_counter()
    with pytest.raises(DatasetError, match=r"00001.png in .*bomb.zip expands 1,0\d\d-fold .* more than the 100 allowed"):
        load_dataset(f"zip:{path}")
    assert decompressed == []  # refused before any member was decompressed
    assert time.perf_counter() - started < 5


def test_zip_member_declaring_a_huge_size_is_refused(tmp_path, monkeypatch):
    from hkdviz.data import DatasetError, load_dataset
    from hkdviz.data import folder
    path = tmp_path / "large.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("00000.png", png_bytes())
        archive.writestr("00001.png", png_bytes(1) + b"\x00" * 4096)
    monkeypatch.setattr(folder, "MAX_MEMBER_BYTES", 4000)  # stands in for the 256 MiB cap: no GB files in tests
    with pytest.raises(DatasetError, match=r"00001.png in .*large.zip declares 4,\d\d\d bytes uncompressed, more than "
                                           r"the 4,000 allowed for one image"):
        load_dataset(f"zip:{path}")


def test_ordinary_zip_still_loads(tmp_path):
    from hkdviz.data import load_dataset
    path = tmp_path / "fine.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(3):
            archive.writestr(f"{index:05d}.png", png_bytes(index))
        archive.writestr("dataset.json", json.dumps({"labels": [[f"{index:05d}.png", index] for index in range(3)]}))
    dataset = load_dataset(f"zip:{path}")
    assert len(dataset) == 3 and dataset[2][1].item() == 2


def test_fifo_in_an_image_folder_is_refused(tmp_path):
    from hkdviz.data import DatasetError, load_dataset
    (tmp_path / "00000.png").write_bytes(png_bytes())
    os.mkfifo(tmp_path / "00001.png")
    with pytest.raises(DatasetError, match="00001.png: the image file is a FIFO"):
        load_dataset(f"folder:{tmp_path}")


def test_fifo_as_folder_labels_is_refused(tmp_path):
    from hkdviz.data import DatasetError, load_dataset
    (tmp_path / "00000.png").write_bytes(png_bytes())
    os.mkfifo(tmp_path / "dataset.json")
    with pytest.raises(DatasetError, match="dataset.json: the label file is a FIFO"):
        load_dataset(f"folder:{tmp_path}")


def test_fifo_as_cifar_batch_is_refused(tmp_path):
    from hkdviz.data import DatasetError, safe_unpickle
    os.mkfifo(tmp_path / "data_batch_1")
    with pytest.raises(DatasetError, match="data_batch_1: the CIFAR-10 batch file is a FIFO"):
        safe_unpickle(tmp_path / "data_batch_1")


# -- training inputs: resume files, manifests, run configs, stored datasets --------------------------
def test_fifo_as_resume_file_is_refused(tmp_path):
    from hkdviz.train.common import TrainingError, load_resume
    os.mkfifo(tmp_path / "resume.pt")
    with pytest.raises(TrainingError, match="resume.pt: the resume file is a FIFO"):
        load_resume(tmp_path / "resume.pt")


def test_fifo_as_trajectory_manifest_is_refused(tmp_path):
    from hkdviz.train.trajectories import TrajectoryError, read_manifest
    os.mkfifo(tmp_path / "trajectories.json")
    with pytest.raises(TrajectoryError, match="trajectories.json: the manifest is a FIFO"):
        read_manifest(tmp_path)


def test_oversized_trajectory_manifest_is_refused(tmp_path):
    from hkdviz.train.trajectories import TrajectoryError, read_manifest
    with open(tmp_path / "trajectories.json", "wb") as handle:
        handle.truncate(17 << 20)  # sparse: 17 MiB on paper, nothing on disk
    with pytest.raises(TrajectoryError, match="trajectories.json: the manifest is 17,825,792 bytes, more than the 16,777,216"):
        read_manifest(tmp_path)


def test_fifo_as_run_config_is_refused(tmp_path):
    from hkdviz.train.common import RunDirectory, TrainingError, check_resume_config
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(TrainingError, match="config.json: the run config is a FIFO"):
        check_resume_config(RunDirectory(tmp_path, echo=False), {"seed": 0})


def test_fifo_as_netcdf_dataset_is_refused(tmp_path):
    from hkdviz.analysis.storage import StorageError, open_dataset
    os.mkfifo(tmp_path / "spectrum.nc")
    with pytest.raises(StorageError, match="spectrum.nc: the netCDF dataset file is a FIFO"):
        open_dataset(tmp_path / "spectrum.nc")
