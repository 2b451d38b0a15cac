"""Shared fixtures. Everything runs on CPU unless a test is marked `gpu`."""
import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def randomize_generators(model, seed: int = 0, alpha_scale: float = 0.05, beta_scale: float = 0.5):
    """Give every block Koopman level known, non-trivial alpha (<= 0) and beta values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for level in model.koopman:
            if getattr(level, "kind", "") == "block":
                pairs = level.num_pairs
                shape = (pairs, level.height, level.width)
                level.generator[:pairs] = -alpha_scale * torch.rand(shape, generator=generator)
                level.generator[pairs:] = beta_scale * torch.randn(shape, generator=generator)
    return model


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
