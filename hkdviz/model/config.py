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

from .koopman import KOOPMAN_TIMES

DIFFUSION_DEFAULTS = {
    "sigma_min": 0.002,     # eps: the clean end of the trajectory
    "sigma_max": 80.0,      # T: x_T ~ N(0, T^2 I)
    "sigma_data": 0.5,      # EDM preconditioning
    "decoder_sigma": 0.002,  # [choice] the decoder's one fixed noise embedding: sigma = eps
}

KOOPMAN_DEFAULTS = {
    "operator": "block",    # "block" (paper) | "dense" (per position) | "dense_shared" (one per level)
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


def validate_config(config: dict) -> None:
    unet, diffusion, koopman = config["unet"], config["diffusion"], config["koopman"]
    if koopman["operator"] not in ("block", "dense", "dense_shared"):
        raise ConfigError(f"koopman.operator must be 'block', 'dense' or 'dense_shared', got {koopman['operator']!r}")
    if koopman["levels"] not in ("all", "bottleneck", "none"):
        raise ConfigError(f"koopman.levels must be 'all', 'bottleneck' or 'none', got {koopman['levels']!r}")
    if koopman["time"] not in KOOPMAN_TIMES:
        raise ConfigError(f"koopman.time must be one of {KOOPMAN_TIMES}, got {koopman['time']!r}")
    if config["output"] not in OUTPUTS:
        raise ConfigError(f"output must be one of {OUTPUTS}, got {config['output']!r}")
    if not 0 < diffusion["sigma_min"] < diffusion["sigma_max"]:
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got {diffusion['sigma_min']} and {diffusion['sigma_max']}")
    if unet["img_resolution"] % (2 ** (len(unet["channel_mult"]) - 1)):
        raise ConfigError(f"img_resolution {unet['img_resolution']} is not divisible by 2^(levels-1) "
                          f"for channel_mult {unet['channel_mult']}")
    if koopman["operator"] == "block" and unet["model_channels"] % 2:
        raise ConfigError("block Koopman operators need even channel counts: model_channels must be even")
    json.dumps(config)  # must stay plain data


def unet_kwargs(config: dict) -> dict:
    kwargs = dict(config["unet"])
    kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    kwargs["attn_resolutions"] = tuple(kwargs["attn_resolutions"])
    return kwargs
