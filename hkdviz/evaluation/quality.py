"""Weights-free quality measures for generated images, with known-answer behaviour.

No Inception weights can be downloaded here, so the default measures use a small classifier
trained locally (classifier.py) or no network at all:

- local KID: the unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3
  of Binkowski et al. (2018, "Demystifying MMD GANs"), averaged over random subsets, with its std;
  on the local classifier's penultimate features.
- local FD: the Frechet distance between Gaussians fitted to the same features. It is *not* FID
  (different network, different feature space): never compare it with published FIDs.
- SWD: sliced Wasserstein distance between multi-scale pixel patches (Laplacian pyramid bands, as in
  Karras et al. 2018), needing no network at all.
- recognisability: mean max-softmax confidence of the classifier's main head (shape kind for the
  shapes set), the entropy of the predicted class histogram and its KL divergence from the
  reference's histogram (mode dropping shows up there), and accuracy when labels are known.
- pixel statistics: high-frequency share of the power spectrum, contrast and mean neighbour
  difference. Not distances: read against the held-out data's values, they say whether a sample
  set is blurrier (below the data on all three) or noisier (above) than the data, which KID and FD
  cannot tell apart.
- FID: only with a local Inception weights file (`load_inception(path)`, needs the torch-fidelity
  package); nothing is ever downloaded.

`QualityReference` computes the reference side once, then `measure(images)` scores each sample set.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..data.base import to_unit_range

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000  # the KID paper's subset size; smaller sets use half their size (see kid)
# 64 projections: the spread over seeds comes from the patch draws, and more projections cost time
# without narrowing it (docs/benchmarks.md, "Other measurements behind code defaults").
SWD_DEFAULTS = {"num_projections": 64, "num_patches": 4096, "patch_size": 7, "levels": 3}
FULL_KERNEL_LIMIT = 4096  # up to this many features per set, kernel matrices are computed once
CLASS_PSEUDO_COUNT = 0.5  # Jeffreys prior on class histograms, so a missing class gives a finite KL


class QualityError(ValueError):
    """Bad input to a quality measure (shapes, sizes, missing package or weights); names the problem."""


# -- inputs -------------------------------------------------------------------------------------------
def _as_features(features, name: str) -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise QualityError(f"{name} must be a tensor or array [N, F], got {type(features).__name__}")
    if features.ndim != 2:
        raise QualityError(f"{name} must be 2-D [N, F], got shape {tuple(features.shape)}")
    if not (features.dtype.is_floating_point or features.dtype in (torch.int32, torch.int64)):
        raise QualityError(f"{name} must be numeric, got {features.dtype}")
    features = features.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(features).all()):
        raise QualityError(f"{name} contains NaN or infinite values")
    return features


def _as_images(images, name: str) -> torch.Tensor:
    """float32 [N, C, H, W] in [-1, 1] (uint8 converted as the data sets do)."""
    if not isinstance(images, torch.Tensor):
        raise QualityError(f"{name} must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    if images.ndim != 4:
        raise QualityError(f"{name} must be 4-D [N, C, H, W], got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise QualityError(f"{name} is empty")
    if images.dtype == torch.uint8:
        return to_unit_range(images)
    if not images.dtype.is_floating_point:
        raise QualityError(f"{name} must be uint8 or floating point in [-1, 1], got {images.dtype}")
    images = images.detach().to(torch.float32)
    if not bool(torch.isfinite(images).all()):
        raise QualityError(f"{name} contains NaN or infinite values")
    return images


# -- pixel statistics ---------------------------------------------------------------------------------
def pixel_statistics(images, cutoff: float | None = None) -> dict[str, float]:
    """{high_frequency_share, contrast, gradient} of images [N, C, H, W] (uint8 or [-1, 1]), each a mean
    over the images: the share of the non-DC power above `cutoff` cycles/px, the standard deviation over
    channels and pixels (contrast, in [-1, 1] units), and the mean absolute difference between
    horizontal and vertical pixel neighbours. Known answers: a constant image gives 0 / 0 / 0, a +-1
    checkerboard 1 / 1 / 2. `cutoff` None: edit_metrics.DEFAULT_CUTOFF (0.125), the editing metrics' split."""
    from ..analysis.edit_metrics import DEFAULT_CUTOFF, high_frequency_fraction

    cutoff = DEFAULT_CUTOFF if cutoff is None else cutoff
    images = _as_images(images, "images")
    if images.shape[-1] < 2 or images.shape[-2] < 2:
        raise QualityError(f"pixel statistics need images of at least 2x2 pixels, got {tuple(images.shape[-2:])}")
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return {"high_frequency_share": float(np.mean(high_frequency_fraction(images, cutoff))),
            "contrast": float(images.flatten(1).std(dim=1, unbiased=False).mean()),
            "gradient": float((horizontal + vertical) / 2)}


# -- KID ----------------------------------------------------------------------------------------------
def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    """k(x, y) = (x.y / d + coef0)^degree, the KID kernel (gamma = 1 / feature dimension)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def _mmd_unbiased(k_aa: torch.Tensor, k_bb: torch.Tensor, k_ab: torch.Tensor) -> float:
    m, n = k_aa.shape[0], k_bb.shape[0]
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def _indicators(indices: list[torch.Tensor], size: int) -> torch.Tensor:
    """[size, subsets] float64 matrix with a 1 where row i is in subset s."""
    matrix = torch.zeros(size, len(indices), dtype=torch.float64)
    for column, index in enumerate(indices):
        matrix[index, column] = 1.0
    return matrix


def kid(features_a, features_b, num_subsets: int = KID_SUBSETS, subset_size: int | None = None,
        degree: int = 3, seed: int = 0) -> dict[str, float]:
    """Kernel distance: {"kid": mean, "kid_std": std over subsets, "subset_size", "num_subsets"}.

    Each subset draws `subset_size` rows of each set without replacement (seeded). The default
    subset size is the KID paper's 1000, or half the smaller set when that is smaller, so that the
    subsets differ and the std means something. The estimate is unbiased for independent samples:
    it can be slightly negative when both come from one distribution. Given the same set twice,
    the two sides of each subset are drawn disjoint (when 2 x subset_size fits), because a point
    paired with itself would bias the cross term.
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise QualityError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    smaller = min(len(a), len(b))
    if subset_size is None:
        subset_size = min(KID_MAX_SUBSET, smaller // 2)
    if subset_size < 2 or subset_size > smaller:
        raise QualityError(f"KID needs 2 <= subset_size <= {smaller} (the smaller set), got {subset_size}; "
                           f"sets of {len(a)} and {len(b)} features")
    if num_subsets < 1:
        raise QualityError(f"num_subsets must be >= 1, got {num_subsets}")
    generator = torch.Generator().manual_seed(seed)
    same = a.shape == b.shape and bool(torch.equal(a, b)) and 2 * subset_size <= len(a)
    subsets_a, subsets_b = [], []
    for _ in range(num_subsets):
        order = torch.randperm(len(a), generator=generator)
        subsets_a.append(order[:subset_size])
        if same:
            subsets_b.append(order[subset_size:2 * subset_size])
        else:
            subsets_b.append(torch.randperm(len(b), generator=generator)[:subset_size])

    if max(len(a), len(b)) <= FULL_KERNEL_LIMIT:
        # All pairs once; each subset's kernel sums are then v_s^T K w_s with 0/1 indicator columns.
        k_aa, k_bb, k_ab = (polynomial_kernel(a, a, degree), polynomial_kernel(b, b, degree),
                            polynomial_kernel(a, b, degree))
        in_a, in_b = _indicators(subsets_a, len(a)), _indicators(subsets_b, len(b))
        pairs = subset_size * (subset_size - 1)
        within_a = (((k_aa @ in_a) * in_a).sum(0) - k_aa.diagonal() @ in_a) / pairs
        within_b = (((k_bb @ in_b) * in_b).sum(0) - k_bb.diagonal() @ in_b) / pairs
        cross = ((k_ab @ in_b) * in_a).sum(0) / subset_size ** 2
        values = (within_a + within_b - 2.0 * cross).numpy()
    else:  # large sets: kernels per subset
        values = []
        for index_a, index_b in zip(subsets_a, subsets_b):
            x, y = a[index_a], b[index_b]
            values.append(_mmd_unbiased(polynomial_kernel(x, x, degree), polynomial_kernel(y, y, degree),
                                        polynomial_kernel(x, y, degree)))
        values = np.asarray(values)
    return {"kid": float(values.mean()), "kid_std": float(values.std()), "subset_size": int(subset_size),
            "num_subsets": int(num_subsets)}


# -- Frechet distance ---------------------------------------------------------------------------------
def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean [F], covariance [F, F]) in float64, the covariance with the unbiased 1 / (N - 1)."""
    features = _as_features(features, "features")
    if len(features) < 2:
        raise QualityError(f"need at least 2 feature vectors for a covariance, got {len(features)}")
    array = features.numpy()
    return array.mean(axis=0), np.atleast_2d(np.cov(array, rowvar=False))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mean_a, covariance_a, mean_b, covariance_b) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the Frechet (2-Wasserstein) distance
    between two Gaussians.

    tr (S_a S_b)^(1/2) is computed as tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): the inner matrix is
    symmetric positive semi-definite, so eigh gives it stably where sqrtm of the non-symmetric
    product can return complex noise.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64).reshape(-1), np.asarray(mean_b, np.float64).reshape(-1)
    covariance_a = np.atleast_2d(np.asarray(covariance_a, np.float64))
    covariance_b = np.atleast_2d(np.asarray(covariance_b, np.float64))
    size = mean_a.shape[0]
    for name, value, shape in (("mean_b", mean_b, (size,)), ("covariance_a", covariance_a, (size, size)),
                               ("covariance_b", covariance_b, (size, size))):
        if value.shape != shape:
            raise QualityError(f"{name} has shape {value.shape}, expected {shape} (from mean_a)")
    root_a = _symmetric_sqrt(covariance_a)
    middle = root_a @ covariance_b @ root_a
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum())
    difference = mean_a - mean_b
    value = float(difference @ difference + np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * trace_root)
    return max(value, 0.0)


def local_fd(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (local classifier features: not FID)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


# -- sliced Wasserstein distance on pixel patches ----------------------------------------------------
def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass images, finest first, then the low-pass residual (2x2 box down, bilinear up)."""
    bands, current = [], images
    for _ in range(levels - 1):
        if min(current.shape[-2:]) < 2:
            break
        low = F.avg_pool2d(current, 2)
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = low
    bands.append(current)
    return bands


def _patches(band: torch.Tensor, image_index: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """[P, k * k * C] patches of `band` [N, C, H, W] at the given images and top-left corners."""
    size = rows.shape[1]
    patches = band[image_index[:, None, None], :, rows[:, :, None], columns[:, None, :]]  # [P, k, k, C]
    return patches.reshape(len(image_index), size * size, band.shape[1])


def sliced_wasserstein_levels(images_a, images_b, num_projections: int = SWD_DEFAULTS["num_projections"],
                              num_patches: int = SWD_DEFAULTS["num_patches"],
                              patch_size: int = SWD_DEFAULTS["patch_size"], levels: int = SWD_DEFAULTS["levels"],
                              seed: int = 0) -> list[float]:
    """Per pyramid level (finest first), the sliced Wasserstein-1 distance between patch sets.

    `num_patches` patches per level and set are drawn at seeded positions; image i of a set is
    picked by the same uniform draw scaled to the set's size, so two identical sets get identical
    patches and a distance of exactly 0. Patches are standardised per channel with the pooled mean
    and std of both sets (so every band counts alike and a colour shift still shows), projected on
    `num_projections` random unit directions, sorted, and compared: W1 = mean |sorted_a - sorted_b|.
    """
    a, b = _as_images(images_a, "images_a"), _as_images(images_b, "images_b")
    if a.shape[1:] != b.shape[1:]:
        raise QualityError(f"image shapes differ: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    _check_swd_options(num_projections, num_patches, patch_size, levels)
    return _swd_pyramids(laplacian_pyramid(a, levels), laplacian_pyramid(b, levels), num_projections,
                         num_patches, patch_size, seed)


def _check_swd_options(num_projections, num_patches, patch_size, levels) -> None:
    for name, value in (("num_projections", num_projections), ("num_patches", num_patches),
                        ("patch_size", patch_size), ("levels", levels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QualityError(f"{name} must be a positive integer, got {value!r}")


def _swd_pyramids(bands_a: list[torch.Tensor], bands_b: list[torch.Tensor], num_projections: int,
                  num_patches: int, patch_size: int, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    distances = []
    for band_a, band_b in zip(bands_a, bands_b):
        height, width = band_a.shape[-2:]
        size = min(patch_size, height, width)
        uniform = torch.rand(num_patches, generator=generator, dtype=torch.float64)
        top = torch.randint(0, height - size + 1, (num_patches,), generator=generator)
        left = torch.randint(0, width - size + 1, (num_patches,), generator=generator)
        offsets = torch.arange(size)
        rows, columns = top[:, None] + offsets, left[:, None] + offsets
        patches = []
        for band in (band_a, band_b):
            index = (uniform * len(band)).long().clamp_(max=len(band) - 1)
            patches.append(_patches(band, index, rows, columns))
        # Pooled per-channel std of both patch sets. Standardising is folded into the directions:
        # (p - mean) / std . d = p . (d / std) - const, and the constant cancels in the W1 of sorted values.
        count = 2 * patches[0].shape[0] * patches[0].shape[1]
        total = sum(p.sum(dim=(0, 1), dtype=torch.float64) for p in patches)
        total_squares = sum(p.square().sum(dim=(0, 1), dtype=torch.float64) for p in patches)
        variance = (total_squares - total * total / count) / (count - 1)
        std = variance.clamp_min(1e-16).sqrt().to(band_a.dtype)
        directions = torch.randn(num_projections, size * size, band_a.shape[1], generator=generator)
        directions /= directions.flatten(1).norm(dim=1)[:, None, None]
        directions = (directions / std).flatten(1).to(band_a.device)
        # Rows [projection, patch] sorted by NumPy: its SIMD sort beats torch.sort on CPU (docs/benchmarks.md).
        sorted_a, sorted_b = (np.sort((directions @ p.reshape(num_patches, -1).T).cpu().numpy(), axis=1)
                              for p in patches)
        distances.append(float(np.abs(sorted_a - sorted_b).mean(dtype=np.float64)))
    return distances


def sliced_wasserstein(images_a, images_b, **options: Any) -> float:
    """Mean over pyramid levels of `sliced_wasserstein_levels` (options as there): 0 for identical sets."""
    return float(np.mean(sliced_wasserstein_levels(images_a, images_b, **options)))


# -- recognisability ----------------------------------------------------------------------------------
def class_histogram(probabilities) -> np.ndarray:
    """Fraction of samples predicted as each class (argmax of [N, K] probabilities)."""
    probabilities = _as_features(probabilities, "probabilities")
    counts = torch.bincount(probabilities.argmax(dim=1), minlength=probabilities.shape[1])
    return (counts.double() / len(probabilities)).numpy()


def class_statistics(probabilities, reference_histogram=None, labels=None) -> dict[str, float]:
    """Recognisability of samples from a classifier's softmax outputs [N, K].

    confidence: mean max-softmax probability (1 = every sample clearly one class).
    class_entropy: entropy of the predicted class histogram / log K (1 = all classes equally often).
    class_kl: KL(reference || samples) of the class histograms in nats, both smoothed with a
      pseudo-count of 0.5 per class (so a class never produced gives a large but finite value).
    accuracy: fraction whose argmax equals `labels`, when labels are given (class-conditional use).
    """
    probabilities = _as_features(probabilities, "probabilities")
    count, classes = probabilities.shape
    if count == 0 or classes < 2:
        raise QualityError(f"probabilities must be [N >= 1, K >= 2], got {tuple(probabilities.shape)}")
    predicted = probabilities.argmax(dim=1)
    counts = torch.bincount(predicted, minlength=classes).double().numpy()
    histogram = counts / count
    nonzero = histogram[histogram > 0]
    result = {"confidence": float(probabilities.max(dim=1).values.mean()),
              "class_entropy": max(0.0, float(-(nonzero * np.log(nonzero)).sum() / math.log(classes)))}
    if reference_histogram is not None:
        reference = np.asarray(reference_histogram, dtype=np.float64).reshape(-1)
        if reference.shape != (classes,) or (reference < 0).any() or reference.sum() <= 0:
            raise QualityError(f"reference_histogram must hold {classes} non-negative fractions, got {reference}")
        reference = reference / reference.sum()
        smoothed = (counts + CLASS_PSEUDO_COUNT) / (count + CLASS_PSEUDO_COUNT * classes)
        # The reference is smoothed as if it had as many samples, so identical histograms give 0.
        reference = (reference * count + CLASS_PSEUDO_COUNT) / (count + CLASS_PSEUDO_COUNT * classes)
        result["class_kl"] = float((reference * np.log(reference / smoothed)).sum())
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).to("cpu")
        if labels.shape[0] != count:
            raise QualityError(f"labels has {labels.shape[0]} entries for {count} samples")
        result["accuracy"] = float((predicted == labels).double().mean())
    return result


# -- optional FID with user-supplied Inception weights -------------------------------------------------
class InceptionFeatures:
    """Inception-v3 pool features (2048-d) from a local weights file, through torch-fidelity.

    The file is torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (the TensorFlow FID
    network converted to PyTorch). Nothing is downloaded: without the file there is no FID.
    """

    def __init__(self, weights_path, device="cpu"):
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise QualityError(f"--inception {weights_path}: no such file (FID needs the Inception weights file "
                               "weights-inception-2015-12-05-6726825d.pth on disk; hkdviz never downloads it)")
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except Exception as error:  # ImportError, or torchvision failing to import inside it
            raise QualityError(
                "FID needs the torch-fidelity package, which could not be imported "
                f"({type(error).__name__}: {error}); install it (pip install torch-fidelity) or leave out "
                "--inception: the local KID / local FD / SWD need nothing extra") from None
        try:
            self.network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                       feature_extractor_weights_path=str(path))
        except Exception as error:
            raise QualityError(f"{path}: cannot load Inception weights from it ({type(error).__name__}: {error})") from None
        self.device = torch.device(device)
        self.network.to(self.device)
        self.path = str(path)

    @torch.no_grad()
    def features(self, images, batch_size: int = 100) -> torch.Tensor:
        images = _as_images(images, "images")
        if images.shape[1] != 3:
            raise QualityError(f"Inception reads RGB images; got {images.shape[1]} channels")
        as_bytes = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        outputs = [self.network(as_bytes[start:start + batch_size].to(self.device))[0].float().cpu()
                   for start in range(0, len(as_bytes), batch_size)]
        return torch.cat(outputs)


def load_inception(weights_path, device="cpu") -> InceptionFeatures:
    return InceptionFeatures(weights_path, device)


# -- the reference side, computed once ------------------------------------------------------------------
class QualityReference:
    """Reference images with everything the measures reuse: classifier features and their Gaussian
    statistics, the reference class histogram, Inception statistics (optional).

    classifier: an `ImageClassifier` (None: SWD only). inception: an `InceptionFeatures` (None: no FID).
    """

    def __init__(self, images, classifier=None, *, inception: InceptionFeatures | None = None, seed: int = 0,
                 kid_subsets: int = KID_SUBSETS, kid_subset_size: int | None = None,
                 swd_options: Mapping[str, int] | None = None, batch_size: int = 500):
        self.images = _as_images(images, "reference images")
        self.classifier = classifier
        self.inception = inception
        self.seed = int(seed)
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.swd_options = {**SWD_DEFAULTS, **dict(swd_options or {})}
        unknown = sorted(set(self.swd_options) - set(SWD_DEFAULTS))
        if unknown:
            raise QualityError(f"unknown SWD option(s) {unknown}; known: {sorted(SWD_DEFAULTS)}")
        _check_swd_options(**self.swd_options)
        self.pyramid = laplacian_pyramid(self.images, self.swd_options["levels"])
        self.batch_size = batch_size
        if classifier is not None:
            classifier.check_images(self.images)
            self.features, probabilities = classifier.features_and_all_probabilities(self.images,
                                                                                     batch_size=batch_size)
            self.statistics = feature_statistics(self.features)
            # Every head's histogram: the main head (shape) alone can hide a collapse in another (background).
            self.histograms = {head: class_histogram(values) for head, values in probabilities.items()}
            self.histogram = self.histograms[classifier.main_head]
        if inception is not None:
            self.inception_statistics = feature_statistics(inception.features(self.images))

    def measure(self, images, return_predictions: bool = False):
        """{kid, kid_std, local_fd, swd, confidence, class_entropy, class_kl, class_kl_by_head[, fid]} of
        `images` against the reference (None where the classifier is missing), plus the images' own
        pixel_statistics (high_frequency_share, contrast, gradient). confidence, class_entropy and
        class_kl are the main head's; class_kl_by_head is {head: class_kl} for every head.
        return_predictions: return (measures, {head: predicted class [N]}) ({} without a classifier)."""
        images = _as_images(images, "images")
        if images.shape[1:] != self.images.shape[1:]:
            raise QualityError(f"images have shape {tuple(images.shape[1:])}, the reference "
                               f"{tuple(self.images.shape[1:])}")
        result: dict = dict.fromkeys(
            ("kid", "kid_std", "local_fd", "confidence", "class_entropy", "class_kl", "class_kl_by_head"))
        predictions = {}
        if self.classifier is not None:
            features, probabilities = self.classifier.features_and_all_probabilities(images,
                                                                                     batch_size=self.batch_size)
            distance = kid(self.features, features, num_subsets=self.kid_subsets,
                           subset_size=self.kid_subset_size, seed=self.seed)
            result.update(kid=distance["kid"], kid_std=distance["kid_std"])
            result["local_fd"] = frechet_distance(*self.statistics, *feature_statistics(features))
            result.update(class_statistics(probabilities[self.classifier.main_head], self.histogram))
            result["class_kl_by_head"] = {head: class_statistics(values, self.histograms[head])["class_kl"]
                                          for head, values in probabilities.items()}
            predictions = {head: values.argmax(dim=1) for head, values in probabilities.items()}
        options = self.swd_options
        levels = _swd_pyramids(self.pyramid, laplacian_pyramid(images, options["levels"]), options["num_projections"],
                               options["num_patches"], options["patch_size"], self.seed)
        result["swd"] = float(np.mean(levels))
        result.update(pixel_statistics(images))
        if self.inception is not None:
            result["fid"] = frechet_distance(*self.inception_statistics,
                                             *feature_statistics(self.inception.features(images)))
        return (result, predictions) if return_predictions else result


__all__ = ["QualityError", "QualityReference", "InceptionFeatures", "load_inception", "kid", "polynomial_kernel",
           "feature_statistics", "frechet_distance", "local_fd", "laplacian_pyramid", "sliced_wasserstein",
           "sliced_wasserstein_levels", "class_histogram", "class_statistics", "pixel_statistics", "SWD_DEFAULTS"]
