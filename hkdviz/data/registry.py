"""The data-set registry: `load_dataset(spec)` builds a data set from a spec string or dict (the specs are
listed in `hkdviz/data/__init__.py`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

from .base import DatasetError, ImageDataset
from .bundled import DigitsDataset, LfwDataset
from .cifar import Cifar10Dataset
from .folder import ImageFolderDataset
from .shapes import ShapesDataset

__all__ = ["DEFAULT_SHAPES_IMAGES", "KNOWN_DATASETS", "PATH_DATASETS", "load_dataset"]

DEFAULT_SHAPES_IMAGES = 50_000  # the size of CIFAR-10's training set


def _shapes(num_images: int = DEFAULT_SHAPES_IMAGES, resolution: int = 32, seed: int = 0,
            xflip: bool = False) -> ShapesDataset:
    return ShapesDataset(num_images=num_images, resolution=resolution, seed=seed, xflip=xflip)


def _cifar10(path: str, train: bool = True, xflip: bool = False) -> Cifar10Dataset:
    return Cifar10Dataset(path, train=train, xflip=xflip)


def _folder(path: str, resolution: int | None = None, xflip: bool = False) -> ImageFolderDataset:
    if Path(path).expanduser().is_file():
        raise DatasetError(f"folder: {path} is a file; use 'zip:{path}' for an archive")
    return ImageFolderDataset(path, resolution=resolution, xflip=xflip)


def _zip(path: str, resolution: int | None = None, xflip: bool = False) -> ImageFolderDataset:
    if Path(path).expanduser().is_dir():
        raise DatasetError(f"zip: {path} is a directory; use 'folder:{path}'")
    return ImageFolderDataset(path, resolution=resolution, xflip=xflip)


def _digits(resolution: int = 32, num_channels: int = 3, xflip: bool = False) -> DigitsDataset:
    return DigitsDataset(resolution=resolution, num_channels=num_channels, xflip=xflip)


def _lfw(resolution: int = 32, num_channels: int = 3, xflip: bool = False) -> LfwDataset:
    return LfwDataset(resolution=resolution, num_channels=num_channels, xflip=xflip)


BUILDERS: dict[str, Callable[..., ImageDataset]] = {
    "shapes": _shapes, "cifar10": _cifar10, "folder": _folder, "zip": _zip,
    "digits": _digits, "lfw": _lfw,
}
KNOWN_DATASETS: tuple[str, ...] = tuple(BUILDERS)
PATH_DATASETS = frozenset({"cifar10", "folder", "zip"})


def _looks_like_cifar10(directory: Path) -> bool:
    return any((candidate / "data_batch_1").is_file() or (candidate / "test_batch").is_file()
               for candidate in (directory / "cifar-10-batches-py", directory))


def _parse_string(spec: str) -> dict[str, Any]:
    name, separator, rest = spec.partition(":")
    # A one-letter prefix is a Windows drive ("C:\\data"), not a data set name.
    if separator and len(name) > 1:
        name = name.strip().lower()
        if name not in BUILDERS:
            raise DatasetError(f"unknown data set {name!r} in {spec!r}; known: {', '.join(KNOWN_DATASETS)}")
        if name not in PATH_DATASETS:
            raise DatasetError(f"data set {name!r} takes no path (got {spec!r}); pass options as "
                               f"a dict or keyword arguments instead")
        if not rest:
            raise DatasetError(f"{spec!r}: missing path after '{name}:'")
        return {"name": name, "path": rest}
    if spec.strip().lower() in BUILDERS:
        name = spec.strip().lower()
        if name in PATH_DATASETS:
            raise DatasetError(f"data set {name!r} needs a path: '{name}:/path/to/data'")
        return {"name": name}
    path = Path(spec).expanduser()
    if path.is_dir():
        return {"name": "cifar10" if _looks_like_cifar10(path) else "folder", "path": spec}
    if path.suffix.lower() == ".zip" or path.is_file():
        return {"name": "zip", "path": spec}
    if "/" in spec or "\\" in spec:
        raise DatasetError(f"data set path {path} does not exist")
    raise DatasetError(f"unknown data set {spec!r}; known: {', '.join(KNOWN_DATASETS)} "
                       f"(or a path to an image directory or .zip)")


def load_dataset(spec: str | Mapping[str, Any] | ImageDataset, **overrides: Any) -> ImageDataset:
    """Build a data set from a spec string or dict (see the module docstring).

    `overrides` replace entries of the spec, e.g. `load_dataset("shapes", num_images=1000)`.
    For path data sets the dict key is "path" ("root" is accepted for CIFAR-10).
    """
    if isinstance(spec, ImageDataset) and not overrides:
        return spec
    if isinstance(spec, ImageDataset):
        spec = spec.spec
    if isinstance(spec, str):
        options = _parse_string(spec)
    elif isinstance(spec, Mapping):
        options = dict(spec)
    else:
        raise DatasetError(f"a data set spec is a string or a dict, got {type(spec).__name__}")
    options.update(overrides)
    if "root" in options and "path" not in options:
        options["path"] = options.pop("root")

    name = str(options.pop("name", "")).strip().lower()
    if name not in BUILDERS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    builder = BUILDERS[name]
    parameters = inspect.signature(builder).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise DatasetError(f"data set {name!r} has no option(s) {', '.join(unknown)}; "
                           f"it takes {', '.join(parameters)}")
    missing = [key for key, parameter in parameters.items()
               if parameter.default is inspect.Parameter.empty and key not in options]
    if missing:
        raise DatasetError(f"data set {name!r} needs {', '.join(missing)}")
    return builder(**options)
