"""Notebook 05 (the Koopman lens), executed headless on a tiny untrained teacher and HKD (~30 s).

Runs like tests/test_notebooks.py (same kernel set-up, imported from there), kept in its own file.
"""
import subprocess
import sys


from test_notebooks import NOTEBOOKS, ROOT, execute, kernel_environment, outputs  # noqa: F401 (fixture)

NAME = "05_koopman_lens"


def test_05_carries_no_outputs():
    script = ROOT / "scripts" / "strip_notebooks.py"
    result = subprocess.run([sys.executable, str(script), "--check", str(NOTEBOOKS / f"{NAME}.ipynb")],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"notebook carries outputs (run scripts/strip_notebooks.py): {result.stdout}"


def test_05_koopman_lens(tiny_checkpoint, kernel_environment, tmp_path, monkeypatch):  # noqa: F811
    import torch

    from hkdviz.teacher.edm import EDMPrecond
    from hkdviz.teacher.teacher import Teacher

    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    Teacher(EDMPrecond("tiny")).save(teacher_dir)
    parameters = (f"teacher_name = {str(teacher_dir)!r}\nhkd_checkpoint = {str(tiny_checkpoint)!r}\n"
                  "seeds = 3\nheld_out = 2\nnum_steps = 4\nthreads = 1")
    notebook, seconds = execute(NAME, str(tiny_checkpoint), kernel_environment, tmp_path, monkeypatch,
                                parameters=parameters)
    text = "".join(output.get("text", "") for output in outputs(notebook))
    assert "round trip exact: True" in text
    assert "bottleneck" in text and "hkd_koopman_error" in text
    # residuals, eigenvalue plane, mode map, comparison plane, comparison bars
    assert len(list(outputs(notebook, "application/vnd.plotly.v1+json"))) == 5
    assert (tmp_path / "lens.nc").is_file()
    print(f"executed in {seconds:.1f} s")
