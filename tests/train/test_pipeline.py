"""`hkdviz train all` end to end (a reduced smoke preset) and the CLI's handling of bad input."""
import json
import re
from pathlib import Path

import pytest
import torch

from hkdviz.train.cli import build_parser, main
from hkdviz.train.presets import (PRESETS, PresetError, apply_override, resolve_training_config, scaled,
                                  steps_scale_for_budget)

# Smaller than the smoke preset: 16x16 images and an 8-channel U-Net, a few steps per stage.
REDUCED = ["model.unet.img_resolution=16", "model.unet.model_channels=8", "dataset.resolution=16",
           "dataset.num_images=64", "teacher.steps=4", "teacher.batch_size=8", "teacher.log_every=2",
           "trajectories.count=12", "trajectories.num_steps=3", "trajectories.chunk_size=8",
           "hkd.steps=3", "hkd.batch_size=4", "hkd.log_every=1",
           "classifier.steps=5", "classifier.num_images=64", "classifier.num_held_out=32", "classifier.batch_size=16",
           'evaluate.options={"num_samples": 16}']


def cli(*arguments) -> int:
    return main([str(argument) for argument in arguments])


def sets(assignments):
    return [item for assignment in assignments for item in ("--set", assignment)]


@pytest.mark.slow
def test_train_all_end_to_end_gives_loadable_checkpoints(tmp_path, single_thread):
    import hkdviz
    from hkdviz.teacher.teacher import load_teacher

    out = tmp_path / "run"
    assert cli("all", "--preset", "smoke", *sets(REDUCED), "--device", "cpu", "--no-progress", "--out", out) == 0
    for stage in ("teacher/checkpoint", "hkd/checkpoint", "classifier", "export/hkd", "export/teacher",
                  "export/classifier"):
        assert (out / stage / "model.safetensors").exists(), stage
    for run in ("teacher", "hkd"):
        for name in ("config.json", "stats.jsonl", "log.txt", "resume.pt"):
            assert (out / run / name).exists(), f"{run}/{name}"
    assert (out / "trajectories" / "trajectories.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "smoke" and config["hkd"]["steps"] == 3
    model = hkdviz.load(out / "export", device="cpu")  # resolves export/hkd like checkpoints/default
    assert model.meta["step"] == 3 and model.meta["kind"] == "hkd"
    rows = model.meta["metrics"]["evaluation"]["rows"]
    assert rows[0]["nfe"] == 1 and (out / "evaluation" / "evaluation.json").exists()
    # Scored on seeds it was not trained on (trajectory seeds 0..11), and the meta says which.
    from hkdviz.evaluation.evaluate import EVALUATION_FIRST_SEED
    assert model.meta["trajectories"]["first_seed"] == 0 and model.meta["trajectories"]["count"] == 12
    seeds = model.meta["metrics"]["evaluation"]["seeds"]
    assert seeds == list(range(EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + 16))
    target = model.meta["metrics"]["evaluation"]["target"]  # what the RMSE / class agreement columns compare with
    assert target["nfe"] == max(row["nfe"] for row in rows if row["nfe"]) and rows[0]["rmse_to_target"] > 0
    # Which alpha third is "high" / "low" is measured on the trained weights and read back by the bands.
    from hkdviz.analysis.bands import model_aliases
    from hkdviz.analysis.edit_metrics import measure_band_aliases
    from hkdviz.train.loop import BAND_ALIAS_SEEDS
    assert model.meta["band_aliases"] == measure_band_aliases(model, BAND_ALIAS_SEEDS)
    assert model_aliases(model)["low"] == model.meta["band_aliases"]["low"]
    images = model.sample([0, 1, 2])
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
    teacher = load_teacher(out / "export", device="cpu")
    assert teacher.image_shape == (3, 16, 16)
    # A second run finds everything done and changes nothing but re-exports.
    before = (out / "hkd" / "checkpoint" / "model.safetensors").read_bytes()
    assert cli("all", "--preset", "smoke", *sets(REDUCED), "--device", "cpu", "--no-progress", "--out", out) == 0
    assert (out / "hkd" / "checkpoint" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("arguments, message", [
    (["all", "--preset", "nonexistent"], "unknown preset 'nonexistent'"),
    (["all", "--preset", "smoke", "--set", "hkd.no_such_key=1"], "unknown config key 'hkd.no_such_key'"),
    (["all", "--preset", "smoke", "--set", "hkd.lr"], "--set expects key=value"),
    (["all", "--preset", "smoke", "--set", "dataset=cifar10:/no/such/dir"], "does not exist"),
    (["all", "--preset", "smoke", "--set", "dataset=folder:/no/such/dir"], "does not exist"),
    (["all", "--preset", "cifar10"], "needs your local data"),
    (["teacher", "--preset", "smoke", "--set", "teacher.steps=0"], "teacher.steps must be a positive integer"),
    (["hkd", "--preset", "smoke"], "needs --teacher"),
    (["hkd", "--preset", "smoke", "--teacher", "/no/such/teacher", "--trajectories", "/no/such/dir"],
     "does not exist"),
    (["trajectories", "--preset", "smoke", "--teacher", "/no/such/teacher"], "not found"),
    (["teacher", "--preset", "smoke", "--config", "/no/such/config.yaml"], "config file /no/such/config.yaml does not exist"),
    (["teacher", "--preset", "smoke", "--device", "tpu"], "bad --device"),
    (["all", "--preset", "smoke", "--set", 'evaluate.options={"bogus": 1}'], "evaluate.options has unknown key(s) bogus"),
])
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, capsys, arguments, message):
    assert cli(*arguments, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_argparse_errors_exit_2(capsys):
    assert main(["nonsense-stage", "--out", "x"]) == 2
    assert main(["all"]) == 2  # --out missing
    assert "usage" in capsys.readouterr().err


def test_corrupt_config_file_and_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hkd: [unclosed")
    assert cli("teacher", "--preset", "smoke", "--config", bad, "--out", tmp_path / "o") == 2
    assert "cannot parse the config" in capsys.readouterr().err
    fake = tmp_path / "teacher"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "meta.json").write_text('{"format_version": 1, "kind": "teacher"}')
    (fake / "model.safetensors").write_bytes(b"truncated")
    assert cli("trajectories", "--preset", "smoke", "--teacher", fake, "--out", tmp_path / "t") == 1  # a failed run
    assert "corrupt or truncated" in capsys.readouterr().err


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("hkd:\n  lr: 0.0002\n  koopman:\n    levels: bottleneck\nmodel:\n  unet:\n    dropout: 0.1\n")
    config = resolve_training_config("default", path, ["hkd.t_consistency=false", "dataset.num_images=1000",
                                                       "hkd.distance={\"name\": \"mse\"}"])
    assert config["hkd"]["lr"] == 2e-4 and config["hkd"]["koopman"] == {"operator": "block", "levels": "bottleneck"}
    assert config["hkd"]["t_consistency"] is False
    assert config["model"] == {"preset": "tiny", "unet": {"model_channels": 48, "dropout": 0.1}}  # merged into the preset's
    assert config["dataset"] == {"name": "shapes", "num_images": 1000, "seed": 0}
    assert config["hkd"]["distance"] == {"name": "mse"}
    # A data set of another kind replaces the old spec instead of merging with it.
    replaced = apply_override(config, 'dataset={"name": "digits"}')
    assert replaced["dataset"] == {"name": "digits"}
    with pytest.raises(PresetError, match="unknown config key 'teacher.learning_rate'"):
        resolve_training_config("smoke", overrides=["teacher.learning_rate=1"])
    half = scaled(resolve_training_config("default", overrides=["steps_scale=0.5"]))
    default = resolve_training_config("default")
    assert half["teacher"]["steps"] == default["teacher"]["steps"] // 2
    assert half["trajectories"]["count"] == default["trajectories"]["count"] // 2
    cooled = scaled(resolve_training_config("default", overrides=["steps_scale=0.5", "teacher.steps=1000",
                                                                  "teacher.lr_cooldown_steps=201"]))
    assert (cooled["teacher"]["steps"], cooled["teacher"]["lr_cooldown_steps"]) == (500, 101)


def test_steps_scale_for_budget_fits_the_measured_rates():
    config = resolve_training_config("default", overrides=["teacher.steps=1875", "teacher.batch_size=256",
                                                           "trajectories.count=6144", "hkd.steps=450",
                                                           "hkd.lr_cooldown_steps=100", "hkd.batch_size=128"])
    # Known answer: 480k teacher images at 4,800/s = 100 s, 6,144 trajectories at 6,144/s = 1 s,
    # 57,600 HKD samples at 5,760/s = 10 s: 111 s per unit of scale; (400 - 60) / 111 = 3.06 -> 3.0.
    rates = {"teacher_images_per_second": 4800.0, "trajectories_per_second": 6144.0, "hkd_samples_per_second": 5760.0}
    scale, estimate = steps_scale_for_budget(config, rates, seconds=400, fixed_seconds=60)
    assert scale == 3.0
    assert estimate["teacher"] == pytest.approx(300) and estimate["hkd"] == pytest.approx(30)
    assert estimate["total"] == pytest.approx(393) and estimate["total"] <= 400
    # The estimate is the scaled config's work at those rates.
    trained = scaled(apply_override(config, f"steps_scale={scale}"))
    assert trained["teacher"]["steps"] * 256 / 4800 == pytest.approx(estimate["teacher"])
    assert steps_scale_for_budget(config, rates, seconds=1e6)[0] == 16.0  # capped
    with pytest.raises(PresetError, match="do not fit steps_scale 0.25"):
        steps_scale_for_budget(config, rates, seconds=80, fixed_seconds=60)


def test_ablations_and_gpu_session_scripts_refuse_bad_input_before_any_work(tmp_path):
    """scripts/ablations.sh --help shows every variant and exits 0, no RUN_DIR is a usage error (2);
    scripts/gpu_session.sh parses, and refuses a TEACHER that is no checkpoint (2) before it trains."""
    import os
    import subprocess
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    shown = subprocess.run(["bash", str(scripts / "ablations.sh"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    for variant in ("full", "full_seed1", "bottleneck", "no_tcons", "none"):
        assert f"\n  {variant} " in shown.stdout, variant
    assert subprocess.run(["bash", str(scripts / "ablations.sh")], capture_output=True).returncode == 2
    assert subprocess.run(["bash", "-n", str(scripts / "gpu_session.sh")]).returncode == 0
    refused = subprocess.run(["bash", str(scripts / "gpu_session.sh"), "1"], capture_output=True, text=True,
                             env={**os.environ, "TEACHER": str(tmp_path / "nothing"), "OUT": str(tmp_path / "out")})
    assert refused.returncode == 2 and "is not a checkpoint directory" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_plan_scale_script_reads_bench_json(tmp_path, capsys):
    import importlib.util
    script = Path(__file__).resolve().parents[2] / "scripts" / "plan_scale.py"
    spec = importlib.util.spec_from_file_location("plan_scale", script)
    plan_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan_scale)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"teacher": {"images_per_second": 4800.0}, "trajectories": {"images_per_second": 6144.0},
                                 "hkd": {"samples_per_second": 5760.0}}))
    overrides = ["--set", "teacher.steps=1875", "--set", "teacher.batch_size=256", "--set", "trajectories.count=6144",
                 "--set", "hkd.steps=450", "--set", "hkd.lr_cooldown_steps=100", "--set", "hkd.batch_size=128"]
    assert plan_scale.main(["--bench", str(bench), "--seconds", "400", *overrides]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "3" and "total 393 s" in captured.err
    with pytest.raises(SystemExit) as exit_info:
        plan_scale.main(["--bench", str(tmp_path / "missing.json"), "--seconds", "400"])
    assert exit_info.value.code == 2 and "missing.json" in capsys.readouterr().err


def test_shipped_default_was_trained_by_the_default_preset():
    # checkpoints/default/{teacher,hkd} record the config that trained them; `--preset default` must
    # resolve to the same recipe (memory limits and logging cadence aside), or the docs' claim fails.
    root = Path(__file__).resolve().parents[2] / "checkpoints" / "default"
    if not (root / "hkd" / "meta.json").exists():
        pytest.skip("no shipped default checkpoint in this checkout")
    preset = scaled(resolve_training_config("default"))
    teacher_meta = json.loads((root / "teacher" / "meta.json").read_text())
    hkd_meta = json.loads((root / "hkd" / "meta.json").read_text())
    ignored = {"data_memory_limit_mb", "log_every", "resume_every", "teacher", "trajectories"}
    # Keys added after the checkpoint was trained, with the values that reproduce the code it was trained by.
    added_later = {"output": "raw", "decoder_sigma": None, "latent_weight": 0.0, "generator_lr_scale": 1.0,
                   "generator_smoothness": 0.0, "time_sampling": "uniform", "recon_weight": 1.0,
                   "state_weight": 0.0}
    for section, recorded in (("teacher", teacher_meta["training"]["teacher"]), ("hkd", hkd_meta["training"]["hkd"])):
        expected = {key: value for key, value in preset[section].items() if key not in ignored}
        recorded = {key: recorded[key] if key in recorded else added_later[key] for key in expected}
        assert recorded == json.loads(json.dumps(expected)), section
    assert hkd_meta["trajectories"]["count"] == preset["trajectories"]["count"]
    assert hkd_meta["trajectories"]["num_steps"] == preset["trajectories"]["num_steps"]
    from hkdviz.model.config import resolve_config
    for kind in ("teacher", "hkd"):  # the network too (the 48-channel tiny U-Net)
        # Resolved, so that keys added since (output, koopman.time) take the defaults old checkpoints load with.
        stored = resolve_config(json.loads((root / kind / "config.json").read_text()))
        assert stored == resolve_config(preset["model"]), kind


def test_presets_are_plain_data_and_parser_lists_them():
    for name in PRESETS:
        json.dumps(resolve_training_config(name))
    assert "--preset" in build_parser().format_help()
    paper = resolve_training_config("cifar10")
    assert paper["hkd"]["batch_size"] == 256 and paper["hkd"]["lr"] == 1e-3 and paper["hkd"]["epochs"] == 53
    assert resolve_training_config("ffhq64")["hkd"]["batch_size"] == 64


def test_model_override_naming_a_preset_replaces_the_model_section():
    # The default preset is tiny at 48 channels: naming a preset starts from that preset alone, while
    # a nested key merges into the preset's model.
    assert resolve_training_config("default")["model"] == {"preset": "tiny", "unet": {"model_channels": 48}}
    assert resolve_training_config("default", overrides=["model.preset=tiny"])["model"] == {"preset": "tiny"}
    assert resolve_training_config("default", overrides=['model={"preset": "cifar10"}'])["model"] == {
        "preset": "cifar10"}
    merged = resolve_training_config("default", overrides=["model.unet.num_blocks=2"])["model"]
    assert merged == {"preset": "tiny", "unet": {"model_channels": 48, "num_blocks": 2}}
    assert resolve_training_config("default-cpu")["model"] == {"preset": "tiny"}


def test_cpu_duration_note_estimates_from_measured_rates():
    from hkdviz.train.cli import cpu_duration_note
    from hkdviz.train.presets import DEFAULT_CPU_BUDGET, estimated_cpu_minutes
    # Known answer: default-cpu with bf16 reproduces the run it was measured on (81.4 minutes).
    measured = DEFAULT_CPU_BUDGET["measured_minutes_2_cpu_cores_bf16"]["total"]
    assert estimated_cpu_minutes(resolve_training_config("default-cpu"), True) == pytest.approx(measured, abs=0.5)
    # The default preset at 48 channels costs each stage's measured cost at that width against 24 channels
    # (its 24-channel twin: 2x the teacher images, 8x the trajectories, 6x the HKD samples of default-cpu);
    # float32 is slower; steps_scale counts.
    default_bf16 = estimated_cpu_minutes(resolve_training_config("default"), True)
    narrow = resolve_training_config("default", overrides=["model.preset=tiny"])
    costs = DEFAULT_CPU_BUDGET["cost_by_model_channels"][48]
    assert default_bf16 - 4.3 == pytest.approx(sum(
        costs[stage] * estimated_cpu_minutes(narrow, True, stages=(stage,)) for stage in costs))
    assert 290 < estimated_cpu_minutes(narrow, True) < 310
    assert estimated_cpu_minutes(resolve_training_config("default"), False) > default_bf16
    half = scaled(resolve_training_config("default", overrides=["steps_scale=0.5"]))  # as the CLI runs it
    assert estimated_cpu_minutes(half, True) < 0.6 * default_bf16
    assert estimated_cpu_minutes(half, True) > 0.5 * default_bf16  # scaled once, not twice
    assert "about 13.9 hours" in cpu_duration_note(resolve_training_config("default"), native_bfloat16=True)
    assert "about 22.7 hours" in cpu_duration_note(resolve_training_config("default"), native_bfloat16=False)
    unmeasured = resolve_training_config("default", overrides=["model.unet.model_channels=32"])
    assert "no CPU estimate" in cpu_duration_note(unmeasured, native_bfloat16=True)
    with pytest.raises(PresetError, match="no CPU estimate for this model"):
        estimated_cpu_minutes(unmeasured, True)
    assert cpu_duration_note(resolve_training_config("default-cpu"), native_bfloat16=True) is None
    assert "float32" in cpu_duration_note(resolve_training_config("default-cpu"), native_bfloat16=False)
    assert cpu_duration_note(resolve_training_config("smoke"), native_bfloat16=False) is None
    # One stage: its own estimate, not the pipeline's (default-cpu's teacher: 7,500 x 64 at 124 images/s).
    teacher_only = cpu_duration_note(resolve_training_config("default-cpu"), native_bfloat16=False, stage="teacher")
    assert "teacher stage takes about 65 minutes" in teacher_only and "pipeline" not in teacher_only
    assert estimated_cpu_minutes(resolve_training_config("default-cpu"), True, stages=("hkd",)) == pytest.approx(
        1_800 * 32 / 37.0 / 60)
    assert cpu_duration_note(resolve_training_config("default-cpu"), native_bfloat16=True, stage="hkd") is None
    # The state term costs the HKD stage its measured factor, and nothing else.
    state = resolve_training_config("default-cpu", overrides=["hkd.state_weight=1"])
    assert estimated_cpu_minutes(state, True, stages=("hkd",)) == pytest.approx(
        DEFAULT_CPU_BUDGET["state_term_hkd_cost"] * 1_800 * 32 / 37.0 / 60)
    assert estimated_cpu_minutes(state, True, stages=("teacher",)) == estimated_cpu_minutes(
        resolve_training_config("default-cpu"), True, stages=("teacher",))
    assert "sized for a GPU" in cpu_duration_note(resolve_training_config("default"), native_bfloat16=True,
                                                  stage="trajectories")
    with pytest.raises(PresetError, match="no CPU estimate"):
        estimated_cpu_minutes(resolve_training_config("default"), True, stages=("classifier",))


# -- hkdviz.train.run: the function `hkdviz train STAGE` runs ------------------------------------------
def test_run_gives_the_cli_checkpoints_stage_by_stage(tmp_path, single_thread):
    import hkdviz
    from hkdviz.train import run
    common = dict(preset="smoke", overrides=REDUCED, device="cpu", progress=False)
    assert cli("teacher", "--preset", "smoke", *sets(REDUCED), "--device", "cpu", "--no-progress",
               "--out", tmp_path / "cli-teacher") == 0
    teacher = run("teacher", out=tmp_path / "teacher", **common)
    assert teacher == tmp_path / "teacher" / "checkpoint"
    # Same config, same seed: the function trains the very weights the command trains.
    assert (teacher / "model.safetensors").read_bytes() == (
        tmp_path / "cli-teacher" / "checkpoint" / "model.safetensors").read_bytes()
    trajectories = run("trajectories", out=tmp_path / "trajectories", teacher=teacher, **common)
    assert trajectories == tmp_path / "trajectories" and (trajectories / "trajectories.json").is_file()
    hkd = run("hkd", out=tmp_path / "hkd", teacher=teacher, trajectories=trajectories, **common)
    assert hkd == tmp_path / "hkd" / "checkpoint"
    model = hkdviz.load(hkd, device="cpu")
    assert model.meta["step"] == 3 and model.meta["kind"] == "hkd"


@pytest.mark.parametrize("stage, options, error, message", [
    ("nonsense", {}, "UsageError", "unknown stage 'nonsense'"),
    ("all", {"preset": "nonexistent"}, "PresetError", "unknown preset 'nonexistent'"),
    ("all", {"preset": "smoke", "overrides": "hkd.no_such_key=1"}, "PresetError", "unknown config key 'hkd.no_such_key'"),
    ("hkd", {"preset": "smoke"}, "UsageError", "needs --teacher"),
    ("teacher", {"preset": "smoke", "device": "tpu"}, "UsageError", "bad --device"),
    ("teacher", {"preset": "smoke", "threads": 0}, "UsageError", "--threads must be >= 1"),
])
def test_run_refuses_bad_input_like_the_cli(tmp_path, stage, options, error, message):
    from hkdviz import errors
    from hkdviz.train import presets, run
    expected = getattr(errors, error, None) or getattr(presets, error)
    with pytest.raises(expected, match=re.escape(message)) as raised:
        run(stage, out=tmp_path / "out", **options)
    assert errors.exit_code(raised.value) == 2
    assert not (tmp_path / "out" / "teacher").exists()  # refused before any training


def test_every_base_config_key_has_a_one_line_meaning(monkeypatch):
    from hkdviz.train import presets
    keys = list(presets._meaning_paths(presets.BASE))
    assert (("hkd",), "koopman") in keys and (("hkd",), "distance") in keys and ((), "model") in keys  # free-form
    assert (("hkd",), "latent_weight") in keys and (("hkd",), "generator_lr_scale") in keys
    for path, key in keys:
        meaning = presets.MEANINGS.get(path, {}).get(key)
        assert isinstance(meaning, str) and meaning.strip() and "\n" not in meaning, (path, key)
    # No meaning for a key BASE does not have (a renamed or removed key leaves no stale line behind).
    assert {(path, key) for path, section in presets.MEANINGS.items() for key in section} == set(keys)
    for path, schema in presets.TRAINING_SCHEMA.items():  # every validated key is explained too
        assert set(schema) <= set(presets.MEANINGS[path]), path
    # A key added to BASE without a meaning is named, not printed blank.
    monkeypatch.setitem(presets.BASE, "hkd", {**presets.BASE["hkd"], "new_knob": 1})
    with pytest.raises(PresetError, match="no meaning for config key 'hkd.new_knob'"):
        presets.explain_config(presets.BASE)


def test_print_config_is_json_and_explain_config_lists_every_key(tmp_path, capsys):
    from hkdviz.train.presets import BASE, MEANINGS, _meaning_paths
    arguments = ("all", "--preset", "smoke", "--set", "hkd.lr=2e-4", "--set", "steps_scale=0.5", "--out", tmp_path)
    assert cli(*arguments, "--print-config") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == scaled(resolve_training_config("smoke", overrides=["hkd.lr=2e-4", "steps_scale=0.5"]))
    assert cli(*arguments, "--explain-config") == 0
    lines = capsys.readouterr().out.splitlines()
    headings = [line for line in lines if line.startswith("[")]
    assert headings == ["[top level]", "[teacher]", "[trajectories]", "[hkd]", "[classifier]", "[evaluate]"]
    rows = [line for line in lines if line.startswith("  ")]
    assert len(rows) == len(list(_meaning_paths(BASE)))
    by_key = {}
    section = None
    for line in lines[1:]:
        if line.startswith("["):
            section = line.strip("[]")
        else:
            by_key[(section, line.split()[0])] = line
    lr = by_key[("hkd", "lr")]
    assert lr.split()[1:4] == ["*", "0.0002", "0.001"] and lr.endswith("Adam's peak learning rate")
    steps = by_key[("hkd", "steps")]  # the value as it runs: the smoke preset's 20 steps at steps_scale 0.5
    assert steps.split()[1:4] == ["*", "10", "10000"]
    assert by_key[("hkd", "koopman")].split()[1] == '{"operator":'  # a free-form part on one line
    unchanged = by_key[("teacher", "eps")]
    assert unchanged.split()[1:3] == ["1e-08", "1e-08"]  # no "*" when the value is the default
    meaning_column = set()
    for (section, key), line in by_key.items():
        meaning = MEANINGS[() if section == "top level" else (section,)][key]
        assert line.endswith(meaning), line
        meaning_column.add(len(line) - len(meaning))
    assert len(meaning_column) == 1  # aligned: every meaning starts in the same column
    assert cli(*arguments, "--print-config", "--explain-config") == 2  # one or the other


def test_bench_train_comparison_table(capsys):
    """bench_train.py's side-by-side comparisons: a table of both override sets and their ratio; one
    comparison per run."""
    from benchmarks import bench_train as bench
    assert set(bench.COMPARISONS) == {"cpu_bf16", "state_term"}
    assert bench.COMPARISONS["state_term"] == {"without": ["hkd.state_weight=0"], "with": ["hkd.state_weight=1"]}
    for overrides in bench.COMPARISONS["state_term"].values():  # every set resolves against the default preset
        resolve_training_config("default", overrides=overrides)

    def rates(scale):
        return {"teacher": {"images_per_second": 100.0}, "trajectories": {"images_per_second": 8.0},
                "hkd": {"samples_per_second": 10.0 * scale}}

    bench.print_comparison_table({"without": rates(1.0), "with": rates(0.5)})
    table = capsys.readouterr().out
    assert "| measure | without | with | with / without |" in table
    assert "| HKD training, samples/s | 10.0 | 5.0 | 0.50x |" in table
    with pytest.raises(SystemExit):
        bench.main(["--compare-cpu-bf16", "--compare-state-term"])
