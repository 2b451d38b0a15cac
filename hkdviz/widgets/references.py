"""Reference images for frequency-aware editing: a few built-ins, plus whatever the user passes.

Built-ins: three images of the procedural `shapes` data set (when hkdviz.train and its texture source
are importable) and two synthetic high-frequency patterns that need nothing at all. All are
[C, H, W] float32 in [-1, 1] at the model's image size.
"""
from __future__ import annotations

import math

import torch

SHAPES_SEED = 2025  # the reference shapes are fixed images, not the ones a training run sees first
SHAPES_COUNT = 3


def _stripes(channels: int, height: int, width: int) -> torch.Tensor:
    # Diagonal stripes with a period of ~4 px: energy well above the band a 32 px model uses for layout.
    y = torch.arange(height, dtype=torch.float32).reshape(-1, 1)
    x = torch.arange(width, dtype=torch.float32).reshape(1, -1)
    wave = torch.sin(2 * math.pi * (x + y) / 4.0)
    colour = torch.tensor([0.9, -0.2, -0.6])[:channels].reshape(-1, 1, 1) if channels == 3 else torch.ones(1, 1, 1)
    return (0.8 * wave[None] * colour).clamp(-1, 1)


def _checkerboard(channels: int, height: int, width: int) -> torch.Tensor:
    y = torch.arange(height).reshape(-1, 1)
    x = torch.arange(width).reshape(1, -1)
    board = (((y // 2) + (x // 2)) % 2).to(torch.float32) * 1.6 - 0.8
    return board[None].expand(channels, height, width).clone()


def _shapes(channels: int, height: int, width: int) -> dict[str, torch.Tensor]:
    if height != width:
        return {}
    try:
        from ..data import ShapesDataset

        dataset = ShapesDataset(num_images=SHAPES_COUNT, resolution=height, seed=SHAPES_SEED)
        images = {f"shapes {index}": dataset[index][0] for index in range(SHAPES_COUNT)}
    except Exception:  # the optional training extras (scikit-image textures) may be missing
        return {}
    if channels == 1:
        images = {name: image.mean(dim=0, keepdim=True) for name, image in images.items()}
    elif channels != 3:
        return {}
    return images


def builtin_references(model) -> dict[str, torch.Tensor]:
    """Named reference images [C, H, W] in [-1, 1] of the model's image size (CPU tensors)."""
    channels, height, width = model.image_shape
    references = _shapes(channels, height, width)
    references["stripes"] = _stripes(channels, height, width)
    references["checkerboard"] = _checkerboard(channels, height, width)
    return references


def collect_references(model, reference=None) -> dict[str, torch.Tensor]:
    """The user's reference(s) first, then the built-ins. `reference`: None, one image [C, H, W] (or
    [1, C, H, W]), or a dict {name: image}. Shapes and value ranges are checked here, naming the problem."""
    user: dict = {}
    if reference is None:
        pass
    elif isinstance(reference, dict):
        user = dict(reference)
    elif isinstance(reference, torch.Tensor):
        user = {"given": reference}
    else:
        raise TypeError(f"reference must be None, an image tensor [C, H, W] or a dict {{name: tensor}}, "
                        f"got {type(reference).__name__}")
    checked = {}
    shape = tuple(model.image_shape)
    for name, image in user.items():
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"reference {name!r} must be a torch.Tensor, got {type(image).__name__}")
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if tuple(image.shape) != shape:
            raise ValueError(f"reference {name!r} must have shape [{', '.join(map(str, shape))}] (the model's "
                             f"image size), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"reference {name!r} must be floating point in [-1, 1], got {image.dtype}")
        image = image.detach().float().cpu()
        if not bool(torch.isfinite(image).all()) or float(image.min()) < -1.01 or float(image.max()) > 1.01:
            raise ValueError(f"reference {name!r} values must be finite and lie in [-1, 1] "
                             f"(scale [0, 1] images with 2 x - 1)")
        checked[str(name)] = image.clamp(-1, 1)
    for name, image in builtin_references(model).items():
        checked.setdefault(name, image)
    return checked
