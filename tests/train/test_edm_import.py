"""NVlabs/edm pickle import: same outputs as the network it came from, and nothing in the pickle runs.

The test writes EDM-shaped pickles itself: stand-in objects reduce through a function published as
`torch_utils.persistence._reconstruct_persistent_obj` (a fake module that exists only while
dumping), with EDM's meta dict (type, version, module_src, class_name, state = the module's
__dict__ with _parameters / _buffers / _modules, EDM's resample_filter buffers and _init_kwargs).
"""
import builtins
import contextlib
import io
import math
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from hkdviz.model.unet import Conv2d, UNetBlock
from hkdviz.train.edm import EDMPrecond
from hkdviz.train.edm_import import EDMImportError, import_edm_pickle, read_edm_pickle

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def _reconstruct_persistent_obj(meta):  # never called: loading must not find this module
    raise AssertionError("the fake persistence module was used while loading")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


@contextlib.contextmanager
def fake_torch_utils():
    """Publish torch_utils.persistence only while dumping, as EDM's code would be."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    sys.modules.update({"torch_utils": package, "torch_utils.persistence": module})
    try:
        yield
    finally:
        del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]


class Persistent:
    """Pickles like an EDM persistent-class instance."""

    def __init__(self, class_name, state, module_src="# EDM's training/networks.py source\n"):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return (_reconstruct_persistent_obj, (meta,))


def edm_record(module, class_name=None, module_src=None):
    """The EDM-pickle form of an hkdviz module tree (EDM's non-persistent ModuleDicts stay real ModuleDicts)."""
    convert = lambda child: None if child is None else edm_record(child, module_src=module_src)  # noqa: E731
    if isinstance(module, torch.nn.ModuleDict):
        container = torch.nn.ModuleDict()
        for name, child in module.items():
            container._modules[name] = convert(child)  # bypasses ModuleDict's type check, as intended
        return container
    state = dict(module.__dict__)
    state["_parameters"] = OrderedDict(module._parameters)
    state["_buffers"] = OrderedDict(module._buffers)
    state["_modules"] = OrderedDict((name, convert(child)) for name, child in module._modules.items())
    if isinstance(module, Conv2d):  # EDM keeps its [1, 1] resampling filter as a buffer (None when unused)
        state["_buffers"]["resample_filter"] = torch.full((1, 1, 2, 2), 0.25) if module.up or module.down else None
        state["fused_resample"] = False
    if isinstance(module, UNetBlock):  # EDM's blocks hold numpy scalars (np.sqrt(0.5), np.sqrt(0.2))
        state["skip_scale"] = np.sqrt(0.5)
        state["_init_kwargs"] = dict(in_channels=module.in_channels, out_channels=module.out_channels,
                                     init_attn=dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2)))
    kwargs = {} if module_src is None else {"module_src": module_src}
    return Persistent(class_name or type(module).__name__, state, **kwargs)


def edm_pickle(reference: EDMPrecond, path, protocol=4, module_src=None, edit=None):
    """Write `reference` as NVlabs/edm's training loop would (network-snapshot-*.pkl)."""
    unet_config = reference.config["unet"]
    song_kwargs = dict(img_resolution=unet_config["img_resolution"], in_channels=3, out_channels=3,
                       label_dim=unet_config["label_dim"], augment_dim=unet_config["augment_dim"],
                       model_channels=unet_config["model_channels"], channel_mult=list(unet_config["channel_mult"]),
                       num_blocks=unet_config["num_blocks"], attn_resolutions=list(unet_config["attn_resolutions"]),
                       dropout=unet_config["dropout"], embedding_type="positional", channel_mult_noise=1,
                       encoder_type="standard", decoder_type="standard", resample_filter=[1, 1])
    unet = edm_record(reference.net, "SongUNet", module_src)
    unet.state.update(_init_args=(), _init_kwargs=song_kwargs)
    precond_kwargs = {key: value for key, value in song_kwargs.items() if key not in ("in_channels", "out_channels")}
    precond_kwargs.update(img_channels=3, use_fp16=False, model_type="SongUNet")
    precond = Persistent("EDMPrecond", {
        "training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(), "_non_persistent_buffers_set": set(),
        "_modules": OrderedDict(model=unet), "img_resolution": 32, "img_channels": 3, "label_dim": 0,
        "use_fp16": False, "sigma_min": 0, "sigma_max": math.inf, "sigma_data": 0.5,
        "_init_args": (), "_init_kwargs": precond_kwargs})
    data = {"ema": precond, "loss_fn": Persistent("EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5}),
            "augment_pipe": None, "dataset_kwargs": {"path": "datasets/cifar10-32x32.zip", "xflip": False}}
    if edit is not None:
        edit(data)
    with fake_torch_utils():
        with open(path, "wb") as handle:
            pickle.dump(data, handle, protocol=protocol)
    return path


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


def _vp_precond(data):
    data["ema"].class_name = "VPPrecond"


@pytest.mark.parametrize("edit, message", [
    (_vp_precond, "EDM's VPPrecond; only EDMPrecond"),
    (_song("encoder_type", "residual"), "encoder_type.*residual.*NCSN"),
    (_song("model_channels", 16), r"do not match the rebuilt SongUNet: mis-shaped \['dec"),
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
