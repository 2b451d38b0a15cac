"""Shared fixtures. Everything runs on CPU unless a test is marked `gpu`."""
import os
import socket

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")

from hkdviz.model import randomize_generators  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a test module (use: pytestmark = pytest.mark.usefixtures("single_thread")).

    Tiny 32x32 models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads make such tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server the test starts (Jupyter, gloo)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained `tiny` HKD model with random (decaying, oscillating) Koopman generators, eval mode."""
    import hkdviz
    torch.manual_seed(0)
    return randomize_generators(hkdviz.build("tiny")).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """The `tiny_model` saved as a checkpoint directory."""
    directory = tmp_path_factory.mktemp("checkpoints") / "tiny"
    tiny_model.save(directory, meta={"dataset": "none (untrained test model)"})
    return directory


@pytest.fixture(scope="session")
def checkpoint(tiny_checkpoint):
    """What the notebook and browser tests open: the shipped default when present, else the tiny test checkpoint."""
    from hkdviz.checkpoint import CheckpointError, resolve_checkpoint
    try:
        resolve_checkpoint("default")
        return "default"
    except CheckpointError:
        return str(tiny_checkpoint)
