"""Import an NVlabs/edm network pickle (e.g. edm-cifar10-32x32-uncond-vp.pkl) without running its code.

EDM pickles are plain `pickle.dump`s of {"ema": EDMPrecond, "loss_fn": ..., "augment_pipe": ...,
"dataset_kwargs": ...}. Every network class is an EDM "persistent class": it pickles as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where meta holds the class's module
source text ('module_src', which EDM's loader exec()s), the class name and the object's __dict__
('state': _parameters, _buffers, _modules, plain attributes, and the constructor's _init_kwargs).

Here a restricted unpickler maps that function to one that returns an inert `PersistentRecord`
(the source text is never executed), rebuilds tensors through weights-only torch.load, turns the few
plain torch containers (ModuleDict, ...) into inert records, and refuses every other global with an
error naming the pickle and the class. A network pickled without EDM's persistence wrapper, as an
instance of a class in `training.networks` (or `training.loss`, `training.augment`), becomes the
same kind of inert record. The records are then walked (iteratively, each module once) into a state
dict and a description, checked against each other before anything is allocated, and built:

    EDMPrecond + SongUNet DDPM++            -> hkdviz's EDMPrecond (HKD can be initialised from it)
    VP/VE/iDDPM/EDMPrecond + SongUNet/DhariwalUNet, any other combination
                                            -> a `networks.Preconditioning` (a teacher for sampling,
                                               trajectories and evaluation; HKD cannot split it)

That covers all nine networks NVlabs/edm released and its converted baselines; see docs/teachers.md.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, file_sha256, resolve_device
from ..model.config import PRESETS, ConfigError, resolve_config
from .edm import EDMPrecond
from .networks.precond import NETWORKS, PRECONDITIONINGS, accepted_arguments
from .networks.spec import NetworkSpecError, build_checked, check_block_budget, validate_spec


class EDMImportError(CheckpointError):
    """An EDM pickle that cannot (or must not) be imported; the message names the file and the problem.

    A CheckpointError, so the command lines report it in one line."""


class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` returns here: the class name and the object's state, inert."""

    module = None  # EDM's persistence records the source text, not the module path

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
        self.__dict__["_state"] = state if isinstance(state, dict) else {}

    @property
    def state(self) -> dict:
        return self.__dict__.setdefault("_state", {})  # (an instance the pickle never gave a state)

    @property
    def class_name(self) -> str:
        return self.qualified_name.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"ObjectRecord({self.qualified_name})"


    @property
    def module(self) -> str:
        return self.qualified_name.rsplit(".", 1)[0]


def _record_classes(module: str, names) -> dict:
    return {(module, name): type(name, (ObjectRecord,), {"qualified_name": f"{module}.{name}"}) for name in names}


# Plain (non-persistent) torch containers EDM networks hold; rebuilt as inert records.
_CONTAINERS = _record_classes("torch.nn.modules.container", ("ModuleDict", "ModuleList", "Sequential"))
# EDM's own classes, for a network pickled as a plain instance (by module path, without persistence's
# embedded source): instances become inert records too; nothing from these modules is imported.
_EDM_CLASSES = {
    **_record_classes("training.networks", (
        "VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond", "SongUNet", "DhariwalUNet", "UNetBlock", "Conv2d",
        "Linear", "GroupNorm", "PositionalEmbedding", "FourierEmbedding")),
    **_record_classes("training.loss", ("VPLoss", "VELoss", "EDMLoss")),
    **_record_classes("training.augment", ("AugmentPipe",)),
}


def _reconstruct_persistent_obj(meta) -> PersistentRecord:
    # Replaces torch_utils.persistence._reconstruct_persistent_obj: reads meta, never meta["module_src"].
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("malformed EDM persistent object (expected a meta dict with type 'class' and a class_name)")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent object {meta['class_name']}: state is a {type(state).__name__}, not a dict")
    # The state dict itself, not a copy: in a self-referencing pickle it is still being filled here,
    # and its identity is what tells the walk below that it met a module again.
    return PersistentRecord(meta["class_name"], state, meta.get("version"))


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
    **_EDM_CLASSES,
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
# The network arguments a preconditioning fills in itself (EDM: in/out channels from img_channels).
_NETWORK_INTERFACE = ("img_resolution", "in_channels", "out_channels", "label_dim")
_RECORDS = (PersistentRecord, ObjectRecord)
_LARGEST_NESTING = 32  # init arguments are flat numbers and lists; deeper nesting is refused


def _collect_tensors(record, tensors: dict, filters: dict, source: str, prefix: str = "") -> None:
    """Every parameter and persistent buffer under `record`, by state-dict name.

    Iterative, and each record is visited once: a pickle can make a module contain itself (or share
    a child between two parents), which EDM networks never do.
    """
    pending = [(prefix, record)]
    visited = set()  # ids of the state dicts (a pickle can rebuild one module as two records sharing one)
    while pending:
        prefix, record = pending.pop()
        state = record.state if isinstance(getattr(record, "state", None), dict) else {}
        if id(record) in visited or id(state) in visited:
            raise EDMImportError(f"{source}: module {prefix.rstrip('.') or '(top)'} appears twice in the network "
                                 "(a module containing itself, or shared); EDM networks are trees")
        visited.update((id(record), id(state)))
        skipped = set(state.get("_non_persistent_buffers_set") or ())
        for kind in ("_parameters", "_buffers"):
            entries = state.get(kind) or {}
            if not isinstance(entries, dict):
                raise EDMImportError(f"{source}: {prefix or '(top) '}{kind} is a {type(entries).__name__}, not a dict")
            for name, tensor in entries.items():
                if tensor is None or (kind == "_buffers" and name in skipped):
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise EDMImportError(f"{source}: {prefix}{name} is a {type(tensor).__name__}, not a tensor")
                (filters if name == "resample_filter" else tensors)[prefix + name] = tensor.detach()
        children = state.get("_modules") or {}
        if not isinstance(children, dict):
            raise EDMImportError(f"{source}: {prefix or '(top) '}_modules is a {type(children).__name__}, not a dict")
        for name, child in reversed(list(children.items())):
            if child is None:
                continue
            if not isinstance(child, _RECORDS):
                raise EDMImportError(f"{source}: module {prefix + str(name)} is a {type(child).__name__}, "
                                     "not a network module")
            pending.append((f"{prefix}{name}.", child))


def _plain(value, source: str, key: str, depth: int = 0):
    """JSON-able copy of an init argument (tuples become lists, as in our configs); refuses deep nesting,
    which also ends a list that contains itself."""
    if depth > _LARGEST_NESTING:
        raise EDMImportError(f"{source}: init argument {key} is nested more than {_LARGEST_NESTING} deep "
                             "(or contains itself)")
    if isinstance(value, (list, tuple)):
        return [_plain(item, source, key, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(name): _plain(item, source, key, depth + 1) for name, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise EDMImportError(f"{source}: init argument {key} holds a {type(value).__name__}, not plain data")


def _init_kwargs(record, source: str) -> dict | None:
    """The constructor's keyword arguments as EDM's persistence records them (None if not recorded)."""
    kwargs = record.state.get("_init_kwargs")
    if kwargs is None:
        return None
    if not isinstance(kwargs, dict):
        raise EDMImportError(f"{source}: {record.class_name}'s _init_kwargs is a {type(kwargs).__name__}, not a dict")
    if record.state.get("_init_args"):
        raise EDMImportError(f"{source}: {record.class_name} was built with positional arguments; "
                             "expected keyword arguments only, as EDM's training loop builds it")
    return {str(key): _plain(value, source, f"{record.class_name}.{key}") for key, value in kwargs.items()}


def _precond_arguments(precond, network_class: str, source: str) -> tuple[dict, dict]:
    """(preconditioning kwargs, network kwargs) in the form `networks.build_preconditioning` takes.

    The preconditioning's settings come from its attributes (what the object held), else its
    _init_kwargs; the network's from its own _init_kwargs, else the preconditioning's (EDM passes
    every argument it does not take itself on to the network).
    """
    cls = PRECONDITIONINGS[precond.class_name]
    own = accepted_arguments(cls) - {"model_type"}
    outer = _init_kwargs(precond, source) or {}
    precond_kwargs = {}
    for key in sorted(own):  # (VP's and iDDPM's sigma_min / sigma_max are computed, so not in `own`)
        if key in precond.state:
            precond_kwargs[key] = _plain(precond.state[key], source, f"{precond.class_name}.{key}")
        elif key in outer:
            precond_kwargs[key] = outer[key]
    network = (precond.state.get("_modules") or {}).get("model")
    inner = _init_kwargs(network, source)
    if inner is None:
        if not outer:
            raise EDMImportError(f"{source}: the network records no constructor arguments (_init_kwargs); "
                                 "cannot rebuild its configuration")
        inner = {key: value for key, value in outer.items() if key not in own and key != "model_type"}
    else:
        factor = 2 if precond.class_name == "iDDPMPrecond" else 1
        channels = precond_kwargs.get("img_channels", inner.get("in_channels"))
        expected = {"img_resolution": precond_kwargs.get("img_resolution"), "in_channels": channels,
                    "out_channels": None if channels is None else channels * factor,
                    "label_dim": precond_kwargs.get("label_dim", 0)}
        for key, value in expected.items():
            if key in inner and value is not None and inner[key] != value:
                raise EDMImportError(f"{source}: {network_class} argument {key} = {inner[key]!r} does not fit "
                                     f"{precond.class_name} (expected {value!r})")
        precond_kwargs.setdefault("img_resolution", inner.get("img_resolution"))
        precond_kwargs.setdefault("img_channels", inner.get("in_channels"))
        precond_kwargs.setdefault("label_dim", inner.get("label_dim", 0))
    model_type = outer.get("model_type", network_class)
    if model_type != network_class:
        raise EDMImportError(f"{source}: {precond.class_name} says model_type={model_type!r}, but its network is a "
                             f"{network_class}")
    model_kwargs = {key: value for key, value in inner.items() if key not in _NETWORK_INTERFACE}
    for key in ("img_resolution", "img_channels"):
        if not isinstance(precond_kwargs.get(key), int) or isinstance(precond_kwargs.get(key), bool):
            raise EDMImportError(f"{source}: {precond.class_name} argument {key} is missing or not an integer "
                                 f"({precond_kwargs.get(key)!r})")
    return precond_kwargs, model_kwargs


def _is_ddpmpp(model_kwargs: dict) -> bool:
    """The SongUNet hkdviz's own (HKD-splittable) network implements: EDM's DDPM++ layout."""
    song = {**EDM_SONGUNET_DEFAULTS, **model_kwargs}
    return (song["encoder_type"], song["decoder_type"], song["resample_filter"]) == ("standard", "standard", [1, 1])


def _hkd_unet_config(precond_kwargs: dict, model_kwargs: dict) -> dict:
    config = {**EDM_SONGUNET_DEFAULTS, **model_kwargs}
    for key in ("encoder_type", "decoder_type", "resample_filter"):
        config.pop(key)
    config.update(img_resolution=precond_kwargs["img_resolution"], in_channels=precond_kwargs["img_channels"],
                  out_channels=precond_kwargs["img_channels"], label_dim=precond_kwargs.get("label_dim", 0))
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


def _import_ddpmpp(precond_kwargs: dict, model_kwargs: dict, tensors: dict, filters: dict, source: str) -> EDMPrecond:
    """EDMPrecond + DDPM++ as hkdviz's own EDMPrecond, checked on the meta device before it is built."""
    spec = {"precond": "EDMPrecond", "precond_kwargs": precond_kwargs, "model_type": "SongUNet", "model_kwargs": model_kwargs}
    try:
        check_block_budget(validate_spec(spec, source), len(tensors), source)
    except NetworkSpecError as error:
        raise EDMImportError(str(error)) from None
    try:
        config = resolve_config({"unet": _hkd_unet_config(precond_kwargs, model_kwargs),
                                 "diffusion": {"sigma_data": float(precond_kwargs.get("sigma_data", 0.5))}})
    except ConfigError as error:
        raise EDMImportError(f"{source}: its architecture does not fit hkdviz's config ({error})") from None
    preset = _preset_name(config["unet"])
    if preset is not None:
        config["preset"] = preset
    _check_filters(filters, source)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = EDMPrecond(config)
    state = model.net.state_dict()
    expected = {name: tuple(tensor.shape) for name, tensor in state.items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{name}: pickle {tuple(tensors[name].shape)} vs hkdviz {expected[name]}"
             for name in sorted(set(expected) & set(tensors)) if tuple(tensors[name].shape) != expected[name]]
    if missing or unexpected or wrong:
        parts = [f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)) if items]
        raise EDMImportError(f"{source}: the weights do not match the rebuilt SongUNet: " + "; ".join(parts))
    # The pickle's tensors become the network's (assign): nothing is allocated or initialised twice.
    model.net.load_state_dict({name: tensor.to(state[name].dtype) for name, tensor in tensors.items()},
                              strict=True, assign=True)
    if any(tensor.is_meta for tensor in [*model.parameters(), *model.buffers()]):
        raise EDMImportError(f"{source}: the pickle does not supply every tensor of the rebuilt SongUNet")
    return model


def import_edm_pickle(path, device="cpu", key: str = "ema"):
    """Read an NVlabs/edm network pickle as a teacher denoiser (eval mode, no grad), executing nothing from it.

    Returns hkdviz's EDMPrecond for EDMPrecond + DDPM++ (the networks HKD can be initialised from),
    else a `networks.Preconditioning` (VP/VE/iDDPM/EDM preconditioning around SongUNet or
    DhariwalUNet). Both are called as D(x, sigma, class_labels) and carry `.config` and `.meta`.
    """
    path = Path(path)
    source = str(path)
    data = read_edm_pickle(path)
    if key not in data:
        raise EDMImportError(f"{source}: no {key!r} entry (keys: {sorted(map(str, data))})")
    precond = data[key]
    if not isinstance(precond, _RECORDS):
        raise EDMImportError(f"{source}: {key!r} is a {type(precond).__name__}, not an EDM network")
    if precond.class_name not in PRECONDITIONINGS:
        raise EDMImportError(f"{source}: {key!r} is EDM's {precond.class_name}; supported are EDM's preconditioned "
                             f"denoisers {', '.join(sorted(PRECONDITIONINGS))}")
    if not isinstance(precond.state, dict):
        raise EDMImportError(f"{source}: {precond.class_name} holds no state dict")
    network = (precond.state.get("_modules") or {}).get("model")
    if not isinstance(network, _RECORDS) or network.class_name not in NETWORKS:
        found = getattr(network, "class_name", type(network).__name__)
        raise EDMImportError(f"{source}: the network inside {precond.class_name} is {found}; supported are EDM's "
                             f"{', '.join(sorted(NETWORKS))} (DDPM++, NCSN++, ADM)")
    precond_kwargs, model_kwargs = _precond_arguments(precond, network.class_name, source)

    tensors, filters = {}, {}
    _collect_tensors(network, tensors, filters, source)
    for name, tensor in {**tensors, **filters}.items():
        if not tensor.is_floating_point():
            raise EDMImportError(f"{source}: tensor {name} has dtype {tensor.dtype}, not a floating-point type")
    if precond.class_name == "EDMPrecond" and network.class_name == "SongUNet" and _is_ddpmpp(model_kwargs):
        model = _import_ddpmpp(precond_kwargs, model_kwargs, tensors, filters, source)
        kind = "EDMPrecond + SongUNet (DDPM++)"
        distillable = True
    else:
        # The preconditioning's own buffers (iDDPM's u grid) sit beside "model.*" in its state dict.
        weights = {f"model.{name}": tensor for name, tensor in {**tensors, **filters}.items()}
        _collect_tensors(PersistentRecord(precond.class_name, {**precond.state, "_modules": {}}), weights, weights, source)
        spec = {"precond": precond.class_name, "precond_kwargs": precond_kwargs, "model_type": network.class_name,
                "model_kwargs": model_kwargs}
        try:
            model = build_checked(spec, weights, source)
        except NetworkSpecError as error:
            raise EDMImportError(str(error)) from None
        kind = model.describe()
        distillable = False
    model.meta = {
        "source": f"NVlabs/edm pickle {path.name}",
        "source_sha256": file_sha256(path),
        "edm_network": kind,
        "edm_use_fp16": bool(precond_kwargs.get("use_fp16", False)),
        "hkd_distillable": distillable,
    }
    dataset = data.get("dataset_kwargs")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
        model.meta["edm_dataset"] = dataset["path"]  # the training set's path on the machine that trained it
    return model.eval().requires_grad_(False).to(resolve_device(device))


def is_edm_pickle_path(path) -> bool:
    """True for an existing regular file named *.pkl / *.pickle (a teacher given as an EDM pickle)."""
    try:
        path = Path(path)
        return path.suffix.lower() in (".pkl", ".pickle") and path.is_file()
    except (TypeError, OSError):
        return False


__all__ = ["import_edm_pickle", "read_edm_pickle", "is_edm_pickle_path", "EDMImportError",
           "PersistentRecord", "ObjectRecord", "EDM_SONGUNET_DEFAULTS"]
