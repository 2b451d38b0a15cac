"""Checkpoint round trips and every bad checkpoint ending in one clear error."""
import json
import shutil

import pytest
import torch

import hkdviz
from hkdviz.checkpoint import CheckpointError, read_checkpoint


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def test_save_load_gives_bit_identical_outputs(tiny_model, tiny_checkpoint):
    loaded = hkdviz.load(tiny_checkpoint, device="cpu")
    seeds = [0, 1, 2]
    assert torch.equal(loaded.sample(seeds), tiny_model.sample(seeds))
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config == tiny_model.config
    assert len(loaded.checkpoint_sha256) == 64
    assert loaded.meta["format_version"] == 1 and loaded.meta["kind"] == "hkd"
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_load_with_dtype(tiny_checkpoint):
    model = hkdviz.load(tiny_checkpoint, device="cpu", dtype=torch.float64)
    assert model.dtype == torch.float64
    assert model.sample([0]).dtype == torch.float32  # samples come back as float32 images


def corrupt_copy(source, tmp_path):
    target = tmp_path / "checkpoint"
    shutil.copytree(source, target)
    return target


def test_missing_directory_names_the_shipped_ones(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        hkdviz.load(tmp_path / "nothing-here")
    with pytest.raises(CheckpointError, match="not a shipped name"):
        hkdviz.load("no-such-shipped-name")


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json", "meta.json"])
def test_missing_file_is_named(tiny_checkpoint, tmp_path, missing):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    (directory / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        hkdviz.load(directory, device="cpu")


def test_truncated_weights(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt or truncated"):
        hkdviz.load(directory, device="cpu")


def test_garbage_weights(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        hkdviz.load(directory, device="cpu")


def test_config_that_does_not_match_weights(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["unet"]["model_channels"] = 32
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights do not match config.json: .*shape mismatches"):
        hkdviz.load(directory, device="cpu")


def test_config_that_cannot_build(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["koopman"]["operator"] = "magic"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: cannot build the model"):
        hkdviz.load(directory, device="cpu")


def test_invalid_json_and_unknown_format_version(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        read_checkpoint(directory, kind="hkd")
    directory = corrupt_copy(tiny_checkpoint, tmp_path / "second")
    meta = json.loads((directory / "meta.json").read_text())
    meta["format_version"] = 99
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        hkdviz.load(directory, device="cpu")


def test_wrong_kind_and_file_instead_of_directory(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    meta["kind"] = "teacher"
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="'teacher' checkpoint, expected 'hkd'"):
        hkdviz.load(directory, device="cpu")
    with pytest.raises(CheckpointError, match="is a file"):
        hkdviz.load(directory / "meta.json", device="cpu")


def test_unavailable_cuda_is_a_clear_error(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        hkdviz.load(tiny_checkpoint, device="cuda")
