"""What the load-time checks cost: `hkdviz.load` with and without them, side by side in one run.

    python benchmarks/bench_load.py                  # the shipped default HKD, CPU, ~1 minute
    python benchmarks/bench_load.py --checkpoint DIR --rounds 30

The checks (hkdviz/checkpoint.py): the weights' sha256 compared with meta.json's weights_sha256,
non-float tensors refused, NaN/inf refused. "without" replaces verify_weights_sha256 and
check_tensor_values by no-ops; loading still hashes the file once for model.checkpoint_sha256, as it
did before the checks existed. The per-process hash cache is cleared before every load, so each
load pays for hashing as a fresh process would. The variants alternate round by round (a busy
machine slows both alike); the table gives medians and the ratio.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch


import hkdviz
from hkdviz import checkpoint


def timed_load(path: str, device: str) -> float:
    checkpoint._SHA256_CACHE.clear()
    start = time.perf_counter()
    hkdviz.load(path, device=device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)

    directory = checkpoint.resolve_checkpoint(args.checkpoint)
    weights = directory / checkpoint.WEIGHTS_FILE
    verify, check_values = checkpoint.verify_weights_sha256, checkpoint.check_tensor_values
    for _ in range(2):  # warm the page cache and the imports
        timed_load(args.checkpoint, args.device)
    times = {"with checks": [], "without checks": []}
    for _ in range(args.rounds):
        for name in times:
            if name == "without checks":
                checkpoint.verify_weights_sha256 = lambda *arguments: None
                checkpoint.check_tensor_values = lambda *arguments: None
            try:
                times[name].append(timed_load(args.checkpoint, args.device))
            finally:
                checkpoint.verify_weights_sha256, checkpoint.check_tensor_values = verify, check_values
    # The checks on their own (hash cached, as in a load, where the loader hashes the file anyway):
    # far less noisy than the difference of two whole loads on a busy machine.
    state, _, meta = checkpoint.read_checkpoint(directory, kind="hkd")
    expected = hkdviz.load(args.checkpoint, device="cpu").state_dict()
    hash_times, check_times = [], []
    for _ in range(args.rounds):
        checkpoint._SHA256_CACHE.clear()
        start = time.perf_counter()
        checkpoint.file_sha256(weights)
        hash_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        checkpoint.verify_weights_sha256(weights, meta, directory / checkpoint.META_FILE)
        checkpoint.check_tensor_values(state, expected, weights)
        check_times.append(time.perf_counter() - start)

    with_checks, without = statistics.median(times["with checks"]), statistics.median(times["without checks"])
    print(f"{directory} ({weights.stat().st_size / 1e6:.1f} MB weights), device {args.device}, "
          f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, "
          f"{args.rounds} rounds")
    fastest = min(times["without checks"])
    print("| variant | median load (ms) | fastest load (ms) | ratio of medians | ratio of fastest |")
    print("|---|---|---|---|---|")
    print(f"| without checks | {without * 1e3:.1f} | {fastest * 1e3:.1f} | 1.000 | 1.000 |")
    print(f"| with checks | {with_checks * 1e3:.1f} | {min(times['with checks']) * 1e3:.1f} | "
          f"{with_checks / without:.3f} | {min(times['with checks']) / fastest:.3f} |")
    for name, values in (("the checks alone (hash compare + dtype + NaN/inf)", check_times),
                         ("sha256 of the weights alone (paid with or without the checks)", hash_times)):
        print(f"| {name} | {statistics.median(values) * 1e3:.1f} | {min(values) * 1e3:.1f} | "
              f"{statistics.median(values) / without:.3f} of a load | {min(values) / fastest:.3f} of a load |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
