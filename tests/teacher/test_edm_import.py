"""NVlabs/edm pickle import of DDPM++ (EDMPrecond) networks: same outputs as the network it came
from, and nothing in the pickle runs. Pickles are written as EDM's training loop writes them
(tests/teacher/edm_pickles.py); the other network kinds are tested in test_edm_networks.py.
"""
import builtins
import io
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from edm_pickles import edm_pickle
from hkdviz.teacher.edm import EDMPrecond
from hkdviz.teacher.edm_import import EDMImportError, import_edm_pickle, read_edm_pickle
from hkdviz.teacher.networks import VPPreconditioning

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(5)
    return EDMPrecond({"preset": "tiny", "unet": {"augment_dim": 9}}).eval().requires_grad_(False)


@pytest.mark.parametrize("protocol", [1, 4])
def test_import_gives_the_same_denoiser(tmp_path, reference, protocol):
    path = edm_pickle(reference, tmp_path / "network-snapshot.pkl", protocol=protocol)
    imported = import_edm_pickle(path)
    assert "torch_utils" not in sys.modules
    assert imported.config["unet"] == reference.config["unet"]
    assert imported.meta["source_sha256"] and not imported.training
    x = 20 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for sigma in (80.0, torch.tensor([0.3, 0.002])):
        assert torch.equal(imported(x, sigma), reference(x, sigma))
    assert read_edm_pickle(path)["loss_fn"].class_name == "EDMLoss"


def test_import_recognises_a_preset(tmp_path):
    torch.manual_seed(6)
    tiny = EDMPrecond("tiny").eval()
    assert import_edm_pickle(edm_pickle(tiny, tmp_path / "tiny.pkl")).config["preset"] == "tiny"


def _marker_command(marker):
    return f"open({str(marker)!r}, 'w').write('pwned')"


class RunsOnLoad:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return (self.function, (self.argument,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec", "storage bytes", "object dtype"])
def test_malicious_pickles_are_refused_and_do_not_run(tmp_path, reference, attack):
    marker = tmp_path / "pwned"
    if attack == "os.system":
        payload = RunsOnLoad(os.system, f"touch {marker}")
    elif attack == "builtins.eval":
        payload = RunsOnLoad(builtins.eval, _marker_command(marker))
    elif attack == "builtins.exec":
        payload = RunsOnLoad(builtins.exec, _marker_command(marker))
    elif attack == "object dtype":  # numpy scalars are allowed, but only of number dtypes
        payload = RunsOnLoad(np.dtype, "O")
    else:  # a "storage" whose bytes are a full pickle: only weights-only torch.load may read them
        from torch.storage import _load_from_bytes
        payload = RunsOnLoad(_load_from_bytes, pickle.dumps(RunsOnLoad(builtins.exec, _marker_command(marker))))

    def plant(data):
        data["ema"].state["_modules"]["model"].state["sneaky"] = payload

    path = edm_pickle(reference, tmp_path / "evil.pkl", edit=plant)
    expected = {"os.system": r"refusing to load (posix|nt|os)\.system", "builtins.eval": r"refusing to load builtins\.eval",
                "builtins.exec": r"refusing to load builtins\.exec", "storage bytes": "weights-only",
                "object dtype": "numpy dtype 'O' is not a plain number type"}[attack]
    with pytest.raises(EDMImportError, match=expected) as error:
        import_edm_pickle(path)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path, reference):
    marker = tmp_path / "pwned"
    path = edm_pickle(reference, tmp_path / "source.pkl", module_src=_marker_command(marker))
    imported = import_edm_pickle(path)
    assert not marker.exists()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(imported(x, 1.0), reference(x, 1.0))


def _song(key, value):
    def edit(data):
        data["ema"].state["_modules"]["model"].state["_init_kwargs"][key] = value
    return edit


def _drop_parameter(data):
    data["ema"].state["_modules"]["model"].state["_modules"]["map_layer0"].state["_parameters"].pop("bias")


def _wrong_filter(data):
    block = data["ema"].state["_modules"]["model"].state["_modules"]["enc"]._modules["16x16_down"]
    block.state["_modules"]["conv0"].state["_buffers"]["resample_filter"] = torch.full((1, 1, 4, 4), 1 / 16)


def _loss_as_network(data):
    data["ema"] = data["loss_fn"]


def _adm_inside(data):
    data["ema"].state["_modules"]["model"].class_name = "UNetModel"  # guided-diffusion's, not EDM's


@pytest.mark.parametrize("edit, message", [
    (_loss_as_network, "'ema' is EDM's EDMLoss; supported are EDM's preconditioned denoisers EDMPrecond, VEPrecond"),
    (_adm_inside, "the network inside EDMPrecond is UNetModel; supported are EDM's DhariwalUNet, SongUNet"),
    # An NCSN++ encoder without its aux_residual weights: the description and the weights disagree.
    (_song("encoder_type", "residual"), r"do not match the described network: missing \['model\.enc\.16x16_aux_residual"),
    (_song("model_channels", 16), r"do not match the rebuilt SongUNet: mis-shaped \['dec"),
    (_song("num_blocks", 10 ** 8), r"asks for \d+ U-Net blocks \(channel_mult, num_blocks\)"),
    (_drop_parameter, r"missing \['map_layer0.bias'\]"),
    (_wrong_filter, r"enc.16x16_down.conv0.resample_filter is not EDM's \[1, 1\] resampling filter"),
])
def test_unsupported_or_inconsistent_networks_are_named(tmp_path, reference, edit, message):
    path = edm_pickle(reference, tmp_path / "odd.pkl", edit=edit)
    with pytest.raises(EDMImportError, match=message):
        import_edm_pickle(path)


def test_files_that_are_not_edm_pickles(tmp_path, reference):
    with pytest.raises(EDMImportError, match="no such file"):
        import_edm_pickle(tmp_path / "missing.pkl")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    with pytest.raises(EDMImportError, match="zip archive"):
        import_edm_pickle(tmp_path / "checkpoint.pt")
    good = edm_pickle(reference, tmp_path / "good.pkl").read_bytes()
    (tmp_path / "truncated.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(EDMImportError, match="not a readable EDM network pickle"):
        import_edm_pickle(tmp_path / "truncated.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(EDMImportError, match="expected a dict with key 'ema'"):
        import_edm_pickle(tmp_path / "list.pkl")
    with pytest.raises(EDMImportError, match=r"no 'ema' entry \(keys: \['net'\]\)"):
        buffer = io.BytesIO()
        pickle.dump({"net": 1}, buffer)
        (tmp_path / "other.pkl").write_bytes(buffer.getvalue())
        import_edm_pickle(tmp_path / "other.pkl")


def test_a_ddpmpp_under_vp_preconditioning_imports_as_a_vp_teacher(tmp_path, reference):
    def vp(data):
        data["ema"].class_name = "VPPrecond"
        data["ema"].state.update(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5)
    imported = import_edm_pickle(edm_pickle(reference, tmp_path / "vp.pkl", edit=vp))
    assert isinstance(imported, VPPreconditioning) and imported.describe() == "VPPrecond + SongUNet (DDPM++)"
    assert imported.meta["hkd_distillable"] is False
    x = torch.randn(2, 3, 32, 32)
    # The same raw network F, under VP's coefficients: D = x - sigma F(x / sqrt(sigma^2 + 1); 999 t(sigma)).
    sigma = 0.7
    noise = torch.full((2,), 999 * float(imported.sigma_inv(torch.tensor(sigma, dtype=torch.float64))))
    expected = x - sigma * reference.net(x / (sigma ** 2 + 1) ** 0.5, noise)
    assert torch.allclose(imported(x, sigma), expected, atol=1e-5)
