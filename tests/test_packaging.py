"""environment.yml mirrors pyproject.toml; the CLI answers wrong arguments with clear errors."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = set(project["dependencies"])
    for items in project["optional-dependencies"].values():
        requirements |= {item for item in items if not item.startswith("hkdviz[")}
    return {re.sub(r"\s+", "", item) for item in requirements}


def environment_requirements() -> set[str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict))
    # The exact CPU torch pin and the editable install are set-up lines, not dependency declarations.
    return {item for item in pip if not item.startswith("-e") and not item.startswith("torch==")}


def test_environment_yml_mirrors_pyproject():
    assert environment_requirements() == pyproject_requirements()


def test_setup_pins_the_same_torch_as_environment_yml():
    environment = (ROOT / "environment.yml").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pin = re.search(r"torch==[\d.]+", environment).group(0)
    assert pin in setup


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hkdviz", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.slow
def test_cli_wrong_arguments_are_clear(tmp_path):
    result = run_cli("info", str(tmp_path / "missing"))
    assert result.returncode == 2 and "not found" in result.stderr
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    result = run_cli("trajectory", "default", "-o", str(tmp_path / "x.nc"), "--seeds", "9-3")
    assert result.returncode == 2 and "cannot read seeds" in result.stderr
    result = run_cli()
    assert result.returncode == 2 and "demo" in result.stdout


def test_cli_info_prints_the_recorded_evaluation(tiny_checkpoint, tmp_path):
    import json
    import shutil
    checkpoint = tmp_path / "evaluated"
    shutil.copytree(tiny_checkpoint, checkpoint)
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["metrics"] = {"evaluation": {"num_samples": 10, "seeds": {"first": 5, "last": 14, "count": 10}, "rows": [
        {"method": "HKD (one step)", "nfe": 1, "kid_x1e3": 123.4, "kid_std_x1e3": 5.6, "local_fd": 7.891, "swd": 0.0456},
        {"method": "held-out data", "nfe": None, "kid_x1e3": -3.0, "kid_std_x1e3": 8.0, "local_fd": 0.35, "swd": None}]},
        "other": 1}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    result = run_cli("info", str(checkpoint))
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "evaluation 10 samples per method, seeds 5..14 (--json: every measure)" in lines
    assert "HKD (one step) 1 123.40 ± 5.60 7.891 0.0456" in lines  # as `hkdviz eval` prints them
    assert "held-out data - -3.00 ± 8.00 0.350 -" in lines
    assert 'metrics     {"other": 1}' in result.stdout


@pytest.mark.slow
def test_cli_info_spectrum_trajectory(tiny_checkpoint, tmp_path):
    import xarray as xr
    result = run_cli("info", str(tiny_checkpoint))
    assert result.returncode == 0, result.stderr
    assert "bottleneck" in result.stdout
    result = run_cli("spectrum", str(tiny_checkpoint), "-o", str(tmp_path / "spectrum.nc"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert xr.open_dataset(tmp_path / "spectrum.nc", engine="h5netcdf").sizes["mode"] > 0
    result = run_cli("trajectory", str(tiny_checkpoint), "-o", str(tmp_path / "trajectory.nc"),
                     "--seeds", "0-1", "--times", "4", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert xr.open_dataset(tmp_path / "trajectory.nc", engine="h5netcdf")["image"].shape[:2] == (2, 4)
