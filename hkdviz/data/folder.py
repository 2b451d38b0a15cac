"""Images from a directory tree or an EDM-style zip archive (optional `dataset.json` labels).

Channels: when every image is grayscale the data set has 1 channel; as soon as one image has
colour (RGB, RGBA, palette, CMYK, ...) every image is converted to RGB (gray repeated, alpha
dropped) and the data set has 3. Sizes: all images must share one square size, unless
`resolution` is given; then each is centre-cropped to a square and resized (Lanczos).

Headers (size, mode) of all images are checked when the data set is opened, so a file that is
not an image fails at once; a file whose header is fine but whose pixel data is damaged fails
when that image is first read. Both raise DatasetError naming the file.

Zip archives are checked from their directory before anything is decompressed: a member may not
declare more than MAX_MEMBER_BYTES, nor a compression ratio above MAX_COMPRESSION_RATIO (image
files barely compress; a member that shrinks 100-fold is a zip bomb or not an image). In folders,
only regular files are read (a FIFO named x.png would block forever).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..inputs import JSON_LIMIT_BYTES, open_regular_file, read_json_file
from .base import NO_LABEL, DatasetError, ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABELS_FILE = "dataset.json"
# One image (or dataset.json) decompressed: 256 MiB is a 8192x8192 RGBA PNG, far beyond these models.
MAX_MEMBER_BYTES = 256 << 20
# PNG and JPEG data is already compressed (ratio ~1); small members (under 1 MiB) cannot bomb.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1 << 20
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _pil_image():
    try:
        import PIL.Image
    except ImportError as error:  # Pillow comes with matplotlib, a core dependency
        raise ImportError("reading image folders needs Pillow: pip install pillow") from error
    return PIL.Image


class ImageFolderDataset(ImageDataset):
    """All PNG/JPEG files under `path` (a directory, searched recursively, or a .zip archive),
    in sorted order of their relative paths."""

    def __init__(self, path: str | Path, resolution: int | None = None, xflip: bool = False) -> None:
        super().__init__(xflip=xflip)
        self.path = Path(path).expanduser()
        if resolution is not None and (isinstance(resolution, bool) or int(resolution) < 1):
            raise DatasetError(f"{self.path}: resolution must be a positive integer, got {resolution!r}")
        self._archive: zipfile.ZipFile | None = None
        self._archive_pid: int | None = None
        if not self.path.exists():
            raise DatasetError(f"image path {self.path} does not exist")
        self.is_archive = self.path.is_file()
        if self.is_archive and self.path.suffix.lower() != ".zip":
            raise DatasetError(f"{self.path} is a file but not a .zip archive; give a directory "
                               f"of images or an EDM-style zip")
        members = self._list_members()
        self.image_names = sorted(name for name in members
                                  if name.lower().endswith(IMAGE_EXTENSIONS))
        if not self.image_names:
            what = "is empty" if not members else "holds no PNG/JPEG images"
            raise DatasetError(f"{'archive' if self.is_archive else 'directory'} {self.path} {what}")

        sizes, modes = self._read_headers()
        self.num_channels = 1 if all(mode in GRAY_MODES for mode in modes) else 3
        if resolution is None:
            first = sizes[0]
            for name, size in zip(self.image_names, sizes):
                if size != first:
                    raise DatasetError(
                        f"{self._describe(name)} is {size[0]}x{size[1]} but "
                        f"{self._describe(self.image_names[0])} is {first[0]}x{first[1]}; "
                        f"all images must share one size (or pass resolution= to resize)")
            if first[0] != first[1]:
                raise DatasetError(f"images in {self.path} are {first[0]}x{first[1]}, not square; "
                                   f"pass resolution= to centre-crop and resize them")
            self.resolution = int(first[0])
            self._resize = False
        else:
            self.resolution = int(resolution)
            self._resize = any(size != (self.resolution, self.resolution) for size in sizes)
        self.requested_resolution = resolution
        self.labels = self._read_labels()
        self.label_names = (tuple(str(k) for k in range(int(self.labels.max()) + 1))
                            if (self.labels >= 0).any() else None)
        self.name = self.path.stem if self.is_archive else self.path.name

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": "zip" if self.is_archive else "folder", "path": str(self.path),
                "resolution": self.requested_resolution, "xflip": self.xflip}

    # --- storage: a directory or a zip archive -------------------------------------------
    def _describe(self, name: str) -> str:
        return f"{name} in {self.path}" if self.is_archive else str(self.path / name)

    def _zip(self) -> zipfile.ZipFile:
        # One handle per process: a handle inherited through fork (DataLoader workers) would
        # share its file position with the parent.
        if self._archive is None or self._archive_pid != os.getpid():
            try:
                self._archive = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as error:
                raise DatasetError(f"{self.path} is not a readable zip archive: {error}") from error
            self._archive_pid = os.getpid()
        return self._archive

    def _list_members(self) -> list[str]:
        if self.is_archive:
            members = [info for info in self._zip().infolist() if not info.is_dir()]
            for info in members:
                if info.filename.lower().endswith(IMAGE_EXTENSIONS) or info.filename == LABELS_FILE:
                    self._check_member(info)
            return [info.filename for info in members]
        if not self.path.is_dir():
            raise DatasetError(f"{self.path} is neither a directory nor a zip archive")
        names = []
        for directory, subdirectories, files in os.walk(self.path):
            subdirectories.sort()
            relative = Path(directory).relative_to(self.path)
            names.extend((relative / file).as_posix() for file in files)
        return names

    def _check_member(self, info: zipfile.ZipInfo) -> None:
        """Refuse a member whose declared size or compression ratio is implausible for an image,
        from the zip directory alone (nothing is decompressed)."""
        is_labels = info.filename == LABELS_FILE
        limit = JSON_LIMIT_BYTES if is_labels else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise DatasetError(f"{self._describe(info.filename)} declares {info.file_size:,} bytes uncompressed, "
                               f"more than the {limit:,} allowed for one {'label file' if is_labels else 'image'}")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise DatasetError(f"{self._describe(info.filename)} expands {ratio:,.0f}-fold ({info.compress_size:,} "
                               f"-> {info.file_size:,} bytes), more than the {MAX_COMPRESSION_RATIO} allowed: a zip "
                               f"bomb, or not an image")

    def _open(self, name: str) -> BinaryIO:
        try:
            if self.is_archive:
                return io.BytesIO(self._zip().read(name))
            return open_regular_file(self.path / name, DatasetError, what="image file")
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            raise DatasetError(f"cannot read {self._describe(name)}: {error}") from error

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_archive"] = None  # reopened lazily in the receiving process
        return state

    # --- reading --------------------------------------------------------------------------
    def _read_headers(self) -> tuple[list[tuple[int, int]], list[str]]:
        image_module = _pil_image()
        sizes, modes = [], []
        for name in self.image_names:
            with self._open(name) as stream:
                try:
                    with image_module.open(stream) as image:  # reads the header only
                        sizes.append(tuple(image.size))
                        modes.append(image.mode)
                except Exception as error:  # UnidentifiedImageError, SyntaxError, OSError, ...
                    raise DatasetError(
                        f"{self._describe(name)} is not a readable image: {error}") from error
        return sizes, modes

    def _read_labels(self) -> np.ndarray:
        labels = np.full(len(self.image_names), NO_LABEL, dtype=np.int64)
        if self.is_archive:
            if LABELS_FILE not in self._zip().namelist():
                return labels
            raw = self._zip().read(LABELS_FILE)
            try:
                entries = json.loads(raw)
            except ValueError as error:
                raise DatasetError(f"{self._describe(LABELS_FILE)} is not a JSON object: {error}") from error
        else:
            if not (self.path / LABELS_FILE).exists():
                return labels
            entries = read_json_file(self.path / LABELS_FILE, DatasetError, what="label file")
        where = self._describe(LABELS_FILE)
        try:
            entries = entries.get("labels")
        except (ValueError, AttributeError) as error:
            raise DatasetError(f"{where} is not a JSON object: {error}") from error
        if entries is None:
            return labels
        try:
            if not isinstance(entries, list):
                raise TypeError(f"found {type(entries).__name__}")
            table = {str(name).replace("\\", "/"): value for name, value in entries}
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{where}: 'labels' must be a list of [filename, label] pairs "
                              f"({error})") from error
        for position, name in enumerate(self.image_names):
            if name not in table:
                raise DatasetError(f"{where} has no label for {name}")
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DatasetError(f"{where}: label of {name} must be an integer >= 0, "
                                   f"got {value!r}")
            labels[position] = value
        return labels

    def _decode(self, name: str) -> np.ndarray:
        """uint8 [C, H, W] of one image, converted and resized as documented above."""
        image_module = _pil_image()
        with self._open(name) as stream:
            try:
                with image_module.open(stream) as image:
                    image.load()
                    if self.num_channels == 1:
                        pixels = np.asarray(image)
                        if pixels.dtype == np.uint16 or image.mode.startswith("I;16"):
                            pixels = (pixels.astype(np.uint32) >> 8).astype(np.uint8)
                        elif pixels.dtype != np.uint8:
                            pixels = np.asarray(image.convert("L"))
                        if pixels.ndim == 3:  # "LA": drop alpha
                            pixels = pixels[:, :, 0]
                        image = image_module.fromarray(np.ascontiguousarray(pixels))  # uint8 2-D -> "L"
                    else:
                        image = image.convert("RGB")
                    if self._resize:
                        image = self._crop_and_resize(image, image_module)
                    pixels = np.asarray(image, dtype=np.uint8)
            except DatasetError:
                raise
            except Exception as error:  # truncated or damaged data: OSError, SyntaxError, ...
                raise DatasetError(f"cannot decode {self._describe(name)}: {error}") from error
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape != (self.resolution, self.resolution, self.num_channels):
            raise DatasetError(f"{self._describe(name)} decoded to {pixels.shape}, expected "
                               f"{(self.resolution, self.resolution, self.num_channels)}")
        return pixels.transpose(2, 0, 1)

    def _crop_and_resize(self, image: Any, image_module: Any) -> Any:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != self.resolution:
            image = image.resize((self.resolution, self.resolution),
                                 image_module.Resampling.LANCZOS)
        return image

    # --- protocol ---------------------------------------------------------------------------
    def _num_raw_images(self) -> int:
        return len(self.image_names)

    def _load_raw_batch(self, raw_indices: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        images = np.stack([self._decode(self.image_names[int(index)]) for index in raw_indices])
        return images, {"label": self.labels[raw_indices]}

    def _materialize_chunk_size(self) -> int:
        return 256
