"""Import an NVlabs/edm network pickle (e.g. edm-cifar10-32x32-uncond-vp.pkl) without running its code.

EDM pickles are plain `pickle.dump`s of {"ema": EDMPrecond, "loss_fn": ..., "augment_pipe": ...,
"dataset_kwargs": ...}. Every network class is an EDM "persistent class": it pickles as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where meta holds the class's module
source text ('module_src', which EDM's loader exec()s), the class name and the object's __dict__
('state': _parameters, _buffers, _modules, plain attributes, and the constructor's _init_kwargs).

Here a restricted unpickler maps that function to one that returns an inert `PersistentRecord`
(the source text is never executed), rebuilds tensors through weights-only torch.load, turns the few
plain torch containers (ModuleDict, ...) into inert records, and refuses every other global with an
error naming the pickle and the class. The records are then walked into a state dict and a config
for hkdviz's EDMPrecond.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import file_sha256, resolve_device
from ..model.config import PRESETS, ConfigError, resolve_config
from .edm import EDMPrecond


class EDMImportError(ValueError):
    """An EDM pickle that cannot (or must not) be imported; the message names the file and the problem."""


class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` returns here: the class name and the object's state, inert."""

    def __init__(self, class_name: str, state: dict, version=None):
        self.class_name = class_name
        self.state = state
        self.version = version

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


class ObjectRecord:
    """An instance of an allowed plain class (torch.nn.ModuleDict, ...), rebuilt without its code."""

    qualified_name = "?"

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}

    @property
    def class_name(self) -> str:
        return self.qualified_name.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"ObjectRecord({self.qualified_name})"


# Plain (non-persistent) torch containers EDM networks hold; rebuilt as inert records.
_CONTAINERS = {
    ("torch.nn.modules.container", name): type(name, (ObjectRecord,), {"qualified_name": f"torch.nn.modules.container.{name}"})
    for name in ("ModuleDict", "ModuleList", "Sequential")
}


def _reconstruct_persistent_obj(meta) -> PersistentRecord:
    # Replaces torch_utils.persistence._reconstruct_persistent_obj: reads meta, never meta["module_src"].
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("malformed EDM persistent object (expected a meta dict with type 'class' and a class_name)")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent object {meta['class_name']}: state is a {type(state).__name__}, not a dict")
    return PersistentRecord(meta["class_name"], dict(state), meta.get("version"))


def _reconstructor(cls, base, state):
    # copyreg._reconstructor (pickle protocols 0/1), restricted to the inert container records.
    if not (isinstance(cls, type) and issubclass(cls, ObjectRecord)) or base is not object:
        raise pickle.UnpicklingError(f"copyreg._reconstructor called with {cls!r}, {base!r}: not allowed")
    return cls.__new__(cls)


def _load_storage(data):
    # Replaces torch.storage._load_from_bytes, which calls torch.load(..., weights_only=False).
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"tensor storage must be bytes, got {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... for bad storage bytes
        raise pickle.UnpicklingError(f"tensor storage refused by weights-only torch.load: {error}") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor storage bytes hold a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, not a typed storage")
    shape_ok = all(isinstance(value, int) for value in (storage_offset, *size, *stride)) and len(size) == len(stride)
    if not shape_ok:
        raise pickle.UnpicklingError(f"tensor with malformed size {size!r} / stride {stride!r} / offset {storage_offset!r}")
    if backward_hooks:
        raise pickle.UnpicklingError("tensor with backward hooks (code) is not allowed")
    try:
        # set_ checks the view against the storage bounds.
        tensor = torch.empty((0,), dtype=storage.dtype).set_(storage._untyped_storage, storage_offset, tuple(size), tuple(stride))
    except RuntimeError as error:
        raise pickle.UnpicklingError(f"tensor does not fit its storage: {error}") from None
    tensor.requires_grad_(bool(requires_grad) and tensor.is_floating_point())
    return tensor


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
    if backward_hooks or state:
        raise pickle.UnpicklingError("parameter with hooks or extra state is not allowed")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _encode(text, encoding="utf-8"):
    # Protocols 0-2 store bytes as _codecs.encode(text, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return text.encode("latin1")


def _numpy_dtype(name, align=False, copy=True):
    # numpy.dtype as numpy pickles it; always a copy, since BUILD then calls its __setstate__.
    if not isinstance(name, str):
        raise pickle.UnpicklingError(f"numpy.dtype({name!r}) is not allowed")
    dtype = np.dtype(name, align=bool(align), copy=True)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"numpy dtype {name!r} is not a plain number type")
    return dtype


def _numpy_scalar(dtype, data=None):
    # EDM keeps a few numpy scalars (skip_scale = np.sqrt(0.5), init weights); returned as Python numbers.
    plain = isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None and not dtype.hasobject
    if not plain or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    return np.frombuffer(data, dtype=dtype)[0].item()


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _encode,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,   # numpy 1 pickles
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2 pickles
    ("dnnlib.util", "EasyDict"): dict,  # EDM's attribute dict; only its items are read
    **_CONTAINERS,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, source: str):
        super().__init__(handle)
        self.source = source

    def find_class(self, module: str, name: str):
        # Protocols 0-2 write Python 2 names (__builtin__, copy_reg); map them as fix_imports does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise EDMImportError(f"{self.source}: refusing to load {module}.{name}: an EDM network pickle holds "
                                 "only persistent EDM objects, tensors and plain data, and nothing in it is "
                                 "executed (this pickle may be malicious, or not an EDM network)") from None

    def persistent_load(self, pid):
        raise EDMImportError(f"{self.source}: holds persistent ids ({str(pid)[:60]}); that is a torch.save file, "
                             "not an EDM network pickle")


def read_edm_pickle(path) -> dict:
    """The unpickled top-level dict of an EDM pickle, with inert records in place of objects."""
    path = Path(path)
    if not path.is_file():
        raise EDMImportError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"PK":
        raise EDMImportError(f"{path}: a zip archive (torch.save checkpoint?), not an NVlabs/edm network pickle")
    try:
        data = _RestrictedUnpickler(io.BytesIO(raw), str(path)).load()
    except EDMImportError:
        raise
    except Exception as error:  # truncated or corrupt pickles raise many exception types
        raise EDMImportError(f"{path}: not a readable EDM network pickle ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise EDMImportError(f"{path}: expected a dict with key 'ema' at the top, got {type(data).__name__}")
    return data


# -- walking the records -----------------------------------------------------------------------------
# EDM's SongUNet constructor defaults (training/networks.py), for keys a pickle's _init_kwargs omits.
EDM_SONGUNET_DEFAULTS = {
    "label_dim": 0, "augment_dim": 0, "model_channels": 128, "channel_mult": [1, 2, 2, 2], "channel_mult_emb": 4,
    "num_blocks": 4, "attn_resolutions": [16], "dropout": 0.10, "label_dropout": 0.0, "embedding_type": "positional",
    "channel_mult_noise": 1, "encoder_type": "standard", "decoder_type": "standard", "resample_filter": [1, 1],
}
# EDMPrecond's own constructor arguments; the rest of its _init_kwargs go to the U-Net.
_PRECOND_KEYS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "sigma_data", "model_type")


def _collect_tensors(record, prefix: str, tensors: dict, filters: dict, source: str) -> None:
    state = record.state
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    for name, parameter in (state.get("_parameters") or {}).items():
        if parameter is not None:
            tensors[prefix + name] = parameter.detach()
    for name, buffer in (state.get("_buffers") or {}).items():
        if buffer is None or name in skipped:
            continue
        (filters if name == "resample_filter" else tensors)[prefix + name] = buffer.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, (PersistentRecord, ObjectRecord)):
            raise EDMImportError(f"{source}: module {prefix + name} is a {type(child).__name__}, not a network module")
        _collect_tensors(child, f"{prefix}{name}.", tensors, filters, source)


def _plain(value):
    # JSON-able copy of an init argument (tuples become lists, as in our configs).
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _unet_config(precond: PersistentRecord, unet: PersistentRecord, source: str) -> dict:
    kwargs = unet.state.get("_init_kwargs")
    if not isinstance(kwargs, dict):
        # Fall back on EDMPrecond's arguments (all but its own go to the U-Net).
        outer = precond.state.get("_init_kwargs")
        if not isinstance(outer, dict):
            raise EDMImportError(f"{source}: the network does not record its constructor arguments (_init_kwargs); "
                                 "cannot rebuild its configuration")
        kwargs = {key: value for key, value in outer.items() if key not in _PRECOND_KEYS}
        kwargs.update(img_resolution=outer.get("img_resolution"), in_channels=outer.get("img_channels"),
                      out_channels=outer.get("img_channels"), label_dim=outer.get("label_dim", 0))
    if unet.state.get("_init_args"):
        raise EDMImportError(f"{source}: SongUNet was built with positional arguments; expected keyword arguments only")
    config = {**EDM_SONGUNET_DEFAULTS, **{key: _plain(value) for key, value in kwargs.items()}}
    unsupported = {key: config.pop(key) for key in ("encoder_type", "decoder_type", "resample_filter")}
    if unsupported != {"encoder_type": "standard", "decoder_type": "standard", "resample_filter": [1, 1]}:
        raise EDMImportError(f"{source}: hkdviz's SongUNet is EDM's DDPM++ (encoder_type='standard', "
                             f"decoder_type='standard', resample_filter=[1, 1]); this network uses {unsupported} "
                             "(NCSN++ / 've' networks are not supported)")
    for key in ("img_resolution", "in_channels", "out_channels"):
        if not isinstance(config.get(key), int):
            raise EDMImportError(f"{source}: SongUNet argument {key} is missing or not an integer ({config.get(key)!r})")
    config["label_dropout"] = float(config["label_dropout"])
    config["dropout"] = float(config["dropout"])
    return config


def _check_filters(filters: dict, source: str) -> None:
    # EDM's resample_filter for [1, 1] is outer([1, 1], [1, 1]) / 4: what avg-pool / nearest compute.
    expected = torch.full((1, 1, 2, 2), 0.25)
    for name, value in filters.items():
        if tuple(value.shape) != (1, 1, 2, 2) or not torch.equal(value.float(), expected):
            raise EDMImportError(f"{source}: {name} is not EDM's [1, 1] resampling filter "
                                 f"(shape {tuple(value.shape)}); hkdviz resamples with 2x2 average / nearest only")


def _preset_name(unet: dict) -> str | None:
    for name in PRESETS:
        try:
            if resolve_config(name)["unet"] == unet:
                return name
        except ConfigError:
            continue
    return None


def import_edm_pickle(path, device="cpu", key: str = "ema") -> EDMPrecond:
    """Read an NVlabs/edm network pickle into hkdviz's EDMPrecond (eval mode, no grad), executing nothing from it."""
    path = Path(path)
    source = str(path)
    data = read_edm_pickle(path)
    if key not in data:
        raise EDMImportError(f"{source}: no {key!r} entry (keys: {sorted(map(str, data))})")
    precond = data[key]
    if not isinstance(precond, PersistentRecord):
        raise EDMImportError(f"{source}: {key!r} is a {type(precond).__name__}, not an EDM network")
    if precond.class_name != "EDMPrecond":
        raise EDMImportError(f"{source}: {key!r} is EDM's {precond.class_name}; only EDMPrecond (EDM preconditioning) "
                             "is supported, not the VP/VE/iDDPM baselines")
    unet = (precond.state.get("_modules") or {}).get("model")
    if not isinstance(unet, PersistentRecord) or unet.class_name != "SongUNet":
        found = getattr(unet, "class_name", type(unet).__name__)
        raise EDMImportError(f"{source}: the U-Net is {found}; only SongUNet (DDPM++) is supported")

    sigma_data = float(precond.state.get("sigma_data", 0.5))
    unet_config = _unet_config(precond, unet, source)
    try:
        config = resolve_config({"unet": unet_config, "diffusion": {"sigma_data": sigma_data}})
    except ConfigError as error:
        raise EDMImportError(f"{source}: its architecture does not fit hkdviz's config ({error})") from None
    preset = _preset_name(config["unet"])
    if preset is not None:
        config["preset"] = preset

    tensors, filters = {}, {}
    _collect_tensors(unet, "", tensors, filters, source)
    _check_filters(filters, source)
    model = EDMPrecond(config)
    expected = model.net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{name}: pickle {tuple(tensors[name].shape)} vs hkdviz {tuple(expected[name].shape)}"
             for name in sorted(set(expected) & set(tensors)) if tensors[name].shape != expected[name].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)) if items]
        raise EDMImportError(f"{source}: the weights do not match the rebuilt SongUNet: " + "; ".join(parts))
    model.net.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in tensors.items()}, strict=True)
    model.meta = {
        "source": f"NVlabs/edm pickle {path.name}",
        "source_sha256": file_sha256(path),
        "edm_use_fp16": bool(precond.state.get("use_fp16", False)),
    }
    return model.eval().requires_grad_(False).to(resolve_device(device))


__all__ = ["import_edm_pickle", "read_edm_pickle", "EDMImportError", "PersistentRecord", "ObjectRecord",
           "EDM_SONGUNET_DEFAULTS"]
