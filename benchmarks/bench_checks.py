"""Cost of the input checks: `model.sample` and `hkdviz.load` with the checks against the same code
without them, measured side by side (interleaved rounds) in one run.

    python benchmarks/bench_checks.py                      # CPU, shipped default, ~2 minutes on 2 cores
    python benchmarks/bench_checks.py --device cuda        # the same on a GPU

"Without the checks" is the model code of the commit before them (`--baseline`, default f8f0ae7),
read with `git show` and executed as a sibling module, so both variants share weights, device, threads
and load on the machine. Rounds alternate the order (A B, B A, ...); the script prints the median of
each and their ratio, and checks that both give bit-identical samples.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import hkdviz  # noqa: E402
from hkdviz.checkpoint import load_state_checked, read_checkpoint, resolve_checkpoint  # noqa: E402


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
    parser.add_argument("--seeds", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    old_hkd = baseline_module(args.baseline, "hkdviz/model/hkd.py", "_baseline_hkd", "hkdviz.model")
    old_checkpoint = baseline_module(args.baseline, "hkdviz/checkpoint.py", "_baseline_checkpoint", "hkdviz")
    checked = hkdviz.load(args.checkpoint, device=device)
    directory = resolve_checkpoint(args.checkpoint)
    state, config, _ = read_checkpoint(directory, "hkd")
    plain = old_hkd.HKDModel(config)
    load_state_checked(plain, state, directory)
    plain = plain.eval().requires_grad_(False).to(device)

    seeds = list(range(args.seeds))
    same = torch.equal(checked.sample(seeds, batch_size=args.batch_size, progress=False),
                       plain.sample(seeds, batch_size=args.batch_size))
    variants = {"with checks": lambda: checked.sample(seeds, batch_size=args.batch_size, progress=False),
                "without": lambda: plain.sample(seeds, batch_size=args.batch_size)}
    loads = {"with checks": lambda: hkdviz.load(args.checkpoint, device=device),
             "without": lambda: old_checkpoint.load(args.checkpoint, device=device)}

    def measure(functions):
        times = {name: [] for name in functions}
        for function in functions.values():  # warm-up
            function()
        for round_index in range(args.rounds):
            order = list(functions.items())
            for name, function in (order if round_index % 2 else order[::-1]):  # A B, B A, ...: no order effect
                synchronize(device)
                start = time.perf_counter()
                function()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
        return {name: statistics.median(values) for name, values in times.items()}

    sample_times = measure(variants)
    load_times = measure(loads)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds, "
          f"baseline {args.baseline}; samples bit-identical: {same}")
    print(f"model.sample({args.seeds} seeds, batch {args.batch_size}): with checks {sample_times['with checks'] * 1e3:.1f} ms, "
          f"without {sample_times['without'] * 1e3:.1f} ms, ratio {sample_times['with checks'] / sample_times['without']:.4f}")
    print(f"hkdviz.load({args.checkpoint!r}): with checks {load_times['with checks'] * 1e3:.1f} ms, "
          f"without {load_times['without'] * 1e3:.1f} ms, ratio {load_times['with checks'] / load_times['without']:.4f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
