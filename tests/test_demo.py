"""`hkdviz demo` end to end on the tiny checkpoint, and the untrained fallback."""
import json
import re

import pytest

from hkdviz.report import demo
from hkdviz.report.datasets import FILES


@pytest.fixture(scope="module")
def demo_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = demo.main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--quick",
                      "--no-progress"])
    return code, out


@pytest.mark.slow
def test_demo_writes_data_figures_and_report(demo_run):
    code, out = demo_run
    assert code == 0
    summary = json.loads((out / "demo.json").read_text())
    # The tiny checkpoint has no teacher beside it: faithfulness (measured against the teacher's PF-ODE)
    # is the one dataset that cannot be made, and the demo says so instead of failing.
    assert sorted(summary["skipped"]) == ["faithfulness", "lens"]
    for name, file in FILES.items():
        if name not in ("faithfulness", "lens"):
            assert (out / "data" / file).stat().st_size > 1000, file
    assert len(summary["figures"]) == 2 * 16
    for file in summary["figures"]:
        assert (out / "figures" / file.split("/")[-1]).stat().st_size > 2000
    assert summary["trained"] is False and "UNTRAINED" in summary["banner"]


@pytest.mark.slow
def test_demo_report_is_standalone(demo_run):
    _, out = demo_run
    html = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]+src\s*=", html, re.I)              # plotly.js inlined, no script src
    assert not re.search(r"<(link|img|iframe)[^>]+(href|src)\s*=\s*[\"']https?:", html, re.I)
    assert "Plotly.newPlot" in html and html.count("data:image/png;base64,") >= 16
    assert 'id="untrained-banner"' in html                               # the tiny checkpoint is untrained
    from hkdviz.analysis.storage import open_dataset
    spectrum = open_dataset(out / "data" / "spectrum.nc")
    assert spectrum.sizes["mode"] > 0 and "alpha" in spectrum


def test_missing_default_falls_back_loudly(tmp_path, monkeypatch, capsys):
    import hkdviz.checkpoint as checkpoint
    from hkdviz.report.source import open_model, print_banner
    monkeypatch.setattr(checkpoint, "CHECKPOINT_ROOT", tmp_path)  # no shipped checkpoints
    source = open_model("default", device="cpu")
    assert source.trained is False and source.banner.startswith("UNTRAINED MODEL")
    assert source.model.config["preset"] == "tiny"
    assert float(source.model.koopman[0].alpha.abs().sum()) > 0       # random generators, not the zero init
    print_banner(source.banner)
    assert "UNTRAINED MODEL" in capsys.readouterr().err
    with pytest.raises(Exception, match="not found"):
        open_model(str(tmp_path / "no-such-dir"), device="cpu")       # a path never falls back


def test_demo_bad_input(tmp_path, capsys, tiny_checkpoint):
    assert demo.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--threads", "zero"])
    assert "--threads must be 'auto' or a positive integer" in capsys.readouterr().err
    import torch
    if not torch.cuda.is_available():
        assert demo.main(["--checkpoint", str(tiny_checkpoint), "--device", "cuda", "--out", str(tmp_path / "x"),
                          "--no-progress"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
