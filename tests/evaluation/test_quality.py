"""Known answers for the weights-free quality measures and the feature classifier."""
import json
import math

import numpy as np
import pytest
import torch

from hkdviz.analysis.edit_metrics import lowpass
from hkdviz.checkpoint import CheckpointError
from hkdviz.evaluation.classifier import (CLASSIFIER_HELD_OUT_SEED, ClassifierError, ImageClassifier, load_classifier,
                                          train_classifier)
from hkdviz.data import SHAPE_NAMES, ShapesDataset
from hkdviz.evaluation.quality import (QualityError, QualityReference, class_statistics, feature_statistics,
                                       frechet_distance, kid, load_inception, local_fd, pixel_statistics,
                                       polynomial_kernel, sliced_wasserstein, sliced_wasserstein_levels)


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def shapes(count, seed):
    images, labels = ShapesDataset(count, seed=seed).materialize(progress=False)
    return images.float() / 127.5 - 1.0, labels


def noisy(images, level, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (images + level * torch.randn(images.shape, generator=generator)).clamp(-1, 1)


@pytest.fixture(scope="module")
def held_out():
    """Two disjoint sets of real shapes images: a reference and a 'same distribution' set."""
    images, labels = shapes(400, seed=11)
    return images[:200], images[200:], labels["shape"][200:]


@pytest.fixture(scope="module")
def quick_classifier(tmp_path_factory):
    """A classifier trained for a few seconds: far from converged, enough to test the plumbing."""
    directory = tmp_path_factory.mktemp("classifier")
    return train_classifier("shapes", directory, num_images=400, steps=30, batch_size=32, num_held_out=64,
                            device="cpu", progress=False)


# -- KID ---------------------------------------------------------------------------------------------
def test_kid_matches_the_unbiased_mmd_formula_on_a_tiny_example():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(6, 3, generator=generator, dtype=torch.float64) + 0.5
    k = lambda x, y: (float(x @ y) / 3 + 1) ** 3  # noqa: E731 - the KID kernel written out
    within_a = sum(k(a[i], a[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    within_b = sum(k(b[i], b[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    # subset_size = the set size: the one subset is all of each set (in some order).
    result = kid(a, b, num_subsets=1, subset_size=6)
    cross = sum(k(a[i], b[j]) for i in range(6) for j in range(6)) / 36
    assert result["kid"] == pytest.approx(within_a + within_b - 2 * cross, rel=1e-10)
    assert result["kid_std"] == 0.0
    assert torch.allclose(polynomial_kernel(a, b)[2, 3], torch.tensor(k(a[2], b[3]), dtype=a.dtype))


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(600, 32, generator=generator), torch.randn(600, 32, generator=generator)
    same = kid(x, y)
    assert abs(same["kid"]) < 4 * same["kid_std"] + 1e-3
    # A set against itself: the two sides of each subset are drawn disjoint, so no bias from self-pairs.
    itself = kid(x, x)
    assert abs(itself["kid"]) < 4 * itself["kid_std"] + 1e-3
    shifted = [kid(x, y + shift)["kid"] for shift in (0.1, 0.2, 0.4)]
    assert shifted[0] > 4 * same["kid_std"] and shifted[0] > 5 * abs(itself["kid"])
    assert shifted[0] < shifted[1] < shifted[2]
    assert kid(x, y, seed=3) == kid(x, y, seed=3)  # seeded subsets


def test_kid_rejects_bad_input():
    x = torch.randn(10, 4)
    with pytest.raises(QualityError, match="feature dimensions differ"):
        kid(x, torch.randn(10, 5))
    with pytest.raises(QualityError, match="subset_size"):
        kid(x, x, subset_size=11)
    with pytest.raises(QualityError, match="2-D"):
        kid(torch.randn(10), x)
    with pytest.raises(QualityError, match="NaN"):
        kid(x, torch.full((10, 4), float("nan")))


# -- Frechet distance --------------------------------------------------------------------------------
def test_frechet_distance_closed_forms():
    mean = np.array([1.0, -2.0, 0.5])
    covariance = np.diag([1.0, 2.0, 3.0])
    assert frechet_distance(mean, covariance, mean, covariance) == pytest.approx(0.0, abs=1e-12)
    # Commuting (diagonal) covariances: |dm|^2 + sum (sqrt(a) - sqrt(b))^2.
    other_mean, other = np.array([0.0, 0.0, 0.0]), np.diag([4.0, 0.5, 3.0])
    expected = (mean ** 2).sum() + (1 - 2) ** 2 + (math.sqrt(2) - math.sqrt(0.5)) ** 2
    assert frechet_distance(mean, covariance, other_mean, other) == pytest.approx(expected, rel=1e-12)
    # Non-commuting 2x2: tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
    s1, s2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    m1, m2 = np.array([1.0, 2.0]), np.array([0.0, 0.5])
    trace_root = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_root
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(QualityError, match="covariance_b"):
        frechet_distance(m1, s1, m2, np.eye(3))


def test_local_fd_of_samples_approaches_the_closed_form():
    generator = torch.Generator().manual_seed(2)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.3, 0.5]], dtype=torch.float64)
    a = torch.randn(20000, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=generator, dtype=torch.float64) @ mixing.T + torch.tensor([0.5, 0.0, -0.5],
                                                                                                dtype=torch.float64)
    expected = frechet_distance(np.zeros(3), np.eye(3), [0.5, 0.0, -0.5], (mixing @ mixing.T).numpy())
    assert local_fd(a, b) == pytest.approx(expected, rel=0.05)
    assert local_fd(a, a) == pytest.approx(0.0, abs=1e-9)
    mean, covariance = feature_statistics(a)
    assert mean.shape == (3,) and covariance.shape == (3, 3)


# -- SWD ---------------------------------------------------------------------------------------------
def test_swd_is_zero_for_identical_sets_and_orders_noise_levels(held_out):
    reference, other, _ = held_out
    assert sliced_wasserstein(reference, reference.clone()) == 0.0
    values = [sliced_wasserstein(reference, noisy(other, level)) for level in (0.0, 0.1, 0.2, 0.4)]
    assert values[0] > 0 and all(low < high for low, high in zip(values, values[1:])), values
    levels = sliced_wasserstein_levels(reference, other, levels=3)
    assert len(levels) == 3 and np.mean(levels) == pytest.approx(values[0])
    assert sliced_wasserstein(reference, other, seed=5) == sliced_wasserstein(reference, other, seed=5)
    # uint8 input is read like the data sets: identical to its [-1, 1] version.
    as_bytes = ((reference + 1) * 127.5).round().to(torch.uint8)
    assert sliced_wasserstein(as_bytes, other) == pytest.approx(values[0], rel=1e-5)


def test_swd_rejects_bad_input(held_out):
    reference = held_out[0]
    with pytest.raises(QualityError, match="image shapes differ"):
        sliced_wasserstein(reference, reference[:, :1])
    with pytest.raises(QualityError, match="4-D"):
        sliced_wasserstein(reference[0], reference)
    with pytest.raises(QualityError, match="num_patches"):
        sliced_wasserstein(reference, reference, num_patches=0)
    with pytest.raises(QualityError, match="uint8 or floating"):
        sliced_wasserstein(reference.long(), reference)


# -- recognisability ---------------------------------------------------------------------------------
def test_class_statistics_known_answers():
    uniform_predictions = torch.eye(5).repeat(20, 1)  # 100 confident samples, every class 20 times
    result = class_statistics(uniform_predictions, reference_histogram=np.full(5, 0.2),
                              labels=torch.arange(5).repeat(20))
    assert result == pytest.approx({"confidence": 1.0, "class_entropy": 1.0, "class_kl": 0.0, "accuracy": 1.0})
    collapsed = torch.full((100, 5), 0.1)
    collapsed[:, 2] = 0.6  # every sample "class 2", unsure
    result = class_statistics(collapsed, reference_histogram=np.full(5, 0.2))
    assert result["confidence"] == pytest.approx(0.6)
    assert result["class_entropy"] == 0.0
    # KL(reference || smoothed one-class histogram), by hand.
    smoothed = np.full(5, 0.5 / 102.5)
    smoothed[2] = 100.5 / 102.5
    reference = np.full(5, 20.5 / 102.5)
    assert result["class_kl"] == pytest.approx(float((reference * np.log(reference / smoothed)).sum()))
    with pytest.raises(QualityError, match="reference_histogram"):
        class_statistics(collapsed, reference_histogram=[0.5, 0.5])


# -- the classifier ----------------------------------------------------------------------------------
def test_train_classifier_writes_a_checkpoint_that_round_trips(quick_classifier, held_out):
    meta = json.loads((quick_classifier / "meta.json").read_text())
    assert meta["kind"] == "classifier"
    metrics = meta["metrics"]
    assert set(metrics["held_out_accuracy"]) == {"shape", "background"}
    assert meta["held_out"]["seed"] == CLASSIFIER_HELD_OUT_SEED and metrics["held_out_images"] == 64
    assert 50_000 <= meta["num_parameters"] <= 210_000
    classifier = load_classifier(quick_classifier, device="cpu")
    assert classifier.main_head == "shape" and classifier.class_names() == list(SHAPE_NAMES)
    reference = held_out[0][:16]
    features = classifier.features(reference)
    assert features.shape == (16, classifier.feature_dim) and features.dtype == torch.float32
    # Batch-independent (GroupNorm): one image alone gives its row of the batch.
    assert torch.allclose(classifier.features(reference[3:4]), features[3:4], atol=1e-5)
    # Features are scaled to unit RMS on the held-out images (what KID's kernel expects).
    held_out_images, _ = shapes(64, seed=CLASSIFIER_HELD_OUT_SEED)
    assert float(classifier.features(held_out_images).square().mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
    again = load_classifier(quick_classifier, device="cpu")
    assert torch.equal(again.features(reference), features)
    probabilities = classifier.probabilities(reference)
    assert probabilities.shape == (16, 5) and torch.allclose(probabilities.sum(1), torch.ones(16))
    assert torch.equal(classifier.predict(reference), probabilities.argmax(1))
    both = classifier.features_and_probabilities(reference)
    assert torch.allclose(both[0], features, atol=1e-6) and torch.allclose(both[1], probabilities, atol=1e-6)
    assert classifier.predict(reference, head="background").max() < 8


def test_classifier_rejects_bad_input(quick_classifier, tiny_checkpoint, tmp_path):
    classifier = load_classifier(quick_classifier, device="cpu")
    with pytest.raises(ClassifierError, match=r"shape \[N, 3, 32, 32\]"):
        classifier.features(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ClassifierError, match="uint8 or floating"):
        classifier.features(torch.zeros(2, 3, 32, 32, dtype=torch.int32))
    with pytest.raises(ClassifierError, match="torch.Tensor"):
        classifier.features(np.zeros((2, 3, 32, 32)))
    with pytest.raises(ClassifierError, match="no head"):
        classifier.predict(torch.zeros(1, 3, 32, 32), head="colour")
    with pytest.raises(CheckpointError, match="expected 'classifier'"):
        load_classifier(tiny_checkpoint)
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(str(tmp_path / "missing"))
    with pytest.raises(ClassifierError, match="unknown classifier config"):
        ImageClassifier(heads={"shape": ["a", "b"]}, depth=3)
    with pytest.raises(ClassifierError, match="out_dir"):
        train_classifier("shapes")
    with pytest.raises(ClassifierError, match="no labels"):
        train_classifier({"name": "folder", "path": str(_unlabelled_folder(tmp_path))}, tmp_path / "out",
                         num_images=4, steps=1, num_held_out=1, progress=False)


def _unlabelled_folder(tmp_path):
    from PIL import Image
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(np.full((32, 32, 3), index * 40, dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


# -- pixel statistics -----------------------------------------------------------------------------------
def test_pixel_statistics_known_answers():
    constant = torch.full((3, 3, 16, 16), 0.3)
    assert pixel_statistics(constant) == {"high_frequency_share": 0.0, "contrast": 0.0, "gradient": 0.0}
    rows, columns = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checkerboard = (1.0 - 2.0 * ((rows + columns) % 2)).float().expand(2, 3, 16, 16)
    assert pixel_statistics(checkerboard) == pytest.approx(
        {"high_frequency_share": 1.0, "contrast": 1.0, "gradient": 2.0})
    # Stripes along y at 1/16 cycles/px: all power below the cutoff; amplitude A = 0.5 -> std A / sqrt 2;
    # no horizontal change, and the vertical neighbours differ by 2 A sin(pi / 16) cos(pi (2 y + 1) / 16).
    stripes = 0.5 * torch.sin(2 * math.pi * rows.float() / 16).expand(1, 3, 16, 16)
    statistics = pixel_statistics(stripes)
    assert statistics["high_frequency_share"] == pytest.approx(0.0, abs=1e-12)
    assert statistics["contrast"] == pytest.approx(0.5 / math.sqrt(2), rel=1e-5)
    vertical = np.abs(2 * 0.5 * math.sin(math.pi / 16) * np.cos(math.pi * (2 * np.arange(15) + 1) / 16)).mean()
    assert statistics["gradient"] == pytest.approx((0.0 + vertical) / 2, rel=1e-5)
    # uint8 input means the same images as their [-1, 1] floats.
    as_uint8 = ((checkerboard + 1) * 127.5).round().to(torch.uint8)
    assert pixel_statistics(as_uint8) == pytest.approx(pixel_statistics(checkerboard))
    with pytest.raises(QualityError, match="2x2"):
        pixel_statistics(torch.zeros(2, 3, 1, 8))
    with pytest.raises(QualityError, match="4-D"):
        pixel_statistics(torch.zeros(3, 8, 8))


def test_pixel_statistics_tell_blur_from_noise(held_out):
    """Where KID only says "worse", the pixel statistics say which way: blur lowers all three against
    real images, noise raises all three."""
    _, other, _ = held_out
    real = pixel_statistics(other)
    soft = pixel_statistics(blurred(other, 1.0))
    harsh = pixel_statistics(noisy(other, 0.2))
    for key in real:
        assert soft[key] < real[key] < harsh[key], (key, soft[key], real[key], harsh[key])


# -- everything together: the measures rank corruptions -------------------------------------------------
def test_measures_rank_corruptions(quick_classifier, held_out):
    reference, other, _ = held_out
    quality = QualityReference(reference, load_classifier(quick_classifier, device="cpu"),
                               kid_subsets=20)
    scores = [quality.measure(noisy(other, level)) for level in (0.0, 0.5, 1.0)]
    for key in ("kid", "local_fd", "swd", "high_frequency_share", "gradient"):
        values = [score[key] for score in scores]
        assert values[0] < values[1] < values[2], (key, values)
    assert scores[0]["contrast"] == pytest.approx(pixel_statistics(other)["contrast"])
    with pytest.raises(QualityError, match="shape"):
        quality.measure(other[:, :, :16, :16])


def blurred(images, sigma):
    """Gaussian blur of `sigma` pixels: the project's Gaussian low-pass at cutoff 1 / (2 pi sigma) cycles/px."""
    return lowpass(images, cutoff=1.0 / (2.0 * math.pi * sigma))


def test_shipped_classifier_kid_rises_with_blur_and_with_noise():
    """The shipped metric classifier's KID ranks both kinds of damage to real images, so a low KID for a
    noisy sampler (the teacher at 5 NFE) is not a blind spot for noise. Measured on 1,000 images (docs/results.md):
    blur sigma 0.5 / 1 / 1.5 px -> 9 / 585 / 1770, noise std 0.1 / 0.2 / 0.4 -> 131 / 875 / 2059 (x1e3)."""
    classifier = load_classifier("default", device="cpu")
    reference, _ = shapes(300, seed=21)
    other, _ = shapes(300, seed=22)
    quality = QualityReference(reference, classifier, kid_subsets=20)
    clean = quality.measure(other)["kid"]
    assert abs(clean) < 0.1, clean  # two sets of 300 real images: zero up to the estimate's spread
    for damage, levels in ((blurred, (1.0, 1.5)), (noisy, (0.2, 0.4))):
        values = [quality.measure(damage(other, level))["kid"] for level in levels]
        assert 0.3 < values[0] < values[1], (damage.__name__, clean, values)


def test_inception_is_never_downloaded(tmp_path):
    with pytest.raises(QualityError, match="no such file"):
        load_inception(tmp_path / "missing.pth")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not really weights")
    try:
        import torch_fidelity  # noqa: F401
    except Exception:
        with pytest.raises(QualityError, match="torch-fidelity"):
            load_inception(weights)
    else:
        with pytest.raises(QualityError, match="cannot load Inception weights"):
            load_inception(weights)
