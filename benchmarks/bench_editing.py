"""Editing benchmark: is frequency-aware editing measurably better, which band is "high", and how fast is a slider?

    python benchmarks/bench_editing.py --checkpoint default            # a trained checkpoint (name or dir)
    python benchmarks/bench_editing.py --untrained tiny                 # mechanics only, random generators
    python benchmarks/bench_editing.py --checkpoint default --reference image:astronaut --out runs/editing

(1) Editing report (edit_metrics.editing_report): inside the region, low-pass MSE / PSNR between the
    edited and the original image, and high-pass correlation with the reference, for the
    frequency-aware edit (--band, default "high") and the frequency-agnostic baseline (all bands), over
    ratios. Requirement: at r = 0.9 the aware low-pass MSE is markedly (>= 2x) below the baseline's,
    while the aware high-pass correlation rises with r.
(2) Band spectra (edit_metrics.band_spectra): share of each alpha band's decoded power above the cutoff.
    The checkpoint reads "high"/"low" from its meta.json's measured band_aliases (else bands.ALIASES,
    largest/smallest, measured on the shipped checkpoints); this prints whether these seeds agree.
(3) Cumulative effect (interventions.cumulative_effect) at T, the edit time and eps.
(4) Widget latency: an EditSession (encoder work cached) and the cost of one slider move
    (re-mix + decode) for ratio, band and region changes; target < 0.5 s for `tiny` on 2 CPU cores.
All numbers come from this one run. Reference choices: sample:SEED (an image of the same model),
image:NAME (a scikit-image photo such as astronaut, chelsea, coffee), texture:NAME (brick, grass,
gravel), or a .npy / .pt file holding [C, H, W] in [-1, 1].
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hkdviz
from hkdviz.model import randomize_generators
from hkdviz.analysis.bands import describe_aliases, model_aliases
from hkdviz.analysis.edit_metrics import band_spectra, editing_report
from hkdviz.analysis.editing import EditSession, edit_time
from hkdviz.analysis.interventions import cumulative_effect
from hkdviz.analysis.storage import save_dataset


def load_reference(spec: str, model) -> torch.Tensor:
    channels, height, width = model.image_shape
    kind, _, name = spec.partition(":")
    if kind == "sample":
        return model.sample([int(name or 1000)])[0]
    if kind in ("image", "texture"):
        from skimage import data  # optional (the train extra); only for photo/texture references
        array = np.asarray(getattr(data, name)(), dtype=np.float64)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        image = torch.as_tensor(array[..., :3] / 255.0 * 2 - 1, dtype=torch.float32).permute(2, 0, 1)
        side = min(image.shape[1:])  # centre crop to a square, then area-resize to the model's size
        top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
        image = image[:, top:top + side, left:left + side]
        image = torch.nn.functional.interpolate(image[None], size=(height, width), mode="area")[0]
        if channels == 1:
            image = image.mean(0, keepdim=True)
        return image.clamp(-1, 1)
    path = Path(spec)
    if path.suffix == ".npy":
        return torch.as_tensor(np.load(path), dtype=torch.float32)
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True).float()
    raise SystemExit(f"--reference {spec!r}: use sample:SEED, image:NAME, texture:NAME or a .npy/.pt file")


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [[value if isinstance(value, str) else f"{value:.4g}" for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def latency(function, repeats: int) -> float:
    """Median seconds of `repeats` calls (after one warm-up call)."""
    function(0)
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        function(index + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None, help="shipped name or checkpoint directory (default: 'default')")
    source.add_argument("--untrained", default=None, metavar="PRESET", help="an untrained preset with random generators")
    parser.add_argument("--device", default="cpu", help="cpu (the widget target) or cuda / auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the widget target is 2 cores)")
    parser.add_argument("--seeds", type=int, default=16, help="number of generated images (seeds 0..N-1)")
    parser.add_argument("--reference", default="sample:1000")
    parser.add_argument("--ratios", default="0,0.1,0.2,0.5,0.8,0.9")
    parser.add_argument("--band", default="high")
    parser.add_argument("--region", default="lower-left")
    parser.add_argument("--time", default="mid", help="'mid' (Karras midpoint) or a sigma in [eps, T]")
    parser.add_argument("--cutoff", type=float, default=0.125, help="low/high split, cycles per pixel")
    parser.add_argument("--repeats", type=int, default=20, help="slider moves timed per latency row")
    parser.add_argument("--out", default=None, help="folder for the netCDF results")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.untrained:
        model = randomize_generators(hkdviz.build(args.untrained)).eval().to(args.device if args.device != "auto" else
                                                                             ("cuda" if torch.cuda.is_available() else "cpu"))
        source_name = f"untrained {args.untrained} (random generators)"
    else:
        model = hkdviz.load(args.checkpoint or "default", device=args.device).eval()
        source_name = f"{model.checkpoint_path} (sha256 {str(model.checkpoint_sha256)[:12]})"
    seeds = list(range(args.seeds))
    ratios = [float(value) for value in args.ratios.split(",")]
    time_value = args.time if args.time == "mid" else float(args.time)
    reference = load_reference(args.reference, model).to(model.device)
    print(f"model: {source_name}; preset {model.config.get('preset')}; device {model.device}; "
          f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (latency needs an idle machine)")
    print(f"reference {args.reference}; band {args.band!r}; region {args.region!r}; "
          f"edit time {edit_time(model, time_value):.4g}; cutoff {args.cutoff} cycles/px; {len(seeds)} seeds\n")

    # (1) editing report
    report = editing_report(model, seeds, reference, ratios=ratios, band=args.band, region=args.region,
                            time=time_value, cutoff=args.cutoff)
    print("(1) editing inside the region: low-pass MSE vs the original (lower = structure kept), "
          "high-pass correlation with the reference (higher = detail injected)")
    rows = []
    for ratio in ratios:
        aware = report.sel(variant="aware", ratio=ratio)
        agnostic = report.sel(variant="agnostic", ratio=ratio)
        mse_ratio = float(agnostic.lowpass_mse) / float(aware.lowpass_mse) if float(aware.lowpass_mse) > 0 else float("nan")
        rows.append([f"{ratio:g}", float(aware.lowpass_mse), float(agnostic.lowpass_mse), mse_ratio,
                     float(aware.lowpass_psnr), float(agnostic.lowpass_psnr),
                     float(aware.highpass_correlation), float(agnostic.highpass_correlation)])
    print_table(["ratio", "aware MSE", "agnostic MSE", "agn/aware", "aware PSNR", "agn PSNR",
                 "aware HP corr", "agn HP corr"], rows)
    top = max(ratios)
    aware_mse = float(report.lowpass_mse.sel(variant="aware", ratio=top))
    agnostic_mse = float(report.lowpass_mse.sel(variant="agnostic", ratio=top))
    correlation = report.highpass_correlation.sel(variant="aware").values
    rises = bool(correlation[-1] > correlation[0]) and float(np.corrcoef(ratios, correlation)[0, 1]) > 0.8
    markedly = agnostic_mse >= 2 * aware_mse
    print(f"\n  (a) low-pass fidelity at r = {top:g}: baseline MSE / aware MSE = {agnostic_mse / max(aware_mse, 1e-30):.3g} "
          f"(want >= 2): {'PASS' if markedly else 'FAIL'}")
    print(f"  (b) aware high-pass correlation {correlation[0]:.3g} (r = {ratios[0]:g}) -> {correlation[-1]:.3g} "
          f"(r = {ratios[-1]:g}), Pearson with r {np.corrcoef(ratios, correlation)[0, 1]:.3g}: "
          f"{'PASS' if rises else 'FAIL'}\n")

    # (2) band spectra
    spectra = band_spectra(model, seeds, ("smallest", "intermediate", "largest", "all"), cutoff=args.cutoff)
    print(f"(2) share of each band's decoded power above {args.cutoff} cycles/px (spectral masking at eps)")
    fractions = spectra.high_frequency_fraction.to_series()
    print_table(["band", "high-freq share"], [[band, float(value)] for band, value in fractions.items()])
    alpha_bands = fractions.drop("all")
    highest, lowest = alpha_bands.idxmax(), alpha_bands.idxmin()
    aliases = model_aliases(model)
    agrees = highest == aliases["high"] and lowest == aliases["low"]
    print(f"  most high-frequency band: {highest}; least: {lowest}. The checkpoint reads {describe_aliases(model)}: "
          f"{'AGREES' if agrees else 'DISAGREES on these seeds'}\n")

    # (3) cumulative effect
    mid = edit_time(model, "mid")
    effect = cumulative_effect(model, seeds[:8], ("smallest", "intermediate", "largest"),
                               times=[model.sigma_max, mid, model.sigma_min], progress=False)
    print("(3) cumulative effect share ||D(M_g z_t) - D(0)|| / sum_g (and latent energy share)")
    rows = [[band] + [f"{float(effect.effect_share.sel(band=band, time=t)):.3f} "
                      f"({float(effect.energy_share.sel(band=band, time=t)):.3f})" for t in effect.time.values]
            for band in effect.band.values]
    print_table(["band"] + [f"t = {t:.4g}" for t in effect.time.values], rows)

    # (4) widget latency
    print(f"\n(4) slider latency, encoder work cached (median of {args.repeats}; target < 0.5 s)")
    rows = []
    for count in (1, 4):
        start = time.perf_counter()
        session = EditSession(model, seeds[:count], reference, time=time_value, band=args.band, region=args.region)
        build = time.perf_counter() - start
        ratio_move = latency(lambda index: session.update(ratio=(index % 10) / 10 + 0.05), args.repeats)
        band_names = ["smallest", "intermediate", "largest", "all"]
        band_move = latency(lambda index: session.update(band=band_names[index % 4]), args.repeats)
        region_names = ["lower-left", "upper", "left", "all"]
        region_move = latency(lambda index: session.update(region=region_names[index % 4]), args.repeats)
        fresh = latency(lambda index: session.update(band=f'{{"kind": "quantile", "lower": 0, "upper": '
                                                           f'{0.05 + 0.9 * ((index * 7) % 13) / 13}}}'), 5)
        rows.append([str(count), build, ratio_move, band_move, region_move, fresh])
    print_table(["images", "session build s", "ratio move s", "band move s", "region move s", "new band s"], rows)
    worst = max(max(row[2:5]) for row in rows)
    print(f"  worst cached slider move {worst * 1000:.1f} ms: {'PASS' if worst < 0.5 else 'FAIL'} (< 500 ms)")

    if args.out:
        out = Path(args.out)
        for name, ds in (("editing_report", report), ("band_spectra", spectra), ("cumulative_effect", effect)):
            save_dataset(ds, out / f"{name}.nc")
        print(f"\nsaved netCDF results under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
