"""Data sets (training data, references, held-out images) and `load_dataset`, which builds one from a spec.

Every data set is a `torch.utils.data.Dataset` whose item `i` is `(image, label)`: image float32
[C, H, W] in [-1, 1], label an int64 scalar (-1 when the set has no labels). Each has
`resolution`, `num_channels`, `label_names` (tuple or None), `name`, `spec` (a JSON-able dict
that `load_dataset` turns back into the same set), `materialize(indices, progress)` for uint8
batches, and `xflip=True` to append horizontal mirrors (index N + i mirrors image i), as EDM.

Specs:
    "shapes"                  procedural default, 50,000 images (dict form sets num_images, seed, ...)
    "cifar10:/path"           CIFAR-10 python batches (the folder holding cifar-10-batches-py, or it)
    "folder:/path"            a directory of PNG/JPEG images (recursive)
    "zip:/path.zip"           an EDM-style zip archive, optional dataset.json labels
    "/path" or "/path.zip"    bare path: a CIFAR-10 directory, an image directory, or a zip
    "digits", "lfw"           tiny real sets bundled with scikit-learn / scikit-image
"""
from .base import NO_LABEL, DatasetError, ImageDataset, InMemoryDataset, to_unit_range
from .bundled import DIGIT_LABEL_NAMES, LFW_LABEL_NAMES, DigitsDataset, LfwDataset
from .cifar import CIFAR10_LABEL_NAMES, Cifar10Dataset, RestrictedUnpickler, safe_unpickle
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset
from .shapes import SHAPE_NAMES, ShapeParameters, ShapesDataset
from .registry import KNOWN_DATASETS, load_dataset
from .textures import BACKGROUND_NAMES

__all__ = [
    "BACKGROUND_NAMES", "CIFAR10_LABEL_NAMES", "DIGIT_LABEL_NAMES", "IMAGE_EXTENSIONS",
    "KNOWN_DATASETS", "LFW_LABEL_NAMES", "NO_LABEL", "SHAPE_NAMES", "Cifar10Dataset",
    "DatasetError", "DigitsDataset", "ImageDataset", "ImageFolderDataset", "InMemoryDataset",
    "LfwDataset", "RestrictedUnpickler", "ShapeParameters", "ShapesDataset", "load_dataset",
    "safe_unpickle", "to_unit_range",
]

