"""Koopman spectra: closed-form block levels, dense eigendecomposition, per-level views."""
import json
import math
import time

import numpy as np
import pytest
import torch
import xarray as xr

import hkdviz
from hkdviz.analysis import spectrum as spectrum_module
from hkdviz.analysis.spectrum import level_view, spectrum
from hkdviz.analysis.storage import open_dataset, save_dataset


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread


def known_block_model(seed: int = 0):
    """tiny with alpha <= 0 and beta of both signs, all |beta| distinct from 0."""
    model = hkdviz.build("tiny")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for level in model.koopman:
            pairs = level.num_pairs
            shape = (pairs, level.height, level.width)
            level.generator[:pairs] = -0.1 * torch.rand(shape, generator=generator)
            sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
            level.generator[pairs:] = sign * (0.05 + torch.rand(shape, generator=generator))
    return model


def dense_copy(block_model):
    dense = hkdviz.build({"preset": "tiny", "koopman": {"operator": "dense"}})
    with torch.no_grad():
        for block_level, dense_level in zip(block_model.koopman, dense.koopman):
            dense_level.matrix.copy_(block_level.dense_generator())
    return dense


def test_block_levels_read_back_exactly():
    model = known_block_model()
    spec = spectrum(model, step=0.5)
    assert set(spec.dims) == {"mode"}
    assert spec.sizes["mode"] == sum(info.channels // 2 * info.height * info.width for info in model.levels)
    for name in ("level", "pair", "y", "x"):
        assert spec[name].dtype.kind == "i"
    assert spec["eigenvalue"].dtype == np.complex128
    assert json.loads(spec.attrs["level_names"]) == [info.name for info in model.levels]
    assert json.loads(spec.attrs["level_shapes"])[5] == [48, 8, 8]
    assert spec.attrs["step"] == 0.5 and spec.attrs["checkpoint_sha256"] == "untrained"
    for info, level in zip(model.levels, model.koopman):
        view = level_view(spec, info.index)
        assert view["alpha"].dims == ("pair", "y", "x")
        np.testing.assert_array_equal(view["alpha"].values, level.alpha.detach().double().numpy())
        np.testing.assert_array_equal(view["beta"].values, level.beta.detach().double().numpy())
    np.testing.assert_array_equal(spec["eigenvalue"].values, spec["alpha"].values + 1j * spec["beta"].values)
    np.testing.assert_allclose(spec["magnitude"].values, np.exp(0.5 * spec["alpha"].values), rtol=1e-15)
    np.testing.assert_allclose(spec["frequency"].values, np.abs(spec["beta"].values) / (2 * math.pi), rtol=1e-15)
    np.testing.assert_allclose(spec["period"].values * spec["frequency"].values, 1.0, rtol=1e-14)
    # One mode picked by its coordinates: level 5, pair 3, y 2, x 7.
    mode = spec.where((spec.level == 5) & (spec.pair == 3) & (spec.y == 2) & (spec.x == 7), drop=True)
    assert mode.sizes["mode"] == 1
    assert mode.alpha.item() == model.koopman[5].generator[3, 2, 7].item()
    assert mode.beta.item() == model.koopman[5].generator[24 + 3, 2, 7].item()


def test_level_view_by_name_and_bad_levels():
    spec = spectrum(known_block_model())
    np.testing.assert_array_equal(level_view(spec, "bottleneck")["alpha"].values, level_view(spec, 6)["alpha"].values)
    assert level_view(spec, "bottleneck").attrs["level_name"] == "bottleneck"
    with pytest.raises(KeyError, match="nope"):
        level_view(spec, "nope")
    with pytest.raises(IndexError, match="out of range"):
        level_view(spec, 7)
    with pytest.raises(TypeError, match="spectrum"):
        level_view(spec["alpha"], 0)


def test_identity_levels_contribute_no_modes():
    model = hkdviz.build("tiny", koopman={"levels": "bottleneck"})
    spec = spectrum(model)
    assert set(np.unique(spec["level"].values)) == {6}
    assert spec.sizes["mode"] == 24 * 8 * 8
    with pytest.raises(ValueError, match="no modes.*identity"):
        level_view(spec, 0)
    assert spectrum(hkdviz.build("tiny", koopman={"levels": "none"})).sizes["mode"] == 0


def test_dense_path_matches_closed_form():
    block = known_block_model(seed=1)
    spec_block = spectrum(block)
    spec_dense = spectrum(dense_copy(block), progress=False)
    assert spec_dense.sizes["mode"] == spec_block.sizes["mode"]  # every pair is complex: one entry each
    assert (spec_dense["beta"].values >= 0).all()
    for info in block.levels:
        view_block, view_dense = level_view(spec_block, info.index), level_view(spec_dense, info.index)
        assert view_dense.sizes == view_block.sizes
        # Same (alpha, |beta|) multiset at every position.
        pairs_block = np.stack([view_block.alpha.values, np.abs(view_block.beta.values)], -1)
        pairs_dense = np.stack([view_dense.alpha.values, view_dense.beta.values], -1)
        flat_block = pairs_block.reshape(pairs_block.shape[0], -1, 2).transpose(1, 0, 2)
        flat_dense = pairs_dense.reshape(pairs_dense.shape[0], -1, 2).transpose(1, 0, 2)
        for position in range(0, flat_block.shape[0], 37):
            expected = flat_block[position][np.lexsort(flat_block[position].T[::-1])]
            got = flat_dense[position][np.lexsort(flat_dense[position].T[::-1])]
            np.testing.assert_allclose(got, expected, atol=1e-6)


def random_dense_model(seed=0, shared=False):
    model = hkdviz.build({"preset": "tiny", "koopman": {"operator": "dense_shared" if shared else "dense"}})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for level in model.koopman:
            level.matrix.copy_(torch.randn(level.matrix.shape, generator=generator) / math.sqrt(level.channels))
    return model


@pytest.mark.parametrize("shared", [False, True])
def test_dense_eigen_relations(shared):
    model = random_dense_model(shared=shared)
    levels = [4, 6]
    spec = spectrum(model, eigenvectors=True, levels=levels, progress=False)
    assert set(np.unique(spec["level"].values)) == set(levels)
    assert spec["right_eigenvector"].dims == ("mode", "component") and spec.sizes["component"] == 48
    for index in levels:
        channels = model.levels[index].channels
        rows = spec["level"].values == index
        matrices = model.koopman[index].dense_generator().detach().double().numpy()
        y, x = spec["y"].values[rows].astype(int), spec["x"].values[rows].astype(int)
        operators = matrices[y, x]
        eigenvalue = spec["eigenvalue"].values[rows]
        right = spec["right_eigenvector"].values[rows]
        left = spec["left_eigenvector"].values[rows]
        assert np.isnan(right[:, channels:]).all()  # components past this level's channels
        right, left = right[:, :channels], left[:, :channels]
        np.testing.assert_allclose(np.einsum("nij,nj->ni", operators, right), eigenvalue[:, None] * right, atol=1e-10)
        np.testing.assert_allclose(np.einsum("ni,nij->nj", left.conj(), operators), eigenvalue[:, None] * left.conj(),
                                   atol=1e-10)
        np.testing.assert_allclose(np.einsum("ni,ni->n", left.conj(), right), 1.0, atol=1e-10)
        # Reported entries + conjugates of the complex ones = the full eigenvalue set, per position.
        for position in [(0, 0), (3, 5)]:
            here = eigenvalue[(y == position[0]) & (x == position[1])]
            assert (here.imag >= 0).all()
            full = np.concatenate([here, here[here.imag > 0].conj()])
            expected = np.linalg.eigvals(matrices[position])
            assert full.size == channels
            np.testing.assert_allclose(np.sort_complex(full), np.sort_complex(expected), atol=1e-10)
        if shared:
            first = eigenvalue[(y == 0) & (x == 0)]
            np.testing.assert_array_equal(eigenvalue[(y == 7) & (x == 7)], first)


def test_dense_real_eigenvalues_pad_views_with_nan():
    model = hkdviz.build({"preset": "tiny", "koopman": {"operator": "dense"}})
    generator = torch.Generator().manual_seed(3)
    level = model.koopman[6]
    with torch.no_grad():
        symmetric = torch.randn(48, 48, generator=generator)
        level.matrix[0, 0] = symmetric + symmetric.T  # all 48 eigenvalues real: 48 entries
        skew = torch.randn(48, 48, generator=generator)
        level.matrix[0, 1] = skew - skew.T            # 24 conjugate pairs on the imaginary axis: 24 entries
    spec = spectrum(model, levels=[6], progress=False)
    view = level_view(spec, 6)
    assert view.sizes["pair"] == 48
    assert np.isfinite(view["alpha"].values[:, 0, 0]).all()
    assert (view["beta"].values[:, 0, 0] == 0).all()
    assert np.isfinite(view["alpha"].values[:24, 0, 1]).all() and np.isnan(view["alpha"].values[24:, 0, 1]).all()
    np.testing.assert_allclose(view["alpha"].values[:24, 0, 1], 0, atol=1e-12)
    assert (view["beta"].values[:24, 0, 1] > 0).all()
    # Zero matrices elsewhere: 48 real eigenvalues 0 each.
    assert (view["alpha"].values[:, 5, 5] == 0).all()
    alpha = view["alpha"].values[:, 0, 0]
    assert (np.diff(alpha) <= 0).all()  # sorted by real part, largest first


def test_spectrum_with_eigenvectors_round_trips(tmp_path):
    spec = spectrum(random_dense_model(seed=2), eigenvectors=True, levels=["bottleneck"], progress=False)
    path = save_dataset(spec, tmp_path / "spectrum.nc")
    with xr.open_dataset(path, engine="h5netcdf") as plain:
        xr.testing.assert_identical(plain.load(), spec)
    xr.testing.assert_identical(open_dataset(path), spec)


def test_block_eigenvectors_closed_form():
    model = known_block_model()
    spec = spectrum(model, eigenvectors=True, levels=[5])
    matrices = model.koopman[5].dense_generator().detach().double().numpy()
    operators = matrices[spec["y"].values.astype(int), spec["x"].values.astype(int)]
    right, left = spec["right_eigenvector"].values, spec["left_eigenvector"].values
    eigenvalue = spec["eigenvalue"].values
    np.testing.assert_allclose(np.einsum("nij,nj->ni", operators, right), eigenvalue[:, None] * right, atol=1e-12)
    np.testing.assert_allclose(np.einsum("ni,nij->nj", left.conj(), operators), eigenvalue[:, None] * left.conj(),
                               atol=1e-12)


def test_bad_input():
    model = known_block_model()
    with pytest.raises(TypeError, match="HKD model"):
        spectrum("tiny")
    for step in (float("nan"), "1", True):
        with pytest.raises(ValueError, match="step"):
            spectrum(model, step=step)
    with pytest.raises(KeyError, match="unknown level name"):
        spectrum(model, levels=["nope"])
    with pytest.raises(IndexError, match="out of range"):
        spectrum(model, levels=[9])
    with pytest.raises(ValueError, match="levels is empty"):
        spectrum(model, levels=[])
    dense = random_dense_model()
    with torch.no_grad():
        dense.koopman[2].matrix[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="level 2.*NaN"):
        spectrum(dense, levels=[2], progress=False)


def test_eigenvector_memory_guard(monkeypatch):
    monkeypatch.setattr(spectrum_module, "MAX_EIGENVECTOR_BYTES", 1000)
    with pytest.raises(ValueError, match="levels="):
        spectrum(known_block_model(), eigenvectors=True)


def test_conjugate_pair_check_rejects_unpaired_eigenvalues():
    eigenvalue = np.array([[1 + 2j, 1 - 2j, 3 + 0j], [1 + 2j, 1 - 2.5j, 0j]])
    with pytest.raises(ValueError, match="position 1.*conjugate pairs"):
        spectrum_module._conjugate_pair_mask(eigenvalue, 0, "test", 0)
    keep = spectrum_module._conjugate_pair_mask(eigenvalue[:1].copy(), 0, "test", 0)
    np.testing.assert_array_equal(keep, [[True, False, True]])


def test_cifar10_spectrum_is_fast():
    model = hkdviz.build("cifar10")
    spectrum(model)  # warm-up
    best = min(_timed(lambda: spectrum(model)) for _ in range(3))
    assert spectrum(model).sizes["mode"] == 802816
    # The target is < 0.1 s (benchmarks/bench_core.py); the bound here leaves room for a busy machine.
    assert best < 0.5, f"spectrum of cifar10 took {best:.3f} s"


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start
