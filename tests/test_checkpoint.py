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


# -- integrity: the weights' sha256 recorded at save, verified at load --------------------------------
def _meta(directory):
    return json.loads((directory / "meta.json").read_text())


def _rewrite_weights(directory, change):
    """Apply `change` to the state dict and save it, keeping meta.json's hash in step (so only the
    value checks can object)."""
    from safetensors.torch import load_file, save_file

    from hkdviz.checkpoint import file_sha256
    state = load_file(str(directory / "model.safetensors"))
    change(state)
    save_file(state, str(directory / "model.safetensors"))
    meta = _meta(directory)
    meta["weights_sha256"] = file_sha256(directory / "model.safetensors")
    (directory / "meta.json").write_text(json.dumps(meta))


def test_save_records_the_weights_sha256(tiny_checkpoint):
    import hashlib
    recorded = _meta(tiny_checkpoint)["weights_sha256"]
    assert recorded == hashlib.sha256((tiny_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert hkdviz.load(tiny_checkpoint, device="cpu").checkpoint_sha256 == recorded


def test_one_flipped_bit_is_refused_with_both_hashes(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's data: still a well-formed safetensors file
    weights.write_bytes(bytes(data))
    recorded = _meta(directory)["weights_sha256"]
    import hashlib
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(CheckpointError, match=f"model.safetensors: .*sha256 is {actual}, meta.json records {recorded}"):
        hkdviz.load(directory, device="cpu")


def test_checkpoint_without_the_hash_still_loads(tiny_model, tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    meta = _meta(directory)
    del meta["weights_sha256"]
    (directory / "meta.json").write_text(json.dumps(meta))
    assert torch.equal(hkdviz.load(directory, device="cpu").sample([3]), tiny_model.sample([3]))


def test_malformed_recorded_hash_is_named(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    meta = _meta(directory)
    meta["weights_sha256"] = 12
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="meta.json: weights_sha256 must be a 64-digit hex string, got 12"):
        hkdviz.load(directory, device="cpu")


def test_shipped_checkpoints_record_their_hash():
    from hkdviz.checkpoint import CHECKPOINT_ROOT, file_sha256
    kinds = [path for path in (CHECKPOINT_ROOT / "default").glob("*") if (path / "meta.json").exists()]
    if not kinds:
        pytest.skip("no shipped checkpoints in this install")
    for directory in kinds:
        assert _meta(directory)["weights_sha256"] == file_sha256(directory / "model.safetensors"), directory.name


def test_integer_weights_are_refused(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    name = sorted(hkdviz.load(tiny_checkpoint, device="cpu").state_dict())[0]

    def to_int64(state):
        state[name] = state[name].round().to(torch.int64)
    _rewrite_weights(directory, to_int64)
    with pytest.raises(CheckpointError, match=f"must be floating point; these tensors are not: \\[{name} \\(int64\\)"):
        hkdviz.load(directory, device="cpu")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_by_name(tiny_checkpoint, tmp_path, bad):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    name = sorted(hkdviz.load(tiny_checkpoint, device="cpu").state_dict())[-1]

    def poison(state):
        state[name].view(-1)[0] = bad
    _rewrite_weights(directory, poison)
    with pytest.raises(CheckpointError, match=f"weights hold NaN or inf in \\[{name}\\]"):
        hkdviz.load(directory, device="cpu")


def test_half_precision_weights_still_load(tiny_model, tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)

    def to_half(state):
        for key in state:
            state[key] = state[key].to(torch.float16)
    _rewrite_weights(directory, to_half)
    model = hkdviz.load(directory, device="cpu")
    assert model.sample([0]).shape == tiny_model.sample([0]).shape


# -- resources: inputs must be regular files; JSON is capped ------------------------------------------
@pytest.mark.timeout(20)
@pytest.mark.parametrize("member", ["model.safetensors", "meta.json", "config.json"])
def test_fifo_posing_as_a_checkpoint_file_does_not_hang(tiny_checkpoint, tmp_path, member):
    import os
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    (directory / member).unlink()
    os.mkfifo(directory / member)
    pattern = f"{member.replace('.', '[.]')}: the .* is a FIFO \\(named pipe\\), not a regular file"
    with pytest.raises(CheckpointError, match=pattern):
        hkdviz.load(directory, device="cpu")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("member", ["model.safetensors", "meta.json"])
def test_dev_zero_posing_as_a_checkpoint_file_is_refused(tiny_checkpoint, tmp_path, member):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    (directory / member).unlink()
    (directory / member).symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="is a character device, not a regular file"):
        hkdviz.load(directory, device="cpu")


@pytest.mark.timeout(20)
def test_dev_zero_as_the_checkpoint_path_is_refused():
    with pytest.raises(CheckpointError, match="/dev/zero: is a character device; a checkpoint is a directory"):
        hkdviz.load("/dev/zero", device="cpu")


def test_oversized_meta_json_is_refused_before_parsing(tiny_checkpoint, tmp_path):
    directory = corrupt_copy(tiny_checkpoint, tmp_path)
    meta = _meta(directory)
    meta["padding"] = "x" * (17 << 20)  # 17 MiB of padding, past the 16 MiB cap
    (directory / "meta.json").write_text(json.dumps(meta))
    pattern = r"meta.json: the checkpoint meta.json is 17,8\d\d,\d\d\d bytes, more than the 16,777,216 allowed"
    with pytest.raises(CheckpointError, match=pattern):
        hkdviz.load(directory, device="cpu")


def test_load_checkpoint_reads_every_shipped_kind():
    """hkdviz.load, load_teacher and load_classifier all go through checkpoint.load_checkpoint: each module
    comes back in eval mode without gradients, with the provenance of its own directory."""
    import hashlib

    from hkdviz.checkpoint import CHECKPOINT_ROOT
    from hkdviz.evaluation.classifier import load_classifier
    from hkdviz.teacher.teacher import load_teacher

    teacher = load_teacher("default", device="cpu")
    loaded = {"hkd": hkdviz.load("default", device="cpu"), "teacher": teacher.denoiser,
              "classifier": load_classifier("default", device="cpu")}
    for kind, module in loaded.items():
        directory = CHECKPOINT_ROOT / "default" / kind
        expected = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
        assert module.checkpoint_sha256 == expected and module.checkpoint_path == str(directory.resolve()), kind
        assert module.meta["kind"] == kind, kind
        assert not module.training and not any(p.requires_grad for p in module.parameters()), kind
    assert (teacher.checkpoint_path, teacher.checkpoint_sha256) == (loaded["teacher"].checkpoint_path,
                                                                    loaded["teacher"].checkpoint_sha256)


def test_load_checkpoint_with_its_own_builder(tmp_path):
    """The one loader with a builder of any module: weights round-trip exactly; a builder that fails with a
    ValueError becomes a CheckpointError naming config.json, a CheckpointError passes unchanged; an unknown
    kind is refused before anything is read."""
    from hkdviz.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    save_checkpoint(module, tmp_path / "linear", kind="classifier", config={"in": 3, "out": 2})

    def build(config, state, source):
        assert source.endswith("config.json") and set(state) == {"weight", "bias"}
        return torch.nn.Linear(config["in"], config["out"])

    loaded = load_checkpoint(tmp_path / "linear", "classifier", build, device="cpu", dtype="float64")
    assert loaded.weight.dtype == torch.float64
    assert torch.equal(loaded.weight.float(), module.weight) and torch.equal(loaded.bias.float(), module.bias)
    assert loaded.meta["kind"] == "classifier" and not loaded.weight.requires_grad

    def refuse(config, state, source):
        raise ValueError("width must be positive")

    with pytest.raises(CheckpointError, match=r"linear/config\.json: cannot build the classifier \(width must be"):
        load_checkpoint(tmp_path / "linear", "classifier", refuse, device="cpu")

    def damaged(config, state, source):
        raise CheckpointError("described network does not match")

    with pytest.raises(CheckpointError, match="^described network does not match$"):
        load_checkpoint(tmp_path / "linear", "classifier", damaged, device="cpu")
    with pytest.raises(CheckpointError, match="expected 'hkd'"):
        load_checkpoint(tmp_path / "linear", "hkd", build, device="cpu")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_checkpoint(tmp_path / "linear", "vae", build, device="cpu")
