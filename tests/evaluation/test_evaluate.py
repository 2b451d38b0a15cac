"""`evaluate` and `hkdviz eval`: same seeds for every method, a known-answer teacher, clean errors."""
import json
import shutil

import pytest
import torch

from hkdviz.evaluation.classifier import ImageClassifier
from hkdviz.data import BACKGROUND_NAMES, SHAPE_NAMES, ShapesDataset
from hkdviz.evaluation.evaluate import (EVALUATION_FIRST_SEED, REFERENCE_SEED, EvaluationError, evaluate, format_table,
                                        held_out_reference, heun_nfe, main, parse_dataset_spec, training_seed_overlap)


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


class StubTeacher:
    """Teacher stand-in: the data image of each seed plus noise that shrinks with the step count,
    so more steps must score better. Records the seeds it was asked for."""

    image_shape = (3, 32, 32)

    def __init__(self):
        self.calls = []

    def sample(self, seeds, num_steps):
        self.calls.append((list(seeds), num_steps))
        images, _ = ShapesDataset(max(seeds) + 1, seed=7).materialize(list(seeds), progress=False)
        images = images.float() / 127.5 - 1.0
        generator = torch.Generator().manual_seed(num_steps)
        return (images + (0.8 / num_steps) * torch.randn(images.shape, generator=generator)).clamp(-1, 1)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return ImageClassifier(heads={"shape": list(SHAPE_NAMES)}).eval()


@pytest.fixture(scope="module")
def two_heads():
    """An untrained classifier with both shapes heads (shape and background)."""
    torch.manual_seed(0)
    return ImageClassifier(heads={"shape": list(SHAPE_NAMES), "background": list(BACKGROUND_NAMES)}).eval()


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory, classifier):
    from hkdviz.checkpoint import save_checkpoint
    directory = tmp_path_factory.mktemp("classifier")
    return save_checkpoint(classifier, directory, kind="classifier", meta={"metrics": {}}, config=classifier.config)


def test_heun_nfe():
    assert [heun_nfe(steps) for steps in (18, 8, 3, 1)] == [35, 15, 5, 1]


@pytest.mark.slow
def test_evaluate_scores_every_method_on_the_same_seeds(tiny_model, classifier, tmp_path):
    teacher = StubTeacher()
    seeds = list(range(100, 148))
    result = evaluate(tiny_model, teacher, classifier, seeds=seeds, batch_size=32, progress=False,
                      out_dir=tmp_path)
    rows = result["rows"]
    assert [row["method"] for row in rows] == ["HKD (one step)", "teacher (Heun)", "teacher (Heun)",
                                               "teacher (Heun)", "teacher (Euler)", "held-out data"]
    assert [row["nfe"] for row in rows[:5]] == [1, 35, 15, 5, 1]
    # Every teacher row saw exactly the evaluation seeds (in batches), after one warm-up call.
    for steps in (18, 8, 3, 1):
        asked = [seed for call_seeds, call_steps in teacher.calls[1:] if call_steps == steps for seed in call_seeds]
        assert asked == seeds
    # Known answer: the stub's noise shrinks with the step count, so every distance must too.
    teacher_rows = rows[1:5]
    for key in ("kid_x1e3", "local_fd", "swd"):
        values = [row[key] for row in teacher_rows]
        assert all(better < worse for better, worse in zip(values, values[1:])), (key, values)
    data_row = rows[-1]
    assert data_row["swd"] < teacher_rows[-1]["swd"] and data_row["seconds_per_image"] is None
    for row in rows[:5]:
        assert row["seconds_per_image"] > 0 and row["kid_std_x1e3"] >= 0 and 0 < row["confidence"] <= 1
    # The stub's added noise shrinks with the steps: the noisier rows have more high-frequency power.
    shares = [row["high_frequency_share"] for row in teacher_rows]
    assert all(cleaner < noisier for cleaner, noisier in zip(shares, shares[1:])), shares
    assert result["reference"]["seed"] == REFERENCE_SEED and result["reference"]["reference_indices"] == [0, 48]
    assert result["reference"]["data_row_indices"] == [48, 96]
    table = format_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("method") and "local KID x1e3" in lines[0] and "FID" not in lines[0]
    assert "HF share" in lines[0] and "|grad|" in lines[0]
    assert len({len(line) for line in lines[2:8]} | {len(lines[0])}) <= 2  # aligned (rstrip may trim one column)
    assert "not comparable with published FID" in table
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["rows"][0]["method"] == "HKD (one step)"
    assert (tmp_path / "table.txt").read_text().startswith("method")


def test_every_row_is_compared_seed_by_seed_with_the_target(tiny_model, two_heads):
    """The target is the teacher at its most steps (sampled first, listed in the given order). The stub's
    samples are the seed's data image plus noise of std 0.8 / steps drawn from generator seed `steps`,
    so the same step count reproduces the target exactly, and fewer steps move further from it."""
    seeds = list(range(200, 232))
    result = evaluate(tiny_model, StubTeacher(), two_heads, seeds=seeds, teacher_steps=(8, 18, 18, 2),
                      batch_size=16, progress=False)
    assert result["target"] == {"method": "teacher", "num_steps": 18, "nfe": 35}
    hkd, eight, target, again, two, data = result["rows"]
    assert [row["num_steps"] for row in (eight, target, again, two)] == [8, 18, 18, 2]
    assert target["rmse_to_target"] is None and target["target_agreement"] is None
    assert data["rmse_to_target"] is None and data["target_agreement"] is None
    # The same step count reproduces the target: distance 0, every class the same, on every head.
    assert again["rmse_to_target"] == 0.0 and again["target_agreement_by_head"] == {"shape": 1.0, "background": 1.0}
    # Independent noise of std 0.8/8 and 0.8/18 (clamping can only shrink it): RMSE close to their quadrature sum.
    assert eight["rmse_to_target"] == pytest.approx((0.1 ** 2 + (0.8 / 18) ** 2) ** 0.5, rel=0.15)
    assert eight["rmse_to_target"] < two["rmse_to_target"] and hkd["rmse_to_target"] > 0
    for row in (hkd, eight, two):
        assert set(row["target_agreement_by_head"]) == {"shape", "background"}
        assert row["target_agreement"] == row["target_agreement_by_head"]["shape"]
        assert 0.0 <= row["target_agreement"] <= 1.0
    # Every head gets its class KL; class_kl stays the main head's.
    for row in result["rows"]:
        assert set(row["class_kl_by_head"]) == {"shape", "background"} and row["class_kl_by_head"]["shape"] == row["class_kl"]
    assert result["classifier_main_head"] == "shape"
    header = format_table(result).splitlines()[0]
    assert "KL background" in header and "KL shape" not in header
    assert "class = 35 NFE" in header and "RMSE to 35 NFE" in header
    assert "(the distillation target)" in format_table(result)
    # A faithfulness summary prints its headline numbers, the image-space ones when it has them.
    faithful = {"num_samples": 8, "koopman_beats_constant": 0.25, "reference_time": 2.5, "koopman_error_median_at": 0.5,
                "constant_error_median_at": 0.4, "consistency_error_mean": 0.1, "consistency_error_at_T": 0.2,
                "koopman_contribution": 0.05}
    text = " ".join(format_table({**result, "faithfulness": faithful}).split())
    assert "beats the constant latent in 25% of (level, grid time) pairs" in text and "D(x_t, t)" not in text
    states = {"readout_error_mean": 0.111, "path_state_error_mean": 0.222, "constant_state_error_mean": 0.333}
    text = " ".join(format_table({**result, "faithfulness": {**faithful, **states}}).split())
    assert "the encoder's own 0.111, the Koopman path's 0.222, the constant latent's 0.333" in text


def test_evaluate_by_checkpoint_paths_as_the_training_pipeline_calls_it(tiny_checkpoint, classifier_checkpoint,
                                                                       tmp_path):
    result = evaluate(checkpoint=str(tiny_checkpoint), classifier=str(classifier_checkpoint), num_samples=8,
                      device="cpu", out_dir=tmp_path / "evaluation", progress=False)
    assert result["hkd"] == str(tiny_checkpoint.resolve())
    assert result["classifier"] == str(classifier_checkpoint.resolve())
    assert [row["method"] for row in result["rows"]] == ["HKD (one step)", "held-out data"]
    # The test checkpoint's meta names no real data set: the shapes reference is used, and said so.
    assert any("no known held-out split" in note for note in result["notes"])
    assert json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())["num_samples"] == 8
    with pytest.raises(EvaluationError, match="needs an HKD model"):
        evaluate(classifier=str(classifier_checkpoint))


def test_default_seeds_are_not_training_seeds(tiny_model, monkeypatch):
    """Trajectories use seeds from 0: the default evaluation seeds start far beyond them, and a seed set
    that overlaps the checkpoint's recorded trajectory seeds is flagged."""
    images, _ = ShapesDataset(16, seed=3).materialize(progress=False)
    result = evaluate(tiny_model, None, None, reference_images=images, num_samples=8, progress=False)
    assert result["seeds"] == list(range(EVALUATION_FIRST_SEED, EVALUATION_FIRST_SEED + 8))
    assert not any("training trajectory seeds" in note for note in result["notes"])
    monkeypatch.setattr(tiny_model, "meta", {"trajectories": {"count": 10, "first_seed": 4}}, raising=False)
    assert training_seed_overlap(tiny_model, range(16)) == 10  # seeds 4..13
    assert training_seed_overlap(tiny_model, [EVALUATION_FIRST_SEED]) == 0
    result = evaluate(tiny_model, None, None, reference_images=images, seeds=range(8), progress=False)
    assert any(note.startswith("4 of the 8 seeds are among the HKD's training") for note in result["notes"])
    monkeypatch.setattr(tiny_model, "meta", {"trajectories": {"count": 3}})  # older metas: first_seed 0
    assert training_seed_overlap(tiny_model, range(8)) == 3
    monkeypatch.setattr(tiny_model, "meta", {})
    assert training_seed_overlap(tiny_model, range(8)) == 0


def test_evaluate_without_teacher_or_classifier(tiny_model):
    images, _ = ShapesDataset(16, seed=3).materialize(progress=False)
    result = evaluate(tiny_model, None, None, reference_images=images, seeds=range(16), progress=False)
    assert [row["method"] for row in result["rows"]] == ["HKD (one step)"]
    row = result["rows"][0]
    assert row["kid_x1e3"] is None and row["swd"] > 0
    assert any("no teacher" in note for note in result["notes"])
    assert "-" in format_table(result).splitlines()[2]
    assert result["target"] is None and row["rmse_to_target"] is None and row["class_kl_by_head"] is None
    assert "RMSE to" not in format_table(result) and format_table(result).splitlines()[0].count("KL") == 1
    with pytest.raises(EvaluationError, match="reference images must be"):
        evaluate(tiny_model, None, None, reference_images=images[:, :, :16], seeds=range(16), progress=False)
    with pytest.raises(EvaluationError, match="at least 4 seeds"):
        evaluate(tiny_model, None, None, reference_images=images, seeds=[0, 1], progress=False)


def test_evaluate_with_a_real_ideal_teacher(tiny_model, classifier):
    """The ideal denoiser of 64 shapes images: 8 Heun steps land near data points, 1 Euler step
    gives the blurry data mean, so the teacher's own rows must rank 8 steps above 1."""
    from hkdviz.teacher.ideal import IdealDenoiser
    from hkdviz.teacher.teacher import Teacher
    data, _ = ShapesDataset(64, seed=9).materialize(progress=False)
    teacher = Teacher(IdealDenoiser(data.float() / 127.5 - 1.0), config=tiny_model.config)
    reference, _ = ShapesDataset(32, seed=9).materialize(progress=False)  # the same images: a data-memorising ideal
    result = evaluate(tiny_model, teacher, classifier, reference_images=reference, seeds=range(32),
                      teacher_steps=(8, 1), progress=False)
    heun, euler = result["rows"][1], result["rows"][2]
    assert (heun["nfe"], euler["nfe"]) == (15, 1)
    assert heun["swd"] < euler["swd"] and heun["local_fd"] < euler["local_fd"]


def test_held_out_reference_is_disjoint_from_training():
    spec = parse_dataset_spec("name=shapes, num_images=50000, resolution=32, seed=0, xflip=True")
    assert spec == {"name": "shapes", "num_images": 50000, "resolution": 32, "seed": 0, "xflip": True}
    images, description = held_out_reference(spec, 8, progress=False)
    training, _ = ShapesDataset(8, seed=0).materialize(progress=False)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert description["seed"] == REFERENCE_SEED and description["xflip"] is False
    assert not any(torch.equal(images[i], training[i]) for i in range(8))
    expected, _ = ShapesDataset(8, seed=REFERENCE_SEED).materialize(progress=False)
    assert torch.equal(images, expected)
    with pytest.raises(EvaluationError, match="reserves"):
        held_out_reference({"name": "shapes", "seed": REFERENCE_SEED}, 4, progress=False)
    with pytest.raises(EvaluationError, match="no held-out split"):
        held_out_reference("digits", 4, progress=False)
    with pytest.raises(EvaluationError, match="cannot build"):
        held_out_reference("no-such-set", 4, progress=False)


# -- the command line ----------------------------------------------------------------------------------
def test_cli_runs_and_writes_json(tiny_checkpoint, classifier_checkpoint, tmp_path, capsys):
    output = tmp_path / "eval.json"
    code = main([str(tiny_checkpoint), "--teacher", "none", "--classifier", str(classifier_checkpoint),
                 "--num-samples", "12", "--device", "cpu", "--json", str(output), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("method") and "HKD (one step)" in printed
    result = json.loads(output.read_text())
    assert result["num_samples"] == 12 and result["rows"][0]["nfe"] == 1
    assert result["rows"][-1]["method"] == "held-out data"


def test_cli_finds_companions_of_a_shipped_name(tiny_checkpoint, classifier_checkpoint, tmp_path, monkeypatch,
                                                capsys):
    import hkdviz.checkpoint
    root = tmp_path / "shipped"
    shutil.copytree(tiny_checkpoint, root / "mini" / "hkd")
    shutil.copytree(classifier_checkpoint, root / "mini" / "classifier")
    monkeypatch.setattr(hkdviz.checkpoint, "CHECKPOINT_ROOT", root)
    assert main(["mini", "--num-samples", "8", "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "no teacher found" in captured.err
    assert "HKD (one step)" in captured.out and "teacher" not in captured.out.split("note:")[0]
    # An exported run folder (NAME/hkd beside NAME/classifier) is found the same way.
    assert main([str(root / "mini" / "hkd"), "--num-samples", "8", "--device", "cpu", "--quiet"]) == 0
    assert "local KID" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["/no/such/checkpoint"], "not found"),
    (["CHECKPOINT", "--classifier", "/no/such/classifier"], "not found"),
    (["CHECKPOINT", "--teacher", "/no/such/teacher"], "not found"),
    (["CHECKPOINT", "--inception", "/no/such/weights.pth"], "no such file"),
    (["CHECKPOINT", "--teacher-steps", "18,x"], "--teacher-steps"),
    (["CHECKPOINT", "--num-samples", "2"], "--num-samples"),
    (["CHECKPOINT", "--json", "/no/such/folder/out.json"], "does not exist"),
    (["CHECKPOINT", "--num-samples", "many"], "invalid int"),
])
def test_cli_bad_input_exits_2(tiny_checkpoint, arguments, message, capsys):
    arguments = [str(tiny_checkpoint) if value == "CHECKPOINT" else value for value in arguments]
    assert main(arguments + ["--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_cli_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "hkdviz eval" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_cuda_exits_2(tiny_checkpoint, capsys):
    assert main([str(tiny_checkpoint), "--device", "cuda", "--quiet"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_block_summary_pairs_blocks_by_seed():
    """hkdviz.evaluation.statistics (benchmarks/bench_quality.py): per-block differences HKD - teacher, their
    mean and standard error."""
    import math
    from hkdviz.evaluation import statistics as bench

    def row(method, nfe, kid):
        return {"method": method, "nfe": nfe, "kid_x1e3": kid, "local_fd": kid / 10, "swd": float("nan")}

    # The teacher is 10 worse than HKD in two blocks and 20 better in one: a shared block offset cancels.
    blocks = [{"rows": [row("HKD (one step)", 1, hkd), row("teacher (Heun)", 5, teacher),
                        row("held-out data", None, 0)]}
              for hkd, teacher in ((1000, 1010), (1100, 1110), (900, 880))]
    summary = bench.summarise(blocks)
    assert list(summary["methods"]) == ["HKD 1 NFE", "teacher 5 NFE", "held-out data"]
    assert list(summary["hkd_minus"]) == ["teacher 5 NFE"]  # the data row is a floor, not compared
    kid = summary["hkd_minus"]["teacher 5 NFE"]["kid_x1e3"]
    assert kid["mean"] == pytest.approx(0.0) and kid["hkd_lower_in"] == 2 and kid["blocks"] == 3
    assert kid["standard_error"] == pytest.approx(math.sqrt(300 / 3))  # differences -10, -10, 20: sample var 300
    assert summary["methods"]["HKD 1 NFE"]["kid_x1e3"]["mean"] == pytest.approx(1000.0)
    assert "swd" not in summary["hkd_minus"]["teacher 5 NFE"]  # a measure missing in a block is left out
    text = bench.format_summary(summary, 3, 1000)
    assert "vs teacher 5 NFE" in text and "[2/3]" in text


def test_bench_quality_record_after_every_block(tmp_path):
    """bench_quality's --json record is rewritten after every block, so a run stopped by a time limit keeps
    the blocks it finished (marked incomplete, with their summary from 2 blocks on)."""
    from benchmarks import bench_quality as bench
    path = tmp_path / "quality.json"
    rows = [{"method": "HKD (one step)", "nfe": 1, "kid_x1e3": 1.0, "local_fd": 1.0, "swd": 0.1},
            {"method": "teacher (Heun)", "nfe": 5, "kid_x1e3": 2.0, "local_fd": 2.0, "swd": 0.2}]
    blocks = [{"first_seed": 0, "rows": rows}]
    bench.write_record(str(path), {"num_samples": 1000}, blocks, complete=False)
    first = json.loads(path.read_text())
    assert first["complete"] is False and first["summary"] is None and len(first["blocks"]) == 1
    blocks.append({"first_seed": 1000, "rows": rows})
    bench.write_record(str(path), {"num_samples": 1000}, blocks, complete=True)
    second = json.loads(path.read_text())
    assert second["complete"] is True and len(second["blocks"]) == 2 and second["num_samples"] == 1000
    assert second["summary"]["hkd_minus"]["teacher 5 NFE"]["kid_x1e3"]["mean"] == -1.0
    assert sorted(item.name for item in tmp_path.iterdir()) == ["quality.json"]  # no temporary left


def test_bench_quality_resumes_only_a_record_of_the_same_run(tmp_path):
    """--resume goes on from the blocks of a stopped run's record, and refuses a record of other settings
    or other seeds instead of mixing its blocks in."""
    from benchmarks import bench_quality as bench
    path = tmp_path / "quality.json"
    base = {"checkpoint": "a", "teacher": "t", "classifier": "c", "device": "cpu", "num_samples": 1000,
            "teacher_steps": [3], "blocks_requested": 4}
    assert bench.resumed_blocks(str(path), base, 5000) == []  # nothing to resume: start afresh
    rows = [{"method": "HKD (one step)", "nfe": 1, "kid_x1e3": 1.0, "local_fd": 1.0, "swd": 0.1}]
    blocks = [{"first_seed": 5000, "rows": rows}, {"first_seed": 6000, "rows": rows}]
    bench.write_record(str(path), base, blocks, complete=False)
    assert bench.resumed_blocks(str(path), base, 5000) == blocks
    assert bench.resumed_blocks(str(path), {**base, "device": "cuda"}, 5000) == blocks  # same seeds, any device
    with pytest.raises(ValueError, match="its teacher_steps is \\[3\\], this run's is \\[8, 3\\]"):
        bench.resumed_blocks(str(path), {**base, "teacher_steps": [8, 3]}, 5000)
    with pytest.raises(ValueError, match="its checkpoint is 'a'"):
        bench.resumed_blocks(str(path), {**base, "checkpoint": "b"}, 5000)
    with pytest.raises(ValueError, match="start at seeds \\[5000, 6000\\].*\\[7000, 8000\\]"):
        bench.resumed_blocks(str(path), base, 7000)
    with pytest.raises(ValueError, match="more than the 1 asked"):
        bench.resumed_blocks(str(path), {**base, "blocks_requested": 1}, 5000)
    path.write_text("{")
    with pytest.raises(ValueError, match="cannot resume"):
        bench.resumed_blocks(str(path), base, 5000)
    with pytest.raises(SystemExit):
        bench.main(["--resume", "--blocks", "2"])  # --resume without --json: a usage error


def test_pair_quality_pairs_two_records_block_by_block(tmp_path, capsys):
    """hkdviz.evaluation.statistics.paired_differences and its command line benchmarks/pair_quality.py: A - B
    per method over the blocks both records hold (by first seed)."""
    import math
    from benchmarks import pair_quality as pair
    from hkdviz.evaluation.statistics import paired_differences

    def record(kids, first_seeds, num_samples=1000):
        return {"checkpoint": "x", "classifier": "default", "num_samples": num_samples,
                "blocks": [{"first_seed": seed, "rows": [
                    {"method": "HKD (one step)", "nfe": 1, "kid_x1e3": kid, "local_fd": 1.0, "swd": 0.1},
                    {"method": "teacher (Heun)", "nfe": 5, "kid_x1e3": 900.0, "local_fd": 2.0, "swd": None}]}
                    for kid, seed in zip(kids, first_seeds)]}

    # B holds a fourth block A lacks, in another order: only the shared seeds pair, each with its own.
    first = record([1000.0, 1100.0, 900.0], [0, 1000, 2000])
    second = record([1030.0, 5000.0, 1110.0, 920.0], [3000, 0, 1000, 2000])
    second["blocks"][1]["rows"][0]["kid_x1e3"] = 1020.0  # seed 0: A - B = -20
    differences = paired_differences(first, second)
    kid = differences["HKD 1 NFE"]["kid_x1e3"]  # -20, -10, -20
    assert kid["mean"] == pytest.approx(-50 / 3) and kid["first_lower_in"] == 3 and kid["blocks"] == 3
    assert kid["standard_error"] == pytest.approx(math.sqrt((100 / 3) / 3))
    assert differences["teacher 5 NFE"]["local_fd"]["mean"] == 0.0
    assert "swd" not in differences["teacher 5 NFE"]  # missing in the records: left out, not zero
    with pytest.raises(ValueError, match="block sizes"):
        paired_differences(first, record([1.0, 2.0], [0, 1000], num_samples=500))
    with pytest.raises(ValueError, match="share 1 block"):
        paired_differences(first, record([1.0, 2.0], [0, 7]))

    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps({**second, "classifier": "elsewhere/classifier"}))
    assert pair.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    captured = capsys.readouterr()
    assert "HKD 1 NFE" in captured.out and "[3/3]" in captured.out and "different classifiers" in captured.err
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a bench_quality"):
        pair.main([str(tmp_path / "a.json"), str(tmp_path / "bad.json")])


def test_probe_fidelity_of_an_exact_and_a_shifted_student(two_heads, capsys):
    """hkdviz.evaluation.probes.fidelity_probe (benchmarks/probe_fidelity.py): a student that returns the
    teacher's own sample of each seed has RMSE 0,
    keeps every class and matches the teacher's class mix; one that answers with the next seed's sample
    does not."""
    from hkdviz.teacher.ideal import IdealDenoiser
    from hkdviz.teacher.teacher import Teacher
    from benchmarks import probe_fidelity as fidelity
    from hkdviz.evaluation.probes import fidelity_probe, format_fidelity

    images, _ = ShapesDataset(16, seed=11).materialize(progress=False)
    teacher = Teacher(IdealDenoiser(images.double() / 127.5 - 1.0))

    class Student:
        def __init__(self, shift):
            self.shift = shift

        def sample(self, seeds, batch_size=250):
            return teacher.sample([seed + self.shift for seed in seeds], 4, progress=False)

    result = fidelity_probe({"exact": Student(0), "shifted": Student(1)}, teacher, two_heads, range(100, 124),
                            {"exact": range(8), "shifted": None}, num_steps=4, data_images=images, batch_size=10)
    exact, shifted = result["rmse"]["exact"], result["rmse"]["shifted"]
    assert exact["unseen"]["mean"] == pytest.approx(0.0, abs=1e-6) and exact["unseen"]["count"] == 24
    assert exact["training"]["mean"] == pytest.approx(0.0, abs=1e-6) and exact["training"]["count"] == 8
    assert shifted["unseen"]["mean"] > 0.05 and "training" not in shifted
    for head, entry in result["heads"].items():
        assert sum(entry["target"]) == pytest.approx(1.0) and sum(entry["data"]) == pytest.approx(1.0)
        assert entry["models"]["exact"]["mix"] == entry["target"], head
        assert all((value == 1.0) if share > 0 else value is None
                   for value, share in zip(entry["models"]["exact"]["kept"], entry["target"])), head
    text = format_fidelity(result)
    assert "exact kept" in text and "shifted mix" in text and "background:" in text and "training seeds (8)" in text
    for arguments, message in ((["--checkpoint", "/no/such/hkd"], "not found"), (["--num-samples", "1"], ">= 2"),
                               (["--checkpoint", "default", "--checkpoint", "default"], "given twice")):
        with pytest.raises(SystemExit) as stopped:
            fidelity.main(arguments + ["--device", "cpu"])
        assert stopped.value.code == 2 and message in capsys.readouterr().err, arguments


def test_probe_regeneration_of_a_memorising_teacher(two_heads, capsys):
    """hkdviz.evaluation.probes.regeneration_probe (benchmarks/probe_regeneration.py): the ideal denoiser of
    the probed images themselves returns each image
    from a small sigma (up to eps/sigma of the noise), so every class keeps its clean accuracy there."""
    from hkdviz.teacher.ideal import IdealDenoiser
    from hkdviz.teacher.teacher import Teacher
    from benchmarks import probe_regeneration as probe
    from hkdviz.evaluation.probes import format_regeneration, regeneration_probe

    images, labels = ShapesDataset(24, seed=11).materialize(progress=False)
    teacher = Teacher(IdealDenoiser(images.double() / 127.5 - 1.0))
    result = regeneration_probe(teacher, two_heads, images, labels["background"], (0.05, 80.0), "background",
                         num_steps=6, progress=False)
    assert result["classes"] == list(BACKGROUND_NAMES) and sum(result["count"]) == 24
    assert result["sigmas"]["0.05"] == result["clean"]
    assert all(value is None for value, count in zip(result["clean"], result["count"]) if count == 0)
    text = format_regeneration(result)
    assert "sigma 0.05" in text and "sigma 80.0" in text and text.count("\n") == len(BACKGROUND_NAMES) + 1
    for arguments, message in ((["--sigmas", "0.5,x"], "comma-separated"), (["--sigmas", "100"], "must lie in"),
                               (["--head", "colour"], "has heads"), (["--teacher", "/no/such/teacher"], "not found")):
        with pytest.raises(SystemExit) as stopped:
            probe.main(arguments + ["--device", "cpu"])
        assert stopped.value.code == 2 and message in capsys.readouterr().err, arguments
