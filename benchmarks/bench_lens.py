"""Time and peak memory of a Koopman lens fit, and what it finds on the shipped teacher.

    python benchmarks/bench_lens.py                        # shipped teacher vs shipped HKD, 64 + 16 seeds
    python benchmarks/bench_lens.py --preset cifar10 --seeds 16 --held-out 0 --no-compare   # memory at cifar10 size
    python benchmarks/bench_lens.py --json lens_bench.json --output lens.nc

Prints: where the time went (trajectories + features vs the generator fits), the process's peak
resident memory (ru_maxrss) before and after the fit, the bytes of the float64 moments; per level the
median one-step fit residual, held-out error and the G = 0 baseline, and the path-from-T error; with
the HKD (default) the 1-D Wasserstein distances between the two spectra and, on the held-out seeds, the
HKD's faithfulness next to the teacher's linearity. --preset builds an *untrained* teacher of that
preset (random weights: its memory and time are representative, its spectrum is not). Run it once,
in a fresh process (the peak RSS is the process's).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import hkdviz  # noqa: E402
from hkdviz.analysis.lens import (collect_moments, compare_spectra, lens_summary,  # noqa: E402
                                  linearity_and_faithfulness)
from hkdviz.teacher import load_teacher  # noqa: E402


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="default", help="shipped name, teacher directory or EDM .pkl")
    parser.add_argument("--preset", default=None, help="instead: an untrained EDMPrecond of this preset (memory)")
    parser.add_argument("--hkd", default="default", help="HKD checkpoint to compare with")
    parser.add_argument("--no-compare", action="store_true", help="skip the HKD comparison and faithfulness")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--time", default=None, help="Koopman time (default: the HKD's, else sigma)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="also write the lens dataset here")
    parser.add_argument("--json", default=None, help="write the measurements here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.preset:
        from hkdviz.teacher.edm import EDMPrecond
        from hkdviz.teacher.teacher import Teacher
        torch.manual_seed(0)
        teacher = Teacher(EDMPrecond(args.preset).eval().requires_grad_(False))
    else:
        teacher = load_teacher(args.teacher, device="cpu")
    model = None if args.no_compare else hkdviz.load(args.hkd, device="cpu")
    kind = args.time or (model.koopman_time_kind if model is not None else "sigma")
    rss_loaded = peak_rss_mib()
    start = time.perf_counter()
    collection = collect_moments(teacher, seeds=args.seeds,
                                 held_out_seeds=list(range(args.seeds, args.seeds + args.held_out)),
                                 num_steps=args.steps, batch_size=args.batch_size, progress=False)
    collected = time.perf_counter()
    ds = collection.fit(kind, source=teacher, progress=False)
    seconds = time.perf_counter() - start
    ds.attrs.update(collect_seconds=round(collected - start, 3), fit_seconds=round(seconds - (collected - start), 3),
                    moments_bytes=collection.nbytes)
    rss_after = peak_rss_mib()
    summary = lens_summary(ds)
    record = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{args.threads} thread(s)",
        "teacher": args.preset and f"untrained {args.preset}" or args.teacher,
        "seeds": args.seeds, "held_out": args.held_out, "steps": args.steps, "koopman_time": kind,
        "seconds": round(seconds, 1), "collect_seconds": ds.attrs["collect_seconds"],
        "fit_seconds": ds.attrs["fit_seconds"],
        "peak_rss_mib_before_fit": round(rss_loaded, 1), "peak_rss_mib": round(rss_after, 1),
        "moments_mib": round(ds.attrs["moments_bytes"] / 2 ** 20, 1),
        "levels": summary["levels"],
        "path_error_median": [float(np.median(row[1:])) for row in ds["path_error"].values],
        "constant_path_error_median": [float(np.median(row[1:])) for row in ds["constant_path_error"].values],
    }
    print(f"{record['teacher']}: {args.seeds} + {args.held_out} trajectories, {args.steps} steps, Koopman time {kind}")
    print(f"time {seconds:.1f} s (trajectories + features {record['collect_seconds']:.1f} s, fits "
          f"{record['fit_seconds']:.1f} s); peak RSS {rss_after:.0f} MiB ({rss_loaded:.0f} MiB after loading); "
          f"moments {record['moments_mib']:.1f} MiB; {record['machine']}")
    print(f"\n{'level':<16}{'rank':>5}{'fit':>8}{'held out':>10}{'G = 0':>8}{'path':>8}{'path G=0':>10}")
    paths = zip(summary["levels"], record["path_error_median"], record["constant_path_error_median"])
    for row, path, constant in paths:
        print(f"{row['name']:<16}{row['rank']:>5}{row['fit_residual']:>8.3f}{row['held_out_error']:>10.3f}"
              f"{row['constant_residual']:>8.3f}{path:>8.3f}{constant:>10.3f}")
    print("(medians over the grid transitions / grid times after T; relative errors)")

    # The moments do not depend on the Koopman time: refit them in the other two (fits only).
    record["other_times"] = {}
    for other in ("sigma", "log_sigma", "karras"):
        if other == kind:
            continue
        begin = time.perf_counter()
        refit = collection.fit(other, source=teacher, progress=False)
        other_summary = lens_summary(refit)
        record["other_times"][other] = {
            "fit_seconds": round(time.perf_counter() - begin, 1),
            "fit_residual": [row["fit_residual"] for row in other_summary["levels"]],
            "held_out_error": [row["held_out_error"] for row in other_summary["levels"]],
            "path_error_median": [float(np.median(row[1:])) for row in refit["path_error"].values],
        }
        print(f"refit in Koopman time {other}: fit " + " ".join(f"{value:.3f}" for value in
              record["other_times"][other]["fit_residual"]) + "; path " + " ".join(
              f"{value:.3f}" for value in record["other_times"][other]["path_error_median"]))

    if model is not None:
        comparison = compare_spectra(ds, hkdviz.spectrum(model, progress=False))
        faith = hkdviz.faithfulness(model, teacher, seeds=list(range(args.seeds, args.seeds + args.held_out)),
                                    num_steps=args.steps, progress=False)
        table = linearity_and_faithfulness(ds, faith).isel(time=slice(1, None))
        record["comparison"] = []
        print(f"\nvs HKD {args.hkd} (per unit of Koopman time {kind}); faithfulness on the {args.held_out} "
              "held-out seeds")
        print(f"{'level':<16}{'W1 alpha':>9}{'W1 |beta|':>10}{'alpha lens':>11}{'alpha HKD':>10}"
              f"{'|beta| lens':>12}{'|beta| HKD':>11}{'teacher path':>13}{'HKD path':>10}")
        for index, name in enumerate(comparison["level_name"].values):
            level = int(comparison["level"].values[index])
            row = {
                "level": str(name),
                "wasserstein_alpha": float(comparison["wasserstein_alpha"].values[index]),
                "wasserstein_abs_beta": float(comparison["wasserstein_abs_beta"].values[index]),
                "lens_alpha_median": float(comparison["lens_alpha_median"].values[index]),
                "hkd_alpha_median": float(comparison["hkd_alpha_median"].values[index]),
                "lens_abs_beta_median": float(comparison["lens_abs_beta_median"].values[index]),
                "hkd_abs_beta_median": float(comparison["hkd_abs_beta_median"].values[index]),
                "teacher_path_error_median": float(table["teacher_path_error"].isel(level=level).median()),
                "hkd_koopman_error_median": float(table["hkd_koopman_error"].isel(level=level).median()),
            }
            record["comparison"].append(row)
            print(f"{row['level']:<16}{row['wasserstein_alpha']:>9.4f}{row['wasserstein_abs_beta']:>10.4f}"
                  f"{row['lens_alpha_median']:>11.4f}{row['hkd_alpha_median']:>10.4f}"
                  f"{row['lens_abs_beta_median']:>12.4f}{row['hkd_abs_beta_median']:>11.4f}"
                  f"{row['teacher_path_error_median']:>13.3f}{row['hkd_koopman_error_median']:>10.3f}")
        beats = float((table["teacher_path_error"] < table["hkd_koopman_error"]).mean())
        record["teacher_path_beats_hkd_path"] = beats
        print(f"teacher's linear path closer to its features than HKD's Koopman path to its latents in "
              f"{beats:.0%} of (level, grid time) pairs after T")
    if args.output:
        from hkdviz.analysis.storage import save_dataset
        save_dataset(ds, args.output)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
