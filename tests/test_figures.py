"""`hkdviz figures`: data computed from a checkpoint, figures redrawn from the saved netCDF alone."""
import json
from pathlib import Path

import pytest

from hkdviz.report import figures
from hkdviz.report.datasets import FILES

# A subset keeps this file fast; test_demo.py draws every figure.
SUBSET = ["spectrum_eigenvalues", "band_decodes", "cumulative_effect", "editing_sweep", "samples_nfe"]


def assert_figure_files(directory, stems):
    for stem in stems:
        pdf, png = directory / f"{stem}.pdf", directory / f"{stem}.png"
        assert pdf.read_bytes()[:4] == b"%PDF" and pdf.stat().st_size > 2000, stem
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 2000, stem


@pytest.fixture(scope="module")
def computed(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    code = figures.main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--quick",
                         "--only", ",".join(SUBSET)])
    return code, out


@pytest.mark.slow
def test_figures_from_checkpoint(computed):
    code, out = computed
    assert code == 0
    assert_figure_files(out, SUBSET)
    manifest = json.loads((out / "figures.json").read_text())
    drawn = {entry["stem"]: entry for entry in manifest["figures"]}
    assert set(drawn) == set(SUBSET)
    assert all(not entry["skipped"] for entry in drawn.values()), drawn
    assert drawn["band_decodes"]["paper"] == "Fig. 4" and drawn["editing_sweep"]["paper"] == "Fig. 5"
    assert manifest["model"]["trained"] is False  # the tiny fixture records no training
    # Only the data the chosen figures need was computed.
    assert sorted(path.name for path in (out / "data").glob("*.nc")) == sorted(
        FILES[name] for name in ("spectrum", "band_decodes", "cumulative_effect", "editing_sweep", "samples"))


@pytest.mark.slow
def test_figures_redrawn_from_saved_data_only(computed, tmp_path, monkeypatch):
    _, out = computed
    import hkdviz
    monkeypatch.setattr(hkdviz, "load", lambda *args, **kwargs: pytest.fail("--data must not load a model"))
    code = figures.main(["--data", str(out / "data"), "--out", str(tmp_path), "--formats", "pdf,png",
                         "--only", "band_decodes,mode_maps_beta,editing_metrics"])
    assert code == 0
    assert_figure_files(tmp_path, ["band_decodes", "mode_maps_beta"])
    manifest = {entry["stem"]: entry for entry in json.loads((tmp_path / "figures.json").read_text())["figures"]}
    assert "no data file" in manifest["editing_metrics"]["skipped"]  # not computed above: skipped, named


def test_figures_with_a_teacher(tiny_checkpoint, tmp_path):
    """A teacher checkpoint adds the 35/5/1-NFE rows (same noise as the one-step samples)."""
    import torch
    from hkdviz.analysis.storage import open_dataset
    from hkdviz.teacher.edm import EDMPrecond
    from hkdviz.teacher.teacher import Teacher
    torch.manual_seed(0)
    Teacher(EDMPrecond("tiny")).save(tmp_path / "teacher", meta={"dataset": "none (untrained test teacher)"})
    code = figures.main(["--checkpoint", str(tiny_checkpoint), "--teacher", str(tmp_path / "teacher"), "--quick",
                         "--out", str(tmp_path / "out"), "--device", "cpu", "--only", "samples_nfe,faithfulness,lens"])
    assert code == 0
    assert_figure_files(tmp_path / "out", ["samples_nfe", "faithfulness", "lens"])
    lens = open_dataset(tmp_path / "out" / "data" / "lens.nc")
    assert lens.attrs["koopman_time"] == "sigma" and "fit_residual" in lens
    faith = open_dataset(tmp_path / "out" / "data" / "faithfulness.nc")
    assert faith["koopman_error"].dims == ("sample", "time", "level") and faith.sizes["time"] == 19
    assert {"path_state_error", "constant_state_error", "readout_error"} <= set(faith.data_vars)  # the third panel
    samples = open_dataset(tmp_path / "out" / "data" / "samples.nc")
    assert list(samples["method"].values) == ["HKD, 1 NFE", "teacher, 35 NFE", "teacher, 5 NFE", "teacher, 1 NFE"]


def test_figures_bad_input(tmp_path, capsys):
    assert figures.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert figures.main(["--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "holds none of the data files" in capsys.readouterr().err
    assert figures.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown figure"):
        figures.main(["--data", str(tmp_path), "--only", "fig99"])


# -- hkdviz.report.make_figures: the function the command runs ----------------------------------------
def manifest_entries(directory):
    """figures.json's figure entries without what differs between two runs (timings, output paths)."""
    entries = json.loads((directory / "figures.json").read_text())["figures"]
    return [{key: value for key, value in entry.items() if key != "seconds"} | {
        "files": [Path(file).name for file in entry["files"]]} for entry in entries]


@pytest.mark.slow
def test_make_figures_from_data_same_outputs_as_the_cli(computed, tmp_path):
    from hkdviz.report import FigureReport, make_figures
    _, out = computed
    stems = ["band_decodes", "mode_maps_beta", "editing_metrics"]
    assert figures.main(["--data", str(out / "data"), "--out", str(tmp_path / "cli"), "--only", ",".join(stems)]) == 0
    report = make_figures(data=out / "data", out=tmp_path / "api", only=stems, progress=False)
    assert isinstance(report, FigureReport) and report.model is None and report.datasets == []
    assert [result.stem for result in report.written] == ["mode_maps_beta", "band_decodes"]  # FIGURES order
    assert report.failed == [] and report.ok  # editing_metrics has no data file: skipped, not failed
    assert report.manifest == tmp_path / "api" / "figures.json"
    assert manifest_entries(tmp_path / "api") == manifest_entries(tmp_path / "cli")
    assert_figure_files(tmp_path / "api", ["band_decodes", "mode_maps_beta"])


@pytest.mark.slow
def test_make_figures_from_a_checkpoint_computes_the_cli_data(computed, tiny_checkpoint, tmp_path, capsys):
    from hkdviz.analysis.storage import open_dataset
    from hkdviz.report import make_figures
    _, out = computed
    report = make_figures(tiny_checkpoint, out=tmp_path, only=["spectrum_scatter"], quick=True, device="cpu")
    assert [outcome.name for outcome in report.datasets] == ["spectrum"]
    assert report.model.trained is False and report.data_dir == tmp_path / "data"
    elsewhere = make_figures(tiny_checkpoint, out=tmp_path / "figures", data_out=tmp_path / "kept", progress=False,
                             only=["spectrum_scatter"], quick=True, device="cpu")  # what `hkdviz demo` does
    assert elsewhere.data_dir == tmp_path / "kept" and (tmp_path / "kept" / "spectrum.nc").is_file()
    assert not (tmp_path / "figures" / "data").exists() and elsewhere.ok
    assert [Path(file).name for file in report.written[0].files] == ["spectrum_scatter.pdf", "spectrum_scatter.png"]
    printed = capsys.readouterr().out
    assert "data spectrum" in printed and "wrote 1 of 1 figures" in printed  # progress=True prints as the CLI
    ours, cli = open_dataset(tmp_path / "data" / "spectrum.nc"), open_dataset(out / "data" / "spectrum.nc")
    assert sorted(ours.data_vars) == sorted(cli.data_vars)
    for name in ours.data_vars:
        assert (ours[name].values == cli[name].values).all(), name


def test_make_figures_bad_input_raises_named_errors(tmp_path, capsys):
    from hkdviz.checkpoint import CheckpointError
    from hkdviz.errors import UsageError, exit_code
    from hkdviz.report import make_figures
    with pytest.raises(UsageError, match="not a directory") as missing:
        make_figures(data=tmp_path / "missing", out=tmp_path)
    assert exit_code(missing.value) == 2
    with pytest.raises(UsageError, match="holds none of the data files"):
        make_figures(data=tmp_path, out=tmp_path)
    with pytest.raises(UsageError, match=r"unknown figure \['fig99'\]"):
        make_figures(data=tmp_path, only=["spectrum_scatter", "fig99"])
    with pytest.raises(UsageError, match=r"unknown format \['gif'\]"):
        make_figures(data=tmp_path, formats=("png", "gif"))
    with pytest.raises(CheckpointError, match="not found") as not_found:
        make_figures(tmp_path / "nope", out=tmp_path, progress=False)
    assert exit_code(not_found.value) == 2
    with pytest.raises(UsageError, match="with `data` nothing is computed"):
        make_figures(data=tmp_path, out=tmp_path, data_out=tmp_path / "elsewhere")
    assert capsys.readouterr().out == ""  # progress=False prints nothing
    assert not (tmp_path / "figures.json").exists()


def test_make_figures_reports_a_corrupt_data_file_as_failed_like_the_cli(tmp_path, capsys):
    from hkdviz.report import make_figures
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / FILES["spectrum"]).write_bytes(b"not netCDF")
    report = make_figures(data=tmp_path / "data", out=tmp_path / "api", only=["spectrum_scatter"], progress=False)
    assert [result.stem for result in report.failed] == ["spectrum_scatter"] and not report.ok
    assert "cannot read" in report.failed[0].skipped
    captured = capsys.readouterr()
    assert captured.out == "" and "warning: spectrum_scatter skipped: cannot read" in captured.err  # loud when quiet
    assert figures.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "cli"),
                         "--only", "spectrum_scatter"]) == 1  # the command's exit code for the same outcome
    assert manifest_entries(tmp_path / "api") == manifest_entries(tmp_path / "cli")
