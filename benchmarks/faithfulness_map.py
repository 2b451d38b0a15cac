"""Where the Koopman path follows the encoder: per level and grid time, the path's relative error next to
the constant latent's, from `hkdviz.analysis.faithfulness`, averaged over unseen seeds.

    python benchmarks/faithfulness_map.py CKPT [CKPT ...] [--seeds 8] [--teacher default]

Each cell is "path/constant"; a star marks the cells where the path is closer to the encoder's own latents
of the teacher's states than the latent kept at its value at T. The share of starred cells is what the
faithfulness summary calls beats-constant; this map shows by how much each one wins or loses.
"""
from __future__ import annotations

import argparse

import torch

from hkdviz.analysis.faithfulness import faithfulness
from hkdviz.model.hkd import load
from hkdviz.teacher.teacher import load_teacher

FIRST_SEED = 1_000_000_000  # the screens' unseen seeds


def format_map(dataset) -> str:
    path = dataset["koopman_error"].mean("sample").values
    constant = dataset["constant_error"].mean("sample").values
    sigmas = dataset["time"].values  # sigma, T first
    lines = ["sigma    " + " ".join(f"level {level}".rjust(11) for level in range(path.shape[1]))]
    for row, sigma in enumerate(sigmas):
        cells = [f"{path[row, level]:5.2f}/{constant[row, level]:4.2f}{'*' if path[row, level] < constant[row, level] else ' '}"
                 for level in range(path.shape[1])]
        lines.append(f"{float(sigma):8.3f} " + " ".join(cells))
    return "\n".join(lines)


def format_states(dataset) -> str:
    """Per grid time, how far decoded latents are from the teacher's D(x_t, t) (RMS, mean over samples)."""
    names = ("readout_error", "path_state_error", "constant_state_error", "denoiser_error")
    titles = ("own latent", "Koopman path", "constant", "D to x_eps")
    means = [dataset[name].mean("sample").values for name in names]
    lines = ["decoded latent vs the teacher's D(x_t, t), RMS", "sigma    " + " ".join(f"{title:>13}" for title in titles)]
    for row, sigma in enumerate(dataset["time"].values):
        lines.append(f"{float(sigma):8.3f} " + " ".join(f"{values[row]:13.3f}" for values in means))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="HKD checkpoints (shipped name or directory)")
    parser.add_argument("--seeds", type=int, default=8, help="unseen seeds, from 1,000,000,000 (default 8)")
    parser.add_argument("--teacher", default="default", help="the teacher whose PF-ODE is followed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher, device="cpu")
    for checkpoint in args.checkpoints:
        model = load(checkpoint, device="cpu")
        dataset = faithfulness(model, teacher, list(range(FIRST_SEED, FIRST_SEED + args.seeds)), progress=False)
        print(f"{checkpoint} ({args.seeds} seeds; path/constant relative error, * = path closer)")
        print(format_map(dataset))
        if "path_state_error" in dataset:
            print(format_states(dataset), flush=True)


if __name__ == "__main__":
    main()
