"""hkdviz.train: teacher trajectories, the HKD loss, the training loops (teacher, HKD), distributed runs,
presets and `hkdviz train`. Data sets live in hkdviz.data, the teacher in hkdviz.teacher, the classifier
and `hkdviz eval` in hkdviz.evaluation.

Nothing heavy is imported here; names resolve on first use:

    from hkdviz.train import train_teacher, generate_trajectories, train_hkd, resolve_training_config

`run(stage, preset=..., out=..., overrides=...)` is what `hkdviz train STAGE` runs:

    from hkdviz.train import run
    export = run("all", preset="smoke", out="runs/smoke", overrides=["hkd.steps=4"])
"""
from ..exports import lazy_exports

_LAZY = {
    "generate_trajectories": "trajectories", "open_trajectories": "trajectories",
    "TrajectoryDataset": "trajectories",
    "HKDLoss": "loss", "HKDDistance": "loss", "MSEDistance": "loss", "PseudoHuberDistance": "loss",
    "LPIPSDistance": "loss",
    "train_teacher": "loop", "train_hkd": "loop",
    "resolve_training_config": "presets", "PRESETS": "presets",
    "init_distributed": "distributed",
    "run": "cli", "STAGES": "cli",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
