"""Where does a teacher-initialised HKD start? The one-step map before any training, against the teacher.

    python benchmarks/probe_initialisation.py                       # the shipped teacher, 64 seeds
    python benchmarks/probe_initialisation.py --teacher DIR --seeds 128 --decoder-sigmas 0.002,1,80

HKD initialises its encoder and decoder from the teacher's U-Net and its generators at zero. For each
output head ("raw": the decoder's head is the image; "consistency": c_skip x_t + c_out F) and each fixed
decoder noise level, this prints, per grid time of the teacher's PF-ODE (EDM's Karras grid), the RMS of
the initial one-step map f_init(x_t, t) to the teacher's own denoiser D(x_t, t) and to the trajectory's
clean end x_eps, next to D(x_t, t)'s own RMS to x_eps. With the consistency head and decoder_sigma = T,
f_init(x_T, T) is D(x_T, T) (the first column is ~0 there).

Nothing is timed; 2 CPU cores take ~1 minute at the defaults.
"""
from __future__ import annotations

import argparse
import copy

import torch

from hkdviz.model.hkd import HKDModel
from hkdviz.atomic import write_json
from hkdviz.teacher.edm import init_hkd_from_teacher
from hkdviz.evaluation.evaluate import EVALUATION_FIRST_SEED
from hkdviz.teacher.teacher import load_teacher


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).flatten(1).square().mean(dim=1).sqrt().mean())


@torch.no_grad()
def probe(teacher, variants, seeds, num_steps: int = 18, batch_size: int = 32) -> dict:
    """variants: [(output, decoder_sigma)]. Returns {"sigmas", "teacher": [...], "variants": {label: {...}}}."""
    sigmas, states = teacher.trajectory(seeds, num_steps, batch_size=batch_size, progress=False)
    target = states[:, -1]
    result = {"sigmas": sigmas.tolist(), "teacher_to_end": [], "variants": {}}
    denoised = []
    for index, sigma in enumerate(sigmas.tolist()):
        denoised.append(torch.cat([teacher(states[i:i + batch_size, index], sigma)
                                   for i in range(0, len(seeds), batch_size)]).float())
        result["teacher_to_end"].append(_rms(denoised[-1], target))
    for output, decoder_sigma in variants:
        config = copy.deepcopy(teacher.config)
        config["output"] = output
        config["diffusion"]["decoder_sigma"] = float(decoder_sigma)
        model = init_hkd_from_teacher(HKDModel(config), teacher).eval()
        to_teacher, to_end = [], []
        for index, sigma in enumerate(sigmas.tolist()):
            prediction = torch.cat([model(states[i:i + batch_size, index], sigma)
                                    for i in range(0, len(seeds), batch_size)]).float()
            to_teacher.append(_rms(prediction, denoised[index]))
            to_end.append(_rms(prediction, target))
        result["variants"][f"{output}, decoder sigma {decoder_sigma:g}"] = {"to_teacher": to_teacher, "to_end": to_end}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="default", help="teacher checkpoint (shipped name or directory)")
    parser.add_argument("--seeds", type=int, default=64, help="number of unseen seeds (from 1,000,000,000)")
    parser.add_argument("--steps", type=int, default=18, help="teacher Heun steps (EDM: 18)")
    parser.add_argument("--decoder-sigmas", default="0.002,0.5,1,10,80",
                        help="comma-separated decoder noise levels tried with the consistency head")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    teacher = load_teacher(args.teacher, device="cpu")
    sigmas = [float(value) for value in args.decoder_sigmas.split(",")]
    variants = [("raw", teacher.config["diffusion"]["decoder_sigma"])] + [("consistency", s) for s in sigmas]
    seeds = range(EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + args.seeds)
    result = probe(teacher, variants, list(seeds), args.steps)
    grid = result["sigmas"]
    shown = [0, 3, 6, 9, 12, 15, len(grid) - 1]
    header = "".join(f"{grid[i]:>9.3g}" for i in shown)
    print(f"RMS of the initial one-step map, {args.seeds} seeds, at sigma ->{header}    mean")
    print(f"{'teacher D(x_t, t) to x_eps':<44}" + "".join(f"{result['teacher_to_end'][i]:9.3f}" for i in shown)
          + f"{sum(result['teacher_to_end']) / len(grid):8.3f}")
    for label, rows in result["variants"].items():
        for key, name in (("to_teacher", "to D(x_t, t)"), ("to_end", "to x_eps")):
            values = rows[key]
            print(f"{label + ' ' + name:<44}" + "".join(f"{values[i]:9.3f}" for i in shown)
                  + f"{sum(values) / len(values):8.3f}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
