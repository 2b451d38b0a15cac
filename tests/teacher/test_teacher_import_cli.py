"""`hkdviz teacher import|info` and `hkdviz train ... --teacher x.pkl`: EDM pickles on the command line."""
import json
import os
import pickle
import re

import pytest
import torch

from edm_pickles import network_pickle
from hkdviz.cli import main
from hkdviz.teacher.networks import EDMPreconditioning, VEPreconditioning
from hkdviz.teacher.teacher import load_teacher
from hkdviz.train.trajectories import read_manifest

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread

NCSNPP = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0,
              embedding_type="fourier", channel_mult_noise=2, encoder_type="residual", resample_filter=[1, 3, 3, 1])
DDPMPP = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0)


@pytest.fixture(scope="module")
def ve_pickle(tmp_path_factory):
    torch.manual_seed(0)
    return network_pickle(VEPreconditioning(16, 3, **NCSNPP).eval(), tmp_path_factory.mktemp("pkl") / "ve.pkl")


def run(*arguments):
    return main([str(argument) for argument in arguments])


def test_teacher_import_writes_a_checkpoint_and_says_what_it_is_for(tmp_path, capsys, ve_pickle):
    out = tmp_path / "teacher"
    assert run("teacher", "import", ve_pickle, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "VEPrecond + SongUNet (NCSN++)" in printed and "HKD cannot be initialised from it" in printed
    assert "sampled on sigma [0.02, 80]" in printed
    teacher = load_teacher(out, device="cpu")
    reference = load_teacher(str(ve_pickle), device="cpu")
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(teacher(x, 2.0), reference(x, 2.0))
    assert not list(tmp_path.glob(".teacher.tmp-*"))  # the temporary directory is gone
    assert run("teacher", "info", out) == 0  # a checkpoint directory describes itself the same way
    parameters = sum(parameter.numel() for parameter in teacher.denoiser.parameters())
    assert f"VEPrecond + SongUNet (NCSN++), {parameters / 1e6:.1f}M parameters, images 3x16x16" in capsys.readouterr().out

    assert run("teacher", "import", ve_pickle, "--out", out) == 2  # refuses to overwrite
    assert "is not empty; pass --force" in capsys.readouterr().err
    assert run("teacher", "import", ve_pickle, "--out", out, "--force") == 0


def test_teacher_import_of_a_ddpmpp_edm_network_is_distillable(tmp_path, capsys):
    torch.manual_seed(1)
    path = network_pickle(EDMPreconditioning(16, 3, model_type="SongUNet", **DDPMPP).eval(), tmp_path / "ddpmpp.pkl")
    assert run("teacher", "info", path, "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == "EDMPrecond + SongUNet (DDPM++)" and record["hkd_distillable"] is True
    assert record["image_shape"] == [3, 16, 16] and record["sigma_min"] == 0.002 and record["sigma_max"] == 80.0
    assert run("teacher", "import", path, "--out", tmp_path / "out") == 0
    assert "HKD can be initialised from it" in capsys.readouterr().out


class RunsOnLoad:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content, message", [
    (b"not a pickle at all", "not a readable EDM network pickle"),
    (pickle.dumps({"ema": RunsOnLoad()}), r"refusing to load (posix|os)\.system"),
])
def test_teacher_import_of_bad_files_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "bad.pkl").write_bytes(content)
    assert run("teacher", "import", tmp_path / "bad.pkl", "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert re.search(message, error) and "Traceback" not in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_train_stages_take_a_pickle_as_teacher(tmp_path, capsys, ve_pickle):
    trajectories = tmp_path / "trajectories"
    assert run("train", "trajectories", "--preset", "smoke", "--teacher", ve_pickle, "--out", trajectories,
               "--set", "trajectories.count=3", "--set", "trajectories.num_steps=2", "--no-progress") == 0
    manifest = read_manifest(trajectories)
    assert manifest["count"] == 3 and manifest["sigma_min"] == 0.02 and manifest["sigma_max"] == 80.0
    assert manifest["teacher"]["checkpoint_sha256"] == load_teacher(str(ve_pickle), device="cpu").checkpoint_sha256
    capsys.readouterr()
    code = run("train", "hkd", "--preset", "smoke", "--teacher", ve_pickle, "--trajectories", trajectories,
               "--out", tmp_path / "hkd", "--no-progress")
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert "a VEPrecond + SongUNet (NCSN++) teacher cannot initialise HKD's encoder and decoder" in error
    assert "hkd.init_from_teacher=false" in error
    # From scratch, HKD learns that teacher's trajectories (its architecture: the teacher config's unet section).
    assert run("train", "hkd", "--preset", "smoke", "--teacher", ve_pickle, "--trajectories", trajectories,
               "--out", tmp_path / "hkd-scratch", "--set", "hkd.init_from_teacher=false", "--set", "hkd.steps=2",
               "--set", "hkd.batch_size=2", "--no-progress") == 0
    import hkdviz
    model = hkdviz.load(tmp_path / "hkd-scratch" / "checkpoint", device="cpu")
    assert model.config["unet"]["embedding_type"] == "fourier" and model.config["diffusion"]["sigma_min"] == 0.02


def test_a_distillable_pickle_trains_hkd_directly(tmp_path, capsys):
    torch.manual_seed(2)
    path = network_pickle(EDMPreconditioning(16, 3, model_type="SongUNet", **DDPMPP).eval(), tmp_path / "ddpmpp.pkl")
    trajectories = tmp_path / "trajectories"
    assert run("train", "trajectories", "--preset", "smoke", "--teacher", path, "--out", trajectories,
               "--set", "trajectories.count=4", "--set", "trajectories.num_steps=2", "--no-progress") == 0
    assert run("train", "hkd", "--preset", "smoke", "--teacher", path, "--trajectories", trajectories,
               "--out", tmp_path / "hkd", "--set", "hkd.steps=2", "--set", "hkd.batch_size=2", "--no-progress") == 0
    import hkdviz
    model = hkdviz.load(tmp_path / "hkd" / "checkpoint", device="cpu")
    assert model.image_shape == (3, 16, 16) and model.config["unet"]["model_channels"] == 16
    assert "warning" not in (tmp_path / "hkd" / "log.txt").read_text()  # same teacher sha256 as the trajectories


def test_train_all_imports_a_pickle_teacher_once(tmp_path, ve_pickle):
    from hkdviz.train.cli import imported_teacher
    from hkdviz.train.distributed import DistributedContext

    directory = tmp_path / "teacher" / "checkpoint"
    assert imported_teacher(str(ve_pickle), directory, DistributedContext()) == directory
    written = (directory / "model.safetensors").stat().st_mtime_ns
    assert imported_teacher(str(ve_pickle), directory, DistributedContext()) == directory  # a rerun keeps it
    assert (directory / "model.safetensors").stat().st_mtime_ns == written
    assert load_teacher(directory, device="cpu").meta["source"] == "NVlabs/edm pickle ve.pkl"
    assert imported_teacher("runs/teacher/checkpoint", directory, DistributedContext()) == "runs/teacher/checkpoint"
