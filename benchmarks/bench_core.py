"""Core benchmarks: every number is measured side by side in one run and reported as a ratio.

    python benchmarks/bench_core.py --quick                 # CPU, about a minute on 2 cores
    python benchmarks/bench_core.py --device cuda           # adds GPU sampling (bf16, channels_last)

(a) spectrum of the cifar10 preset (closed form) vs torch.linalg.eig on the same operators written
    as dense block-diagonal matrices (eig runs on a subset of positions and is extrapolated);
(b) Koopman evolution vs one encoder + decoder pass (cifar10, batch 8, CPU);
(c) trajectory at 64 times (one broadcast) vs 64 separate evolve + decode calls (tiny);
(d) model.sample throughput, tiny and cifar10, CPU (and CUDA when asked for and present).
Untrained networks; Koopman generators get random alpha <= 0 and beta (a zero generator would
flatter the eigensolver). Timings are the best of a few repeats.
"""
from __future__ import annotations

import argparse
import functools
import platform
import time

import torch

import hkdviz
from hkdviz.model import randomize_generators
from hkdviz.analysis.spectrum import spectrum
from hkdviz.analysis.trajectory import time_grid, trajectory


def best_time(function, repeats: int, synchronize=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if synchronize:
            synchronize()
        start = time.perf_counter()
        function()
        if synchronize:
            synchronize()
        best = min(best, time.perf_counter() - start)
    return best


class Table:
    def __init__(self):
        self.rows = []

    def add(self, name, measured, baseline, ratio, target=""):
        self.rows.append((name, measured, baseline, ratio, target))
        print(f"  {name}: {measured} | {baseline} | {ratio} {target}", flush=True)

    def print(self):
        header = ("benchmark", "measured", "baseline", "ratio", "target")
        widths = [max(len(str(row[column])) for row in self.rows + [header]) for column in range(5)]

        def line(row):
            return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + " |"

        print()
        print(line(header))
        print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
        for row in self.rows:
            print(line(row))


def bench_spectrum(table: Table, quick: bool):
    print("(a) spectrum vs dense eig (cifar10)", flush=True)
    model = randomize_generators(hkdviz.build("cifar10"))
    repeats = 5 if quick else 10
    spectrum(model)  # warm-up
    closed = best_time(lambda: spectrum(model), repeats)
    modes = spectrum(model).sizes["mode"]
    zero_model = hkdviz.build("cifar10")
    closed_zero = best_time(lambda: spectrum(zero_model), repeats)

    # eig on a subset of positions of every level, extrapolated per position (the full eig takes minutes).
    per_level = 4 if quick else 16
    eig_total, positions_total, measured_positions = 0.0, 0, 0
    for level in model.koopman:
        dense = level.dense_generator().detach().reshape(-1, level.channels, level.channels)
        positions = dense.shape[0]
        subset = dense[torch.linspace(0, positions - 1, per_level).long()].contiguous()
        seconds = best_time(lambda: torch.linalg.eig(subset), 1 if quick else 2)
        eig_total += seconds / per_level * positions
        positions_total += positions
        measured_positions += per_level
    table.add("(a) spectrum cifar10 (802,816 modes)" if modes == 802816 else f"(a) spectrum cifar10 ({modes:,} modes)",
              f"{closed * 1e3:.1f} ms (zero generators {closed_zero * 1e3:.1f} ms)",
              f"eig {eig_total:.1f} s (extrapolated from {measured_positions} of {positions_total} positions)",
              f"{eig_total / closed:,.0f}x faster", "target >= 100x and < 100 ms")


def bench_evolution(table: Table, quick: bool):
    print("(b) Koopman evolution vs encoder + decoder (cifar10, batch 8, CPU)", flush=True)
    model = randomize_generators(hkdviz.build("cifar10")).eval()
    x_T = model.noise(range(8))
    repeats = 2 if quick else 4
    with torch.no_grad():
        latents = model.encode(x_T, model.sigma_max)
        tau = model.sigma_min - model.sigma_max
        encode = best_time(lambda: model.encode(x_T, model.sigma_max), repeats)
        evolved = model.evolve(latents, tau)
        decode = best_time(lambda: model.decode(evolved), repeats)
        evolve = best_time(lambda: model.evolve(latents, tau), repeats * 5)
    table.add("(b) evolve vs encode+decode (cifar10, b=8, CPU)", f"evolve {evolve * 1e3:.1f} ms",
              f"encode {encode * 1e3:.0f} ms + decode {decode * 1e3:.0f} ms",
              f"+{100 * evolve / (encode + decode):.2f}% added", "target <= 5%")


def bench_trajectory(table: Table, quick: bool):
    print("(c) trajectory at 64 times vs 64 evolve + decode calls (tiny)", flush=True)
    model = randomize_generators(hkdviz.build("tiny")).eval()
    seeds = list(range(4))
    times = 64
    repeats = 2 if quick else 3
    sigmas = time_grid(model, times)

    def separate():
        with torch.no_grad():
            latents = model.encode(model.noise(seeds), model.sigma_max)
            for sigma in sigmas:
                model.decode(model.evolve(latents, float(sigma) - model.sigma_max)).clamp(-1, 1).numpy()

    loop = best_time(separate, repeats)
    for batch_size in (64, 256):
        broadcast = best_time(lambda: trajectory(model, seeds, times=times, batch_size=batch_size, progress=False),
                              repeats)
        table.add(f"(c) trajectory 64 times x 4 seeds, batch_size={batch_size} (tiny)", f"{broadcast * 1e3:.0f} ms",
                  f"64 separate evolve+decode {loop * 1e3:.0f} ms", f"{loop / broadcast:.2f}x faster")


def bench_sampling(table: Table, quick: bool, device: torch.device):
    print(f"(d) sampling throughput on {device}", flush=True)
    cuda = device.type == "cuda"
    synchronize = torch.cuda.synchronize if cuda else None
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads, {platform.machine()})"
    for preset in ("tiny", "cifar10"):
        model = randomize_generators(hkdviz.build(preset)).eval().to(device)
        if cuda:
            count = 256 if quick else 1024
            batch = 256
        else:
            count = {"tiny": 64, "cifar10": 8}[preset] * (1 if quick else 2)
            batch = count
        variants = [("fp32", {})]
        if cuda:
            variants += [("bf16 autocast", {"autocast_dtype": torch.bfloat16}),
                         ("bf16 + channels_last", {"autocast_dtype": torch.bfloat16, "channels_last": True})]
        baseline = None
        for label, options in variants:
            if options.get("channels_last"):
                model = model.to(memory_format=torch.channels_last)
            seeds = list(range(count))
            model.sample(seeds[:batch], batch_size=batch, **options)  # warm-up
            seconds = best_time(functools.partial(model.sample, seeds, batch_size=batch, **options), 2 if quick else 3,
                                synchronize)
            rate = count / seconds
            baseline = baseline or rate
            measured = f"{rate:,.0f} images/s" if rate >= 100 else f"{rate:.3g} images/s"
            table.add(f"(d) sample {preset} {label}", measured, f"{name}, batch {batch}", f"{rate / baseline:.2f}x vs fp32")
        del model
        if cuda:
            torch.cuda.empty_cache()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller subsets")
    parser.add_argument("--device", default="auto", help="where (d) samples: cpu, cuda, or auto (CUDA when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", default="abcd", help="which benchmarks to run, e.g. 'ad'")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from hkdviz.checkpoint import resolve_device
    device = resolve_device(args.device)
    print(f"hkdviz {hkdviz.__version__}, torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
          f"device for (d): {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}", flush=True)
    torch.manual_seed(0)
    table = Table()
    if "a" in args.only:
        bench_spectrum(table, args.quick)
    if "b" in args.only:
        bench_evolution(table, args.quick)
    if "c" in args.only:
        bench_trajectory(table, args.quick)
    if "d" in args.only:
        bench_sampling(table, args.quick, torch.device("cpu"))
        if device.type == "cuda":
            bench_sampling(table, args.quick, device)
    table.print()


if __name__ == "__main__":
    main()
