"""From a plain-data description to a loaded teacher network, checking before allocating anything.

A description ("network spec") is what `Preconditioning.network_spec()` returns and what a teacher
checkpoint of such a network stores in config.json under "edm_network":

    {"precond": "VEPrecond", "precond_kwargs": {"img_resolution": 32, "img_channels": 3, "label_dim": 0, ...},
     "model_type": "SongUNet", "model_kwargs": {"model_channels": 128, "embedding_type": "fourier", ...}}

It may come from an untrusted file (an EDM pickle, a checkpoint directory), and a few bytes of
description can ask for tens of GB of weights. So `build_checked` validates every argument (type,
range, name), builds the network on the `meta` device (shapes only, no memory), compares every
tensor name and shape with the weights actually supplied, checks the buffers that follow from the
arguments (resampling filters, iDDPM's u grid), and then hands the supplied tensors to the module
(`load_state_dict(assign=True)`): the network costs no memory beyond the weights themselves.
"""
from __future__ import annotations

import math

import torch

from ...checkpoint import CheckpointError
from ...model.config import ConfigError
from .layers import Conv2d, resample_filter_tensor
from .precond import (NETWORKS, PRECONDITIONINGS, IDDPMPreconditioning, Preconditioning, _signature,
                      build_preconditioning, iddpm_noise_levels)

# Every UNetBlock holds at least 10 tensors (norm0, conv0, affine, norm1, conv1: weight and bias each),
# which bounds how many blocks a description may ask for before anything is built.
_TENSORS_PER_BLOCK = 10
_LARGEST_M = 100_000  # iDDPM's u grid is computed step by step on the CPU


class NetworkSpecError(CheckpointError):
    """A network description that cannot be built, or that does not fit the supplied weights.

    A CheckpointError, so every command that reports unreadable checkpoints in one line reports it too."""


def _check_value(where: str, key: str, value, default):
    """`value` of the same kind as EDM's default for `key` (int, float, str, bool, list of numbers)."""
    def fail(expected: str):
        raise NetworkSpecError(f"{where}: argument {key} must be {expected}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail("a non-negative integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            fail("a number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            fail("a string")
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) > 64 or \
                not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
            fail("a short list of numbers")


def validate_spec(spec, where: str) -> dict:
    """A checked copy of `spec`; every problem names `where` and the offending key."""
    if not isinstance(spec, dict):
        raise NetworkSpecError(f"{where}: the network description must be a mapping, got {type(spec).__name__}")
    unknown = sorted(set(spec) - {"precond", "precond_kwargs", "model_type", "model_kwargs"})
    if unknown:
        raise NetworkSpecError(f"{where}: unknown key(s) {unknown} in the network description")
    precond, model_type = spec.get("precond"), spec.get("model_type")
    if precond not in PRECONDITIONINGS:
        raise NetworkSpecError(f"{where}: precond {precond!r} is not one of EDM's {sorted(PRECONDITIONINGS)}")
    if model_type not in NETWORKS:
        raise NetworkSpecError(f"{where}: model_type {model_type!r} is not one of EDM's {sorted(NETWORKS)}")
    checked = {"precond": precond, "model_type": model_type}
    for section, cls, required in (("precond_kwargs", PRECONDITIONINGS[precond], ("img_resolution", "img_channels")),
                                   ("model_kwargs", NETWORKS[model_type], ())):
        kwargs = spec.get(section)
        if not isinstance(kwargs, dict):
            raise NetworkSpecError(f"{where}: {section} must be a mapping, got {type(kwargs).__name__}")
        signature = _signature(cls)
        if section == "model_kwargs":  # these four come from the preconditioning, as in EDM
            signature = {key: value for key, value in signature.items()
                         if key not in ("img_resolution", "in_channels", "out_channels", "label_dim")}
        else:
            signature.pop("model_type", None)
        unknown = sorted(set(kwargs) - set(signature))
        if unknown:
            raise NetworkSpecError(f"{where}: {precond if section == 'precond_kwargs' else model_type} takes no "
                                   f"argument(s) {unknown} (it takes {sorted(signature)})")
        for key in required:
            if key not in kwargs:
                raise NetworkSpecError(f"{where}: {section} lacks {key}")
        for key, value in kwargs.items():
            default = signature[key].default
            if default is signature[key].empty:
                default = 0  # required integers: img_resolution, img_channels
            _check_value(where, key, value, default)
        checked[section] = dict(kwargs)
    resolution = checked["precond_kwargs"]["img_resolution"]
    if not 1 <= resolution <= 4096 or not 1 <= checked["precond_kwargs"]["img_channels"] <= 64:
        raise NetworkSpecError(f"{where}: img_resolution {resolution} / img_channels "
                               f"{checked['precond_kwargs']['img_channels']} out of range (1..4096 / 1..64)")
    return checked


def _block_count(spec: dict) -> int:
    """How many UNetBlocks the described network has (both EDM U-Nets share the layout)."""
    defaults = {name: parameter.default for name, parameter in _signature(NETWORKS[spec["model_type"]]).items()}
    kwargs = {**defaults, **spec["model_kwargs"]}
    levels, blocks = len(kwargs["channel_mult"]), int(kwargs["num_blocks"])
    # encoder: blocks per level and a down block per lower level; decoder: blocks + 1 per level,
    # an up block per higher level, and the two middle blocks.
    return levels * blocks + (levels - 1) + levels * (blocks + 1) + (levels - 1) + 2


def check_block_budget(spec: dict, num_tensors: int, where: str) -> None:
    """Refuse a (validated) description with more U-Net blocks than `num_tensors` weights can hold,
    before even a meta-device build spends time on it."""
    blocks = _block_count(spec)
    if blocks * _TENSORS_PER_BLOCK > num_tensors:
        raise NetworkSpecError(f"{where}: the description asks for {blocks} U-Net blocks (channel_mult, num_blocks), "
                               f"more than {num_tensors} tensors can hold")


def build_checked(spec, tensors: dict, where: str, device="cpu") -> Preconditioning:
    """The described network with `tensors` loaded (eval mode, no grad), after every check.

    tensors: name -> tensor as in the network's state dict ("model.enc...", "u"). Raises
    NetworkSpecError naming `where` and the first problems found.
    """
    spec = validate_spec(spec, where)
    check_block_budget(spec, len(tensors), where)
    cls = PRECONDITIONINGS[spec["precond"]]
    if cls is IDDPMPreconditioning:
        M = spec["precond_kwargs"].get("M", 1000)
        grid = tensors.get("u")
        if not 1 <= M <= _LARGEST_M or grid is None or grid.numel() != M + 1:
            raise NetworkSpecError(f"{where}: iDDPMPrecond argument M = {M} does not fit the stored u grid "
                                   f"({'missing' if grid is None else f'{grid.numel()} values'}; expected M + 1)")
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            module = build_preconditioning(spec)
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError) as error:
        raise NetworkSpecError(f"{where}: cannot build {spec['precond']} + {spec['model_type']} "
                               f"from its arguments ({error})") from None
    state = module.state_dict()
    _compare({name: tuple(tensor.shape) for name, tensor in state.items()},
             {name: tuple(tensor.shape) for name, tensor in tensors.items()}, where)
    wrong = sorted(name for name, tensor in tensors.items() if not tensor.is_floating_point())
    if wrong:
        raise NetworkSpecError(f"{where}: tensors {wrong[:5]} are not floating point")
    for name, expected in _derived_buffers(module).items():
        if not torch.allclose(tensors[name].to(torch.float64), expected.to(torch.float64), rtol=1e-5, atol=1e-6):
            raise NetworkSpecError(f"{where}: {name} differs from the one its arguments define "
                                   f"(resample_filter, C_1/C_2/M); the description and the weights disagree")
    # The supplied tensors become the module's (assign): nothing is allocated or initialised twice.
    module.load_state_dict({name: tensor.to(state[name].dtype) for name, tensor in tensors.items()},
                           strict=True, assign=True)
    left = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if left:  # every tensor of these networks is in the state dict; this guards later changes
        raise NetworkSpecError(f"{where}: {left[:5]} were not supplied by the weights")
    try:
        module.hkdviz_config()  # what a Teacher reads: the sampling range must be a valid one
    except ConfigError as error:
        raise NetworkSpecError(f"{where}: {spec['precond']} settings give no usable sampling range ({error})") from None
    return module.eval().requires_grad_(False).to(device)


def _derived_buffers(module: Preconditioning) -> dict:
    """name -> value of every buffer that is a function of the arguments, computed on the CPU."""
    derived = {f"{name}.resample_filter": resample_filter_tensor(layer.resample_taps)
               for name, layer in module.named_modules() if isinstance(layer, Conv2d) and layer.resample_filter is not None}
    if isinstance(module, IDDPMPreconditioning):
        derived["u"] = iddpm_noise_levels(module.C_1, module.C_2, module.M)
    return derived


def _compare(expected: dict, found: dict, where: str) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{name}: weights {found[name]} vs description {expected[name]}"
             for name in sorted(set(expected) & set(found)) if found[name] != expected[name]]
    if missing or unexpected or wrong:
        parts = [f"{label} {items[:5]}{f' ... ({len(items) - 5} more)' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)) if items]
        raise NetworkSpecError(f"{where}: the weights do not match the described network: " + "; ".join(parts))


__all__ = ["NetworkSpecError", "validate_spec", "check_block_budget", "build_checked"]
