"""A hostile user's battery against values, errors and the CLI (issue #20): about 100 tries, each classified

    clear error    an exception of the documented kind (ValueError, TypeError, MemoryError, hkdviz's errors)
                   whose message holds the expected words, or a CLI exit code 1/2 with one stderr line
    correct result the call returned, and its result passed the try's check (finite, in range, as asked)
    silent wrong   the call returned something wrong, or exit code 0 where it should have failed
    traceback      any other exception (torch internals, AttributeError, ...) or a CLI traceback
    hang           no answer within the try's time limit

    python scripts/battery_values.py                 # ~2 minutes on 2 CPU cores; prints every try and the counts
    python scripts/battery_values.py --markdown F    # also writes the table to F

API tries run in this process (a SIGALRM per try); CLI tries call hkdviz.cli.main in-process with stdout and
stderr captured, except a few that run `python -m hkdviz` to see exactly what a shell sees.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import hkdviz  # noqa: E402
from hkdviz import cli  # noqa: E402
from hkdviz.analysis import bands, editing, interventions  # noqa: E402
from hkdviz.model import randomize_generators  # noqa: E402
from hkdviz.train.presets import resolve_training_config  # noqa: E402

CLEAR, CORRECT, SILENT, TRACEBACK, HANG = "clear error", "correct result", "silent wrong", "traceback", "hang"
DOCUMENTED = (ValueError, TypeError, MemoryError)  # hkdviz's own errors derive from ValueError


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def api_try(call, expect: str | None = None, check=None, limit: int = 60):
    """expect: words the error must hold (an error is wanted); check: result -> bool (a result is wanted)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            result = call()
    except Timeout:
        return HANG, f"no answer in {limit} s"
    except DOCUMENTED as error:
        text = f"{type(error).__name__}: {' '.join(str(error).split())[:150]}"
        if expect is not None and expect in text:
            return CLEAR, text
        # An error without the expected words, or one refusing a valid call: not what a user can act on.
        return TRACEBACK, ("refused a valid call: " if expect is None else "unclear: ") + text
    except Exception as error:  # noqa: BLE001 - classifying every outcome is the point
        return TRACEBACK, f"{type(error).__name__}: {' '.join(str(error).split())[:150]}"
    finally:
        signal.alarm(0)
    if expect is not None:
        return SILENT, f"returned {type(result).__name__} where an error was wanted"
    ok = check(result) if check is not None else True
    return (CORRECT if ok else SILENT), f"returned {type(result).__name__}{'' if ok else ' that failed its check'}"


def cli_try(argv, want_code: int, expect: str, limit: int = 240, subprocess_run: bool = False):
    """want_code 0: success wanted; 1 or 2: that exit code and one error line holding `expect`."""
    if subprocess_run:
        try:
            done = subprocess.run([sys.executable, "-m", "hkdviz", *map(str, argv)], capture_output=True, text=True,
                                  cwd=ROOT, timeout=limit)
        except subprocess.TimeoutExpired:
            return HANG, f"no answer in {limit} s"
        code, err = done.returncode, done.stderr
    else:
        out_buffer, err_buffer = io.StringIO(), io.StringIO()  # stdout is captured to keep the battery quiet
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(limit)
        try:
            with contextlib.redirect_stdout(out_buffer), contextlib.redirect_stderr(err_buffer):
                code = cli.main([str(item) for item in argv])
        except Timeout:
            return HANG, f"no answer in {limit} s"
        except BaseException as error:  # noqa: BLE001 - an exception escaping main is a traceback for the user
            return TRACEBACK, f"{type(error).__name__} escaped main: {str(error)[:150]}"
        finally:
            signal.alarm(0)
        err = err_buffer.getvalue()
    if "Traceback" in err:
        return TRACEBACK, err.strip().splitlines()[-1][:150]
    errors = [line for line in err.replace("\r", "\n").splitlines()
              if ": error:" in line or ": warning:" in line]
    if want_code == 0:
        return (CORRECT, "exit 0") if code == 0 else (SILENT if code is None else TRACEBACK,
                                                      f"exit {code}: {err.strip()[-150:]}")
    if code == 0:
        return SILENT, "exit 0 where a failure was wanted"
    line = errors[-1] if errors else err.strip()[-150:]
    if code == want_code and expect in err and len([item for item in errors if ": error:" in item]) == 1:
        return CLEAR, f"exit {code}: {line[:150]}"
    return TRACEBACK, f"exit {code} (wanted {want_code}): {line[:150]}"


def finite(tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def in_range(tensor) -> bool:
    return finite(tensor) and float(tensor.abs().max()) <= 1


def build_tries(work: Path):
    torch.manual_seed(0)
    tiny = randomize_generators(hkdviz.build("tiny")).eval().requires_grad_(False)
    trained = hkdviz.load("default", device="cpu")
    checkpoint = work / "tiny"
    tiny.save(checkpoint, meta={"dataset": "none (battery)"})
    with torch.no_grad():
        z = tiny.encode(tiny.noise([0, 1]), tiny.sigma_max)
        z_trained = trained.encode(trained.noise([0, 1]), trained.sigma_max)

    def variant(name, change):
        directory = work / name
        shutil.copytree(checkpoint, directory)
        change(directory)
        return directory

    def edit_json(file, **fields):
        def change(directory):
            data = json.loads((directory / file).read_text())
            for key, value in fields.items():
                section, _, inner = key.partition("__")
                if inner:
                    data[section][inner] = value
                else:
                    data[section] = value
            (directory / file).write_text(json.dumps(data))
        return change

    truncated = variant("truncated", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 7))
    no_meta = variant("no-meta", lambda d: (d / "meta.json").unlink())
    meta_list = variant("meta-list", lambda d: (d / "meta.json").write_text("[1, 2]"))
    meta_text = variant("meta-text", lambda d: (d / "meta.json").write_text("{not json"))
    bad_sigma = variant("bad-sigma", edit_json("config.json", diffusion__sigma_max=-80))
    bad_mult = variant("bad-mult", edit_json("config.json", unet__channel_mult=[]))
    bad_dropout = variant("bad-dropout", edit_json("config.json", unet__dropout="x"))
    meta_metrics = variant("meta-metrics", edit_json("meta.json", metrics="oops"))
    meta_rows = variant("meta-rows", edit_json("meta.json", metrics={"evaluation": {"rows": [1, "x"]}}))
    meta_step = variant("meta-step", edit_json("meta.json", step=[1, 2], dataset={"a": 1}))
    data = work / "data"
    data.mkdir()
    from hkdviz.analysis.storage import save_dataset
    save_dataset(hkdviz.trajectory(tiny, seeds=[0], times=3, progress=False), data / "trajectory.nc")
    (data / "spectrum.nc").write_bytes(b"garbage, not netCDF")
    empty_data = work / "empty-data"
    empty_data.mkdir()
    a_file = work / "a-file"
    a_file.write_text("x")
    reference = torch.zeros(3, 32, 32)

    api = [
        # model config (build)
        ("build decoder_sigma=-1", lambda: hkdviz.build({"preset": "tiny", "diffusion": {"decoder_sigma": -1}}),
         "diffusion.decoder_sigma"),
        ("build sigma_max=inf", lambda: hkdviz.build({"preset": "tiny", "diffusion": {"sigma_max": math.inf}}),
         "diffusion.sigma_max"),
        ("build sigma_max=nan", lambda: hkdviz.build({"preset": "tiny", "diffusion": {"sigma_max": math.nan}}),
         "diffusion.sigma_max"),
        ("build sigma_data=0", lambda: hkdviz.build({"preset": "tiny", "diffusion": {"sigma_data": 0}}),
         "diffusion.sigma_data"),
        ("build channel_mult=[]", lambda: hkdviz.build({"preset": "tiny", "unet": {"channel_mult": []}}),
         "unet.channel_mult"),
        ("build channel_mult=[1,-2]", lambda: hkdviz.build({"preset": "tiny", "unet": {"channel_mult": [1, -2]}}),
         "unet.channel_mult"),
        ("build img_resolution=0", lambda: hkdviz.build({"preset": "tiny", "unet": {"img_resolution": 0}}),
         "unet.img_resolution"),
        ("build img_resolution='32'", lambda: hkdviz.build({"preset": "tiny", "unet": {"img_resolution": "32"}}),
         "unet.img_resolution"),
        ("build dropout='x'", lambda: hkdviz.build({"preset": "tiny", "unet": {"dropout": "x"}}), "unet.dropout"),
        ("build dropout=1.5", lambda: hkdviz.build({"preset": "tiny", "unet": {"dropout": 1.5}}), "unet.dropout"),
        ("build num_blocks=0", lambda: hkdviz.build({"preset": "tiny", "unet": {"num_blocks": 0}}), "unet.num_blocks"),
        ("build model_channels=24.0", lambda: hkdviz.build({"preset": "tiny", "unet": {"model_channels": 24.0}}),
         "unet.model_channels"),
        ("build model_channels=None", lambda: hkdviz.build({"preset": "tiny", "unet": {"model_channels": None}}),
         "unet.model_channels"),
        ("build operator='Block'", lambda: hkdviz.build({"preset": "tiny", "koopman": {"operator": "Block"}}),
         "koopman.operator"),
        ("build levels=1", lambda: hkdviz.build({"preset": "tiny", "koopman": {"levels": 1}}), "koopman.levels"),
        ("build max_exponent=0", lambda: hkdviz.build({"preset": "tiny", "koopman": {"max_exponent": 0}}),
         "koopman.max_exponent"),
        ("build unknown key", lambda: hkdviz.build({"preset": "tiny", "unet": {"chanel_mult": [1]}}), "unet.chanel_mult"),
        ("build preset typo", lambda: hkdviz.build("tiyn"), "unknown preset 'tiyn'"),
        ("build a list", lambda: hkdviz.build([1, 2]), "expected a preset name or a config dict"),
        # training config
        *[(f"train --set {text}", (lambda text=text: resolve_training_config("smoke", None, [text])), key)
          for text, key in [("hkd.lr=NaN", "hkd.lr"), ("hkd.lr=nan", "hkd.lr"), ("hkd.lr=-1", "hkd.lr"),
                            ("hkd.lr=0", "hkd.lr"), ("teacher.batch_size=0", "teacher.batch_size"),
                            ("hkd.batch_size=null", "hkd.batch_size"), ("hkd.steps=-3", "hkd.steps"),
                            ("teacher.steps=1e3", "teacher.steps"), ('hkd.include_eps="false"', "hkd.include_eps"),
                            ("hkd.grad_clip=0", "hkd.grad_clip"), ("teacher.P_std=-1", "teacher.P_std"),
                            ("trajectories.rho=Infinity", "trajectories.rho"), ("seed=1.5", "seed"),
                            ("device=0", "device"), ("model.unet.img_resolution=0", "unet.img_resolution"),
                            ("model.diffusion.decoder_sigma=-1", "diffusion.decoder_sigma"),
                            ("hkd=3", "hkd must be a mapping"), ("teacher.lr", "--set expects key=value")]],
        # model API
        ("evolve tau nan", lambda: tiny.evolve(z, math.nan), "tau must be finite"),
        ("evolve tau -inf", lambda: tiny.evolve(z, -math.inf), "tau must be finite"),
        ("evolve tau numpy nan", lambda: tiny.evolve(z, np.array([[1.0], [np.nan]])), "tau must be finite"),
        ("evolve tau None", lambda: tiny.evolve(z, None), "tau must be a real number"),
        ("evolve tau 1e9 then decode (trained)", lambda: trained.decode(trained.evolve(z_trained, 1e9)), None, finite),
        ("evolve tau -1e9 then decode (trained)", lambda: trained.decode(trained.evolve(z_trained, -1e9)), None, finite),
        ("evolve tau [K,1] grid", lambda: tiny.evolve(z, torch.tensor([[0.0], [-1.0]])), None,
         lambda out: out[0].shape[:2] == (2, 2)),
        ("evolve tau [3] for 2 samples", lambda: tiny.evolve(z, torch.ones(3)), "does not broadcast"),
        ("evolve latents swapped", lambda: tiny.evolve(z[::-1], 1.0), "latent of level 0"),
        ("evolve latents missing", lambda: tiny.evolve(z[:3], 1.0), "expected 7 latents"),
        ("evolve latents float64", lambda: tiny.evolve([latent.double() for latent in z], 1.0), None,
         lambda out: out[0].dtype == torch.float64),
        ("decode latents half channels", lambda: tiny.decode([latent[:, ::2] for latent in z]), "latent of level 0"),
        ("decode a dict", lambda: tiny.decode({"a": 1}), "expected 7 latents"),
        ("decode int latents", lambda: tiny.decode([latent.int() for latent in z]), "must be floating point"),
        ("encode wrong size", lambda: tiny.encode(torch.zeros(1, 3, 16, 16), 1.0), "x_t must have shape"),
        ("encode int image", lambda: tiny.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 1.0),
         "floating-point"),
        ("encode inf image", lambda: tiny.encode(torch.full((1, 3, 32, 32), math.inf), 1.0), "NaN or infinite"),
        ("forward sigma -1", lambda: tiny(torch.zeros(1, 3, 32, 32), -1.0), "sigma must be positive"),
        ("forward sigma per-sample wrong", lambda: tiny(torch.zeros(2, 3, 32, 32), torch.ones(3)), "sigma must be"),
        ("sample seeds 2**64", lambda: tiny.sample([2 ** 64]), "seeds must be in [0, 2**63)"),
        ("sample seeds -5", lambda: tiny.sample(-5), "seeds must be in [0, 2**63)"),
        ("sample seeds True", lambda: tiny.sample(True), "seeds must be an integer"),
        ("sample seeds 1.0", lambda: tiny.sample([1.0]), "seeds must be integers"),
        ("sample seeds '3'", lambda: tiny.sample("3"), "seeds must be an integer"),
        ("sample seeds numpy", lambda: tiny.sample(np.arange(3)), None, lambda out: out.shape[0] == 3 and in_range(out)),
        ("sample seeds []", lambda: tiny.sample([]), "seeds is empty"),
        ("sample range(10**12)", lambda: tiny.sample(range(10 ** 12)), "sample fewer seeds per call"),
        ("sample batch_size None", lambda: tiny.sample([0], batch_size=None), "batch_size must be a positive integer"),
        ("sample batch_size -1", lambda: tiny.sample([0], batch_size=-1), "batch_size must be >= 1"),
        ("sample batch_size '8'", lambda: tiny.sample([0], batch_size="8"), "batch_size must be a positive integer"),
        ("sample 300 seeds, batch 100", lambda: tiny.sample(range(300), batch_size=100), None,
         lambda out: out.shape[0] == 300 and in_range(out)),
        ("sample class_labels on unconditional", lambda: tiny.sample([0], class_labels=torch.ones(1, 10)),
         "unconditional"),
        ("sample autocast_dtype 'bfloat16'", lambda: tiny.sample([0], autocast_dtype="bfloat16"), "autocast_dtype"),
        ("sample autocast_dtype int32", lambda: tiny.sample([0], autocast_dtype=torch.int32), "autocast_dtype"),
        ("Mix other NaN", lambda: interventions.Mix("all", other=[latent * math.nan for latent in z], ratio=0.5),
         "NaN or infinite"),
        ("EditSession reference_seed 2**64", lambda: editing.EditSession(tiny, [0], reference, reference_seed=2 ** 64),
         "reference_seed must be in [0, 2**63)"),
        ("inpaint seed 2**63", lambda: editing.inpaint(tiny, reference[None], "left", seed=2 ** 63), "seed must be in"),
        ("Gain nan", lambda: interventions.Gain("high", gain=math.nan), "gain must be finite"),
        ("Gain inf", lambda: interventions.Gain("high", gain=math.inf), "gain must be finite"),
        ("Gain None", lambda: interventions.Gain("high", gain=None), "gain must be a real number"),
        ("PhaseRotation angle nan", lambda: interventions.PhaseRotation("high", angle=math.nan), "angle must be finite"),
        ("Mix ratio 2", lambda: interventions.Mix("high", other=(), ratio=2), "ratio must lie in [0, 1]"),
        ("Band typo", lambda: bands.as_band("hihg"), "hihg"),
        ("gain_edit gain=1e30 (trained)", lambda: editing.gain_edit(trained, [0, 1], gain=1e30), None, in_range),
        ("gain_edit gain=-1e30 (trained)", lambda: editing.gain_edit(trained, [0], gain=-1e30), None, in_range),
        ("gain_edit gain=1e10 all (trained)", lambda: editing.gain_edit(trained, [0], band="all", gain=1e10), None,
         in_range),
        ("phase_edit gain=1e30 (trained)", lambda: editing.phase_edit(trained, [0], gain=1e30), None, in_range),
        ("frequency_edit ratio 1.1", lambda: editing.frequency_edit(tiny, [0], reference, ratio=1.1), "ratio must lie"),
        ("frequency_edit ratio nan", lambda: editing.frequency_edit(tiny, [0], reference, ratio=math.nan),
         "ratio must be finite"),
        ("frequency_edit empty reference", lambda: editing.frequency_edit(tiny, [0], torch.zeros(0, 3, 32, 32), 0.5),
         "reference is empty"),
        ("frequency_edit uint8 reference", lambda: editing.frequency_edit(tiny, [0], reference.byte(), 0.5),
         "floating-point"),
        ("frequency_edit reference in [0, 255]", lambda: editing.frequency_edit(tiny, [0], reference + 200, 0.5),
         "values must lie in [-1, 1]"),
        ("frequency_edit time 1000", lambda: editing.frequency_edit(tiny, [0], reference, 0.5, time=1000),
         "time must lie in [eps, T]"),
        ("frequency_edit time 'middle'", lambda: editing.frequency_edit(tiny, [0], reference, 0.5, time="middle"),
         "time must be 'mid'"),
        ("inpaint mask 2.0", lambda: editing.inpaint(tiny, reference[None], torch.full((1, 1, 32, 32), 2.0)),
         "mask values must lie in [0, 1]"),
        ("spectral_masking batch 0", lambda: interventions.spectral_masking(tiny, [0], batch_size=0),
         "batch_size must be >= 1"),
        ("trajectory times 1", lambda: hkdviz.trajectory(tiny, [0], times=1, progress=False), "times must be >= 2"),
        ("trajectory times [nan]", lambda: hkdviz.trajectory(tiny, [0], times=[80, math.nan], progress=False),
         "NaN or inf"),
        ("spectrum step inf", lambda: hkdviz.spectrum(tiny, step=math.inf, progress=False), "step must be a finite"),
        # load
        ("load dtype 'float16' then sample", lambda: hkdviz.load(checkpoint, device="cpu", dtype="float16").sample([0]),
         None, in_range),
        ("load dtype torch.int64", lambda: hkdviz.load(checkpoint, dtype=torch.int64), "floating-point dtype"),
        ("load dtype 'fp16'", lambda: hkdviz.load(checkpoint, dtype="fp16"), "dtype must be one of"),
        ("load device 'meta'", lambda: hkdviz.load(checkpoint, device="meta"), "device 'meta'"),
        ("load device 'cuda:x'", lambda: hkdviz.load(checkpoint, device="cuda:x"), "not a device name"),
        ("load device None", lambda: hkdviz.load(checkpoint, device=None), None, lambda m: m.device.type in ("cpu", "cuda")),
        ("load 'defualt'", lambda: hkdviz.load("defualt"), "checkpoint 'defualt' not found"),
        ("load a file", lambda: hkdviz.load(a_file), "is a file"),
        ("load truncated weights", lambda: hkdviz.load(truncated), "corrupt or truncated"),
        ("load without meta.json", lambda: hkdviz.load(no_meta), "meta.json: missing"),
        ("load meta.json a list", lambda: hkdviz.load(meta_list), "expected a JSON object"),
        ("load meta.json not JSON", lambda: hkdviz.load(meta_text), "not valid JSON"),
        ("load config sigma_max=-80", lambda: hkdviz.load(bad_sigma), "diffusion.sigma_max"),
        ("load config channel_mult=[]", lambda: hkdviz.load(bad_mult), "unet.channel_mult"),
        ("load config dropout='x'", lambda: hkdviz.load(bad_dropout), "unet.dropout"),
    ]
    api = [(entry[0], entry[1], entry[2], entry[3] if len(entry) > 3 else None) for entry in api]

    c, t = str(checkpoint), str(work)
    commands = [
        (["info", f"{t}/nope"], 2, "not found"),
        (["info", "defualt"], 2, "not found"),
        (["info", str(truncated)], 1, "corrupt or truncated"),
        (["info", str(meta_metrics)], 0, ""),
        (["info", str(meta_rows)], 0, ""),
        (["info", str(meta_step), "--json"], 0, ""),
        (["info", str(bad_mult)], 1, "unet.channel_mult"),
        (["info", c, "--jsn"], 2, "unrecognized arguments"),
        (["spectrum", c], 2, "-o/--output"),
        (["spectrum", c, "-o", f"{t}/s.nc", "--step", "nan"], 2, "step must be a finite"),
        (["spectrum", c, "-o", f"{t}/s.nc", "--step", "1e400"], 2, "step must be a finite"),
        (["spectrum", c, "-o", f"{t}/s.nc", "--device", "meta"], 2, "--device meta"),
        (["spectrum", c, "-o", f"{t}/s.nc", "--device", "cuda:7"], 2, "--device cuda:7"),
        (["spectrum", c, "-o", f"{t}/a-file/s.nc"], 1, "a-file"),
        (["spectrum", c, "-o", "/proc/hkdviz-battery.nc"], 1, "hkdviz-battery"),
        (["spectrum", c, "-o", f"{t}/s.nc"], 0, ""),
        (["trajectory", c, "-o", f"{t}/t.nc", "--seeds", "0-999999999"], 2, "at most 100,000"),
        (["trajectory", c, "-o", f"{t}/t.nc", "--seeds", "-3"], 2, "cannot read seeds"),
        (["trajectory", c, "-o", f"{t}/t.nc", "--seeds", "99999999999999999999"], 2, "2**63"),
        (["trajectory", c, "-o", f"{t}/t.nc", "--seeds", "a-b"], 2, "cannot read seeds"),
        (["trajectory", c, "-o", f"{t}/t.nc", "--times", "-4"], 2, "times must be >= 2"),
        (["trajectory", c, "-o", f"{t}/t.nc", "--times", "1.5"], 2, "invalid int value"),
        (["trajectory", c, "-o", f"{t}/t.nc", "--seeds", "0,1", "--times", "3"], 0, ""),
        (["figures", "--checkpoint", "defualt", "--out", f"{t}/figs-typo"], 2, "not found"),
        (["figures", "--checkpoint", str(truncated), "--out", f"{t}/figs-bad"], 1, "corrupt or truncated"),
        (["figures", "--data", str(data), "--out", f"{t}/figs", "--formats", "png",
          "--only", "spectrum_scatter,latent_energy"], 1, "spectrum.nc"),
        (["figures", "--data", str(empty_data), "--out", f"{t}/figs2"], 2, "holds none of the data files"),
        (["figures", "--data", f"{t}/none", "--out", f"{t}/figs3"], 2, "not a directory"),
        (["figures", "--formats", "bmp", "--data", str(data)], 2, "unknown format"),
        (["figures", "--threads", "-1"], 2, "--threads"),
        (["figures", "--checkpoint", c, "--device", "tpu", "--out", f"{t}/figs4"], 2, "--device tpu"),
        (["demo", "--checkpoint", "defualt", "--out", f"{t}/demo", "--no-progress"], 2, "not found"),
        (["demo", "--checkpoint", str(no_meta), "--out", f"{t}/demo", "--no-progress"], 1, "meta.json"),
        (["demo", "--quick", "--bogus"], 2, "unrecognized arguments"),
        (["train", "hkd", "--preset", "smoke", "--set", "hkd.lr=NaN", "--out", f"{t}/run"], 2, "hkd.lr"),
        (["train", "all", "--preset", "smoke", "--set", "model.unet.dropout=\"x\"", "--out", f"{t}/run"], 2,
         "unet.dropout"),
        (["train", "teacher", "--preset", "smokey", "--out", f"{t}/run"], 2, "unknown preset"),
        (["train", "teacher", "--preset", "smoke", "--set", "dataset=folder:/nonexistent", "--out", f"{t}/run"], 2,
         "nonexistent"),
        (["train", "teacher", "--preset", "smoke", "--out", str(a_file)], 2, "is a file"),
        (["train", "teacher", "--preset", "smoke", "--threads", "0", "--out", f"{t}/run"], 2, "--threads"),
        (["train", "trajectories", "--preset", "smoke", "--teacher", f"{t}/nope", "--out", f"{t}/run2"], 2,
         "not found"),
    ]
    shell = [
        (["info", "defualt"], 2, "not found"),
        (["spectrum", str(truncated), "-o", f"{t}/x.nc"], 1, "corrupt or truncated"),
        (["trajectory", "default", "-o", f"{t}/x.nc", "--seeds", "0-999999999"], 2, "at most 100,000"),
        (["figures", "--checkpoint", "defualt", "--out", f"{t}/f"], 2, "not found"),
        (["train", "hkd", "--preset", "smoke", "--set", "hkd.lr=-1", "--out", f"{t}/r"], 2, "hkd.lr"),
    ]
    return api, commands, shell


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", default=None, help="also write the table of tries to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        api, commands, shell = build_tries(Path(directory))
        for name, call, expect, check in api:
            rows.append(("api", name, *api_try(call, expect, check)))
        for argv_, code, expect in commands:
            rows.append(("cli", "hkdviz " + " ".join(argv_).replace(directory, "$TMP"), *cli_try(argv_, code, expect)))
        for argv_, code, expect in shell:
            rows.append(("shell", "hkdviz " + " ".join(argv_).replace(directory, "$TMP"),
                         *cli_try(argv_, code, expect, subprocess_run=True)))
        rows = [(kind, name, outcome, detail.replace(directory, "$TMP").replace(str(ROOT), "<repo>"))
                for kind, name, outcome, detail in rows]
    counts = {outcome: sum(row[2] == outcome for row in rows) for outcome in (CLEAR, CORRECT, SILENT, TRACEBACK, HANG)}
    for kind, name, outcome, detail in rows:
        print(f"{outcome:<15} {kind:<5} {name[:70]:<70} {detail[:110]}")
    print(f"\n{len(rows)} tries: " + ", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    if args.markdown:
        lines = ["| outcome | kind | try | what happened |", "|---|---|---|---|"]
        lines += [f"| {outcome} | {kind} | `{name}` | {detail.replace('|', '/')} |" for kind, name, outcome, detail in rows]
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0 if counts[SILENT] + counts[TRACEBACK] + counts[HANG] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
