"""Provenance attrs and exact netCDF round trips through plain xarray (h5netcdf)."""
import json

import numpy as np
import pytest
import xarray as xr

import hkdviz
from hkdviz.analysis.storage import StorageError, open_dataset, provenance_attrs, save_dataset
from hkdviz.checkpoint import file_sha256


def example_dataset() -> xr.Dataset:
    generator = np.random.default_rng(0)
    complex_values = generator.normal(size=(5, 3)) + 1j * generator.normal(size=(5, 3))
    complex_values[1, 2] = np.nan + 1j * np.nan
    return xr.Dataset(
        {
            "eigenvalue": (("mode", "component"), complex_values.astype(np.complex128)),
            "alpha": ("mode", np.array([0.1, -0.5, np.nan, 1e-30, -0.0], np.float32)),
            "count": ("mode", np.arange(5, dtype=np.int64), {"units": "modes", "scale": 2.5}),
        },
        coords={"level": ("mode", np.array([0, 0, 1, 1, 2], np.int16)), "name": ("group", np.array(["low", "high"], object))},
        attrs={"config": json.dumps({"a": [1, 2]}), "step": 0.5, "count": 3},
    )


def test_provenance_attrs_for_built_model(tiny_model):
    attrs = provenance_attrs(tiny_model, seeds=[1, 2], edit={"ratio": 0.5}, label="x")
    assert attrs["checkpoint_sha256"] == "untrained"
    assert attrs["checkpoint_path"] == ""
    assert attrs["hkdviz_version"] == hkdviz.__version__
    assert json.loads(attrs["config"]) == tiny_model.config
    assert json.loads(attrs["seeds"]) == [1, 2] and json.loads(attrs["edit"]) == {"ratio": 0.5}
    assert attrs["label"] == '"x"'  # every extra is JSON-encoded, strings too
    assert all(isinstance(value, (str, int, float)) for value in attrs.values())
    with pytest.raises(TypeError, match="'bad'"):
        provenance_attrs(tiny_model, bad=object())


def test_provenance_attrs_for_loaded_checkpoint(tiny_checkpoint):
    model = hkdviz.load(tiny_checkpoint, device="cpu")
    attrs = provenance_attrs(model, seeds=np.arange(2))
    assert attrs["checkpoint_sha256"] == file_sha256(tiny_checkpoint / "model.safetensors")
    assert attrs["checkpoint_path"] == str(tiny_checkpoint.resolve())
    assert json.loads(attrs["seeds"]) == [0, 1]


def test_save_dataset_round_trips_through_plain_xarray(tmp_path):
    ds = example_dataset()
    path = save_dataset(ds, tmp_path / "deeper" / "folder" / "data.nc")  # parent folders are created
    with xr.open_dataset(path, engine="h5netcdf") as plain:
        xr.testing.assert_identical(plain.load(), ds)
        assert plain["eigenvalue"].dtype == np.complex128 and plain["level"].dtype == np.int16
    xr.testing.assert_identical(open_dataset(path), ds)
    assert [entry.name for entry in path.parent.iterdir()] == ["data.nc"]  # no temporary files left


def test_open_dataset_reads_plain_to_netcdf(tmp_path):
    ds = example_dataset()
    ds.to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    xr.testing.assert_identical(open_dataset(tmp_path / "plain.nc"), ds)


def test_open_dataset_loads_and_closes_the_file(tmp_path):
    path = tmp_path / "data.nc"
    save_dataset(example_dataset(), path)
    first = open_dataset(path)
    save_dataset(example_dataset().assign(alpha=lambda d: d.alpha * 2), path)  # overwrite while `first` lives
    xr.testing.assert_identical(first, example_dataset())
    np.testing.assert_array_equal(open_dataset(path).alpha.values, example_dataset().alpha.values * 2)


def test_save_dataset_bad_paths_and_inputs(tmp_path):
    ds = example_dataset()
    blocker = tmp_path / "file.txt"
    blocker.write_text("in the way")
    with pytest.raises(StorageError, match="file.txt"):
        save_dataset(ds, blocker / "data.nc")
    with pytest.raises(StorageError, match="is a directory"):
        save_dataset(ds, tmp_path)
    with pytest.raises(TypeError, match="xarray.Dataset"):
        save_dataset(ds["alpha"], tmp_path / "array.nc")
    bad = ds.copy()
    bad.attrs["edit"] = {"ratio": 0.5}
    with pytest.raises(StorageError, match="'edit'.*json.dumps"):
        save_dataset(bad, tmp_path / "bad.nc")


def test_failed_write_keeps_the_existing_file(tmp_path):
    path = tmp_path / "data.nc"
    save_dataset(example_dataset(), path)
    unwritable = xr.Dataset({"objects": ("item", np.array([{"a": 1}, None], dtype=object))})
    with pytest.raises(StorageError, match="data.nc"):
        save_dataset(unwritable, path)
    xr.testing.assert_identical(open_dataset(path), example_dataset())
    assert [entry.name for entry in tmp_path.iterdir()] == ["data.nc"]


def test_open_dataset_missing_corrupt_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        open_dataset(tmp_path / "missing.nc")
    with pytest.raises(StorageError, match="is a directory"):
        open_dataset(tmp_path)
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"not a netCDF file at all" * 10)
    with pytest.raises(StorageError, match="garbage.nc"):
        open_dataset(garbage)
    good = tmp_path / "good.nc"
    save_dataset(example_dataset(), good)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(StorageError, match="truncated.nc"):
        open_dataset(truncated)
