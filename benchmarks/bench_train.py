"""Training pipeline throughput, measured side by side in one run (CPU, or CUDA when present).

    python benchmarks/bench_train.py [--device auto] [--model tiny|cifar10] [--batch 128] [--json out.json]
    python benchmarks/bench_train.py --device cpu --compare-cpu-bf16     # float32 vs bf16, side by side
    python benchmarks/bench_train.py --compare-state-term                # hkd.state_weight 0 vs 1, side by side

Prints, for the same network and settings as the loops (bf16 autocast + channels_last on CUDA; bf16 on
the CPU where the config's `cpu_autocast` asks for it; `--set KEY=VALUE` overrides the default preset):
- teacher training: images/s of TeacherLoop steps (EDMLoss, Adam, EMA, data);
- trajectory generation: images/s and NFE/s of generate_trajectories (Heun, 18 steps = 35 NFE,
  chunks written to disk) against 35 bare teacher forward passes per image (target <= 1.2x);
- HKD training: samples/s of HKDLoop steps (5 inputs per sample: 4 times + T) against five bare
  encoder+decoder forward/backward passes per sample (target <= 1.3x).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from hkdviz.atomic import write_text
from hkdviz.checkpoint import resolve_device
from hkdviz.model.config import resolve_config
from hkdviz.model.hkd import HKDModel
from hkdviz.train.common import resolve_autocast, synchronize
from hkdviz.train.distributed import DistributedContext
from hkdviz.teacher.edm import EDMPrecond
from hkdviz.train.loop import HKDLoop, TeacherLoop
from hkdviz.train.presets import resolve_training_config
from hkdviz.train.trajectories import generate_trajectories


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# On a shared CPU, wall time measures the neighbours too: CPU mode times with process CPU time
# divided by the thread count (exact on an idle machine, robust on a busy one). Set by main().
CLOCK = {"cpu_time": False}


def now() -> float:
    if CLOCK["cpu_time"]:
        return time.process_time() / torch.get_num_threads()
    return time.perf_counter()


def timed(function, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = now()
        function()
        synchronize(device)
        times.append(now() - start)
    times.sort()
    return times[len(times) // 2]


def bench_teacher(config, work: Path, context, repeats: int) -> dict:
    loop = TeacherLoop(config, work / "teacher", progress=False, context=context, echo=False)
    loop.setup()
    seconds = timed(loop.train_step, context.device, repeats)
    return {"images_per_second": loop.batch_size / seconds, "seconds_per_step": seconds}, loop


def bench_trajectories(teacher_loop, work: Path, context, count: int, batch: int, repeats: int,
                       autocast_dtype: torch.dtype | None = None) -> dict:
    device = context.device
    teacher = teacher_loop.ema.module.eval()
    checkpoint = work / "teacher-checkpoint"
    teacher.save(checkpoint)
    generate_trajectories(str(checkpoint), work / "warmup", count=batch, num_steps=2, chunk_size=batch, batch_size=batch,
                          context=context, progress=False, autocast_dtype=autocast_dtype)
    start = now()
    stats = generate_trajectories(str(checkpoint), work / "trajectories", count=count, num_steps=18,
                                  chunk_size=count, batch_size=batch, storage_dtype="float16", context=context,
                                  progress=False, autocast_dtype=autocast_dtype)
    stats["images_per_second"] = count / (now() - start)  # end to end: solver, transfers, netCDF writing
    stats["nfe_per_second"] = stats["images_per_second"] * stats["nfe_per_image"]
    x = torch.randn(batch, *teacher.image_shape, device=device) * 10
    sigma = torch.full((batch,), 10.0, device=device)

    @torch.no_grad()
    def bare():
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            for _ in range(stats["nfe_per_image"]):
                teacher(x, sigma)

    bare_seconds = timed(bare, device, repeats) / batch
    generated = 1 / stats["images_per_second"]
    return {"images_per_second": stats["images_per_second"], "nfe_per_second": stats["nfe_per_second"],
            "bare_images_per_second": 1 / bare_seconds, "ratio": generated / bare_seconds}, checkpoint


def bench_hkd(config, work: Path, context, checkpoint: Path, repeats: int) -> dict:
    device = context.device
    loop = HKDLoop(config, work / "hkd", teacher=str(checkpoint), trajectories=str(work / "trajectories"),
                   progress=False, context=context, echo=False)
    loop.setup()
    step_seconds = timed(loop.train_step, device, repeats)
    batch = loop.batch_size
    terms = loop.loss.terms_per_sample
    # Baseline: the same network, forward + backward on `terms` x batch images, no data, loss or optimizer.
    model = HKDModel(loop.model.config).to(device).train()
    if loop.channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.randn(terms * batch, *model.image_shape, device=device)
    sigma = torch.rand(terms * batch, device=device) * 10 + 0.01

    def bare():
        with torch.autocast(device.type, dtype=loop.autocast_dtype, enabled=loop.autocast_dtype is not None):
            latents = model.encode(x, sigma)
            output = model.decode(latents)
        output.float().square().mean().backward()

    bare_seconds = timed(bare, device, repeats)
    return {"samples_per_second": batch / step_seconds, "images_per_second": terms * batch / step_seconds,
            "bare_samples_per_second": batch / bare_seconds, "ratio": step_seconds / bare_seconds}


def precision_summary(config: dict, device: torch.device) -> str:
    dtypes = {section: resolve_autocast(section, config[section], device) for section in ("teacher", "trajectories", "hkd")}
    return ", ".join(f"{section} {str(dtype or torch.float32).replace('torch.', '')}" for section, dtype in dtypes.items())


# Side-by-side comparisons: the same measurements under each named set of overrides, in one run.
COMPARISONS = {
    # every network in float32, then in bf16 autocast (CPU only)
    "cpu_bf16": {"float32": ["teacher.cpu_autocast=false", "trajectories.cpu_autocast=false", "hkd.cpu_autocast=false"],
                 "bfloat16": ["teacher.cpu_autocast=true", "trajectories.autocast=bfloat16",
                              "trajectories.cpu_autocast=true", "hkd.cpu_autocast=true"]},
    # the state term's cost: one more frozen-teacher forward and the readout's decoder outputs per input
    "state_term": {"without": ["hkd.state_weight=0"], "with": ["hkd.state_weight=1"]},
}


def measure(config: dict, context, args) -> dict:
    """Teacher, trajectory and HKD throughput for one config (printed as they come)."""
    device = context.device
    precision = precision_summary(config, device)
    print(f"network precision: {precision}", flush=True)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        teacher, teacher_loop = bench_teacher(config, work, context, args.repeats)
        print(f"teacher training   {teacher['images_per_second']:9.1f} images/s", flush=True)
        count = args.trajectory_count or 2 * args.batch
        trajectories, checkpoint = bench_trajectories(teacher_loop, work, context, count, args.batch, args.repeats,
                                                      resolve_autocast("trajectories", config["trajectories"], device))
        print(f"trajectories       {trajectories['images_per_second']:9.1f} images/s "
              f"({trajectories['nfe_per_second']:.0f} NFE/s) "
              f"vs bare 35 NFE {trajectories['bare_images_per_second']:.1f} images/s", flush=True)
        hkd = bench_hkd(config, work, context, checkpoint, args.repeats)
        print(f"hkd training       {hkd['samples_per_second']:9.1f} samples/s ({hkd['images_per_second']:.0f} images/s) "
              f"vs bare 5 passes {hkd['bare_samples_per_second']:.1f} samples/s", flush=True)
    return {"precision": precision, "teacher": teacher, "trajectories": trajectories, "hkd": hkd}


def print_table(result: dict) -> None:
    teacher, trajectories, hkd = result["teacher"], result["trajectories"], result["hkd"]
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| teacher training, images/s | {teacher['images_per_second']:.1f} | |")
    print(f"| trajectory generation, images/s (NFE/s) | {trajectories['images_per_second']:.1f} "
          f"({trajectories['nfe_per_second']:.0f}) | |")
    print(f"| HKD training, samples/s (5 images each) | {hkd['samples_per_second']:.1f} | |")
    print(f"| trajectory generation / 35 bare teacher forwards | {trajectories['ratio']:.2f}x | <= 1.2x |")
    print(f"| HKD step / 5 bare encoder+decoder fwd+bwd | {hkd['ratio']:.2f}x | <= 1.3x |")


def print_comparison_table(results: dict) -> None:
    """Rates under two named override sets and their ratio (second / first)."""
    rates = [("teacher training, images/s", "teacher", "images_per_second"),
             ("trajectory generation, images/s", "trajectories", "images_per_second"),
             ("HKD training, samples/s", "hkd", "samples_per_second")]
    first, second = results
    print(f"| measure | {first} | {second} | {second} / {first} |")
    print("|---|---|---|---|")
    for label, stage, key in rates:
        one, two = results[first][stage][key], results[second][stage][key]
        print(f"| {label} | {one:.1f} | {two:.1f} | {two / one:.2f}x |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=None,
                        help="model preset (default: the default training preset's model, tiny at 48 channels)")
    parser.add_argument("--batch", type=int, default=128, help="teacher and HKD global batch")
    parser.add_argument("--hkd-batch", type=int, default=None, help="HKD global batch (default: --batch)")
    parser.add_argument("--trajectory-count", type=int, default=None, help="trajectories to generate (default: 2x batch)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a training-config override, e.g. teacher.cpu_autocast=false (repeatable)")
    parser.add_argument("--compare-cpu-bf16", action="store_true",
                        help="CPU only: measure everything in float32 and in bf16 autocast, side by side")
    parser.add_argument("--compare-state-term", action="store_true",
                        help="measure everything with hkd.state_weight 0 and 1, side by side (the state term's cost)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                        help="wall time, or process CPU time / threads (auto: cpu on CPU devices, wall on CUDA)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.compare_cpu_bf16 and args.compare_state_term:
        parser.error("one comparison per run: --compare-cpu-bf16 or --compare-state-term")
    if args.compare_cpu_bf16 and device.type != "cpu":
        parser.error("--compare-cpu-bf16 measures the CPU; on CUDA the loops always take the config's autocast")
    CLOCK["cpu_time"] = args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu")
    context = DistributedContext(device=device)
    hkd_batch = args.hkd_batch or args.batch
    overrides = [*([f"model.preset={args.model}"] if args.model else []), f"teacher.batch_size={args.batch}",
                 f"hkd.batch_size={hkd_batch}", "dataset.num_images=2048", *args.overrides]
    config = resolve_training_config("default", overrides=overrides)
    model_config = resolve_config(config["model"])
    model_name = f"{model_config.get('preset')}, {model_config['unet']['model_channels']} channels"
    print(f"device: {device_name(device)}; torch {torch.__version__}; model {model_name} "
          f"({sum(p.numel() for p in EDMPrecond(model_config).parameters()):,} teacher parameters); "
          f"batch {args.batch} (HKD {hkd_batch}); clock {'process CPU time / threads' if CLOCK['cpu_time'] else 'wall'}",
          flush=True)
    comparison = "cpu_bf16" if args.compare_cpu_bf16 else "state_term" if args.compare_state_term else None
    if comparison:
        results = {name: measure(resolve_training_config("default", overrides=[*overrides, *extra]), context, args)
                   for name, extra in COMPARISONS[comparison].items()}
        print()
        print_comparison_table(results)
    else:
        results = measure(config, context, args)
        print()
        print_table(results)
    if args.json:
        write_text(args.json, json.dumps({"device": device_name(device), "batch": args.batch,
                                               "hkd_batch": hkd_batch, "model": model_name,
                                               **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
