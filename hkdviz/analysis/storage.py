"""xarray storage: provenance attrs and netCDF (h5netcdf) files that plain xarray reads back exactly.

Every analysis dataset carries where it came from in its attrs: the hkdviz version, the checkpoint's
sha256 and path, the model config and anything the caller adds. netCDF attrs must be strings or
numbers, so structured values are stored as JSON strings (`json.loads(ds.attrs["config"])`).
Complex variables (eigenvalues, eigenvectors) round-trip through h5netcdf without `invalid_netcdf`.
"""
from __future__ import annotations

import datetime
import json
import numbers
from pathlib import Path

import numpy as np
import xarray as xr

from ..atomic import temporary_path
from ..inputs import require_regular_file
from ..version import __version__

ENGINE = "h5netcdf"


class StorageError(ValueError):
    """A dataset file that cannot be written or read; the message names the file and the problem."""


def provenance_attrs(model, **extra) -> dict:
    """Attrs naming the model a dataset was computed from; each `extra` value is stored JSON-encoded.

    `checkpoint_sha256` is "untrained" and `checkpoint_path` is "" for a model made by `hkdviz.build`.
    """
    sha256 = getattr(model, "checkpoint_sha256", None)
    path = getattr(model, "checkpoint_path", None)
    attrs = {
        "hkdviz_version": __version__,
        "checkpoint_sha256": sha256 if sha256 is not None else "untrained",
        "checkpoint_path": str(path) if path is not None else "",
        "config": json.dumps(getattr(model, "config", {}), sort_keys=True),
        "checkpoint_meta": json.dumps(getattr(model, "meta", {}) or {}, sort_keys=True, default=str),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in extra.items():
        try:
            attrs[key] = json.dumps(_plain(value), sort_keys=True)
        except (TypeError, ValueError) as error:
            raise TypeError(f"provenance attr {key!r} is not JSON-serializable ({error})") from None
    return attrs


def _plain(value):
    """numpy/torch scalars and arrays -> plain Python, so json can encode them."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _check_attrs(ds: xr.Dataset) -> None:
    # xarray's own message does not say which variable holds the bad attr; this one does.
    owners = [("dataset", ds.attrs)] + [(f"variable {name!r}", ds[name].attrs) for name in ds.variables]
    for owner, attrs in owners:
        for key, value in attrs.items():
            if isinstance(value, (str, numbers.Number, np.ndarray, np.generic)):
                continue
            if isinstance(value, (list, tuple)) and all(isinstance(item, (str, numbers.Number)) for item in value):
                continue
            raise StorageError(f"{owner} attr {key!r} has type {type(value).__name__}; netCDF attrs must be "
                               f"strings, numbers or lists of them (store structured values with json.dumps)")


def save_dataset(ds: xr.Dataset, path) -> Path:
    """Write `ds` to a netCDF file with the h5netcdf engine, creating parent folders.

    The file is written beside its destination and renamed into place, so a failed write never
    destroys an existing file.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"save_dataset expects an xarray.Dataset, got {type(ds).__name__}")
    path = Path(path)
    if path.is_dir():
        raise StorageError(f"{path}: is a directory; give a file name such as {path / 'data.nc'}")
    _check_attrs(ds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StorageError(f"{path}: cannot create the folder {path.parent} (a file of that name is in the way)") from None
    except PermissionError:
        raise StorageError(f"{path}: no permission to create the folder {path.parent}") from None
    try:
        with temporary_path(path) as temporary:
            ds.to_netcdf(temporary, engine=ENGINE)
    except (OSError, ValueError, TypeError) as error:
        raise StorageError(f"{path}: could not write the dataset ({error})") from error
    return path


def open_dataset(path) -> xr.Dataset:
    """Read a dataset written by `save_dataset` (or any h5netcdf netCDF file) fully into memory.

    The file is closed before returning, so it can be overwritten or deleted afterwards.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset file")
    if path.is_dir():
        raise StorageError(f"{path}: is a directory, not a netCDF dataset file")
    require_regular_file(path, StorageError, what="netCDF dataset file")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return ds.load()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StorageError(f"{path}: not a readable netCDF/HDF5 dataset (corrupt or truncated?) ({error})") from None


__all__ = ["StorageError", "provenance_attrs", "save_dataset", "open_dataset"]
