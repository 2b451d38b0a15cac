"""Two gloo ranks on CPU, launched the way torchrun does (RANK / WORLD_SIZE / MASTER_* in the
environment): the DDP gradient on a global batch equals the single-process gradient on it, and
trajectory generation and HKD / teacher training run sharded with rank 0 writing the outputs."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hkdviz.train.common import TrainingError, read_stats
from hkdviz.train.presets import resolve_training_config

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.unet.img_resolution=16", "model.unet.model_channels=8", "dataset.resolution=16",
         "dataset.num_images=48", "device=cpu"]

WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from hkdviz.train.distributed import barrier, init_distributed, shutdown, wrap_model
    from hkdviz.train.loss import HKDLoss
    from hkdviz.train.loop import train_hkd, train_teacher
    from hkdviz.train.presets import resolve_training_config
    from hkdviz.train.trajectories import generate_trajectories
    import hkdviz

    work = Path(sys.argv[1])
    inputs = torch.load(work / "inputs.pt")
    context = init_distributed("cpu")
    assert context.world_size == 2 and torch.distributed.get_backend() == "gloo"

    # 1. Gradient of the HKD loss on this rank's half of the global batch, averaged by DDP.
    torch.manual_seed(0)
    model = hkdviz.build(inputs["model_config"])
    model.load_state_dict(inputs["state"])
    ddp = wrap_model(model, context)
    half = inputs["inputs"].shape[0] // 2
    part = slice(context.rank * half, (context.rank + 1) * half)
    loss, _ = HKDLoss().compute(ddp, inputs["inputs"][part], inputs["sigmas"][part], inputs["target"][part], 0.3)
    loss.backward()
    torch.save({name: p.grad for name, p in model.named_parameters() if p.grad is not None},
               work / f"grad-rank{context.rank}.pt")

    # 2. The pipeline under two ranks: trajectories (chunks split over ranks), HKD and teacher training.
    config = resolve_training_config("smoke", overrides=json.loads(sys.argv[2]))
    generate_trajectories(inputs["teacher"], work / "trajectories", count=20, num_steps=4, chunk_size=8, batch_size=8,
                          storage_dtype="float32", context=context, progress=False)
    train_hkd(config, work / "hkd", teacher=inputs["teacher"], trajectories=work / "trajectories",
              progress=False, context=context)
    train_teacher(config, work / "teacher", progress=False, context=context)
    shutdown(context)
''')


@pytest.mark.slow
def test_two_gloo_ranks_match_single_process(tmp_path, single_thread, free_port):
    import hkdviz
    from hkdviz.model.config import resolve_config
    from hkdviz.teacher.edm import EDMPrecond
    from hkdviz.train.loop import train_hkd
    from hkdviz.train.loss import HKDLoss
    from hkdviz.train.trajectories import generate_trajectories, open_trajectories

    overrides = SMALL + ["hkd.steps=2", "hkd.batch_size=8", "hkd.log_every=1", "hkd.resume_every=1",
                         "teacher.steps=2", "teacher.batch_size=4", "teacher.log_every=1"]
    config = resolve_training_config("smoke", overrides=overrides)
    model_config = resolve_config(config["model"])
    torch.manual_seed(0)
    teacher = EDMPrecond(model_config)
    teacher.save(tmp_path / "teacher-checkpoint")
    torch.manual_seed(1)
    model = hkdviz.build(model_config)
    with torch.no_grad():  # non-zero generators so the Koopman gradients are not trivial
        for level in model.koopman:
            level.generator.normal_(0, 0.05)
    generator = torch.Generator().manual_seed(2)
    inputs = {"model_config": model_config, "state": model.state_dict(),
              "inputs": torch.randn(6, 5, 3, 16, 16, generator=generator) * 3,
              "sigmas": torch.rand(6, 5, generator=generator) * 10 + 0.01,
              "target": torch.rand(6, 3, 16, 16, generator=generator) * 2 - 1,
              "teacher": str(tmp_path / "teacher-checkpoint")}
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "worker.py").write_text(WORKER)

    port = free_port
    processes = []
    for rank in range(2):
        environment = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
                       "PYTHONPATH": str(REPO)}
        processes.append(subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path),
                                           json.dumps(overrides)], env=environment, cwd=REPO,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]

    # 1. DDP gradient == single-process gradient on the whole global batch.
    loss, _ = HKDLoss().compute(model, inputs["inputs"], inputs["sigmas"], inputs["target"], 0.3)
    loss.backward()
    single = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}
    for rank in range(2):
        distributed = torch.load(tmp_path / f"grad-rank{rank}.pt")
        assert distributed.keys() == single.keys()
        for name in single:
            assert torch.allclose(distributed[name], single[name], rtol=1e-4, atol=1e-6), name

    # 2a. Two ranks wrote disjoint chunks that equal a single-process generation, seed for seed.
    generate_trajectories(inputs["teacher"], tmp_path / "single-trajectories", count=20, num_steps=4, chunk_size=8,
                          batch_size=8, storage_dtype="float32", device="cpu", progress=False)
    two = open_trajectories(tmp_path / "trajectories")
    one = open_trajectories(tmp_path / "single-trajectories")
    assert two["seed"].values.tolist() == list(range(20))
    assert np.allclose(two["states"].values, one["states"].values, rtol=1e-5, atol=1e-4)

    # 2b. HKD under two ranks: rank 0 wrote stats and the checkpoint; the first step (before any
    # update) has the single-process loss, because batches and time draws do not depend on the ranks.
    assert (tmp_path / "hkd" / "checkpoint" / "model.safetensors").exists()
    resume = torch.load(tmp_path / "hkd" / "resume.pt", weights_only=True)
    assert resume["step"] == 2 and len(resume["ranks"]) == 2
    assert not torch.equal(resume["ranks"][0]["generator"], resume["ranks"][1]["generator"])
    with pytest.raises(TrainingError, match="written by 2 process"):
        train_hkd(config, tmp_path / "hkd", teacher=inputs["teacher"], trajectories=tmp_path / "trajectories",
                  device="cpu", progress=False)
    assert [record["step"] for record in read_stats(tmp_path / "hkd")] == [1, 2]
    train_hkd(config, tmp_path / "hkd-single", teacher=inputs["teacher"], trajectories=tmp_path / "trajectories",
              device="cpu", progress=False)
    first_two, first_one = read_stats(tmp_path / "hkd")[0], read_stats(tmp_path / "hkd-single")[0]
    assert first_two["loss"] == pytest.approx(first_one["loss"], rel=1e-5)
    assert first_two["loss_recon"] == pytest.approx(first_one["loss_recon"], rel=1e-5)
    hkdviz.load(tmp_path / "hkd" / "checkpoint", device="cpu")

    # 2c. Teacher training under two ranks.
    assert [record["step"] for record in read_stats(tmp_path / "teacher")] == [1, 2]
    assert (tmp_path / "teacher" / "checkpoint" / "model.safetensors").exists()
