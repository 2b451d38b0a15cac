"""Write EDM-shaped network pickles for the importer tests (a helper module, not a test file).

NVlabs/edm's training loop pickles {"ema": <preconditioned network>, "loss_fn": ..., "augment_pipe": ...,
"dataset_kwargs": ...}. Each network class is an EDM "persistent class": it pickles as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where meta holds the class's module
source ('module_src', the text of training/networks.py), the class name and the object's __dict__
('state': _parameters / _buffers / _modules, plain attributes, and the constructor's _init_args /
_init_kwargs). The stand-ins here reduce through a function published as
`torch_utils.persistence._reconstruct_persistent_obj` by a fake module that exists only while
dumping, so a loader that imported it would fail. `plain=True` pickles the same objects as plain
instances of classes in a fake `training.networks` module instead (by module path, no source).
"""
import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

from hkdviz.model.unet import Conv2d as DDPMConv2d, UNetBlock as DDPMUNetBlock
from hkdviz.teacher.networks import Preconditioning

NETWORKS_SOURCE = "# NVlabs/edm training/networks.py (never executed by the importer)\n"


def _reconstruct_persistent_obj(meta):  # never called: loading must not find this module
    raise AssertionError("the fake persistence module was used while loading")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


@contextlib.contextmanager
def fake_edm_modules():
    """Publish torch_utils.persistence and training.networks only while dumping, as EDM's code would be."""
    modules = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "training",
                                                         "training.networks", "training.loss")}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["torch_utils"].persistence = modules["torch_utils.persistence"]
    modules["training"].networks = modules["training.networks"]
    modules["training"].loss = modules["training.loss"]
    sys.modules.update(modules)
    try:
        yield modules["training"]
    finally:
        for name in modules:
            del sys.modules[name]


fake_torch_utils = fake_edm_modules  # the older name


class Persistent:
    """Pickles like an EDM persistent-class instance."""

    def __init__(self, class_name, state, module_src=NETWORKS_SOURCE):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return (_reconstruct_persistent_obj, (meta,))


def edm_record(module, class_name=None, module_src=None):
    """The EDM-pickle form of a module tree (EDM's non-persistent ModuleDicts stay real ModuleDicts)."""
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
    state.pop("meta", None)
    if type(module) is DDPMConv2d:  # EDM keeps its [1, 1] resampling filter as a buffer (None when unused)
        state["_buffers"]["resample_filter"] = torch.full((1, 1, 2, 2), 0.25) if module.up or module.down else None
        state["fused_resample"] = False
    if type(module) is DDPMUNetBlock:  # EDM's blocks hold numpy scalars (np.sqrt(0.5), np.sqrt(0.2))
        state["skip_scale"] = np.sqrt(0.5)
        state["_init_kwargs"] = dict(in_channels=module.in_channels, out_channels=module.out_channels,
                                     init_attn=dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2)))
    kwargs = {} if module_src is None else {"module_src": module_src}
    return Persistent(class_name or type(module).__name__, state, **kwargs)


def _dump(data, path, protocol, plain=False):
    with fake_edm_modules() as training:
        if plain:
            data = _as_plain(data, training, {})
        with open(path, "wb") as handle:
            pickle.dump(data, handle, protocol=protocol)
    return path


def _as_plain(value, training, classes):
    """Persistent stand-ins -> instances of same-named classes in the fake training.networks (or .loss) module."""
    if isinstance(value, Persistent):
        if value.class_name not in classes:
            where = "loss" if value.class_name.endswith("Loss") else "networks"
            classes[value.class_name] = type(value.class_name, (), {"__module__": f"training.{where}"})
            setattr(getattr(training, where), value.class_name, classes[value.class_name])
        instance = classes[value.class_name].__new__(classes[value.class_name])
        instance.__dict__.update(_as_plain(value.state, training, classes))
        return instance
    if isinstance(value, torch.nn.ModuleDict):
        for name, child in list(value._modules.items()):
            value._modules[name] = _as_plain(child, training, classes)
        return value
    if isinstance(value, dict):
        return type(value)((key, _as_plain(item, training, classes)) for key, item in value.items())
    return value


def edm_pickle(reference, path, protocol=4, module_src=None, edit=None):
    """Write hkdviz's EDMPrecond `reference` (DDPM++) as NVlabs/edm's training loop would."""
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
    return _dump(data, path, protocol)


def network_pickle(denoiser: Preconditioning, path, protocol=4, plain=False, edit=None, module_src=None):
    """Write an hkdviz `Preconditioning` as NVlabs/edm's training loop pickles that preconditioning class.

    EDM builds it as Precond(img_resolution=..., img_channels=..., label_dim=..., use_fp16=..., model_type=...,
    <its own settings>, <network arguments>) and the network as Network(img_resolution, in_channels,
    out_channels, label_dim, <network arguments>); persistence records both calls' keyword arguments.
    """
    model_kwargs = {key: (list(value) if isinstance(value, tuple) else value) for key, value in denoiser.model_kwargs.items()}
    network = edm_record(denoiser.model, denoiser.model_type, module_src)
    network.state.update(_init_args=(), _init_kwargs=dict(
        img_resolution=denoiser.img_resolution, in_channels=denoiser.img_channels,
        out_channels=denoiser.img_channels * denoiser.output_factor, label_dim=denoiser.label_dim, **model_kwargs))
    precond = edm_record(denoiser, denoiser.edm_name, module_src)
    precond.state["_modules"] = OrderedDict(model=network)
    settings = {key: value for key, value in denoiser.settings().items()}
    precond.state.update(_init_args=(), _init_kwargs=dict(
        img_resolution=denoiser.img_resolution, img_channels=denoiser.img_channels, label_dim=denoiser.label_dim,
        use_fp16=denoiser.use_fp16, model_type=denoiser.model_type, **settings, **model_kwargs))
    for attribute in ("model_kwargs", "model_type"):  # EDM keeps neither as attributes
        precond.state.pop(attribute, None)
    data = {"ema": precond, "loss_fn": Persistent("EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5}),
            "augment_pipe": None, "dataset_kwargs": {"path": "datasets/imagenet-64x64.zip"}}
    if edit is not None:
        edit(data)
    return _dump(data, path, protocol, plain=plain)
