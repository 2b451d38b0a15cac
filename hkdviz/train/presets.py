"""Training presets: the full pipeline config as plain JSON data.

A training config has shared keys (seed, model, dataset, device) and one section per stage:
teacher -> trajectories -> hkd -> classifier -> evaluate. `resolve_training_config` starts from
BASE, applies a preset, then a config file (JSON or YAML, a partial config), then `--set` overrides
("hkd.lr=2e-4", values parsed as JSON, else taken as strings). Unknown keys are errors, except
inside the free-form parts (model, dataset, hkd.koopman, hkd.distance), which their own loaders
validate.

Presets:
- smoke:    the whole pipeline end to end in about a minute on 2 CPU cores (a plumbing check,
            not a useful model).
- default:  the shipped checkpoint: the "tiny" U-Net at 48 channels (~2.1M parameters, 32x32 RGB) on
            the shapes data set, sized for minutes on one GPU; many hours on 2 CPU cores
            (estimated_cpu_minutes), where default-cpu is the choice.
- default-cpu: the 24-channel "tiny" model (~0.57M parameters) on the same data at half the images and
            a quarter of the batch, sized for about an hour and a half on 2 CPU cores with native
            bfloat16; trained an earlier shipped default (see DEFAULT_CPU_BUDGET below).
Measured times of both: docs/training.md, "Budgets".
- cifar10:  paper settings: EDM DDPM++ CIFAR-10 teacher (EDM's training recipe), HKD batch 256,
            Adam lr 1e-3, ~53 epochs over the trajectory set; needs `--set dataset=cifar10:/path`.
- ffhq64:   EDM's FFHQ 64x64 teacher recipe, 40-step (79 NFE) trajectories, HKD batch 64;
            needs `--set dataset=zip:/path/ffhq-64x64.zip`.

`steps_scale` multiplies the teacher/HKD/classifier step counts and the trajectory count (a time
budget knob: 0.5 halves the run); the shipped default is trained with steps_scale = 1.
scripts/gpu_session.sh trains the default preset at the largest steps_scale that fits one device call.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path


class PresetError(ValueError):
    """A bad preset name, config file or override; the message names it."""


# Sections whose contents are validated by their consumers (resolve_config, load_dataset, ...).
FREE_FORM = {("model",), ("dataset",), ("hkd", "koopman"), ("hkd", "distance"), ("classifier", "config"),
             ("evaluate", "options")}

BASE: dict = {
    "preset": None,
    "seed": 0,
    "device": "auto",
    "steps_scale": 1.0,
    "model": {"preset": "tiny"},
    "dataset": {"name": "shapes", "num_images": 50_000, "seed": 0},
    "teacher": {
        "steps": 20_000, "batch_size": 128, "batch_per_device": None, "lr": 1e-3, "lr_rampup_images": 200_000,
        "lr_cooldown_steps": 0,
        "betas": [0.9, 0.999], "eps": 1e-8, "ema_halflife_images": 200_000, "ema_rampup_ratio": 0.05,
        "grad_clip": None, "xflip": True, "P_mean": -1.2, "P_std": 1.2, "autocast": "bfloat16",
        "cpu_autocast": False, "channels_last": True, "data_memory_limit_mb": 4096, "log_every": 100,
        "resume_every": 1000, "checkpoint_every": None,
    },
    "trajectories": {
        "count": 10_000, "first_seed": 0, "num_steps": 18, "rho": 7.0, "chunk_size": 1024, "batch_size": 256,
        "storage_dtype": "float16", "teacher": None, "autocast": None, "cpu_autocast": False,
    },
    "hkd": {
        "steps": 10_000, "epochs": None, "batch_size": 128, "batch_per_device": None, "lr": 1e-3, "lr_cooldown_steps": 0,
        "betas": [0.9, 0.999], "eps": 1e-8, "ema_halflife_images": 100_000, "ema_rampup_ratio": 0.05,
        "grad_clip": 1.0, "num_times": 4, "t_consistency": True, "include_eps": True,
        "koopman": {"operator": "block", "levels": "all"}, "dropout": 0.0, "init_from_teacher": True,
        "output": "raw", "decoder_sigma": None, "latent_weight": 0.0, "generator_lr_scale": 1.0,
        "generator_smoothness": 0.0, "time_sampling": "uniform", "recon_weight": 1.0,
        "state_weight": 0.0, "distance": {"name": "pseudo_huber"}, "lambda1_start": 1.0, "lambda1_end": 1e-3, "lambda2": 1.0,
        "autocast": "bfloat16", "cpu_autocast": False, "channels_last": True, "data_memory_limit_mb": 4096,
        "log_every": 100, "resume_every": 1000, "checkpoint_every": None, "teacher": None, "trajectories": None,
    },
    "classifier": {"enabled": True, "steps": 1_000, "num_images": 20_000, "batch_size": 128, "num_held_out": 2_000,
                   "learning_rate": 2e-3, "config": {}},
    "evaluate": {"enabled": True, "options": {}},
}

# The CPU-sized default: what trained the earlier shipped default, sized for 2 CPU cores (see
# DEFAULT_CPU_BUDGET). The networks run in bf16 where the CPU has native bfloat16 (cpu_autocast "auto"):
# faster steps, spent on a longer teacher, which is what limits quality here. The lr cool-downs (the
# last 20% of each stage) buy a better teacher at no cost. Measured: docs/results.md, "The earlier
# default" (teacher length and schedule against KID).
DEFAULT_CPU_PRESET = {
    "model": {"preset": "tiny"},
    "dataset": {"name": "shapes", "num_images": 50_000, "seed": 0},
    "teacher": {"steps": 7_500, "batch_size": 64, "lr": 1e-3, "lr_rampup_images": 20_000, "lr_cooldown_steps": 1_500,
                "ema_halflife_images": 50_000, "ema_rampup_ratio": 0.05, "cpu_autocast": "auto",
                "log_every": 50, "resume_every": 250},
    "trajectories": {"count": 6_144, "num_steps": 18, "chunk_size": 1024, "batch_size": 256,
                     "autocast": "bfloat16", "cpu_autocast": "auto"},
    "hkd": {"steps": 1_800, "batch_size": 32, "lr": 1e-3, "lr_cooldown_steps": 400, "ema_halflife_images": 10_000,
            "ema_rampup_ratio": 0.1, "cpu_autocast": "auto", "log_every": 50, "resume_every": 200},
}

# The shipped default: what `hkdviz train all --preset default` trains; the checkpoints in
# checkpoints/default/ (teacher, HKD) came from this recipe on one H200 (scripts/gpu_session.sh; the
# classifier is the default-cpu run's, trained with the same classifier settings). Against default-cpu:
# the tiny U-Net at twice the width (48 channels, 2.1M parameters: the GPU is launch-bound at this size,
# so it trains as fast as the 24-channel one there), 2x the teacher images (960k) at 4x the batch (lr
# 2e-3 for the larger batch), 8x the trajectories (49,152) and 6x the HKD samples (2,700 steps) at 4x the
# batch. The HKD's budget is the lever that mattered: the same teacher distilled from 12,288 trajectories
# in 900 steps tied the 5-NFE teacher on local KID; from 49,152 in 2,700 steps it beats that teacher in a
# test fixed in advance (docs/results.md, "The shipped default checkpoint"; times: docs/training.md).
# The 49,152 trajectories take 5.4 GiB in float16: data_memory_limit_mb keeps them in memory, as trained
# (over the limit the set is read item by item from disk, which is far slower).
DEFAULT_MODEL = {"preset": "tiny", "unet": {"model_channels": 48}}
DEFAULT_PRESET = {
    **DEFAULT_CPU_PRESET,
    "model": DEFAULT_MODEL,
    "teacher": {**DEFAULT_CPU_PRESET["teacher"], "steps": 3_750, "batch_size": 256, "lr": 2e-3,
                "lr_cooldown_steps": 750},
    "trajectories": {**DEFAULT_CPU_PRESET["trajectories"], "count": 49_152},
    "hkd": {**DEFAULT_CPU_PRESET["hkd"], "steps": 2_700, "batch_size": 128, "lr_cooldown_steps": 600,
            "data_memory_limit_mb": 8192},
}

PRESETS: dict = {
    "smoke": {
        "dataset": {"name": "shapes", "num_images": 512, "seed": 0},
        "teacher": {"steps": 30, "batch_size": 16, "lr_rampup_images": 0, "ema_halflife_images": 200,
                    "log_every": 10, "resume_every": 15},
        "trajectories": {"count": 48, "num_steps": 6, "chunk_size": 32, "batch_size": 24},
        "hkd": {"steps": 20, "batch_size": 8, "ema_halflife_images": 100, "log_every": 10, "resume_every": 10},
        "classifier": {"steps": 30, "num_images": 512, "batch_size": 32, "num_held_out": 64},
        "evaluate": {"options": {"num_samples": 64}},
    },
    "default": DEFAULT_PRESET,
    "default-cpu": DEFAULT_CPU_PRESET,
    "cifar10": {
        # EDM's DDPM++ CIFAR-10 recipe (batch 512, lr 1e-3, 10 Mimg ramp-up, 0.5 Mimg EMA half-life,
        # 200 Mimg); no augmentation pipeline here (EDM used p=0.12 with augment_dim 9).
        "model": {"preset": "cifar10"},
        "dataset": "cifar10:REQUIRED",
        "teacher": {"steps": 390_625, "batch_size": 512, "lr": 1e-3, "lr_rampup_images": 10_000_000,
                    "ema_halflife_images": 500_000, "xflip": False, "log_every": 500, "resume_every": 5000},
        # [choice] The paper states ~53 epochs but not the set size; 2-3 days on 8 V100 at 5 passes
        # per sample implies on the order of 10^6 trajectories. 18 steps = 35 NFE.
        "trajectories": {"count": 1_000_000, "num_steps": 18, "chunk_size": 4096, "batch_size": 1024},
        "hkd": {"epochs": 53, "batch_size": 256, "lr": 1e-3, "ema_halflife_images": 500_000, "dropout": 0.0,
                "log_every": 500, "resume_every": 5000},
        "classifier": {"steps": 3_000, "num_images": 50_000},
    },
    "ffhq64": {
        # EDM's FFHQ 64x64 recipe: batch 256, lr 2e-4, dropout 0.05, 200 Mimg; 40 steps = 79 NFE.
        "model": {"preset": "ffhq64"},
        "dataset": "zip:REQUIRED",
        "teacher": {"steps": 781_250, "batch_size": 256, "lr": 2e-4, "lr_rampup_images": 10_000_000,
                    "ema_halflife_images": 500_000, "xflip": True, "log_every": 500, "resume_every": 5000},
        "trajectories": {"count": 500_000, "num_steps": 40, "chunk_size": 2048, "batch_size": 512},
        "hkd": {"epochs": 53, "batch_size": 64, "lr": 1e-3, "ema_halflife_images": 500_000, "dropout": 0.0,
                "log_every": 500, "resume_every": 5000},
        "classifier": {"enabled": False},
        "evaluate": {"enabled": False},
    },
}

# The default-cpu preset's budget: data, not commentary. These are the rates and stage times measured in
# the run that trained the earlier shipped default (2 CPU cores, AMD EPYC with AVX512-BF16, every network
# in bf16 autocast), with float32 rates for CPUs without native bfloat16; estimated_cpu_minutes and
# steps_scale_for_budget compute from them. `cost_by_model_channels` holds each stage's time per image
# against the 24-channel tiny model, measured side by side with benchmarks/bench_train.py in float32; the
# bf16 ratio is taken to be the same (not measured: that CPU had no bf16). The measurements, with their
# conditions: docs/training.md, "Budgets".
DEFAULT_CPU_BUDGET = {
    "measured_minutes_2_cpu_cores_bf16": {"teacher": 44.9, "trajectories": 6.3, "hkd": 25.8,
                                          "classifier_and_evaluation": 4.3, "total": 81.4},
    "throughput_2_cpu_cores_bf16": {"teacher_images_per_second": 178.0, "trajectories_per_second": 16.3,
                                    "hkd_samples_per_second": 37.0},
    "throughput_2_cpu_cores_float32": {"teacher_images_per_second": 124.0, "trajectories_per_second": 6.6,
                                       "hkd_samples_per_second": 24.0},
    "cost_by_model_channels": {24: {"teacher": 1.0, "trajectories": 1.0, "hkd": 1.0},
                               48: {"teacher": 2.47, "trajectories": 2.22, "hkd": 3.18}},
    # HKD stage time with the state term (hkd.state_weight > 0) against without it, measured side by side
    # (bench_train.py --compare-state-term); taken to be the same at every width and precision.
    "state_term_hkd_cost": 1.78,
}


def _merge(base: dict, override: dict, path: tuple = ()) -> dict:
    """Strict deep merge: unknown keys are errors, except inside FREE_FORM parts."""
    if not isinstance(override, dict):
        raise PresetError(f"{'.'.join(path) or 'the config'} must be a mapping, got {override!r}")
    result = copy.deepcopy(base)
    for key, value in override.items():
        where = path + (key,)
        if key not in result:
            raise PresetError(f"unknown config key {'.'.join(where)!r}; known here: {', '.join(sorted(result))}")
        if where in FREE_FORM:
            result[key] = _merge_free(result[key], value, where)
        elif isinstance(result[key], dict):
            result[key] = _merge(result[key], value, where)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_free(base, value, where: tuple = ()):
    """Deep merge without a schema; a dict naming another "name" (data set, distance) replaces the old one,
    and a model dict naming a "preset" replaces the whole model section: `--set model.preset=tiny` on
    the default preset (tiny at 48 channels) means the 24-channel tiny, not tiny at 48 channels."""
    if isinstance(base, dict) and isinstance(value, dict):
        if ("name" in value and value["name"] != base.get("name")) or (where == ("model",) and "preset" in value):
            return copy.deepcopy(value)
        result = copy.deepcopy(base)
        for key, item in value.items():
            result[key] = _merge_free(result.get(key), item)
        return result
    return copy.deepcopy(value)


def parse_value(text: str):
    """JSON when it parses ("1e-3", "true", "null", "[1, 2]", '{"a": 1}'), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_override(config: dict, assignment: str) -> dict:
    """config with one "dotted.key=value" assignment applied (a new dict)."""
    key, separator, text = assignment.partition("=")
    key = key.strip()
    if not separator or not key:
        raise PresetError(f"--set expects key=value, got {assignment!r}")
    parts = tuple(key.split("."))
    nested: dict = parse_value(text)
    for part in reversed(parts):
        nested = {part: nested}
    return _merge(config, nested)


def load_config_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PresetError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # noqa: BLE001 - JSON and YAML raise different types
        raise PresetError(f"{path}: cannot parse the config ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise PresetError(f"{path}: a config file holds a mapping of keys, got {type(data).__name__}")
    return data


def resolve_training_config(preset: str | None = "default", config=None, overrides=()) -> dict:
    """The full training config: BASE <- preset <- config (dict or file path) <- overrides."""
    if preset is not None and preset not in PRESETS:
        raise PresetError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    result = copy.deepcopy(BASE)
    if preset is not None:
        result = _merge(result, PRESETS[preset])
        result["preset"] = preset
    if config is not None:
        result = _merge(result, load_config_file(config) if isinstance(config, (str, Path)) else config)
    for assignment in overrides or ():
        result = apply_override(result, assignment)
    check_training_config(result)
    return result


# Type and range of every schema key: (kinds, low, high). kinds is a tuple of "int" (bool refused),
# "number" (finite real, bool refused), "bool", "null", "string", "betas", or allowed string values;
# low/high bound numbers (inclusive; None = open). Free-form parts are checked by their consumers.
POSITIVE_INT = (("int",), 1, None)
COUNT = (("int",), 0, None)
OPTIONAL_POSITIVE_INT = (("int", "null"), 1, None)
POSITIVE = (("number",), 1e-300, None)
NON_NEGATIVE = (("number",), 0, None)
AUTOCAST = (("bfloat16", "float16", "null"), None, None)
CPU_AUTOCAST = (("bool", "auto"), None, None)
FLAG = (("bool",), None, None)
OPTIONAL_PATH = (("string", "null"), None, None)
_OPTIMIZER = {"lr": POSITIVE, "betas": (("betas",), None, None), "eps": POSITIVE,
              "ema_halflife_images": NON_NEGATIVE, "ema_rampup_ratio": (("number", "null"), 0, None),
              "grad_clip": (("number", "null"), 1e-300, None), "autocast": AUTOCAST, "cpu_autocast": CPU_AUTOCAST,
              "channels_last": FLAG, "data_memory_limit_mb": NON_NEGATIVE, "log_every": POSITIVE_INT,
              "resume_every": POSITIVE_INT, "checkpoint_every": OPTIONAL_POSITIVE_INT, "steps": POSITIVE_INT,
              "batch_size": POSITIVE_INT, "batch_per_device": OPTIONAL_POSITIVE_INT, "lr_cooldown_steps": COUNT}
TRAINING_SCHEMA = {
    (): {"seed": (("int",), 0, 2 ** 63 - 1), "device": (("string",), None, None), "steps_scale": POSITIVE},
    ("teacher",): {**_OPTIMIZER, "lr_rampup_images": COUNT, "xflip": FLAG, "P_mean": (("number",), None, None),
                   "P_std": POSITIVE},
    ("trajectories",): {"count": POSITIVE_INT, "first_seed": (("int",), 0, 2 ** 63 - 1), "num_steps": POSITIVE_INT,
                        "rho": POSITIVE, "chunk_size": POSITIVE_INT, "batch_size": POSITIVE_INT,
                        "storage_dtype": (("float16", "float32"), None, None), "teacher": OPTIONAL_PATH,
                        "autocast": AUTOCAST, "cpu_autocast": CPU_AUTOCAST},
    ("hkd",): {**_OPTIMIZER, "epochs": (("number", "null"), 1e-300, None), "num_times": POSITIVE_INT,
               "t_consistency": FLAG, "include_eps": FLAG, "dropout": (("number",), 0, 1),
               "init_from_teacher": FLAG, "lambda1_start": NON_NEGATIVE, "lambda1_end": NON_NEGATIVE,
               "lambda2": NON_NEGATIVE, "teacher": OPTIONAL_PATH, "trajectories": OPTIONAL_PATH,
               "output": (("raw", "consistency"), None, None),
               "decoder_sigma": (("number", "null", "sigma_max"), 1e-300, None),
               "latent_weight": NON_NEGATIVE, "generator_lr_scale": POSITIVE, "generator_smoothness": NON_NEGATIVE,
               "time_sampling": (("uniform", "log_sigma"), None, None), "recon_weight": NON_NEGATIVE,
               "state_weight": NON_NEGATIVE},
    ("classifier",): {"enabled": FLAG, "steps": POSITIVE_INT, "num_images": POSITIVE_INT, "batch_size": POSITIVE_INT,
                      "num_held_out": COUNT, "learning_rate": POSITIVE},
    ("evaluate",): {"enabled": FLAG},
}


# What every key of BASE means, one line each, keyed like TRAINING_SCHEMA (a free-form part such as
# hkd.koopman has one meaning for the whole mapping). `hkdviz train --explain-config` prints these beside
# the resolved values and BASE's defaults; tests/train/test_pipeline.py fails when a BASE key lacks one.
# The teacher and HKD loops share the optimizer keys (hkdviz/train/loop.py, TrainingLoop).
_OPTIMIZER_MEANINGS = {
    "steps": "optimizer steps of this stage (scaled by steps_scale)",
    "batch_size": "global batch per optimizer step, summed over every rank",
    "batch_per_device": "most items one device takes at once (a rank's share runs in gradient-accumulation "
                        "rounds of this size); null = its whole share at once",
    "lr": "Adam's peak learning rate",
    "lr_cooldown_steps": "the learning rate falls linearly toward zero over the last N steps (0 = no cool-down; "
                         "scaled by steps_scale)",
    "betas": "Adam's (beta1, beta2)",
    "eps": "Adam's epsilon",
    "ema_halflife_images": "half-life, in training items, of the weight EMA that the checkpoint stores",
    "ema_rampup_ratio": "early on the EMA half-life is at most items seen x this ratio (EDM's ramp-up); "
                        "null = no ramp-up",
    "grad_clip": "clip the global gradient norm to this value; null = no clipping",
    "autocast": "mixed-precision dtype of the network on CUDA: bfloat16, float16, or null (float32)",
    "cpu_autocast": "autocast on the CPU too (bfloat16 only): true, false, or \"auto\" (when the CPU has "
                    "native bfloat16)",
    "channels_last": "channels-last memory layout on CUDA (ignored on the CPU, where it is slower)",
    "log_every": "a log line and a stats.jsonl record every N steps (may change on resume)",
    "resume_every": "write the resume state (resume.pt) every N steps and at the end (may change on resume)",
    "checkpoint_every": "also keep the EMA weights as checkpoint-NNNNNNN/ every N steps; null = the final "
                        "checkpoint only (may change on resume)",
}
MEANINGS = {
    (): {
        "preset": "the training preset the config starts from (set by resolution; null = BASE alone)",
        "seed": "root seed of every stage's draws: initial weights, batch order, noise, classifier split",
        "device": "where to train: auto (CUDA when present), cpu, cuda, cuda:1 (--device overrides it)",
        "steps_scale": "multiplies the teacher, HKD and classifier step counts (cool-downs included) and the "
                       "trajectory count",
        "model": "model config shared by teacher and HKD: a preset name plus section overrides "
                 "(hkdviz.build's config)",
        "dataset": "training images: a name (\"shapes\", \"cifar10:/path\", \"zip:/path\") or a dict "
                   "(name, num_images, seed, ...)",
    },
    ("teacher",): {
        **_OPTIMIZER_MEANINGS,
        "lr_rampup_images": "the learning rate rises linearly from zero over the first N training images "
                            "(0 = none)",
        "xflip": "also train on mirrored images (index N + i mirrors image i), as EDM does",
        "P_mean": "mean of ln(sigma) for the training noise levels (EDM: ln sigma ~ N(P_mean, P_std^2))",
        "P_std": "standard deviation of ln(sigma) for the training noise levels",
        "data_memory_limit_mb": "the training images are loaded once onto the device when they fit in this "
                                "many MiB (uint8), else read from the data set per batch",
    },
    ("trajectories",): {
        "count": "number of teacher trajectories to solve and store (scaled by steps_scale)",
        "first_seed": "noise seed of trajectory 0; trajectory i uses seed first_seed + i",
        "num_steps": "Heun steps of the teacher's PF-ODE solve (N steps: 2N - 1 evaluations, N + 1 states)",
        "rho": "exponent of EDM's time grid between sigma_max and sigma_min",
        "chunk_size": "trajectories per stored chunk file (the unit of resume and of work across ranks)",
        "batch_size": "trajectories solved at once on one device",
        "storage_dtype": "dtype of the stored states: float16 (half the disk and memory) or float32",
        "teacher": "teacher checkpoint for `train trajectories` when --teacher is not given",
        "autocast": "mixed-precision dtype of the teacher network on CUDA: bfloat16, float16, or null (float32)",
        "cpu_autocast": "autocast on the CPU too (bfloat16 only): true, false, or \"auto\" (when the CPU has "
                        "native bfloat16)",
    },
    ("hkd",): {
        **_OPTIMIZER_MEANINGS,
        "steps": "optimizer steps of HKD training (scaled by steps_scale; epochs, when set, replaces it)",
        "batch_size": "global batch of trajectories per optimizer step, summed over every rank",
        "epochs": "when set, steps = ceil(epochs x trajectory count / batch_size); null = use steps",
        "num_times": "intermediate trajectory times drawn per trajectory and step (besides T)",
        "t_consistency": "also match the one-step map at the drawn intermediate times; false = the "
                         "reconstruction from T alone (ablation)",
        "include_eps": "the drawn times may include the trajectory's last state (sigma_min)",
        "koopman": "overrides of the model's koopman section (operator, levels, max_exponent, time)",
        "dropout": "U-Net dropout of the HKD network (replaces the teacher's unet.dropout)",
        "init_from_teacher": "start encoder and decoder from the teacher's weights (an EDMPrecond + DDPM++ "
                             "teacher only)",
        "output": "how the one-step map reads the decoder: \"raw\" or \"consistency\" (adds c_skip x_t)",
        "decoder_sigma": "the decoder's fixed noise level: a number, \"sigma_max\", or null (the model's "
                         "default, sigma_min)",
        "latent_weight": "weight of the latent path term (encoder latents of teacher states vs the Koopman "
                         "path); 0 = off, as in the paper",
        "generator_lr_scale": "multiplies the learning rate of the Koopman generators",
        "generator_smoothness": "weight of the mean squared difference between neighbouring positions' "
                                "generator entries (per-position block levels); 0 = off",
        "time_sampling": "law of the drawn trajectory times: \"uniform\" over the solver grid indices, or "
                         "\"log_sigma\" (each index by its cell's width in ln sigma)",
        "recon_weight": "weight of the x_T reconstruction term against each intermediate term (1 = plain mean)",
        "state_weight": "weight of the state term (every input's latents decoded without evolution vs the "
                        "teacher's D(x_t, t)); 0 = off, as in the paper",
        "distance": "perceptual distance: \"pseudo_huber\", \"mse\", {\"name\": \"lpips\", ...} or "
                    "{\"name\": \"teacher_features\", \"sigma\": 0.3} (the frozen teacher's encoder features)",
        "lambda1_start": "weight of the MSE term at the start of training (it decays geometrically)",
        "lambda1_end": "weight of the MSE term at the end of training",
        "lambda2": "weight of the perceptual distance term",
        "data_memory_limit_mb": "the trajectory set is loaded into memory when it fits in this many MiB (in "
                                "its storage dtype), else read item by item from disk",
        "teacher": "teacher checkpoint for `train hkd` when --teacher is not given",
        "trajectories": "trajectory directory for `train hkd` when --trajectories is not given",
    },
    ("classifier",): {
        "enabled": "train the feature classifier in `train all` (the evaluation needs it)",
        "steps": "classifier optimizer steps (scaled by steps_scale)",
        "num_images": "images of the data set the classifier trains on (the held-out ones apart)",
        "batch_size": "classifier batch size",
        "num_held_out": "images held out to measure accuracy (a procedural set draws them with a reserved "
                        "seed; a stored set splits off at most a fifth of itself)",
        "learning_rate": "classifier Adam learning rate (reached after a short linear warm-up)",
        "config": "classifier architecture overrides (hkdviz.evaluation.classifier's CLASSIFIER_DEFAULTS)",
    },
    ("evaluate",): {
        "enabled": "evaluate the exported checkpoints at the end of `train all` (needs the classifier)",
        "options": "keyword arguments of hkdviz.evaluation.evaluate.evaluate, e.g. {\"num_samples\": 64}",
    },
}


def _kind_matches(kind: str, value) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "string":
        return isinstance(value, str)
    if kind == "betas":
        return (isinstance(value, list) and len(value) == 2
                and all(_kind_matches("number", item) and 0 <= item < 1 for item in value))
    return value == kind  # an allowed string value


def _describe_kinds(kinds) -> str:
    names = {"int": "an integer", "number": "a number", "bool": "true or false", "null": "null",
             "string": "a string", "betas": "two numbers in [0, 1)"}
    return " or ".join(names.get(kind, repr(kind)) for kind in kinds)


def check_training_config(config: dict) -> None:
    """Type and range of every key of the schema; errors name the dotted key and the value as given
    (so `--set hkd.lr=nan` reads "hkd.lr must be finite, got nan")."""
    for path, schema in TRAINING_SCHEMA.items():
        section = config
        for part in path:
            section = section[part]
        for key, (kinds, low, high) in schema.items():
            if key not in section:
                continue
            value, name = section[key], ".".join(path + (key,))
            if not any(_kind_matches(kind, value) for kind in kinds):
                raise PresetError(f"{name} must be {_describe_kinds(kinds)}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise PresetError(f"{name} must be finite, got {value!r}")
            if _kind_matches("number", value) and ((low is not None and value < low) or (high is not None and value > high)):
                if low == 1e-300:
                    raise PresetError(f"{name} must be positive, got {value!r}")
                if "int" in kinds and high is None and low in (0, 1):
                    raise PresetError(f"{name} must be a {'positive' if low else 'non-negative'} integer, got {value!r}")
                bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise PresetError(f"{name} must be {bounds}, got {value!r}")
    if config["hkd"]["dropout"] >= 1:
        raise PresetError(f"hkd.dropout must lie in [0, 1), got {config['hkd']['dropout']!r}")
    for section in ("teacher", "hkd"):  # a cool-down ends at the last step (with epochs the loop checks it)
        steps, cooldown = config[section].get("steps"), config[section].get("lr_cooldown_steps") or 0
        if steps and not config[section].get("epochs") and cooldown > steps:
            raise PresetError(f"{section}.lr_cooldown_steps ({cooldown}) must not exceed {section}.steps ({steps}); "
                              f"set both, e.g. --set {section}.steps={steps} --set {section}.lr_cooldown_steps=0")
    from ..model.config import ConfigError, resolve_config
    try:
        resolve_config(config["model"])  # the model section's own types and ranges, before any training
    except ConfigError as error:
        raise PresetError(f"model config: {error}") from None
    json.dumps(config)


def _meaning_paths(section: dict, path: tuple = ()):
    """(path, key) of every key BASE-like `section` holds, in its order; free-form parts are one key."""
    for key, value in section.items():
        if isinstance(value, dict) and path + (key,) not in FREE_FORM:
            yield from _meaning_paths(value, path + (key,))
        else:
            yield path, key


def explain_config(config: dict) -> str:
    """Every key of `config` with its value, BASE's default and its meaning (MEANINGS), one aligned line
    each, under one heading per section; a "*" marks a value that differs from the default. Values are
    compact JSON, as --print-config and --set write them."""
    def text(value) -> str:
        return json.dumps(value, separators=(", ", ": "))

    rows = []  # (section heading, key, value, default, changed, meaning)
    for path, key in _meaning_paths(BASE):
        section, default = config, BASE
        for part in path:
            section, default = section[part], default[part]
        meaning = MEANINGS.get(path, {}).get(key)
        if meaning is None:
            raise PresetError(f"no meaning for config key {'.'.join(path + (key,))!r} (presets.MEANINGS)")
        rows.append((".".join(path) or "top level", key, text(section[key]), text(default[key]),
                     section[key] != default[key], meaning))
    key_width = max(len(row[1]) for row in rows)
    value_width = max(len(row[2]) for row in rows)
    default_width = max(len(row[3]) for row in rows)
    lines = [f"# {'key':<{key_width}}   {'value':<{value_width}}   {'default':<{default_width}}   meaning "
             f"(* = not the default; preset {text(config.get('preset'))})"]
    heading = None
    for section, key, value, default, changed, meaning in rows:
        if section != heading:
            lines.append(f"[{section}]")
            heading = section
        lines.append(f"  {key:<{key_width}} {'*' if changed else ' '} {value:<{value_width}}   "
                     f"{default:<{default_width}}   {meaning}")
    return "\n".join(lines)

def scaled(config: dict) -> dict:
    """Apply steps_scale to the step counts (learning-rate cool-downs included, so they keep their
    share of the run) and the trajectory count (a new dict)."""
    scale = float(config["steps_scale"])
    if scale == 1.0:
        return copy.deepcopy(config)
    result = copy.deepcopy(config)
    for section in ("teacher", "hkd", "classifier"):
        if result[section].get("steps"):
            result[section]["steps"] = max(1, math.ceil(result[section]["steps"] * scale))
        if result[section].get("lr_cooldown_steps"):
            result[section]["lr_cooldown_steps"] = math.ceil(result[section]["lr_cooldown_steps"] * scale)
    result["trajectories"]["count"] = max(1, math.ceil(result["trajectories"]["count"] * scale))
    return result


def estimated_cpu_minutes(config: dict, native_bfloat16: bool, stages=None) -> float:
    """Wall minutes `config` takes on 2 CPU cores, from DEFAULT_CPU_BUDGET's measured rates: bf16 ones
    where the CPU has native bfloat16, float32 ones elsewhere; classifier and evaluation as measured
    for default-cpu. `config` as run: pass scaled(config) when steps_scale is not 1 (the CLI's config
    already is; scaling twice would square the scale). The state term (hkd.state_weight > 0) costs the HKD
    stage its measured factor, state_term_hkd_cost. stages: None for the whole pipeline, else some
    of ("teacher", "trajectories", "hkd") alone. An estimate for the `tiny` model at a measured width
    only (cost_by_model_channels: 24 or 48 channels); other models raise PresetError."""
    from ..model.config import ConfigError, resolve_config
    try:
        model = resolve_config(config["model"])
    except ConfigError as error:
        raise PresetError(f"no CPU estimate: {error}") from None
    channels = model["unet"]["model_channels"]
    costs = DEFAULT_CPU_BUDGET["cost_by_model_channels"].get(channels)
    tiny = resolve_config({"preset": "tiny", "unet": {"model_channels": channels}})["unet"]
    shape = ("img_resolution", "channel_mult", "num_blocks", "attn_resolutions")  # what sets the cost
    if costs is None or any(model["unet"][key] != tiny[key] for key in shape):
        raise PresetError(f"no CPU estimate for this model (measured: the tiny U-Net at "
                          f"{sorted(DEFAULT_CPU_BUDGET['cost_by_model_channels'])} channels)")
    rates = DEFAULT_CPU_BUDGET["throughput_2_cpu_cores_bf16" if native_bfloat16 else "throughput_2_cpu_cores_float32"]
    seconds = {stage: value * costs[stage] for stage, value in _stage_seconds(config, rates).items()}
    if float(config["hkd"].get("state_weight", 0.0)) > 0:  # one more teacher forward and decoder batch
        seconds["hkd"] *= DEFAULT_CPU_BUDGET["state_term_hkd_cost"]
    if stages is not None:
        unknown = sorted(set(stages) - set(seconds))
        if unknown:
            raise PresetError(f"no CPU estimate for stage(s) {unknown}; known: {sorted(seconds)}")
        return sum(seconds[stage] for stage in stages) / 60.0
    fixed = 60.0 * DEFAULT_CPU_BUDGET["measured_minutes_2_cpu_cores_bf16"]["classifier_and_evaluation"]
    return (sum(seconds.values()) + fixed) / 60.0


def _stage_seconds(config: dict, rates: dict) -> dict:
    """Seconds per stage of `config` as given (its steps_scale is not applied here) at measured rates."""
    return {
        "teacher": config["teacher"]["steps"] * config["teacher"]["batch_size"] / rates["teacher_images_per_second"],
        "trajectories": config["trajectories"]["count"] / rates["trajectories_per_second"],
        "hkd": config["hkd"]["steps"] * config["hkd"]["batch_size"] / rates["hkd_samples_per_second"],
    }


def steps_scale_for_budget(config: dict, rates: dict, seconds: float, fixed_seconds: float = 60.0,
                           step: float = 0.25, maximum: float = 16.0) -> tuple[float, dict]:
    """The largest steps_scale (a multiple of `step`, at most `maximum`) whose estimated training time
    fits `seconds`, from measured throughput: rates = {"teacher_images_per_second",
    "trajectories_per_second", "hkd_samples_per_second"} (benchmarks/bench_train.py measures them).
    `fixed_seconds` covers what does not scale (data rendering, start-up, classifier, evaluation).
    Returns (scale, estimate) with the estimated seconds per stage at that scale. Raises PresetError
    when even scale `step` does not fit: the budget is too small for this config on this machine."""
    unit = _stage_seconds(config, rates)  # seconds per stage at steps_scale 1
    per_scale = sum(unit.values())
    scale = min(maximum, math.floor((seconds - fixed_seconds) / per_scale / step) * step)
    if scale < step:
        raise PresetError(f"{seconds:.0f} s do not fit steps_scale {step} ({fixed_seconds:.0f} s fixed + "
                          f"{per_scale * step:.0f} s of training at the measured rates)")
    estimate = {name: value * scale for name, value in unit.items()}
    estimate["fixed"] = fixed_seconds
    estimate["total"] = sum(estimate.values())
    return scale, estimate


__all__ = ["PRESETS", "BASE", "MEANINGS", "PresetError", "explain_config", "resolve_training_config", "apply_override",
           "parse_value", "load_config_file", "scaled", "steps_scale_for_budget", "estimated_cpu_minutes"]
