"""Widget latency: one slider move of the EditingApp (and one SpectrumExplorer selection), end to end.

    python benchmarks/bench_widgets.py                             # the shipped default checkpoint
    python benchmarks/bench_widgets.py --checkpoint DIR --device cuda
    python benchmarks/bench_widgets.py --preset cifar10            # an untrained preset, random generators

An update is what a slider move costs after the debounce: set the control, re-mix the cached latents,
evolve, decode, clamp, synchronize the GPU, PNG-encode the image for the browser. The encoder features
are cached per (seed, reference, time), so only a time move encodes (shown for contrast). Targets:
< 0.5 s per update on 2 CPU cores, < 50 ms on a GPU. Prints the median and 90th percentile of N updates.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

import hkdviz
from hkdviz.model import randomize_generators
from hkdviz.widgets.editing_app import EditingApp
from hkdviz.widgets.spectrum_explorer import SpectrumExplorer

CPU_TARGET_SECONDS = 0.5
GPU_TARGET_SECONDS = 0.05


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def measure(app, moves: list[dict], updates: int, warmup: int = 2, uncached: bool = False) -> list[float]:
    """Seconds per update as the app records them, cycling through `moves` (uncached: drop the
    EditingApp's cached sessions first, so each move encodes)."""
    seconds = []
    for index in range(warmup + updates):
        if uncached:
            app._sessions.clear()
        app_set(app, moves[index % len(moves)])
        if index >= warmup:
            seconds.append(app.last_update_seconds)
    return seconds


def app_set(app, move: dict) -> None:
    if isinstance(app, EditingApp):
        app.set(**move)
    else:
        app.select_rectangle(**move)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None, help="checkpoint name or directory (default: 'default')")
    source.add_argument("--preset", default=None, help="benchmark an untrained preset instead (tiny, cifar10, ffhq64)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--updates", type=int, default=20, help="updates per measured action (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--app-threads", default="auto",
                        help="the apps' cpu_threads: 'auto' (1 for small models on CPU), 'none' (torch's setting) "
                             "or a count, used during an update only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    app_threads = {"auto": "auto", "none": None}.get(args.app_threads.lower(), None)
    if args.app_threads.lower() not in ("auto", "none"):
        app_threads = int(args.app_threads)

    if args.preset:
        model = randomize_generators(hkdviz.build(args.preset)).eval().requires_grad_(False)
        model = model.to(hkdviz.checkpoint.resolve_device(args.device))
        source_name = f"untrained preset {args.preset!r} (random generators)"
    else:
        name = args.checkpoint or "default"
        try:
            model = hkdviz.load(name, device=args.device)
        except hkdviz.CheckpointError as error:
            print(f"cannot load checkpoint {name!r}: {error}\n(use --checkpoint DIR or --preset tiny)", file=sys.stderr)
            return 2
        source_name = f"checkpoint {model.checkpoint_path}"
    device = model.device
    target = GPU_TARGET_SECONDS if device.type == "cuda" else CPU_TARGET_SECONDS

    start = time.perf_counter()
    app = EditingApp(model, seeds=[0, 1], times=19, debounce_seconds=0.0, cpu_threads=app_threads)
    app_seconds = time.perf_counter() - start
    start = time.perf_counter()
    explorer = SpectrumExplorer(model, seeds=[0], debounce_seconds=0.0, cpu_threads=app_threads)
    explorer_seconds = time.perf_counter() - start
    alpha = explorer.spectrum["alpha"].values
    low, high = float(alpha.min()), float(alpha.max())
    third = low + (high - low) / 3

    rows = [
        ("EditingApp: ratio slider", measure(app, [{"ratio": 0.2}, {"ratio": 0.5}, {"ratio": 0.8}], args.updates), True),
        ("EditingApp: band slider", measure(app, [{"band": (0.0, 0.2)}, {"band": (0.0, 0.33)}, {"band": (0.1, 0.5)}],
                                            args.updates), True),
        ("EditingApp: region dropdown", measure(app, [{"region": "lower-left"}, {"region": "upper"}, {"region": "left"}],
                                                args.updates), True),
        ("EditingApp: time slider (encodes)", measure(app, [{"time": 9.72}, {"time": 2.52}], max(4, args.updates // 4),
                                                      uncached=True),
         False),
        ("SpectrumExplorer: box selection", measure(explorer, [{"alpha": (low, third)}, {"alpha": (third, high)}],
                                                    args.updates), True),
    ]
    latents = sum(info.channels * info.height * info.width for info in model.levels)
    threads = f"; updates on {app.cpu_threads} CPU thread(s) (cpu_threads={app_threads!r})" \
        if app.cpu_threads and device.type == "cpu" else ""
    print(f"device: {device_name(device)}{threads}")
    print(f"model:  {source_name}; {model.num_parameters():,} parameters, {len(model.levels)} levels, "
          f"{latents:,} latent values per image")
    print(f"built:  EditingApp {app_seconds:.2f} s, SpectrumExplorer {explorer_seconds:.2f} s "
          f"({explorer.spectrum.sizes['mode']:,} modes)")
    print()
    print(f"| action | median ms | p90 ms | updates | target {target * 1000:.0f} ms |")
    print("|---|---|---|---|---|")
    failed = False
    for name, seconds, targeted in rows:
        median = statistics.median(seconds)
        p90 = sorted(seconds)[max(0, int(round(0.9 * len(seconds))) - 1)]
        verdict = ("ok" if median < target else "MISSED") if targeted else "(not a slider update)"
        failed |= targeted and median >= target
        print(f"| {name} | {median * 1000:.1f} | {p90 * 1000:.1f} | {len(seconds)} | {verdict} |")
    app.close()
    explorer.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
