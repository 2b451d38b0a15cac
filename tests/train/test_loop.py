"""Training loops: resume after a kill continues exactly; trajectories resume chunk by chunk; bad
resume/trajectory files give clear errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hkdviz.train.common import TrainingError, read_stats
from hkdviz.train.loop import HKDLoop, TeacherLoop
from hkdviz.train.presets import resolve_training_config
from hkdviz.train.trajectories import (TrajectoryDataset, TrajectoryError, chunk_name, generate_trajectories,
                                       open_trajectories, read_manifest)

REPO = Path(__file__).resolve().parents[2]
# A 16x16, 8-channel variant of "tiny" (61k parameters): the same code paths at a fraction of the cost.
SMALL = ["model.unet.img_resolution=16", "model.unet.model_channels=8", "dataset.resolution=16",
         "dataset.num_images=48"]
TIMING_KEYS = ("seconds", "images_per_second")


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def small_config(*overrides):
    return resolve_training_config("smoke", overrides=[*SMALL, "device=cpu", *overrides])


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    """An untrained small teacher saved in the core format (training it is not the point here)."""
    from hkdviz.model.config import resolve_config
    from hkdviz.teacher.edm import EDMPrecond
    torch.manual_seed(0)
    teacher = EDMPrecond(resolve_config(small_config()["model"]))
    directory = tmp_path_factory.mktemp("teacher") / "checkpoint"
    teacher.save(directory, meta={"dataset": "none (untrained test teacher)"})
    return directory


@pytest.fixture(scope="module")
def trajectory_dir(tmp_path_factory, teacher_checkpoint):
    directory = tmp_path_factory.mktemp("trajectories")
    generate_trajectories(str(teacher_checkpoint), directory, count=20, num_steps=4, chunk_size=8, batch_size=8,
                          storage_dtype="float16", device="cpu", progress=False)
    return directory


def losses(run_dir):
    return [{key: value for key, value in record.items() if key not in TIMING_KEYS} for record in read_stats(run_dir)]


def assert_same_weights(first: Path, second: Path):
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_teacher_resume_after_kill_continues_exactly(tmp_path):
    config = small_config("teacher.steps=6", "teacher.batch_size=4", "teacher.log_every=1", "teacher.resume_every=2")
    straight = TeacherLoop(config, tmp_path / "straight", progress=False, echo=False).train()
    # "Kill" after step 5: the last resume file is from step 4, and stats.jsonl already holds step 5.
    assert TeacherLoop(config, tmp_path / "killed", progress=False, echo=False).train(stop_at=5) is None
    assert [record["step"] for record in read_stats(tmp_path / "killed")] == [1, 2, 3, 4, 5]
    resumed = TeacherLoop(config, tmp_path / "killed", progress=False, echo=False).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert [record["step"] for record in read_stats(tmp_path / "killed")] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(straight, resumed)
    log = (tmp_path / "killed" / "log.txt").read_text()
    assert "resumed at step 4/6" in log and "images/s" in log


def test_teacher_run_extended_to_more_steps_equals_the_longer_run(tmp_path):
    """`--set teacher.steps=M` on a finished N-step run continues it; the result is the M-step run."""
    def config(steps):
        return small_config(f"teacher.steps={steps}", "teacher.batch_size=4", "teacher.log_every=1",
                            "teacher.resume_every=2", "teacher.lr_rampup_images=12")  # ramp-up spans both runs
    straight = TeacherLoop(config(6), tmp_path / "straight", progress=False, echo=False).train()
    TeacherLoop(config(4), tmp_path / "extended", progress=False, echo=False).train()
    extended = TeacherLoop(config(6), tmp_path / "extended", progress=False, echo=False).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "extended")
    assert_same_weights(straight, extended)
    assert "resumed at step 4/6" in (tmp_path / "extended" / "log.txt").read_text()
    with pytest.raises(TrainingError, match="already at step 6, past teacher.steps = 5"):
        TeacherLoop(config(5), tmp_path / "extended", progress=False, echo=False).train()


def test_teacher_lr_cooldown_schedule_and_resume_rules(tmp_path):
    """`lr_cooldown_steps`: ramp-up, constant, then a linear fall to lr / N at the last step; a cooled
    run resumes exactly but cannot be extended (its schedule ends at `steps`); a run directory written
    before the key existed still resumes with the key at its neutral value 0."""
    settings = ["teacher.steps=6", "teacher.batch_size=4", "teacher.log_every=1", "teacher.resume_every=2",
                "teacher.lr=1e-3", "teacher.lr_rampup_images=8"]
    config = small_config(*settings, "teacher.lr_cooldown_steps=3")
    loop = TeacherLoop(config, tmp_path / "schedule", progress=False, echo=False)
    rates = [loop.learning_rate(step * 4) for step in range(6)]
    assert rates == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    assert loop.extendable == ()
    assert TeacherLoop(small_config(*settings), tmp_path / "plain", progress=False, echo=False).extendable == ("steps",)
    from hkdviz.train.presets import PresetError
    with pytest.raises(PresetError, match=r"teacher.lr_cooldown_steps \(7\) must not exceed teacher.steps \(6\)"):
        small_config(*settings, "teacher.lr_cooldown_steps=7")  # refused when the config is resolved
    bad = small_config(*settings)
    bad["teacher"]["lr_cooldown_steps"] = 7  # a hand-edited config still meets the loop's own check
    with pytest.raises(TrainingError, match="lr_cooldown_steps must lie in"):
        TeacherLoop(bad, tmp_path / "bad", progress=False, echo=False).learning_rate(0)

    straight = TeacherLoop(config, tmp_path / "straight", progress=False, echo=False).train()
    TeacherLoop(config, tmp_path / "killed", progress=False, echo=False).train(stop_at=5)
    resumed = TeacherLoop(config, tmp_path / "killed", progress=False, echo=False).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert [record["lr"] for record in read_stats(tmp_path / "straight")] == pytest.approx(rates)
    assert_same_weights(straight, resumed)
    longer = small_config(*settings, "teacher.steps=8", "teacher.lr_cooldown_steps=3")
    with pytest.raises(TrainingError, match="different config"):
        TeacherLoop(longer, tmp_path / "killed", progress=False, echo=False).train()

    # An older run: its config.json has no lr_cooldown_steps key at all.
    plain = small_config(*settings)
    TeacherLoop(plain, tmp_path / "old", progress=False, echo=False).train(stop_at=3)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    del saved["teacher"]["lr_cooldown_steps"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    old = TeacherLoop(plain, tmp_path / "old", progress=False, echo=False).train()
    uninterrupted = TeacherLoop(plain, tmp_path / "plain_straight", progress=False, echo=False).train()
    assert losses(tmp_path / "old") == losses(tmp_path / "plain_straight")
    assert_same_weights(old, uninterrupted)
    assert "resumed at step 2/6" in (tmp_path / "old" / "log.txt").read_text()


def test_cpu_autocast_policy(monkeypatch):
    """`cpu_autocast`: false keeps float32 on the CPU, true runs bf16, "auto" follows the CPU's native
    bf16 support; CUDA always takes `autocast`; bad values and float16 on the CPU are named errors."""
    from hkdviz.train import common
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    resolve = common.resolve_autocast
    assert resolve("teacher", {"autocast": "bfloat16", "cpu_autocast": False}, cpu) is None
    assert resolve("teacher", {"autocast": "bfloat16"}, cpu) is None  # absent = false (older configs)
    assert resolve("teacher", {"autocast": "bfloat16", "cpu_autocast": True}, cpu) is torch.bfloat16
    assert resolve("teacher", {"autocast": None, "cpu_autocast": True}, cpu) is None
    assert resolve("hkd", {"autocast": "float16", "cpu_autocast": False}, cuda) is torch.float16
    for native in (True, False):
        monkeypatch.setattr(common, "cpu_has_native_bfloat16", lambda native=native: native)
        expected = torch.bfloat16 if native else None
        assert resolve("hkd", {"autocast": "bfloat16", "cpu_autocast": "auto"}, cpu) is expected
    with pytest.raises(TrainingError, match="teacher.cpu_autocast must be"):
        resolve("teacher", {"autocast": "bfloat16", "cpu_autocast": "yes"}, cpu)
    with pytest.raises(TrainingError, match="hkd.autocast must be"):
        resolve("hkd", {"autocast": "bf16"}, cpu)
    with pytest.raises(TrainingError, match="bfloat16 only"):
        resolve("hkd", {"autocast": "float16", "cpu_autocast": True}, cpu)


def test_teacher_in_cpu_bfloat16_trains_and_resumes_exactly(tmp_path):
    """The loop's mixed precision on the CPU: the log names it, the loss stays near the float32 run's,
    and a killed bf16 run still continues exactly."""
    settings = ["teacher.steps=4", "teacher.batch_size=4", "teacher.log_every=1", "teacher.resume_every=2"]
    config = small_config(*settings, "teacher.cpu_autocast=true")
    straight = TeacherLoop(config, tmp_path / "straight", progress=False, echo=False).train()
    TeacherLoop(config, tmp_path / "killed", progress=False, echo=False).train(stop_at=3)
    resumed = TeacherLoop(config, tmp_path / "killed", progress=False, echo=False).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert_same_weights(straight, resumed)
    assert "autocast torch.bfloat16" in (tmp_path / "straight" / "log.txt").read_text()
    TeacherLoop(small_config(*settings), tmp_path / "float32", progress=False, echo=False).train()
    mixed = [record["loss"] for record in read_stats(tmp_path / "straight")]
    full = [record["loss"] for record in read_stats(tmp_path / "float32")]
    assert mixed != full and np.allclose(mixed, full, rtol=0.05)


def test_trajectory_set_records_its_precision(tmp_path, teacher_checkpoint):
    """A bf16 set says so in its manifest, and one directory never mixes precisions on resume."""
    kwargs = dict(count=8, num_steps=3, chunk_size=4, batch_size=4, device="cpu", progress=False)
    generate_trajectories(str(teacher_checkpoint), tmp_path, autocast_dtype=torch.bfloat16, **kwargs)
    assert read_manifest(tmp_path)["network_autocast"] == "bfloat16"
    assert json.loads(open_trajectories(tmp_path).attrs["hkdviz_trajectories"])["network_autocast"] == "bfloat16"
    with pytest.raises(TrajectoryError, match="network_autocast: 'bfloat16' on disk vs None asked"):
        generate_trajectories(str(teacher_checkpoint), tmp_path, **kwargs)


def test_hkd_resume_after_kill_continues_exactly(tmp_path, teacher_checkpoint, trajectory_dir):
    config = small_config("hkd.steps=5", "hkd.batch_size=4", "hkd.log_every=1", "hkd.resume_every=2",
                          "hkd.batch_per_device=2",  # two accumulation rounds per step
                          "hkd.lr=1e-3", "hkd.lr_cooldown_steps=3")  # the kill falls inside the cool-down
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    straight = HKDLoop(config, tmp_path / "straight", **kwargs).train()
    HKDLoop(config, tmp_path / "killed", **kwargs).train(stop_at=3)
    resumed = HKDLoop(config, tmp_path / "killed", **kwargs).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert [record["lr"] for record in read_stats(tmp_path / "straight")] == pytest.approx([1e-3, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    assert len(read_stats(tmp_path / "killed")) == 5
    assert_same_weights(straight, resumed)
    log = (tmp_path / "straight" / "log.txt").read_text()  # an HKD batch entry is a sample of 5 decodes
    assert "samples/s" in log and "images/s" not in log
    # The result is an HKD checkpoint that hkdviz.load reads.
    import hkdviz
    model = hkdviz.load(resumed, device="cpu")
    assert model.meta["step"] == 5 and model.sample([0, 1]).shape == (2, 3, 16, 16)


@pytest.mark.slow
def test_hkd_resume_after_sigkill_in_a_subprocess(tmp_path, teacher_checkpoint, trajectory_dir):
    """A real kill: SIGKILL the CLI mid-run, rerun the same command, compare with an uninterrupted run."""
    overrides = [*SMALL, "hkd.steps=24", "hkd.batch_size=4", "hkd.log_every=2", "hkd.resume_every=4"]
    config = resolve_training_config("smoke", overrides=[*overrides, "device=cpu"])
    straight = HKDLoop(config, tmp_path / "straight", teacher=str(teacher_checkpoint),
                       trajectories=str(trajectory_dir), progress=False, echo=False).train()
    command = [sys.executable, "-m", "hkdviz.train", "hkd", "--preset", "smoke", "--device", "cpu", "--no-progress",
               "--teacher", str(teacher_checkpoint), "--trajectories", str(trajectory_dir),
               "--out", str(tmp_path / "killed")]
    for assignment in overrides:
        command += ["--set", assignment]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stats = tmp_path / "killed" / "stats.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if stats.exists() and len(stats.read_text().splitlines()) >= 3:  # past the first resume file (step 4)
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill: {process.stderr.read().decode()[-2000:]}"
    steps_before = [record["step"] for record in read_stats(tmp_path / "killed")]
    assert steps_before[-1] < 24
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert_same_weights(straight, tmp_path / "killed" / "checkpoint")


def test_resume_rejects_other_config_and_corrupt_file(tmp_path, teacher_checkpoint, trajectory_dir):
    config = small_config("teacher.steps=2", "teacher.batch_size=4", "teacher.resume_every=1")
    TeacherLoop(config, tmp_path / "run", progress=False, echo=False).train(stop_at=1)
    changed = small_config("teacher.steps=2", "teacher.batch_size=4", "teacher.resume_every=1", "teacher.lr=0.5")
    with pytest.raises(TrainingError, match="different config.*teacher"):
        TeacherLoop(changed, tmp_path / "run", progress=False, echo=False).train()
    # HKD's lambda_1 schedule depends on the total step count: its steps may not change on resume.
    hkd_config = small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.resume_every=1")
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    HKDLoop(hkd_config, tmp_path / "hkd", **kwargs).train(stop_at=1)
    with pytest.raises(TrainingError, match="different config.*hkd"):
        HKDLoop(small_config("hkd.steps=3", "hkd.batch_size=4", "hkd.resume_every=1"), tmp_path / "hkd", **kwargs).train()
    (tmp_path / "run" / "resume.pt").write_bytes(b"\x00garbage")
    with pytest.raises(TrainingError, match="cannot read the resume file"):
        TeacherLoop(config, tmp_path / "run", progress=False, echo=False).train()


def test_trajectories_layout_and_reading(trajectory_dir):
    dataset = open_trajectories(trajectory_dir)
    assert dict(dataset.sizes) == {"sample": 20, "time": 5, "channel": 3, "y": 16, "x": 16}
    assert dataset["seed"].values.tolist() == list(range(20))
    assert dataset["time"].values[0] == 80.0 and dataset["time"].values[-1] == pytest.approx(0.002)
    assert dataset["states"].dtype == np.float16
    training = TrajectoryDataset(trajectory_dir)
    states, sigmas = training[13]
    assert states.shape == (5, 3, 16, 16) and sigmas.shape == (5,)
    assert torch.equal(states, torch.from_numpy(dataset["states"].values[13]).float())
    # x_T is the HKD noise of the same seed (stored in float16).
    import hkdviz
    model = hkdviz.build(small_config()["model"])
    assert torch.allclose(states[0], model.noise([13])[0], rtol=1e-3, atol=0.05)
    streaming = TrajectoryDataset(trajectory_dir, in_memory=False)
    assert torch.equal(streaming[13][0], states)
    times = torch.tensor([[0, 2], [4, 1]])
    assert torch.equal(streaming.gather(torch.tensor([13, 2]), times), training.gather(torch.tensor([13, 2]), times))


def test_trajectories_resume_redoes_only_missing_or_partial_chunks(tmp_path, teacher_checkpoint, trajectory_dir):
    directory = tmp_path / "copy"
    directory.mkdir()
    for path in trajectory_dir.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    (directory / chunk_name(1)).unlink()
    (directory / f".{chunk_name(1)}.tmp-12345").write_bytes(b"half a chunk")  # a kill mid-write
    (directory / chunk_name(2)).write_bytes(b"corrupt")                       # damaged later
    untouched = (directory / chunk_name(0)).stat().st_mtime_ns
    stats = generate_trajectories(str(teacher_checkpoint), directory, count=20, num_steps=4, chunk_size=8,
                                  batch_size=8, storage_dtype="float16", device="cpu", progress=False)
    assert stats["images"] == 8 + 4  # chunks 1 and 2 redone, chunk 0 kept
    assert (directory / chunk_name(0)).stat().st_mtime_ns == untouched
    assert not list(directory.glob(".*tmp*"))
    redone = open_trajectories(directory)["states"].values
    assert np.array_equal(redone, open_trajectories(trajectory_dir)["states"].values)
    with pytest.raises(TrajectoryError, match="different trajectory set.*num_steps"):
        generate_trajectories(str(teacher_checkpoint), directory, count=20, num_steps=5, chunk_size=8,
                              device="cpu", progress=False)


def test_trajectory_reading_errors(tmp_path, trajectory_dir):
    with pytest.raises(TrajectoryError, match="does not exist"):
        TrajectoryDataset(tmp_path / "nothing")
    with pytest.raises(TrajectoryError, match="not a trajectory directory"):
        TrajectoryDataset(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in trajectory_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / chunk_name(2)).unlink()
    with pytest.raises(TrajectoryError, match="incomplete, 1 of 3 chunks missing"):
        TrajectoryDataset(broken)
    (broken / chunk_name(2)).write_bytes(b"\x89HDF garbage")
    with pytest.raises(TrajectoryError, match="unreadable trajectory chunk"):
        TrajectoryDataset(broken)
    (broken / "trajectories.json").write_text("{not json")
    with pytest.raises(TrajectoryError, match="corrupt manifest"):
        TrajectoryDataset(broken)


def test_streaming_data_paths_match_in_memory(tmp_path, teacher_checkpoint, trajectory_dir):
    from hkdviz.train.loop import ImageSource
    config = small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.log_every=1")
    streaming = small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.log_every=1", "hkd.data_memory_limit_mb=0")
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    HKDLoop(config, tmp_path / "memory", **kwargs).train()
    loop = HKDLoop(streaming, tmp_path / "streaming", **kwargs)
    loop.train()
    assert loop.data.states is None  # really read item by item from the netCDF chunks
    assert losses(tmp_path / "memory") == losses(tmp_path / "streaming")
    spec = small_config()["dataset"]
    memory = ImageSource(spec, xflip=True, device=torch.device("cpu"), progress=False)
    files = ImageSource(spec, xflip=True, device=torch.device("cpu"), memory_limit_bytes=0, progress=False)
    assert files.images is None and len(files) == 2 * 48
    indices = np.array([0, 47, 48, 95, 3])
    assert torch.equal(memory.batch(indices)[0], files.batch(indices)[0])
    assert torch.equal(memory.batch(np.array([48]))[0], memory.batch(np.array([0]))[0].flip(-1))  # xflip


def test_hkd_new_options_consistency_log_time_latent_term_and_generator_lr(tmp_path, teacher_checkpoint, trajectory_dir):
    """hkd.output / decoder_sigma / koopman.time reach the saved model; latent_weight adds a logged term;
    generator_lr_scale gives the Koopman generators their own lr; a kill still resumes exactly."""
    config = small_config("hkd.steps=4", "hkd.batch_size=4", "hkd.log_every=1", "hkd.resume_every=2",
                          "hkd.output=consistency", "hkd.decoder_sigma=sigma_max", "hkd.koopman.time=log_sigma",
                          "hkd.latent_weight=0.5", "hkd.generator_lr_scale=10")
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    loop = HKDLoop(config, tmp_path / "straight", **kwargs)
    straight = loop.train()
    scales = sorted(group["lr_scale"] for group in loop.optimizer.param_groups)
    assert scales == [1.0, 10.0]
    generator_group = next(group for group in loop.optimizer.param_groups if group["lr_scale"] == 10.0)
    assert generator_group["lr"] == pytest.approx(10 * read_stats(tmp_path / "straight")[-1]["lr"])
    assert all("loss_latent" in record and record["loss_latent"] >= 0 for record in read_stats(tmp_path / "straight"))
    HKDLoop(config, tmp_path / "killed", **kwargs).train(stop_at=2)
    resumed = HKDLoop(config, tmp_path / "killed", **kwargs).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert_same_weights(straight, resumed)
    import hkdviz
    model = hkdviz.load(resumed, device="cpu")
    assert (model.output, model.koopman_time_kind, model.decoder_sigma) == ("consistency", "log_sigma", 80.0)
    assert model.meta["training"]["loss"]["latent_weight"] == 0.5


def test_hkd_block_shared_operator_reaches_the_model_and_inits_from_the_teacher(tmp_path, teacher_checkpoint,
                                                                               trajectory_dir):
    """hkd.koopman.operator=block_shared builds (d, 1, 1) generators, init_from_teacher still copies the
    teacher's U-Net, and the saved checkpoint loads as block_shared."""
    from hkdviz.teacher import load_teacher
    config = small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.log_every=1", "hkd.koopman.operator=block_shared")
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    loop = HKDLoop(config, tmp_path / "run", **kwargs)
    built = loop.build_model()
    teacher = load_teacher(str(teacher_checkpoint), device="cpu")
    for name, value in teacher.denoiser.net.state_dict().items():
        assert torch.equal(built.unet.state_dict()[name], value), name
    assert {level.kind for level in built.koopman} == {"block_shared"}
    result = loop.train()
    import hkdviz
    model = hkdviz.load(result, device="cpu")
    assert model.config["koopman"]["operator"] == "block_shared"
    assert all(level.generator.shape == (level.channels, 1, 1) for level in model.koopman)
    assert any(bool(level.generator.ne(0).any()) for level in model.koopman)  # the generators trained


@pytest.mark.slow
def test_hkd_issue19_loss_options_reach_the_loss_and_resume_exactly(tmp_path, teacher_checkpoint, trajectory_dir):
    """hkd.time_sampling / recon_weight / generator_smoothness / state_weight and the teacher_features
    distance reach the loss (logged smoothness and state terms, the distance in the checkpoint's loss
    config); a kill still resumes exactly, with the log-sigma draws and the teacher's features and D."""
    from hkdviz.train.loss import TeacherFeatureDistance
    config = small_config("hkd.steps=4", "hkd.batch_size=4", "hkd.log_every=1", "hkd.resume_every=2",
                          "hkd.time_sampling=log_sigma", "hkd.recon_weight=2", "hkd.generator_smoothness=0.1",
                          "hkd.state_weight=0.5", 'hkd.distance={"name": "teacher_features", "sigma": 0.5}')
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    loop = HKDLoop(config, tmp_path / "straight", **kwargs)
    straight = loop.train()
    assert isinstance(loop.loss.distance.perceptual, TeacherFeatureDistance)
    assert (loop.loss.time_sampling, loop.loss.recon_weight, loop.loss.generator_smoothness) == ("log_sigma", 2.0, 0.1)
    records = read_stats(tmp_path / "straight")
    assert all(record["loss_smoothness"] >= 0 and record["perceptual"] > 0 and record["loss_state"] > 0
               for record in records)
    assert loop.loss.state_weight == 0.5 and not any(p.requires_grad for p in loop.loss.state_teacher.parameters())
    HKDLoop(config, tmp_path / "killed", **kwargs).train(stop_at=2)
    resumed = HKDLoop(config, tmp_path / "killed", **kwargs).train()
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
    assert_same_weights(straight, resumed)
    import hkdviz
    meta = hkdviz.load(resumed, device="cpu").meta["training"]["loss"]
    assert meta["distance"]["perceptual"] == {"name": "teacher_features", "sigma": 0.5}
    assert (meta["time_sampling"], meta["recon_weight"], meta["generator_smoothness"]) == ("log_sigma", 2.0, 0.1)
    assert meta["state_weight"] == 0.5


def test_a_run_written_before_the_issue19_keys_resumes(tmp_path, teacher_checkpoint, trajectory_dir):
    """A run directory whose config.json predates hkd.time_sampling / recon_weight / generator_smoothness /
    state_weight resumes while they hold their neutral values, and is refused when one changes."""
    config = small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.log_every=1", "hkd.resume_every=1")
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    HKDLoop(config, tmp_path / "old", **kwargs).train(stop_at=1)
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    for key in ("time_sampling", "recon_weight", "generator_smoothness", "state_weight"):
        del saved["hkd"][key]
    path.write_text(json.dumps(saved))
    changed = small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.log_every=1", "hkd.resume_every=1",
                           "hkd.recon_weight=2")
    with pytest.raises(TrainingError, match="hkd.recon_weight"):
        HKDLoop(changed, tmp_path / "old", **kwargs).train()
    assert HKDLoop(config, tmp_path / "old", **kwargs).train() is not None
    assert [record["step"] for record in read_stats(tmp_path / "old")] == [1, 2]


def test_screen_variants_of_issue19_resolve_and_the_teacher_features_one_is_used(tmp_path, teacher_checkpoint,
                                                                                  trajectory_dir):
    """benchmarks/screen_koopman.py's issue #19 variants are valid overrides, and the teacher-feature one
    really becomes the loss's perceptual term in a 2-step run (and changes what it measures)."""
    from benchmarks.screen_koopman import RECIPE, VARIANTS
    from hkdviz.train.loss import PseudoHuberDistance, TeacherFeatureDistance
    expected = {"consistency_log_shared": ("koopman", {"operator": "block_shared", "levels": "all", "time": "log_sigma"}),
                "consistency_log_lr10": ("generator_lr_scale", 10),
                "consistency_log_logtime": ("time_sampling", "log_sigma"),
                "consistency_log_teacherfeat": ("distance", {"name": "teacher_features", "sigma": 0.3}),
                "consistency_log_latent1": ("latent_weight", 1), "consistency_log_latent10": ("latent_weight", 10),
                "consistency_log_state1": ("state_weight", 1), "consistency_log_state1_latent1": ("state_weight", 1)}
    for name, (key, value) in expected.items():
        assert VARIANTS[name][:len(RECIPE)] == RECIPE
        assert resolve_training_config("default", overrides=VARIANTS[name])["hkd"][key] == value, name
    kwargs = dict(teacher=str(teacher_checkpoint), trajectories=str(trajectory_dir), progress=False, echo=False)
    perceptual = {}
    for name in ("consistency_log", "consistency_log_teacherfeat"):
        loop = HKDLoop(small_config("hkd.steps=2", "hkd.batch_size=4", "hkd.log_every=1", *VARIANTS[name]),
                       tmp_path / name, **kwargs)
        loop.train()
        perceptual[name] = [record["perceptual"] for record in read_stats(tmp_path / name)]
        kind = TeacherFeatureDistance if name.endswith("teacherfeat") else PseudoHuberDistance
        assert type(loop.loss.distance.perceptual) is kind
    assert perceptual["consistency_log"][0] != perceptual["consistency_log_teacherfeat"][0]


def test_screen_compare_runs_takes_training_runs_as_the_unit():
    """`screen_koopman.py --compare-runs`: Welch's t-test over runs, on hand-computable values. Groups
    {1, 2, 3} and {2, 3, 4}: difference 1, standard error sqrt(1/3 + 1/3), t = 1.2247, and with Welch's
    4 degrees of freedom p = 2 * (1 - F_t4(1.2247)) = 0.2879."""
    from benchmarks.screen_koopman import VARIANTS, compare_runs

    def run(variant, seed, rmse, kid):
        return {"variant": variant, "seed": seed, "rmse_per_seed": [rmse - 0.5, rmse + 0.5],
                "kid_x1e3_per_block": [kid, kid], "faithfulness": {"koopman_beats_constant": 0.25,
                "koopman_error_median_at": 0.5, "koopman_contribution": 0.01 * seed}}

    record = {"runs": {f"{variant}/seed{seed}": run(variant, seed, value, 100 * value)
                       for variant, values in (("a", (1, 2, 3)), ("b", (2, 3, 4)))
                       for seed, value in enumerate(values)}}
    result = compare_runs(record, "a", "b")
    assert result["runs"] == {"a": 3, "b": 3}
    assert result["rmse"]["a"] == [1, 2, 3] and result["rmse"]["difference"] == pytest.approx(1)
    assert result["rmse"]["standard_error"] == pytest.approx((2 / 3) ** 0.5)
    assert result["rmse"]["t"] == pytest.approx(1.22474, abs=1e-5)
    assert result["rmse"]["p"] == pytest.approx(0.28786, abs=1e-4)
    assert result["kid_x1e3"]["difference"] == pytest.approx(100)
    assert result["beats_constant"]["difference"] == 0 and np.isnan(result["beats_constant"]["p"])
    with pytest.raises(SystemExit, match="needs at least two"):
        compare_runs({"runs": {"a/seed0": record["runs"]["a/seed0"], **record["runs"]}}, "a", "missing")
    assert VARIANTS["consistency_log_latent10"][-1] == "hkd.latent_weight=10"


def test_a_config_missing_keys_is_named_before_any_work(tmp_path):
    """The loops read every key of the resolved config directly (BASE supplies them all): a hand-built
    config that lacks some is refused up front, naming each missing dotted key."""
    config = small_config()
    del config["teacher"]["xflip"], config["teacher"]["grad_clip"], config["seed"]
    with pytest.raises(TrainingError, match=r"lacks seed, teacher\.grad_clip, teacher\.xflip; build it with"):
        TeacherLoop(config, tmp_path / "run", progress=False, echo=False)
    assert not (tmp_path / "run").exists()
    hkd = small_config()
    del hkd["hkd"]["latent_weight"]
    with pytest.raises(TrainingError, match=r"lacks hkd\.latent_weight"):
        HKDLoop(hkd, tmp_path / "hkd", teacher="unused", trajectories="unused", progress=False, echo=False)
