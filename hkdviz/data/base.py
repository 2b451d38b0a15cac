"""The protocol every training data set follows, and the error they all raise.

A data set keeps (or renders) its images as uint8 arrays [C, H, W] and converts them to
float32 in [-1, 1] only when an item is asked for: uint8 is what files hold, it is 4x smaller
in memory, and the conversion is exact and cheap.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

NO_LABEL = -1
# Below this many chunks a set renders in well under a second: one thread does it.
PARALLEL_MIN_CHUNKS = 4
MAX_RENDER_WORKERS = 16


class DatasetError(ValueError):
    """A data set could not be opened or read; the message names the path and the problem."""


class ImageDataset(torch.utils.data.Dataset):
    """Base class: `__getitem__(i)` gives (image float32 [C,H,W] in [-1,1], label int64 scalar).

    Subclasses set `name`, `resolution`, `num_channels`, `label_names` and implement
    `_num_raw_images`, `_load_raw_batch`. With `xflip=True` the length doubles and index
    `i >= N` is the horizontal mirror of image `i - N`, as in EDM.
    """

    name: str = "dataset"
    resolution: int
    num_channels: int
    label_names: tuple[str, ...] | None = None
    # True where `_load_raw_batch` is thread-safe NumPy work that releases the GIL (procedural sets):
    # `materialize` then renders chunks on several threads. Readers of files stay serial.
    parallel_render: bool = False

    def __init__(self, xflip: bool = False) -> None:
        self.xflip = bool(xflip)

    # --- what subclasses provide -------------------------------------------------------------
    def _num_raw_images(self) -> int:
        raise NotImplementedError

    def _load_raw_batch(self, raw_indices: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Images uint8 [B, C, H, W] and labels {key: int64 [B]}; must contain key "label"."""
        raise NotImplementedError

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description that `load_dataset` turns back into this data set."""
        raise NotImplementedError

    # --- the protocol -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_raw_images() * (2 if self.xflip else 1)

    def _split_index(self, index: int) -> tuple[int, bool]:
        """Map a data set index to (raw image index, mirrored?)."""
        length = len(self)
        index = int(index)
        if index < 0:
            index += length
        if not 0 <= index < length:
            # IndexError (not DatasetError) so that plain iteration stops where it should.
            raise IndexError(f"{self.name}: index {index} out of range for {length} images")
        raw_count = self._num_raw_images()
        return index % raw_count, index >= raw_count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw_index, mirrored = self._split_index(index)
        images, labels = self._load_raw_batch(np.array([raw_index], dtype=np.int64))
        image = images[0]
        if mirrored:
            image = image[:, :, ::-1]
        tensor = to_unit_range(torch.from_numpy(np.ascontiguousarray(image)))  # 0 -> -1, 255 -> +1, as EDM
        label = torch.tensor(int(labels["label"][0]), dtype=torch.int64)
        return tensor, label

    def materialize(
        self, indices: Sequence[int] | np.ndarray | None = None, progress: bool = True,
        workers: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Load many images at once: (uint8 tensor [N, C, H, W], {key: int64 tensor [N]}).

        `indices` are data set indices (mirrored ones included when `xflip`); default: all.
        The pixels equal those of `__getitem__` before its conversion to [-1, 1].
        `workers`: threads rendering chunks (data sets with `parallel_render` only; the result is
        bit-identical for any count). None: as many as the CPUs this process may use, shared among
        torchrun's local ranks, for sets of at least PARALLEL_MIN_CHUNKS chunks; else 1.
        """
        if indices is None:
            indices = np.arange(len(self), dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        split = [self._split_index(index) for index in indices]
        raw_indices = np.array([raw for raw, _ in split], dtype=np.int64)
        mirrored = np.array([flag for _, flag in split], dtype=bool)

        images = np.empty(
            (len(indices), self.num_channels, self.resolution, self.resolution), dtype=np.uint8
        )
        label_parts: dict[str, list[np.ndarray]] = {}
        chunk = self._materialize_chunk_size()
        starts = range(0, len(indices), chunk)
        workers = self._render_workers(workers, len(starts))
        chunks = [raw_indices[start:start + chunk] for start in starts]
        pool = None
        if workers > 1:
            # Threads, not processes: NumPy releases the GIL in the array work that dominates rendering,
            # so threads run it in parallel with nothing to pickle or re-import. map() keeps the chunk order.
            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"{self.name}-render")
            loaded = pool.map(self._load_raw_batch, chunks)
        else:
            loaded = map(self._load_raw_batch, chunks)
        progress_bar = tqdm(zip(starts, loaded), total=len(starts), desc=f"{self.name} images", unit="chunk",
                            disable=not progress)
        try:
            for start, (chunk_images, chunk_labels) in progress_bar:
                self._store_chunk(start, chunk_images, chunk_labels, mirrored, images, label_parts)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

        if not label_parts:
            label_parts = {"label": [np.full(len(indices), NO_LABEL, dtype=np.int64)]}
        labels = {
            key: torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, np.int64))
            for key, parts in label_parts.items()
        }
        return torch.from_numpy(images), labels

    @staticmethod
    def _store_chunk(start: int, chunk_images: np.ndarray, chunk_labels: dict, mirrored: np.ndarray,
                     images: np.ndarray, label_parts: dict[str, list[np.ndarray]]) -> None:
        stop = start + len(chunk_images)
        flip = mirrored[start:stop]
        chunk_images[flip] = chunk_images[flip][:, :, :, ::-1]
        images[start:stop] = chunk_images
        for key, values in chunk_labels.items():
            label_parts.setdefault(key, []).append(np.asarray(values, dtype=np.int64))

    def _render_workers(self, workers: int | None, num_chunks: int) -> int:
        if workers is not None:
            if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
                raise DatasetError(f"{self.name}: workers must be a positive integer or None, got {workers!r}")
            return min(int(workers), max(num_chunks, 1)) if self.parallel_render else 1
        if not self.parallel_render or num_chunks < PARALLEL_MIN_CHUNKS:
            return 1
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun: ranks share the CPUs
        return max(1, min(available // local_ranks, MAX_RENDER_WORKERS, num_chunks))

    def _materialize_chunk_size(self) -> int:
        return 1024

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, "
            f"resolution={self.resolution}, channels={self.num_channels}, xflip={self.xflip})"
        )


class InMemoryDataset(ImageDataset):
    """A data set whose images all sit in one uint8 array [N, C, H, W] (small or bundled sets)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        *,
        name: str,
        label_names: tuple[str, ...] | None,
        xflip: bool = False,
    ) -> None:
        super().__init__(xflip=xflip)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise DatasetError(f"{name}: expected uint8 images [N, C, S, S], got "
                               f"{images.dtype} {tuple(images.shape)}")
        self.images = np.ascontiguousarray(images)
        if labels is None:
            labels = np.full(len(images), NO_LABEL, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name
        self.label_names = label_names
        self.num_channels = int(images.shape[1])
        self.resolution = int(images.shape[2])

    def _num_raw_images(self) -> int:
        return len(self.images)

    def _load_raw_batch(self, raw_indices: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.images[raw_indices], {"label": self.labels[raw_indices]}

    def _materialize_chunk_size(self) -> int:
        return 65536


def to_unit_range(images: torch.Tensor, device=None) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the data sets' convention); float images pass through as float32."""
    images = images.to(device) if device is not None else images
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 127.5 - 1.0
    return images.to(torch.float32)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear resize of uint8 or float images [N, C, H, W] to [N, C, resolution, resolution].

    torch's bilinear kernel is used (align_corners=False, the half-pixel convention) so small
    bundled sets (8x8 digits, 25x25 faces) upsample smoothly; returns float32.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if tensor.shape[-1] == resolution and tensor.shape[-2] == resolution:
        return tensor.numpy()
    resized = torch.nn.functional.interpolate(
        tensor, size=(resolution, resolution), mode="bilinear", align_corners=False,
        antialias=resolution < tensor.shape[-1],
    )
    return resized.numpy()


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] -> uint8 with round-half-up, clipped."""
    return np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
