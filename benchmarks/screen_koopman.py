"""Screen HKD recipes at a small budget: train each variant on the same trajectories, score it on unseen seeds.

    python benchmarks/screen_koopman.py --out runs/screen                          # every variant, 2 seeds
    python benchmarks/screen_koopman.py --out runs/screen --variants raw,consistency --seeds 0 --steps 200

The rule that decides a screen is written down (docs/results.md) before it runs. This script only
measures. For each variant (a name for a set of `--set`-style overrides of the `hkd` section, see
VARIANTS) and each training seed it trains HKD from the teacher on one shared trajectory set (the
preset's HKD settings, `--steps` steps of `--batch` samples), then scores the EMA checkpoint on
`--eval-seeds` unseen seeds (from 1,000,000,000) against the teacher's 35-NFE samples of those seeds:

- rmse: per-seed pixel RMS of the one-step sample to the teacher's sample (both clamped), mean;
- the faithfulness summary on `--faith-seeds` of them (hkdviz.analysis.faithfulness): the fraction of
  (level, grid time) pairs where the Koopman path beats the constant latent, the median path error near
  sigma 2, the one-step map's consistency error, and the Koopman contribution (RMS with A = 0 / RMS - 1).

Everything resumes: trajectories and finished runs are kept under --out, and the JSON record
(--out/screen.json) is rewritten after every run. Per-seed RMS values are stored so that two variants can
be paired seed by seed. Nothing is timed except the training stage's own log.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

# name -> overrides of the training config (strings as `hkdviz train --set` takes them)
VARIANTS = {
    "raw": ["hkd.output=raw"],                                                    # the shipped recipe
    "consistency": ["hkd.output=consistency", "hkd.decoder_sigma=sigma_max"],
    "consistency_log": ["hkd.output=consistency", "hkd.decoder_sigma=sigma_max", "hkd.koopman.time=log_sigma"],
    "consistency_log_latent": ["hkd.output=consistency", "hkd.decoder_sigma=sigma_max", "hkd.koopman.time=log_sigma",
                               "hkd.latent_weight=0.1"],
    "consistency_log_latent_lr": ["hkd.output=consistency", "hkd.decoder_sigma=sigma_max",
                                  "hkd.koopman.time=log_sigma", "hkd.latent_weight=0.1", "hkd.generator_lr_scale=10"],
    "consistency_karras": ["hkd.output=consistency", "hkd.decoder_sigma=sigma_max", "hkd.koopman.time=karras"],
}
# The paper's Table 3, each row with the screen's recipe (consistency_log is its row "full").
RECIPE = VARIANTS["consistency_log"]
VARIANTS.update({
    "table3_none": [*RECIPE, "hkd.koopman.levels=none", "hkd.t_consistency=false"],  # direct distillation
    "table3_bottleneck": [*RECIPE, "hkd.koopman.levels=bottleneck"],                   # non-hierarchical
    "table3_no_tcons": [*RECIPE, "hkd.t_consistency=false"],
})
# Issue #19 item 4: the generator and schedule options, each on the screen's recipe.
TEACHER_FEATURES = '{"name": "teacher_features", "sigma": 0.3}'
VARIANTS.update({
    "consistency_log_shared": [*RECIPE, "hkd.koopman.operator=block_shared"],   # one generator per channel pair
    "consistency_log_lr10": [*RECIPE, "hkd.generator_lr_scale=10"],
    "consistency_log_logtime": [*RECIPE, "hkd.time_sampling=log_sigma"],        # times by width in ln sigma
    "consistency_log_teacherfeat": [*RECIPE, f"hkd.distance={TEACHER_FEATURES}"],  # the teacher's features
    "consistency_log_recon4": [*RECIPE, "hkd.recon_weight=4"],  # the x_T term weighs as much as the 4 others
})
# Screen 5: the latent path term at weights that make it a sizeable part of the loss (0.1 was ~1% of it).
VARIANTS.update({f"consistency_log_latent{weight}": [*RECIPE, f"hkd.latent_weight={weight}"] for weight in (1, 10)})
# Screen 6: the state term (the unevolved latents read out against the teacher's D(x_t, t)), alone and with
# the latent path term at weight 1.
VARIANTS.update({"consistency_log_state1": [*RECIPE, "hkd.state_weight=1"],
                 "consistency_log_state1_latent1": [*RECIPE, "hkd.state_weight=1", "hkd.latent_weight=1"]})
EVALUATION_FIRST_SEED = 1_000_000_000
KID_FIRST_SEED = EVALUATION_FIRST_SEED + 100_000  # disjoint from the RMS seeds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="screen directory (trajectories, runs, screen.json)")
    parser.add_argument("--teacher", default="default", help="teacher checkpoint (shipped name or directory)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    parser.add_argument("--trajectories", type=int, default=256, help="trajectories (training seeds 0..N-1)")
    parser.add_argument("--steps", type=int, default=120, help="HKD steps per run")
    parser.add_argument("--batch", type=int, default=32, help="HKD batch size")
    parser.add_argument("--eval-seeds", type=int, default=64, help="unseen seeds scored by RMS")
    parser.add_argument("--faith-seeds", type=int, default=8, help="unseen seeds for the faithfulness summary")
    parser.add_argument("--kid-blocks", type=int, default=8, help="blocks of unseen seeds for local KID (0: none)")
    parser.add_argument("--kid-block-size", type=int, default=512, help="seeds per local-KID block")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra override for every run")
    parser.add_argument("--compare-seeds", metavar="S,S", help="with --compare: only these training seeds")
    parser.add_argument("--compare", metavar="A,B", help="print B - A from --out's record (no training) and exit")
    parser.add_argument("--compare-runs", metavar="A,B",
                        help="print B - A with training runs as the unit (Welch's t-test over runs) and exit")
    args = parser.parse_args(argv)
    if args.compare_runs:
        first, second = args.compare_runs.split(",")
        record = json.loads((Path(args.out) / "screen.json").read_text())
        print(json.dumps(compare_runs(record, first, second), indent=1))
        return
    if args.compare:
        first, second = args.compare.split(",")
        record = json.loads((Path(args.out) / "screen.json").read_text())
        only = None if args.compare_seeds is None else args.compare_seeds.split(",")
        print(json.dumps(compare(record, first, second, only), indent=1))
        return

    from hkdviz.analysis.faithfulness import faithfulness, summarize_faithfulness
    from hkdviz import load
    from hkdviz.atomic import write_json
    from hkdviz.checkpoint import resolve_checkpoint
    from hkdviz.evaluation.evaluate import per_image_rmse
    from hkdviz.train.common import cpu_has_native_bfloat16
    from hkdviz.train.loop import HKDLoop
    from hkdviz.train.presets import resolve_training_config
    from hkdviz.teacher.teacher import load_teacher
    from hkdviz.train.trajectories import generate_trajectories

    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "screen.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"runs": {}}
    teacher = load_teacher(args.teacher, device="cpu")
    teacher_directory = resolve_checkpoint(args.teacher, kind="teacher")
    autocast = torch.bfloat16 if cpu_has_native_bfloat16() else None
    trajectories = out / "trajectories"
    generate_trajectories(teacher, trajectories, count=args.trajectories, num_steps=18, chunk_size=256, batch_size=128,
                          storage_dtype="float16", device="cpu", progress=True, autocast_dtype=autocast)
    eval_seeds = list(range(EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + args.eval_seeds))
    targets_path = out / "targets.pt"
    if targets_path.exists():
        targets = torch.load(targets_path)
    else:
        targets = teacher.sample(eval_seeds, 18, batch_size=64, progress=False).cpu()
        torch.save(targets, targets_path)
    record["setup"] = {"teacher": str(args.teacher), "trajectories": args.trajectories, "steps": args.steps,
                       "batch": args.batch, "eval_seeds": [eval_seeds[0], eval_seeds[-1]], "extra": args.extra}
    kid_scorer = KIDBlocks(teacher, args.kid_blocks, args.kid_block_size) if args.kid_blocks else None
    if kid_scorer is not None:
        record["setup"]["kid"] = kid_scorer.describe()
        # Runs finished before the screen measured local KID get it now, from their saved checkpoints.
        for key, run in record["runs"].items():
            if "kid_x1e3_per_block" not in run:
                model = load(out / "runs" / run["variant"] / f"seed{run['seed']}" / "checkpoint", device="cpu")
                run["kid_x1e3_per_block"] = kid_scorer(model)
                write_json(record_path, record)
                print(f"{key:<36} local KID x1e3 {np.mean(run['kid_x1e3_per_block']):.1f} (rescored)", flush=True)

    # Seed-major: a screen stopped early still holds every variant at the first seed.
    for seed in [int(value) for value in args.seeds.split(",")]:
        for name in args.variants.split(","):
            key = f"{name}/seed{seed}"
            if key in record["runs"]:
                continue
            overrides = ["device=cpu", f"seed={seed}", f"hkd.steps={args.steps}", f"hkd.batch_size={args.batch}",
                         f"hkd.lr_cooldown_steps={args.steps // 5}", "hkd.log_every=25", "hkd.resume_every=50",
                         "hkd.ema_halflife_images=2000", *VARIANTS[name], *args.extra]
            config = resolve_training_config("default", overrides=overrides)
            started = time.time()
            checkpoint = HKDLoop(config, out / "runs" / name / f"seed{seed}", teacher=str(teacher_directory),
                                 trajectories=str(trajectories), progress=False).train()
            train_seconds = time.time() - started
            model = load(checkpoint, device="cpu")
            with torch.no_grad():
                rms = per_image_rmse(model.sample(eval_seeds, batch_size=64), targets).numpy()
            summary = summarize_faithfulness(faithfulness(model, teacher, eval_seeds[:args.faith_seeds], progress=False))
            record["runs"][key] = {"variant": name, "seed": seed, "overrides": VARIANTS[name], "rmse": float(rms.mean()),
                                   "rmse_per_seed": rms.tolist(), "faithfulness": summary,
                                   "train_seconds": round(train_seconds, 1)}
            if kid_scorer is not None:
                record["runs"][key]["kid_x1e3_per_block"] = kid_scorer(model)
            write_json(record_path, record)
            kid_text = (f"  local KID x1e3 {np.mean(record['runs'][key]['kid_x1e3_per_block']):.1f}"
                        if kid_scorer is not None else "")
            print(f"{key:<36} rmse {rms.mean():.4f}  beats-constant {summary['koopman_beats_constant']:.2f}  "
                  f"median@{summary['reference_time']:.2g} {summary['koopman_error_median_at']:.2f}  "
                  f"contribution {summary['koopman_contribution']:+.3f}{kid_text}  ({train_seconds:.0f} s)", flush=True)


class KIDBlocks:
    """Local KID (x1e3) of a model's one-step samples, per block of unseen seeds, against one held-out
    reference of the teacher's data set, on the shipped classifier's features. Block b holds the seeds
    KID_FIRST_SEED + b * block_size ...; every run is scored on the same blocks, so runs pair block by block."""

    def __init__(self, teacher, blocks: int, block_size: int, classifier: str = "default"):
        from hkdviz.evaluation.classifier import load_classifier
        from hkdviz.evaluation.evaluate import held_out_reference
        from hkdviz.evaluation.quality import QualityReference

        self.blocks, self.block_size = int(blocks), int(block_size)
        spec = (getattr(teacher, "meta", None) or {}).get("dataset") or "shapes"
        images, self.reference = held_out_reference(spec, 1000, resolution=teacher.image_shape[-1], progress=False)
        self.quality = QualityReference(images, load_classifier(classifier, device="cpu"))

    def describe(self) -> dict:
        return {"blocks": self.blocks, "block_size": self.block_size, "first_seed": KID_FIRST_SEED,
                "reference": self.reference}

    def __call__(self, model) -> list[float]:
        values = []
        with torch.no_grad():
            for block in range(self.blocks):
                first = KID_FIRST_SEED + block * self.block_size
                images = model.sample(range(first, first + self.block_size), batch_size=128, progress=False)
                values.append(1e3 * self.quality.measure(images.float().cpu())["kid"])
        return values


def compare(record: dict, first: str, second: str, only_seeds=None) -> dict:
    """second - first on the training seeds both variants finished (only_seeds: a subset): mean RMS per
    variant, the per-eval-seed paired difference (each eval seed's RMS averaged over the training seeds)
    with its two-sided paired t-test, the same per local-KID block, and each run's faithfulness summary."""
    from scipy import stats

    from hkdviz.evaluation.statistics import standard_error

    def runs(name):
        return {key.split("/seed")[1]: run for key, run in record["runs"].items() if run["variant"] == name}

    a, b = runs(first), runs(second)
    seeds = sorted(set(a) & set(b) & (set(a) if only_seeds is None else {str(seed) for seed in only_seeds}))
    if not seeds:
        raise SystemExit(f"no training seed finished for both {first} and {second}")
    rms_a = np.mean([a[seed]["rmse_per_seed"] for seed in seeds], axis=0)
    rms_b = np.mean([b[seed]["rmse_per_seed"] for seed in seeds], axis=0)
    difference = rms_b - rms_a
    test = stats.ttest_rel(rms_b, rms_a)
    return {"training_seeds": seeds, "rmse": {first: float(rms_a.mean()), second: float(rms_b.mean())},
            "difference": float(difference.mean()), "standard_error": standard_error(difference),
            "lower_in": int((difference < 0).sum()), "eval_seeds": len(difference), "t": float(test.statistic),
            "p": float(test.pvalue),
            "kid_x1e3": _paired_blocks(a, b, seeds),
            "beats_constant": {name: [runs(name)[seed]["faithfulness"]["koopman_beats_constant"] for seed in seeds]
                               for name in (first, second)},
            "koopman_contribution": {name: [runs(name)[seed]["faithfulness"]["koopman_contribution"] for seed in seeds]
                                     for name in (first, second)}}


def _paired_blocks(a: dict, b: dict, seeds: list) -> dict | None:
    """Local KID x1e3 of both variants per block (averaged over the training seeds) and the paired
    difference second - first: mean, standard error over blocks, blocks where second is lower."""
    from hkdviz.evaluation.statistics import paired_summary

    if not all("kid_x1e3_per_block" in run[seed] for run in (a, b) for seed in seeds):
        return None
    kid_a = np.mean([a[seed]["kid_x1e3_per_block"] for seed in seeds], axis=0)
    kid_b = np.mean([b[seed]["kid_x1e3_per_block"] for seed in seeds], axis=0)
    from scipy import stats

    difference = kid_b - kid_a
    paired = paired_summary(difference, lower_key="second_lower_in")
    return {"first": float(kid_a.mean()), "second": float(kid_b.mean()), "difference": paired.pop("mean"), **paired,
            "p": float(stats.ttest_1samp(difference, 0.0).pvalue)}


def run_measures(run: dict) -> dict:
    """One training run's scores as single numbers: mean RMS over the eval seeds, mean local KID over the
    blocks (when scored), and the faithfulness summary's share, median path error and contribution."""
    faith = run["faithfulness"]
    measures = {"rmse": float(np.mean(run["rmse_per_seed"])),
                "beats_constant": float(faith["koopman_beats_constant"]),
                "median_path_error": float(faith["koopman_error_median_at"]),
                "koopman_contribution": float(faith["koopman_contribution"])}
    if "kid_x1e3_per_block" in run:
        measures["kid_x1e3"] = float(np.mean(run["kid_x1e3_per_block"]))
    return measures


def compare_runs(record: dict, first: str, second: str) -> dict:
    """second - first with training runs as the unit: for each measure of `run_measures`, every run's value
    per variant, the difference of the means, its standard error and Welch's two-sided t-test over runs
    (which, unlike the block test of `compare`, sees how much a result moves with the training seed)."""
    from scipy import stats

    from hkdviz.evaluation.statistics import standard_error

    def runs(name):
        found = [run_measures(run) for key, run in sorted(record["runs"].items()) if run["variant"] == name]
        if len(found) < 2:
            raise SystemExit(f"{name}: {len(found)} finished run(s); a comparison over runs needs at least two")
        return found

    a, b = runs(first), runs(second)
    result = {"runs": {first: len(a), second: len(b)}}
    for measure in a[0]:
        if not all(measure in run for run in a + b):
            continue
        values_a = np.array([run[measure] for run in a])
        values_b = np.array([run[measure] for run in b])
        error = float(np.hypot(standard_error(values_a), standard_error(values_b)))  # of the difference of means
        # Runs that agree exactly (a share of 0 everywhere) have no spread to test against.
        test = stats.ttest_ind(values_b, values_a, equal_var=False) if error > 0 else None
        result[measure] = {first: values_a.tolist(), second: values_b.tolist(),
                           "difference": float(values_b.mean() - values_a.mean()), "standard_error": error,
                           "t": float("nan") if test is None else float(test.statistic),
                           "p": float("nan") if test is None else float(test.pvalue)}
    return result


if __name__ == "__main__":
    main()
