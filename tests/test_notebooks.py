"""The notebooks, executed headless with nbclient on CPU, in this venv's kernel.

They use the shipped default checkpoint when there is one, else the `tiny_checkpoint` fixture (through
the HKDVIZ_CHECKPOINT environment variable the notebooks read). Notebooks in git carry no outputs.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_explore_model", "02_interventions", "03_paper_figures", "04_training_quickstart"]
CELL_TIMEOUT = 180  # seconds per cell; whole notebooks take ~10-90 s on 2 CPU cores
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def kernel_environment(tmp_path_factory):
    """A python3 kernelspec whose argv is this interpreter, first on JUPYTER_PATH: the notebooks run in
    this venv whatever other python3 kernels the machine has."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (hkdviz venv)", "language": "python"}))
    return {"JUPYTER_PATH": str(root / "data"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
            "IPYTHONDIR": str(root / "ipython"), "MPLBACKEND": "Agg"}


def execute(name: str, checkpoint: str, environment: dict, workdir: Path, monkeypatch, parameters: str | None = None):
    """Run a notebook in `workdir`; `parameters` replaces the source of its cell tagged "parameters"."""
    monkeypatch.setenv("HKDVIZ_CHECKPOINT", checkpoint)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if parameters is not None:
        tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
        tagged[0].source = parameters
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - start


def outputs(notebook, mime: str | None = None):
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if mime is None or mime in output.get("data", {}):
                yield output


def test_notebooks_in_git_carry_no_outputs():
    script = ROOT / "scripts" / "strip_notebooks.py"
    paths = [str(NOTEBOOKS / f"{name}.ipynb") for name in NAMES]
    result = subprocess.run([sys.executable, str(script), "--check", *paths], capture_output=True, text=True)
    assert result.returncode == 0, f"notebooks carry outputs (run scripts/strip_notebooks.py): {result.stdout}"


def test_kernel_runs_this_venv(kernel_environment, monkeypatch, tmp_path):
    for key, value in kernel_environment.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.mark.slow
def test_01_explore_model(checkpoint, kernel_environment, tmp_path, monkeypatch):
    notebook, seconds = execute("01_explore_model", checkpoint, kernel_environment, tmp_path, monkeypatch)
    text = "".join(output.get("text", "") for output in outputs(notebook))
    assert "round trip exact: ['spectrum.nc', 'trajectory.nc']" in text
    assert len(list(outputs(notebook, "application/vnd.plotly.v1+json"))) >= 5  # samples, spectra, trajectory
    print(f"executed in {seconds:.1f} s")


@pytest.mark.slow
def test_02_interventions(checkpoint, kernel_environment, tmp_path, monkeypatch):
    notebook, seconds = execute("02_interventions", checkpoint, kernel_environment, tmp_path, monkeypatch)
    widgets = list(outputs(notebook, WIDGET_MIME))
    assert len(widgets) == 2, "EditingApp and SpectrumExplorer each display one widget"
    text = "".join(output.get("text", "") for output in outputs(notebook))
    assert "last update:" in text
    # The saved widget state holds the apps' images: the edited one among them, as a PNG.
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    images = [model for model in state.values() if model.get("model_name") == "ImageModel"]
    assert len(images) >= 6
    print(f"executed in {seconds:.1f} s")


@pytest.mark.slow
def test_03_paper_figures(checkpoint, kernel_environment, tmp_path, monkeypatch):
    stems = ["spectrum_scatter", "band_decodes", "trajectory_filmstrip"]
    out = tmp_path / "figures"
    notebook, seconds = execute("03_paper_figures", checkpoint, kernel_environment, tmp_path, monkeypatch,
                                parameters=f"quick = True\nonly = {stems!r}\nout_dir = {str(out)!r}")
    for stem in stems:
        assert (out / f"{stem}.pdf").is_file() and (out / f"{stem}.png").is_file()
    assert len(list(outputs(notebook, "image/png"))) == len(stems)
    manifest = json.loads((out / "figures.json").read_text())
    assert sorted(entry["stem"] for entry in manifest["figures"] if entry["files"]) == sorted(stems)
    text = "".join(output.get("text", "") for output in outputs(notebook))
    assert f"3 figures drawn, 0 failed; manifest: {out / 'figures.json'}" in text  # hkdviz.report.make_figures' report
    print(f"executed in {seconds:.1f} s")


# The smoke preset made smaller still: the notebook's plumbing is what is tested here (~20 s).
SMOKE_OVERRIDES = ["dataset.num_images=64", "teacher.steps=4", "teacher.batch_size=8", "trajectories.count=8",
                   "trajectories.chunk_size=8", "trajectories.batch_size=8", "trajectories.num_steps=3",
                   "hkd.steps=4", "hkd.batch_size=4", "classifier.enabled=false", "evaluate.enabled=false"]


@pytest.mark.slow
def test_04_training_quickstart(kernel_environment, tmp_path, monkeypatch):
    run = tmp_path / "run"
    notebook, seconds = execute("04_training_quickstart", "unused", kernel_environment, tmp_path, monkeypatch,
                                parameters=f"preset = 'smoke'\noverrides = {SMOKE_OVERRIDES!r}\nrun_dir = {str(run)!r}")
    assert (run / "export" / "hkd" / "model.safetensors").is_file()
    text = "".join(output.get("text", "") for output in outputs(notebook))
    assert "trained for 4 steps" in text
    assert f"{run / 'export'}\n" in text  # hkdviz.train.run("all", ...) returns the export directory
    assert len(list(outputs(notebook, "application/vnd.plotly.v1+json"))) == 2  # samples and spectrum
    print(f"executed in {seconds:.1f} s")
