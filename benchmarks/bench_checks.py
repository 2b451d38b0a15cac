"""Cost of the input checks: `model.sample` and `hkdviz.load` with the checks against the same code
without them, measured side by side (interleaved rounds) in one run.

    python benchmarks/bench_checks.py --threads 1          # CPU, shipped default, ~2 minutes on 2 cores
    python benchmarks/bench_checks.py --device cuda        # the same on a GPU

"Without the checks" is the model code of the commit before them (`--baseline`, default f8f0ae7),
read with `git show` and executed as a sibling module; the baseline object shares the loaded model's
modules and parameters (the very same tensors in memory: two separately loaded copies of the weights
differed by up to 5% in speed here, more than the checks cost), so only the code differs. Rounds alternate the
order (A B, B A, ...); the script prints the median of
each and their ratio in wall time and in this process's CPU time (less disturbed by other work on a
shared machine), and checks that both give bit-identical samples.

Because a busy machine moves wall times by tens of percent between runs, the script also times the
added checks alone (each one many times, on one batch's tensors) and prints their sum against one
batch's forward pass: an upper bound on the checks' cost that no other process can blur.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import hkdviz

ROOT = Path(__file__).resolve().parent.parent


def baseline_module(commit: str, path: str, name: str, package: str):
    """`path` as it was at `commit`, executed as module `package.name` (its relative imports resolve)."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    spec = importlib.util.spec_from_loader(f"{package}.{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    module.__file__ = str(ROOT / path)  # checkpoint.py finds the shipped checkpoints next to itself
    sys.modules[spec.name] = module
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", default="f8f0ae7", help="commit whose model code has no checks")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    old_hkd = baseline_module(args.baseline, "hkdviz/model/hkd.py", "_baseline_hkd", "hkdviz.model")
    old_checkpoint = baseline_module(args.baseline, "hkdviz/checkpoint.py", "_baseline_checkpoint", "hkdviz")
    checked = hkdviz.load(args.checkpoint, device=device)
    plain = old_hkd.HKDModel.__new__(old_hkd.HKDModel)  # the baseline's methods on the same modules and tensors
    plain.__dict__ = checked.__dict__

    seeds = list(range(args.seeds))
    same = torch.equal(checked.sample(seeds, batch_size=args.batch_size, progress=False),
                       plain.sample(seeds, batch_size=args.batch_size))
    variants = {"with checks": lambda: checked.sample(seeds, batch_size=args.batch_size, progress=False),
                "without": lambda: plain.sample(seeds, batch_size=args.batch_size)}
    loads = {"with checks": lambda: hkdviz.load(args.checkpoint, device=device),
             "without": lambda: old_checkpoint.load(args.checkpoint, device=device)}

    def measure(functions):
        wall = {name: [] for name in functions}
        cpu = {name: [] for name in functions}
        for function in functions.values():  # warm-up
            function()
        for round_index in range(args.rounds):
            order = list(functions.items())
            for name, function in (order if round_index % 2 else order[::-1]):  # A B, B A, ...: no order effect
                synchronize(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                function()
                synchronize(device)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        return ({name: statistics.median(values) for name, values in wall.items()},
                {name: statistics.median(values) for name, values in cpu.items()})

    def line(what, times):
        wall, cpu = times
        return (f"{what}: wall with checks {wall['with checks'] * 1e3:.1f} ms, without {wall['without'] * 1e3:.1f} ms, "
                f"ratio {wall['with checks'] / wall['without']:.4f}; CPU time ratio {cpu['with checks'] / cpu['without']:.4f}")

    sample_times = measure(variants)
    load_times = measure(loads)
    check_seconds, forward_seconds = check_costs(checked, args.batch_size, device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds, "
          f"baseline {args.baseline}; samples bit-identical: {same}")
    print(line(f"model.sample({args.seeds} seeds, batch {args.batch_size})", sample_times))
    print(line(f"hkdviz.load({args.checkpoint!r})", load_times))
    print("checks alone, per batch of %d: " % args.batch_size
          + ", ".join(f"{name} {seconds * 1e6:.0f} us" for name, seconds in check_seconds.items())
          + f"; total {sum(check_seconds.values()) * 1e3:.2f} ms = "
            f"{100 * sum(check_seconds.values()) / forward_seconds:.3f} % of one batch's forward pass "
            f"({forward_seconds * 1e3:.0f} ms)")
    return 0 if same else 1


def check_costs(model, batch_size: int, device, repeats: int = 200):
    """Seconds per batch of each check sample() added (median of `repeats`), and one forward pass."""
    from hkdviz.model.hkd import check_batch_size, check_output_memory, check_seeds, check_tau, saturate
    seeds = list(range(batch_size))
    x_T = model.noise(seeds)
    sigma = torch.full((batch_size,), model.sigma_max, device=device)
    with torch.no_grad():
        latents = model.encode(x_T, sigma)
    checks = {
        "seeds": lambda: check_seeds(seeds),
        "batch_size + output memory": lambda: (check_batch_size(batch_size),
                                               check_output_memory(batch_size, model.image_shape, device)),
        "finite x_T": lambda: bool(torch.isfinite(x_T).all()),
        "finite sigma": lambda: bool(((sigma > 0) & (sigma < float("inf"))).all()),
        "finite tau": lambda: check_tau(model.sigma_min - sigma),
        "latents (evolve + decode)": lambda: (model._check_latents(latents), model._check_latents(latents)),
        "latent saturation (look, no clamp needed)": lambda: saturate(latents),
    }
    result = {}
    for name, function in checks.items():
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
    forward = []
    with torch.no_grad():
        for _ in range(5):
            synchronize(device)
            start = time.perf_counter()
            model(x_T, model.sigma_max)
            synchronize(device)
            forward.append(time.perf_counter() - start)
    return result, statistics.median(forward)


if __name__ == "__main__":
    sys.exit(main())
