"""Training data sets: determinism, the common protocol, safe CIFAR-10 loading, image folders and
zip archives, the spec factory, and a clear DatasetError for every kind of bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hkdviz.data import (
    BACKGROUND_NAMES, CIFAR10_LABEL_NAMES, KNOWN_DATASETS, SHAPE_NAMES, Cifar10Dataset,
    DatasetError, DigitsDataset, ImageFolderDataset, LfwDataset, ShapesDataset, load_dataset,
)

PIL_Image = pytest.importorskip("PIL.Image")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> the [-1, 1] floats that __getitem__ returns."""
    return images.to(torch.float32) / 127.5 - 1.0


def check_protocol(dataset, index: int = 0) -> None:
    image, label = dataset[index]
    assert image.dtype == torch.float32
    assert image.shape == (dataset.num_channels, dataset.resolution, dataset.resolution)
    assert -1.0 <= image.min().item() and image.max().item() <= 1.0
    assert label.dtype == torch.int64 and label.ndim == 0
    assert isinstance(dataset.name, str) and dataset.name
    if dataset.label_names is None:
        assert label.item() == -1
    else:
        assert 0 <= label.item() < len(dataset.label_names)


# --- shapes ----------------------------------------------------------------------------------

# sha256 of ShapesDataset(8, seed=0)'s uint8 pixels: the generator's output, frozen.
SHAPES_DIGEST = "f6ee768917326a32fac06ab09525361e73bf1709cf5e79b8e30f60b2aeabcc41"


@pytest.fixture(scope="module")
def shapes():
    dataset = ShapesDataset(96, seed=7)
    images, labels = dataset.materialize(progress=False)
    return dataset, images, labels


def test_shapes_item_is_bit_identical_alone_or_in_any_batch(shapes):
    dataset, images, labels = shapes
    assert images.dtype == torch.uint8 and images.shape == (96, 3, 32, 32)
    for index in (0, 1, 17, 95):
        image, label = dataset[index]
        assert torch.equal(image, to_float(images[index]))
        assert label.item() == labels["shape"][index].item() == labels["label"][index].item()
    # Another batch composition, order and a larger set with the same seed: same pixels.
    picked = [95, 3, 40, 3]
    again, again_labels = dataset.materialize(picked, progress=False)
    assert torch.equal(again, images[picked])
    assert torch.equal(again_labels["background"], labels["background"][picked])
    larger = ShapesDataset(300, seed=7)
    everything, _ = larger.materialize(progress=False)  # rendered in chunks of 256
    assert torch.equal(everything[:96], images)
    for index in (255, 256, 299):
        assert torch.equal(larger[index][0], to_float(everything[index]))


def test_shapes_render_on_threads_bit_identically(monkeypatch):
    """Any number of render threads gives the same pixels and labels in the same order, mirrors too."""
    import hkdviz.data.base as base
    dataset = ShapesDataset(700, resolution=16, seed=5, xflip=True)  # 1,024 images per chunk at 16 px
    indices = np.r_[np.arange(0, 1400, 3), [1399, 0, 700]]  # mirrored images (>= 700) and repeats
    monkeypatch.setattr(dataset, "_materialize_chunk_size", lambda: 64)  # 8 chunks for 467 indices
    serial, serial_labels = dataset.materialize(indices, progress=False, workers=1)
    threaded, threaded_labels = dataset.materialize(indices, progress=False, workers=3)
    assert torch.equal(serial, threaded)
    assert serial_labels.keys() == threaded_labels.keys()
    assert all(torch.equal(serial_labels[key], threaded_labels[key]) for key in serial_labels)
    assert torch.equal(threaded[-1], threaded[-2].flip(-1))  # index 700 mirrors image 0
    # The automatic count: the CPUs shared among torchrun's local ranks, one thread for small sets.
    monkeypatch.setattr(base.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert dataset._render_workers(None, num_chunks=50) == 4
    assert dataset._render_workers(None, num_chunks=base.PARALLEL_MIN_CHUNKS - 1) == 1
    assert dataset._render_workers(6, num_chunks=2) == 2
    with pytest.raises(DatasetError, match="workers"):
        dataset.materialize([0], progress=False, workers=0)


def test_shapes_pixels_are_frozen():
    # Reproducibility across machines and releases: a change here changes every experiment.
    images, _ = ShapesDataset(8, seed=0).materialize(progress=False)
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    assert digest == SHAPES_DIGEST, "the shapes generator changed; update SHAPES_DIGEST on purpose"



def test_shapes_labels_values_and_variety(shapes):
    dataset, images, labels = shapes
    check_protocol(dataset, 5)
    assert dataset.label_names == SHAPE_NAMES and len(SHAPE_NAMES) >= 4
    assert {"disc", "square", "triangle", "ring"} <= set(SHAPE_NAMES)
    assert labels["shape"].dtype == torch.int64 and labels["background"].dtype == torch.int64
    assert set(labels["shape"].tolist()) == set(range(len(SHAPE_NAMES)))
    assert set(labels["background"].tolist()) == set(range(len(BACKGROUND_NAMES)))
    flat = images.reshape(len(images), -1)
    assert len(torch.unique(flat, dim=0)) == len(images), "two indices gave the same image"
    other_seed, _ = ShapesDataset(4, seed=8).materialize(progress=False)
    assert not torch.equal(other_seed, images[:4])
    parameters = dataset.parameters(3)
    assert parameters["shape"] == labels["shape"][3].item()
    assert 0.2 <= 2 * parameters["size"] <= 0.6  # spans 20-60 % of the width


def test_shapes_low_frequencies_carry_the_shape_and_high_frequencies_the_texture(shapes):
    dataset, images, _ = shapes
    pixels = images.to(torch.float32) / 255.0
    masks = dataset.masks(range(len(images)))[:, None]
    blocks, block_masks = (torch.nn.functional.avg_pool2d(t, 4) for t in (pixels, masks))
    # Low pass (4x4 block means): an affine function of the shape's coverage explains it.
    design = torch.stack([torch.ones_like(block_masks), block_masks], -1).reshape(len(images), 1, -1, 2)
    target = blocks.reshape(len(images), 3, -1, 1)
    design = design.expand(-1, 3, -1, -1).to(torch.float64)
    fitted = design @ torch.linalg.lstsq(design, target.to(torch.float64)).solution
    residual = ((fitted - target) ** 2).sum(dim=(1, 2, 3))
    total = ((target - target.mean(dim=2, keepdim=True)) ** 2).sum(dim=(1, 2, 3))
    explained = 1.0 - residual / total
    assert explained.median() > 0.85 and explained.mean() > 0.8
    # High pass (pixel minus its block mean): texture in the background, none inside the shape.
    high = pixels - torch.nn.functional.interpolate(blocks, scale_factor=4, mode="nearest")

    def expand(selected: torch.Tensor) -> torch.Tensor:
        upsampled = torch.nn.functional.interpolate(selected.to(torch.float32), scale_factor=4)
        return upsampled.bool().expand_as(high)

    background_high = high[expand(block_masks == 0)]
    inside_high = high[expand(block_masks == 1)]
    assert background_high.std() > 0.04
    assert inside_high.abs().max() < 1e-5  # flat colour (up to float rounding of the means)


def test_shapes_texture_crops_stay_inside_their_sources():
    from hkdviz.data.shapes import HALF_DIAGONAL, draw_parameters
    from hkdviz.data.textures import texture_bank

    bank = texture_bank()
    for index in range(3000):
        parameters = draw_parameters(11, index, bank)
        reach = parameters.texture_span * HALF_DIAGONAL + 1.0  # + one bilinear tap
        x, y = parameters.texture_center
        assert reach <= x <= bank.widths[parameters.background] - 1 - reach
        assert reach <= y <= bank.heights[parameters.background] - 1 - reach


def test_shapes_xflip_and_masks():
    plain = ShapesDataset(10, seed=2)
    flipped = ShapesDataset(10, seed=2, xflip=True)
    assert len(flipped) == 2 * len(plain) == 20
    for index in (0, 9):
        image, label = plain[index]
        mirror, mirror_label = flipped[10 + index]
        assert torch.equal(mirror, image.flip(-1)) and mirror_label == label
        assert torch.equal(flipped[index][0], image)
    images, _ = flipped.materialize([3, 13], progress=False)
    assert torch.equal(images[1], images[0].flip(-1))
    masks = flipped.masks([3, 13])
    assert torch.equal(masks[1], masks[0].flip(-1))
    assert list(flipped) and len(list(flipped)) == 20  # iteration stops at the end
    with pytest.raises(IndexError):
        flipped[20]


def test_shapes_other_resolution_renders_the_same_scene():
    small, large = ShapesDataset(6, resolution=32), ShapesDataset(6, resolution=64)
    check_protocol(large)
    images, _ = large.materialize(progress=False)
    assert images.shape == (6, 3, 64, 64)
    pooled = torch.nn.functional.avg_pool2d(large.masks(range(6))[:, None], 2)[:, 0]
    assert (pooled - small.masks(range(6))).abs().mean() < 0.03


def test_shapes_bad_arguments():
    for arguments in ({"num_images": 0}, {"num_images": 5, "resolution": 2},
                      {"num_images": 5, "seed": -1}, {"num_images": "5"}):
        with pytest.raises(DatasetError):
            ShapesDataset(**arguments)


def test_dataloader_collates():
    loader = torch.utils.data.DataLoader(ShapesDataset(8), batch_size=4)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,) and labels.dtype == torch.int64


# --- CIFAR-10 ----------------------------------------------------------------------------------

def cifar_batch(count: int, offset: int) -> dict:
    generator = np.random.default_rng(offset)
    return {
        b"batch_label": b"fake batch",
        b"labels": [(offset + k) % 10 for k in range(count)],
        b"data": generator.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        b"filenames": [b"image_%d.png" % (offset + k) for k in range(count)],
    }


def write_fake_cifar(root: Path, count: int = 6, protocol: int = 4) -> dict[str, dict]:
    """The real layout: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    batches = {}
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for position, name in enumerate(names):
        batches[name] = cifar_batch(count, 100 * position)
        (directory / name).write_bytes(pickle.dumps(batches[name], protocol=protocol))
    meta = {b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES]}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches


def test_cifar10_loads_the_real_format(tmp_path):
    batches = write_fake_cifar(tmp_path)
    train = Cifar10Dataset(tmp_path)
    assert len(train) == 30 and train.resolution == 32 and train.num_channels == 3
    assert train.label_names == CIFAR10_LABEL_NAMES
    check_protocol(train, 7)
    # Image 7 is image 1 of data_batch_2: rows hold the R plane, then G, then B.
    expected = batches["data_batch_2"][b"data"][1].reshape(3, 32, 32)
    image, label = train[7]
    assert torch.equal(image, to_float(torch.from_numpy(expected)))
    assert label.item() == batches["data_batch_2"][b"labels"][1]
    test = Cifar10Dataset(tmp_path / "cifar-10-batches-py", train=False, xflip=True)
    assert len(test) == 12
    images, labels = test.materialize(progress=False)
    assert torch.equal(images[6], images[0].flip(-1))
    assert labels["label"].tolist()[:6] == batches["test_batch"][b"labels"]
    assert load_dataset(f"cifar10:{tmp_path}").spec == train.spec
    assert len(load_dataset(str(tmp_path), train=False)) == 6  # bare path: detected as CIFAR-10


def test_cifar10_accepts_old_numpy_module_name(tmp_path):
    # Files written by numpy 1.x name numpy.core.multiarray._reconstruct.
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    batch = cifar_batch(3, 0)
    payload = pickle.dumps(batch, protocol=3)  # protocol 3 spells globals as plain text
    old = payload.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n" in old
    (directory / "test_batch").write_bytes(old)
    dataset = Cifar10Dataset(tmp_path, train=False)
    assert torch.equal(dataset.materialize(progress=False)[0].reshape(3, -1),
                       torch.from_numpy(batch[b"data"]))


class RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class CallsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",)


@pytest.mark.parametrize("payload_kind", ["os.system", "eval", "inside the labels list"])
def test_cifar10_refuses_malicious_pickle_without_running_it(tmp_path, payload_kind):
    marker = tmp_path / "executed"
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    evil = RunsCommand(f"touch {marker}")
    if payload_kind == "eval":
        evil = CallsEval(marker)
    batch = cifar_batch(2, 0)
    if payload_kind == "inside the labels list":
        batch[b"labels"] = [evil, 1]
    else:
        batch = {b"data": batch[b"data"], b"labels": evil}
    (directory / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match="refused") as caught:
        Cifar10Dataset(tmp_path, train=False)
    assert "test_batch" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("problem", [
    "truncated", "garbage", "empty file", "not a dict", "float data", "wrong width",
    "missing labels", "label count", "label range", "protocol 5",
])
def test_cifar10_bad_batches_raise_dataset_error_naming_the_file(tmp_path, problem):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    batch = cifar_batch(4, 0)
    payload = None
    if problem == "truncated":
        payload = pickle.dumps(batch)[:2000]
    elif problem == "garbage":
        payload = b"\x00\x01 this is not a pickle at all"
    elif problem == "empty file":
        payload = b""
    elif problem == "not a dict":
        payload = pickle.dumps([1, 2, 3])
    elif problem == "float data":
        batch[b"data"] = batch[b"data"].astype(np.float32)
    elif problem == "wrong width":
        batch[b"data"] = batch[b"data"][:, :1000]
    elif problem == "missing labels":
        del batch[b"labels"]
    elif problem == "label count":
        batch[b"labels"] = batch[b"labels"][:3]
    elif problem == "label range":
        batch[b"labels"][0] = 10
    elif problem == "protocol 5":  # arrays then go through numpy._core.numeric._frombuffer
        payload = pickle.dumps(batch, protocol=5)
    path = directory / "test_batch"
    path.write_bytes(payload if payload is not None else pickle.dumps(batch))
    with pytest.raises(DatasetError) as caught:
        Cifar10Dataset(tmp_path, train=False)
    assert str(path) in str(caught.value)


def test_cifar10_bad_roots(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        Cifar10Dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no CIFAR-10 batches"):
        Cifar10Dataset(tmp_path)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a directory"):
        Cifar10Dataset(tmp_path / "file")
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    (directory / "test_batch").write_bytes(pickle.dumps(cifar_batch(2, 0)))
    with pytest.raises(DatasetError, match="data_batch_1"):
        Cifar10Dataset(tmp_path, train=True)


# --- image folders and zip archives ---------------------------------------------------------------

def png_bytes(pixels: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    PIL_Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def random_pixels(seed: int, size: int = 16, channels: int = 3) -> np.ndarray:
    shape = (size, size, channels) if channels > 1 else (size, size)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_image_folder_recursive_sorted_and_exact(tmp_path):
    names = ["b.png", "a/z.png", "a/b/c.PNG", "d.jpg"]
    pixels = {}
    for seed, name in enumerate(names):
        pixels[name] = random_pixels(seed)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(png_bytes(pixels[name], "JPEG" if name.endswith("jpg") else "PNG"))
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path, xflip=True)
    assert dataset.image_names == sorted(names)
    assert (dataset.resolution, dataset.num_channels, len(dataset)) == (16, 3, 8)
    assert dataset.label_names is None
    check_protocol(dataset, 1)
    images, labels = dataset.materialize(progress=False)
    assert torch.equal(images[1].permute(1, 2, 0), torch.from_numpy(pixels["a/z.png"]))  # lossless
    assert torch.equal(images[5], images[1].flip(-1))
    assert labels["label"].tolist() == [-1] * 8
    assert load_dataset(str(tmp_path)).image_names == dataset.image_names
    assert load_dataset(f"folder:{tmp_path}").spec["name"] == "folder"


def test_image_folder_channels_and_resizing(tmp_path):
    gray = tmp_path / "gray"
    gray.mkdir()
    for seed in range(2):
        (gray / f"{seed}.png").write_bytes(png_bytes(random_pixels(seed, channels=1)))
    dataset = ImageFolderDataset(gray)
    assert dataset.num_channels == 1 and dataset[0][0].shape == (1, 16, 16)
    # One colour image makes the whole set RGB, gray repeated on all three planes.
    (gray / "2.png").write_bytes(png_bytes(random_pixels(9, channels=4)))  # RGBA: alpha dropped
    mixed = ImageFolderDataset(gray)
    assert mixed.num_channels == 3
    image = mixed[0][0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    (gray / "3.png").write_bytes(png_bytes(random_pixels(3, size=40)))
    with pytest.raises(DatasetError, match="share one size") as caught:
        ImageFolderDataset(gray)
    assert str(gray) in str(caught.value)
    resized = ImageFolderDataset(gray, resolution=8)
    assert resized.materialize(progress=False)[0].shape == (4, 3, 8, 8)
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "w.png").write_bytes(png_bytes(np.zeros((10, 20, 3), np.uint8)))
    with pytest.raises(DatasetError, match="not square"):
        ImageFolderDataset(wide)
    assert ImageFolderDataset(wide, resolution=10)[0][0].shape == (3, 10, 10)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_archive_with_labels(tmp_path):
    members = {f"{k:05d}.png": png_bytes(random_pixels(k, size=8)) for k in range(5)}
    labels = [[name, k % 3] for k, name in enumerate(members)]
    members["dataset.json"] = json.dumps({"labels": labels}).encode()
    path = write_zip(tmp_path / "tiny.zip", members)
    dataset = load_dataset(str(path))
    assert isinstance(dataset, ImageFolderDataset) and dataset.is_archive
    assert (len(dataset), dataset.resolution, dataset.name) == (5, 8, "tiny")
    assert dataset.label_names == ("0", "1", "2")
    assert [dataset[k][1].item() for k in range(5)] == [0, 1, 2, 0, 1]
    assert torch.equal(dataset[3][0], to_float(torch.from_numpy(random_pixels(3, size=8)).permute(2, 0, 1)))
    # Picklable for DataLoader workers; the archive handle is reopened on the other side.
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[4][0], dataset[4][0])
    assert len(load_dataset({"name": "zip", "path": str(path)}, xflip=True)) == 10
    unlabeled = load_dataset(f"zip:{write_zip(tmp_path / 'plain.zip', {'a.png': members['00000.png']})}")
    assert unlabeled[0][1].item() == -1 and unlabeled.label_names is None


def test_truncated_image_fails_when_read(tmp_path):
    data = png_bytes(random_pixels(0, size=64))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    dataset = ImageFolderDataset(tmp_path)  # the header is intact
    with pytest.raises(DatasetError, match="cut.png"):
        dataset[0]


@pytest.mark.parametrize("problem", [
    "missing", "empty directory", "no images", "corrupt image", "corrupt zip",
    "empty zip", "not a zip", "bad json", "label missing", "label not int",
])
def test_image_folder_bad_inputs_name_the_path(tmp_path, problem):
    good = png_bytes(random_pixels(0, size=8))
    target = tmp_path / "data"
    if problem == "missing":
        pass
    elif problem == "empty directory":
        target.mkdir()
    elif problem == "no images":
        target.mkdir()
        (target / "readme.txt").write_text("hi")
    elif problem == "corrupt image":
        target.mkdir()
        (target / "good.png").write_bytes(good)
        (target / "broken.png").write_bytes(b"\x89PNG but not really")
    elif problem == "corrupt zip":
        target = tmp_path / "data.zip"
        target.write_bytes(b"PK\x03\x04 truncated")
    elif problem == "empty zip":
        target = write_zip(tmp_path / "data.zip", {})
    elif problem == "not a zip":
        target = tmp_path / "data.tar"
        target.write_bytes(b"whatever")
    elif problem == "bad json":
        target = write_zip(tmp_path / "data.zip", {"a.png": good, "dataset.json": b"{nope"})
    elif problem == "label missing":
        target = write_zip(tmp_path / "data.zip", {
            "a.png": good, "b.png": good, "dataset.json": json.dumps({"labels": [["a.png", 0]]}).encode()})
    elif problem == "label not int":
        target = write_zip(tmp_path / "data.zip", {
            "a.png": good, "dataset.json": json.dumps({"labels": [["a.png", [0, 1]]]}).encode()})
    with pytest.raises(DatasetError) as caught:
        ImageFolderDataset(target)
    assert str(target) in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- bundled sets and the factory -----------------------------------------------------------------

def test_digits_and_lfw_are_bundled():
    digits = load_dataset("digits")
    assert isinstance(digits, DigitsDataset)
    assert (len(digits), digits.resolution, digits.num_channels) == (1797, 32, 3)
    check_protocol(digits, 10)
    images, labels = digits.materialize(progress=False)
    assert set(labels["label"].tolist()) == set(range(10))
    assert torch.equal(images[:, 0], images[:, 2])  # gray repeated into RGB
    assert DigitsDataset(num_channels=1, resolution=16)[0][0].shape == (1, 16, 16)
    lfw = LfwDataset()
    assert (len(lfw), lfw.label_names) == (200, ("face", "non_face"))
    check_protocol(lfw, 150)
    assert lfw[0][1].item() == 0 and lfw[150][1].item() == 1
    with pytest.raises(DatasetError):
        DigitsDataset(num_channels=2)


def test_load_dataset_specs_and_errors(tmp_path):
    shapes = load_dataset({"name": "shapes", "num_images": 12, "seed": 4})
    assert isinstance(shapes, ShapesDataset) and len(shapes) == 12 and shapes.seed == 4
    assert len(load_dataset("shapes")) == 50_000  # nothing is rendered until asked
    overridden = load_dataset("shapes", num_images=3, resolution=64)
    assert (len(overridden), overridden.resolution) == (3, 64)
    assert torch.equal(load_dataset(shapes.spec)[5][0], shapes[5][0])
    with pytest.raises(DatasetError) as caught:
        load_dataset("imagenet")
    assert all(name in str(caught.value) for name in KNOWN_DATASETS)
    with pytest.raises(DatasetError, match="no option"):
        load_dataset("shapes", colour="red")
    with pytest.raises(DatasetError, match="unknown data set"):
        load_dataset({"name": "mnist"})
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match=str(tmp_path / "absent")):
        load_dataset(str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="absent.zip"):
        load_dataset(f"zip:{tmp_path / 'absent.zip'}")
    with pytest.raises(DatasetError):
        load_dataset(42)
