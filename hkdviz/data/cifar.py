"""CIFAR-10 from the official python-pickle batches on the user's disk.

Pickle can run arbitrary code while loading, so the batches are read with an unpickler that
resolves only the four numpy names an array needs and refuses every other global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import require_regular_file
from .base import DatasetError, InMemoryDataset

CIFAR10_LABEL_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_DIRECTORY = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
TEST_BATCHES = ("test_batch",)

# (module, name) pairs a pickled numpy array may refer to; old and new numpy spell the module
# differently. Nothing else - not even builtins - is resolved.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle asked for a global outside ALLOWED_GLOBALS (possibly code to run)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS; anything else raises before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobalError(f"refused to load global {module}.{name}")
        if name == "_reconstruct":
            # Both spellings mean the same function; resolve it without touching the
            # deprecated numpy.core alias (which warns under numpy 2).
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def safe_unpickle(path: Path) -> Any:
    """Unpickle a file of plain data and numpy arrays; DatasetError on anything else."""
    try:
        require_regular_file(path, DatasetError, what="CIFAR-10 batch file")  # a FIFO would block read_bytes
        payload = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    try:
        return RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except RefusedGlobalError as error:
        raise DatasetError(f"{path} is not a plain-data pickle: {error}") from error
    except Exception as error:  # truncated or garbled: UnpicklingError, EOFError, ValueError, ...
        raise DatasetError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error})"
        ) from error


def find_cifar10_directory(root: str | Path) -> Path:
    """`root` may be the folder holding `cifar-10-batches-py` or that folder itself."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"CIFAR-10 path {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"CIFAR-10 path {root} is not a directory (expected the extracted "
                           f"{CIFAR10_DIRECTORY} folder, not the archive)")
    for candidate in (root / CIFAR10_DIRECTORY, root):
        if any((candidate / name).is_file() for name in TRAIN_BATCHES + TEST_BATCHES):
            return candidate
    raise DatasetError(
        f"no CIFAR-10 batches in {root}: expected {CIFAR10_DIRECTORY}/data_batch_1..5 and "
        f"test_batch (the python version of CIFAR-10)"
    )


def _entry(batch: dict, key: str) -> Any:
    # The official files have bytes keys; a file re-pickled from Python 3 may have str keys.
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def load_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 [N, 3, 32, 32], int64 [N]), checked field by field."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict, found {type(batch).__name__}")
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        found = (f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise DatasetError(f"{path}: 'data' must be a uint8 array [N, 3072], found {found}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{path}: 'labels' is not a list of integers ({error})") from error
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CIFAR10_LABEL_NAMES)):
        raise DatasetError(f"{path}: labels outside 0..9 (found {labels.min()}..{labels.max()})")
    # Rows hold the red plane, then green, then blue, each 32x32 row-major: i.e. [3, 32, 32].
    return data.reshape(-1, 3, 32, 32), labels


class Cifar10Dataset(InMemoryDataset):
    """CIFAR-10 train (50,000) or test (10,000) images, 3x32x32, labels CIFAR10_LABEL_NAMES."""

    def __init__(self, root: str | Path, train: bool = True, xflip: bool = False) -> None:
        directory = find_cifar10_directory(root)
        names = TRAIN_BATCHES if train else TEST_BATCHES
        missing = [name for name in names if not (directory / name).is_file()]
        if missing:
            raise DatasetError(f"CIFAR-10 directory {directory} lacks {', '.join(missing)}")
        parts = [load_cifar10_batch(directory / name) for name in names]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        super().__init__(images, labels, name="cifar10", label_names=CIFAR10_LABEL_NAMES,
                         xflip=xflip)
        self.root = directory
        self.train = bool(train)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "cifar10", "path": str(self.root), "train": self.train, "xflip": self.xflip}
