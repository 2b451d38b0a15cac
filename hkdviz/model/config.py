"""Model configuration as plain data: presets, overrides, validation.

A config is a JSON-able dict with three sections and one switch:
- "unet": SongUNet constructor arguments (the teacher and HKD share them);
- "diffusion": the EDM noise range and the decoder's fixed noise level;
- "koopman": which operator each level gets, and the Koopman time it evolves in;
- "output": how the one-step map reads the decoder's head ("raw" or "consistency", see hkd.py).
Keys missing from a stored config take these defaults, which are the choices every checkpoint made
before the key existed (raw head, Koopman time = sigma): old checkpoints load unchanged.
"""
from __future__ import annotations

import copy
import json
import math

from .koopman import BLOCK_OPERATORS, KOOPMAN_TIMES, OPERATORS

DIFFUSION_DEFAULTS = {
    "sigma_min": 0.002,     # eps: the clean end of the trajectory
    "sigma_max": 80.0,      # T: x_T ~ N(0, T^2 I)
    "sigma_data": 0.5,      # EDM preconditioning
    "decoder_sigma": 0.002,  # [choice] the decoder's one fixed noise embedding: sigma = eps
}

KOOPMAN_DEFAULTS = {
    # "block" (paper: 2x2 blocks per position) | "block_shared" (2x2 blocks, one per channel pair shared by
    # every position of the level) | "dense" (full matrix per position) | "dense_shared" (one per level)
    "operator": "block",
    "levels": "all",        # "all" (hierarchical) | "bottleneck" (non-hierarchical ablation) | "none"
    "max_exponent": 60.0,   # clamp on |alpha * tau| for block operators (see koopman.py)
    "time": "sigma",        # Koopman time s(sigma): "sigma" | "log_sigma" | "karras" (see koopman.py)
}

OUTPUTS = ("raw", "consistency")

UNET_DEFAULTS = {
    "img_resolution": 32, "in_channels": 3, "out_channels": 3, "label_dim": 0, "augment_dim": 0,
    "model_channels": 128, "channel_mult": [1, 2, 2, 2], "channel_mult_emb": 4, "num_blocks": 4,
    "attn_resolutions": [16], "dropout": 0.10, "label_dropout": 0.0, "embedding_type": "positional",
    "channel_mult_noise": 1,
}

PRESETS = {
    # CPU-friendly: ~0.57M parameters (Koopman generators included), 7 levels at 32/16/8 px.
    "tiny": {"unet": {"img_resolution": 32, "model_channels": 24, "channel_mult": [1, 1, 2], "num_blocks": 1,
                      "attn_resolutions": [8], "dropout": 0.0}},
    # EDM's DDPM++ CIFAR-10 configuration (~56M parameters, 16 levels at 32/16/8 px).
    "cifar10": {"unet": {"img_resolution": 32, "model_channels": 128, "channel_mult": [2, 2, 2], "num_blocks": 4,
                         "attn_resolutions": [16], "dropout": 0.13, "augment_dim": 9}},
    # EDM's FFHQ/AFHQ 64x64 DDPM++ configuration.
    "ffhq64": {"unet": {"img_resolution": 64, "model_channels": 128, "channel_mult": [1, 2, 2, 2], "num_blocks": 4,
                        "attn_resolutions": [16], "dropout": 0.05, "augment_dim": 9}},
}
# The shipped architecture (checkpoints/default/hkd/config.json): "tiny" at twice the width, 48 channels.
# That config.json names preset "tiny" with the width as an override; this name is what
# `hkdviz.build("default")` takes for the same architecture, untrained.
PRESETS["default"] = {"unet": {**PRESETS["tiny"]["unet"], "model_channels": 48}}

SECTIONS = {"unet": UNET_DEFAULTS, "diffusion": DIFFUSION_DEFAULTS, "koopman": KOOPMAN_DEFAULTS, "output": "raw"}


class ConfigError(ValueError):
    """A model config that cannot be built."""


def _merge(base: dict, override: dict, where: str) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{where}{key}'; known: {sorted(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            result[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            result[key] = copy.deepcopy(value)
    return result


def resolve_config(preset_or_config=None, **overrides) -> dict:
    """Full config from a preset name, a (partial) config dict, or None (= "tiny").

    A dict may name a base preset under "preset"; everything else overrides it section by section.
    """
    if preset_or_config is None:
        preset_or_config = "tiny"
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ConfigError(f"unknown preset {preset_or_config!r}; choose one of {sorted(PRESETS)}")
        partial = {"preset": preset_or_config}
    elif isinstance(preset_or_config, dict):
        partial = copy.deepcopy(preset_or_config)
    else:
        raise ConfigError(f"expected a preset name or a config dict, got {type(preset_or_config).__name__}")
    preset = partial.pop("preset", None)
    config = copy.deepcopy(SECTIONS)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        config = _merge(config, PRESETS[preset], "")
    config = _merge(config, partial, "")
    config = _merge(config, overrides, "")
    config["preset"] = preset
    validate_config(config)
    return config


# Every key's type and range: (kind, low, high) with kind "int" (bool refused), "number" (finite real,
# bool refused), "bool", or a tuple of allowed strings; low/high are inclusive bounds, None = open.
# Checked before any module is built, so a bad value names its dotted key instead of surfacing as a
# torch error (or, worse, as NaN samples: sigma_max = Infinity, decoder_sigma = -1).
SCHEMA = {
    "unet": {
        "img_resolution": ("int", 1, 4096), "in_channels": ("int", 1, 4096), "out_channels": ("int", 1, 4096),
        "label_dim": ("int", 0, None), "augment_dim": ("int", 0, None), "model_channels": ("int", 1, 1 << 16),
        "channel_mult_emb": ("int", 1, 64), "num_blocks": ("int", 1, 64), "dropout": ("number", 0.0, 1.0),
        "label_dropout": ("number", 0.0, 1.0), "embedding_type": (("positional", "fourier"), None, None),
        "channel_mult_noise": ("int", 1, 64),
    },
    "diffusion": {"sigma_min": ("number", None, None), "sigma_max": ("number", None, None),
                  "sigma_data": ("number", None, None), "decoder_sigma": ("number", None, None)},
    "koopman": {"operator": (OPERATORS, None, None),
                "levels": (("all", "bottleneck", "none"), None, None), "max_exponent": ("number", None, None),
                "time": (KOOPMAN_TIMES, None, None)},
}


def _check_value(key: str, value, kind, low, high) -> None:
    if isinstance(kind, tuple):
        if value not in kind:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, kind))}, got {value!r}")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        what = "an integer" if kind == "int" else "a number"
        raise ConfigError(f"{key} must be {what}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{key} must lie in {bounds}, got {value!r}")


def _check_int_list(key: str, value, allow_empty: bool, low: int = 1) -> None:
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise ConfigError(f"{key} must be a {'' if allow_empty else 'non-empty '}list of integers, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < low:
            raise ConfigError(f"{key} must hold integers >= {low}, got {item!r} in {value!r}")


def validate_config(config: dict) -> None:
    """Types and ranges of every key (errors name the dotted key and the value), then the cross-key rules."""
    for section, schema in SCHEMA.items():
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"{section} must be a mapping of keys, got {config.get(section)!r}")
        for key, (kind, low, high) in schema.items():
            _check_value(f"{section}.{key}", config[section][key], kind, low, high)
    unet, diffusion, koopman = config["unet"], config["diffusion"], config["koopman"]
    _check_int_list("unet.channel_mult", unet["channel_mult"], allow_empty=False)
    _check_int_list("unet.attn_resolutions", unet["attn_resolutions"], allow_empty=True)
    if unet["dropout"] >= 1 or unet["label_dropout"] >= 1:
        raise ConfigError(f"unet.dropout and unet.label_dropout must lie in [0, 1), got {unet['dropout']!r} "
                          f"and {unet['label_dropout']!r}")
    for key in ("sigma_min", "sigma_max", "sigma_data", "decoder_sigma"):
        if diffusion[key] <= 0:
            raise ConfigError(f"diffusion.{key} must be positive, got {diffusion[key]!r}")
    if koopman["max_exponent"] <= 0:
        raise ConfigError(f"koopman.max_exponent must be positive, got {koopman['max_exponent']!r}")
    if config.get("output") not in OUTPUTS:
        raise ConfigError(f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {config.get('output')!r}")
    if not 0 < diffusion["sigma_min"] < diffusion["sigma_max"]:
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got {diffusion['sigma_min']} and {diffusion['sigma_max']}")
    if unet["img_resolution"] % (2 ** (len(unet["channel_mult"]) - 1)):
        raise ConfigError(f"img_resolution {unet['img_resolution']} is not divisible by 2^(levels-1) "
                          f"for channel_mult {unet['channel_mult']}")
    if koopman["operator"] in BLOCK_OPERATORS and unet["model_channels"] % 2:
        raise ConfigError("block Koopman operators need even channel counts: model_channels must be even")
    json.dumps(config)  # must stay plain data


def unet_kwargs(config: dict) -> dict:
    kwargs = dict(config["unet"])
    kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    kwargs["attn_resolutions"] = tuple(kwargs["attn_resolutions"])
    return kwargs
