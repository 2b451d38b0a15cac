"""A Koopman lens for any diffusion model: fit linear dynamics to a teacher's own U-Net features.

HKD learns a space in which the PF-ODE is linear. The lens asks the same question of the teacher
itself: along its PF-ODE on the Karras grid, how well does one linear generator G per level carry
the U-Net's features z_k (every skip tensor and the bottleneck, conditioned exactly as
`HKDModel.encode` conditions its encoder: input c_in(sigma) x, noise label ln(sigma) / 4) from one
grid time to the next, z_{k+1} ~ exp(dt_k G) z_k, with dt_k = s(sigma_{k+1}) - s(sigma_k) in a
Koopman time s (`hkdviz.model.koopman.koopman_time`, the same units as an HKD's spectrum)?

Samples and state. Channels are the state (dimension d); every (trajectory, position) is a sample,
so one generator per level is shared by all positions (like the "dense_shared" operator).

Streaming. Nothing holds the snapshots: per level the lens accumulates, in float64, the second
moments S_k = sum z_k z_k^T at every grid time and the cross moments C_k = sum z_{k+1} z_k^T of
consecutive times, batch by batch (d x d each). Everything below is computed from them.

Fit (why not plain DMD). EDM's grid is far from uniform in any of the Koopman times (in sigma its
steps run from ~23 down to ~5e-4), so one-step DMD, which assumes one fixed dt, does not apply.
The lens fits the generator itself:
1. an initial G from trapezoidal finite differences, (z_{k+1} - z_k) / dt_k ~ G (z_k + z_{k+1}) / 2,
   a linear least-squares problem in closed form from the moments;
2. then exact exponential least squares, minimising sum_k ||z_{k+1} - exp(dt_k G) z_k||^2 / ||z_{k+1}||^2
   (every term is a trace of the moments; each grid step counts equally) with L-BFGS through
   `torch.linalg.matrix_exp`. Where the refinement does not lower the objective the initial G is kept.
The second step makes the fit exact for features that are exactly linear with any step sizes (the
known-answer test recovers eigenvalues to ~1e-7); the first alone is only second-order accurate in dt.

Reduced rank. With more than `rank` channels the state is projected onto the top-`rank` principal
directions of sum_k S_k (a randomized SVD, `torch.svd_lowrank`, of the d x d moment), and G is
fitted there (r x r). Residuals are measured in the full feature space (the part of z outside the
subspace counts as error): ||z_{k+1} - U exp(dt G) U^T z_k||.

Output: the schema of `hkdviz.spectrum` (dim `mode`; coords `level`, `pair`, `y`, `x`; vars `alpha`,
`beta`, `eigenvalue`, `magnitude`, `frequency`, `period`; attrs `level_names`, `level_shapes`,
`level_operators` = "dense_shared" for every fitted level), eigenvalues broadcast over positions as
for a shared dense operator, so every spectrum plot reads it unchanged. Plus, per fitted level
(dim `fit_level`) and grid transition (dim `transition`, coords `sigma_from`, `sigma_to`):
`fit_residual` (training seeds), `held_out_error` (other seeds), `constant_residual` (the baseline
G = 0: ||z_{k+1} - z_k|| / ||z_{k+1}||); per fitted level and grid time (dim `time`, sigma, T first)
the whole linear path from T, `path_error` = ||z_t - exp((s(t) - s(T)) G) z_T|| / ||z_t|| (and
`held_out_path_error`, `constant_path_error`), the teacher's analogue of an HKD's faithfulness
`koopman_error`; and the fitted `generator_<level>` / `basis_<level>` matrices.
Relative errors are ratios of sums over samples and positions: sqrt(sum ||r||^2 / sum ||z_{k+1}||^2).
"""
from __future__ import annotations

import json
import math
import numbers
from time import perf_counter
from typing import Sequence

import numpy as np
import torch
import xarray as xr

from ..model.hkd import sigma_tensor
from ..model.koopman import KOOPMAN_TIMES, SHARED_OPERATORS, koopman_time, koopman_time_label
from .spectrum import _conjugate_pair_mask
from .storage import provenance_attrs

DEFAULT_RANK = 128          # largest generator fitted in full; larger levels are reduced to this rank
DEFAULT_HELD_OUT = 16       # held-out trajectories when none are named
REFINE_ITERATIONS = 50      # L-BFGS iterations of the exponential least squares (each ~1-2 evaluations)
RIDGE = 1e-10               # relative Tikhonov term of the finite-difference solve (rank-deficient moments)
LENS_METHOD = "exponential least squares on the generator, initialised by trapezoidal finite differences"


# -- features -------------------------------------------------------------------------------------------
class TeacherFeatures:
    """A teacher U-Net's per-level features: every skip tensor and the bottleneck (`SongUNet.encode`).

    The input is conditioned exactly as `HKDModel.encode` conditions HKD's encoder: c_in(sigma) x with
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), noise label c_noise = ln(sigma) / 4. `teacher` is a
    `hkdviz.teacher.teacher.Teacher` or its denoiser (an `EDMPrecond`, trained or imported from an EDM
    pickle). An `IdealDenoiser` has no network and so no features: pass your own feature map to `lens`.
    """

    def __init__(self, teacher):
        denoiser = getattr(teacher, "denoiser", teacher)
        net = getattr(denoiser, "net", None)
        if net is None or not all(callable(getattr(net, name, None)) for name in ("encode", "level_shapes")):
            raise TypeError(f"the lens reads U-Net features: {type(denoiser).__name__} has no SongUNet `.net` "
                            "(an IdealDenoiser has none; pass features=your_feature_map to lens)")
        if getattr(net, "map_label", None) is not None:
            # The trajectories and the features would both need per-sample labels; not supported yet.
            raise ValueError("the lens does not support class-conditional teachers (label_dim > 0) yet")
        self.net = net
        self.sigma_data = float(denoiser.sigma_data)
        self.level_names = [name for name, _, _ in net.level_shapes()]
        self.level_shapes = [(channels, resolution, resolution) for _, channels, resolution in net.level_shapes()]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: float) -> list[torch.Tensor]:
        parameter = next(self.net.parameters())
        x = x.to(parameter.device)
        # The same operations, in the same dtypes, as HKDModel.encode: the features equal an HKD encoder
        # initialised from this teacher bit for bit.
        sigma = sigma_tensor(float(sigma), x.shape[0], x.device)
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        emb = self.net.embed(sigma.log() / 4).to(parameter.dtype)
        x = x.to(parameter.dtype)
        return self.net.encode(x * c_in.to(x.dtype).reshape(-1, 1, 1, 1), emb)


# -- streaming moments ----------------------------------------------------------------------------------
class LensMoments:
    """Per level: second moments S[k] = sum z_k z_k^T (K+1 times) and cross moments C[k] = sum z_{k+1} z_k^T
    (K transitions), float64, accumulated batch by batch. `add(k, features)` takes the features of
    one batch at grid time k; calling it for k = 0, 1, ..., K in order (per batch) pairs each time with
    the previous one.
    """

    def __init__(self, level_shapes: Sequence[tuple[int, int, int]], num_times: int, device=None):
        if num_times < 2:
            raise ValueError(f"the lens needs at least two grid times, got {num_times}")
        self.level_shapes = [tuple(int(size) for size in shape) for shape in level_shapes]
        self.num_times = int(num_times)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.second = [torch.zeros(num_times, d, d, dtype=torch.float64, device=self.device)
                       for d, _, _ in self.level_shapes]
        self.cross = [torch.zeros(num_times - 1, d, d, dtype=torch.float64, device=self.device)
                      for d, _, _ in self.level_shapes]
        # sum z_k z_0^T: the path from T, exp((s_k - s_0) G) z_0, is measured against z_k from these.
        self.start = [torch.zeros(num_times, d, d, dtype=torch.float64, device=self.device)
                      for d, _, _ in self.level_shapes]
        self.samples = 0             # trajectories seen
        self._previous = None
        self._first = None
        self._expected = 0

    def add(self, k: int, features: Sequence[torch.Tensor]) -> None:
        if k != self._expected:
            raise ValueError(f"LensMoments.add: grid time {k} out of order (expected {self._expected})")
        if len(features) != len(self.level_shapes):
            raise ValueError(f"LensMoments.add: {len(features)} feature levels, expected {len(self.level_shapes)}")
        matrices = []
        for index, (feature, shape) in enumerate(zip(features, self.level_shapes)):
            if feature.ndim != 4 or tuple(feature.shape[1:]) != shape:
                raise ValueError(f"level {index}: features of shape {tuple(feature.shape)}, expected [N, {shape[0]}, "
                                 f"{shape[1]}, {shape[2]}]")
            # channels x (samples * positions): every position of every trajectory is one sample.
            matrix = feature.detach().to(self.device, torch.float64).transpose(0, 1).reshape(shape[0], -1)
            self.second[index][k] += matrix @ matrix.T
            if k > 0:
                previous = self._previous[index]
                if previous.shape[1] != matrix.shape[1]:
                    raise ValueError(f"level {index}: batch size changed between grid times {k - 1} and {k}")
                self.cross[index][k - 1] += matrix @ previous.T
                self.start[index][k] += matrix @ self._first[index].T
            else:
                self.start[index][0] += matrix @ matrix.T
            matrices.append(matrix)
        if k == 0:
            self.samples += features[0].shape[0]
            self._first = matrices
        last = k == self.num_times - 1
        self._previous = None if last else matrices
        if last:
            self._first = None
        self._expected = (k + 1) % self.num_times

    def check_complete(self) -> None:
        if self._expected != 0 or self.samples == 0:
            raise ValueError("LensMoments: a batch stopped before the last grid time, or nothing was added")


# -- fitting ---------------------------------------------------------------------------------------------
def fit_level(second: torch.Tensor, cross: torch.Tensor, dt: torch.Tensor, rank: int | None = None,
              refine: bool = True, seed: int = 0, iterations: int = REFINE_ITERATIONS) -> dict:
    """One level's generator from its moments (second [K+1, d, d], cross [K, d, d], dt [K] float64).

    Returns basis U [d, r], generator G [r, r] (float64, CPU), the best start (`initial_generator`),
    the objective before and after refinement, and `method`: "exponential" (refined), else the start
    kept, "finite_difference" or "constant" (G = 0: nothing beat keeping the features constant).
    """
    second = second.detach().to("cpu", torch.float64)
    cross = cross.detach().to("cpu", torch.float64)
    dt = torch.as_tensor(dt, dtype=torch.float64)
    channels = second.shape[-1]
    if not bool(torch.isfinite(second).all() and torch.isfinite(cross).all()):
        raise ValueError("the feature moments hold NaN or inf values (features overflowed?)")
    if bool((dt == 0).any()):
        raise ValueError("two consecutive grid times map to the same Koopman time (dt = 0)")
    rank = channels if rank is None else max(1, min(int(rank), channels))
    if rank < channels:
        # Top principal directions of all snapshots: randomized SVD of the (symmetric PSD) total moment.
        generator = torch.Generator().manual_seed(seed)
        state = torch.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
        try:
            basis, _, _ = torch.svd_lowrank(second.sum(0), q=min(channels, rank + 10), niter=4)
        finally:
            torch.set_rng_state(state)
        basis = basis[:, :rank].contiguous()
        second_r = basis.T @ second @ basis
        cross_r = basis.T @ cross @ basis
    else:
        basis = torch.eye(channels, dtype=torch.float64)
        second_r, cross_r = second, cross
    target = second.diagonal(dim1=-2, dim2=-1).sum(-1)[1:]            # sum ||z_{k+1}||^2 (full space)
    weight = 1 / target.clamp_min(torch.finfo(torch.float64).tiny)

    # 1. Trapezoidal finite differences, (z'-z)/dt ~ G (z+z')/2, solved in closed form twice: weighted as
    # a one-step prediction (w_k dt_k^2: large steps dominate) and as a derivative (w_k: the small steps,
    # where the difference quotient is accurate, dominate). The start with the lowest exact objective (G = 0
    # included, so the fit never does worse than keeping the features constant) wins.
    now, after = second_r[:-1], second_r[1:]
    difference_mid = (cross_r + after - now - cross_r.transpose(-1, -2)) / (2 * dt[:, None, None])
    mid_mid = (now + cross_r + cross_r.transpose(-1, -2) + after) / 4
    starts = [torch.zeros(rank, rank, dtype=torch.float64)]   # G = 0, the constant baseline
    start_names = ["constant", "finite_difference", "finite_difference"]
    for fd_weight in (weight * dt ** 2, weight):
        numerator = (fd_weight[:, None, None] * difference_mid).sum(0)
        denominator = (fd_weight[:, None, None] * mid_mid).sum(0)
        ridge = RIDGE * float(denominator.diagonal().sum()) / rank + torch.finfo(torch.float64).tiny
        starts.append(torch.linalg.solve(denominator + ridge * torch.eye(rank, dtype=torch.float64), numerator.T).T)

    def objective(matrix: torch.Tensor) -> torch.Tensor:
        propagator = torch.linalg.matrix_exp(dt[:, None, None] * matrix)
        # ||z' - M z||^2 summed = tr S' - 2 tr(M C^T) + tr(M S M^T); tr S' is constant (full space).
        linear = (propagator * cross_r).sum((-1, -2))
        quadratic = ((propagator @ now) * propagator).sum((-1, -2))
        return (weight * (quadratic - 2 * linear)).sum()

    with torch.no_grad():
        values = [float(objective(start)) for start in starts]
    values = [value if math.isfinite(value) else math.inf for value in values]
    initial_objective = min(values)
    initial = starts[values.index(initial_objective)]
    result = {"basis": basis, "generator": initial, "initial_generator": initial,
              "method": start_names[values.index(initial_objective)],
              "initial_objective": initial_objective, "objective": initial_objective}
    if not refine:
        return result
    parameter = initial.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([parameter], lr=1.0, max_iter=int(iterations),
                                  max_eval=int(iterations) * 3 // 2, tolerance_grad=1e-14,
                                  tolerance_change=1e-16, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = objective(parameter)
        if torch.isfinite(value):
            value.backward()
        return value

    try:
        optimizer.step(closure)
    except (RuntimeError, IndexError):
        # A matrix_exp overflow inside the line search (torch's strong-Wolfe search can then fail with an
        # IndexError, seen with dt ~ 77 on a 2-step grid): keep the initial generator.
        return result
    refined = parameter.detach()
    with torch.no_grad():
        refined_objective = float(objective(refined))
    improved = math.isfinite(refined_objective) and refined_objective <= initial_objective
    if improved and bool(torch.isfinite(refined).all()):
        result.update(generator=refined, method="exponential", objective=refined_objective)
    return result


def prediction_errors(target_second: torch.Tensor, cross: torch.Tensor, source_second: torch.Tensor, tau,
                      basis: torch.Tensor | None, generator: torch.Tensor | None) -> np.ndarray:
    """Per entry k: sqrt(sum ||y_k - U exp(tau_k G) U^T x_k||^2 / sum ||y_k||^2), from the moments
    target_second = sum y y^T, cross = sum y x^T, source_second = sum x x^T ([K, d, d] each, float64).
    generator None gives the constant prediction y ~ x. Sums run over samples and positions."""
    target_second, cross, source_second = (matrix.detach().to("cpu", torch.float64)
                                           for matrix in (target_second, cross, source_second))
    target = target_second.diagonal(dim1=-2, dim2=-1).sum(-1)
    if generator is None:
        squared = (target - 2 * cross.diagonal(dim1=-2, dim2=-1).sum(-1)
                   + source_second.diagonal(dim1=-2, dim2=-1).sum(-1))
    else:
        tau = torch.as_tensor(tau, dtype=torch.float64)
        propagator = torch.linalg.matrix_exp(tau[:, None, None] * generator)
        # ||y - U M U^T x||^2 summed = tr(Y) - 2 tr(M (U^T C U)^T) + tr(M (U^T S U) M^T), U orthonormal.
        source_r = basis.T @ source_second @ basis
        cross_r = basis.T @ cross @ basis
        squared = (target - 2 * (propagator * cross_r).sum((-1, -2))
                   + ((propagator @ source_r) * propagator).sum((-1, -2)))
    # Rounding can leave a tiny negative sum for an exact fit.
    return (squared.clamp_min(0) / target.clamp_min(torch.finfo(torch.float64).tiny)).sqrt().numpy()


def relative_errors(second: torch.Tensor, cross: torch.Tensor, dt: torch.Tensor, basis: torch.Tensor | None,
                    generator: torch.Tensor | None) -> np.ndarray:
    """One-step errors per transition: ||z_{k+1} - U exp(dt_k G) U^T z_k|| / ||z_{k+1}|| (generator None:
    the constant baseline ||z_{k+1} - z_k|| / ||z_{k+1}||)."""
    return prediction_errors(second[1:], cross, second[:-1], dt, basis, generator)


def path_errors(second: torch.Tensor, start: torch.Tensor, times: torch.Tensor, basis: torch.Tensor | None,
                generator: torch.Tensor | None) -> np.ndarray:
    """Errors of the linear path from T per grid time: ||z_k - U exp((s_k - s_0) G) U^T z_0|| / ||z_k||,
    the analogue of an HKD's faithfulness `koopman_error` (generator None: its `constant_error`)."""
    first = second[:1].expand_as(second)
    return prediction_errors(second, start, first, times - times[0], basis, generator)


def _sorted_modes(index: int, name: str, generator: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A shared generator's reported eigenvalues and their left projections (rows of V^-1, so that the
    mode coordinates of a state x are c = V^-1 x with unit-norm right eigenvectors V), kept and ordered
    as `hkdviz.spectrum` reads a dense_shared level: each conjugate pair once (imag > 0), real ones each
    on their own, sorted by real part, largest first. A defective generator gets NaN projections."""
    eigenvalue, right = torch.linalg.eig(generator.detach().to("cpu", torch.float64))
    inverse, info = torch.linalg.inv_ex(right)
    projections = inverse.numpy() if int(info) == 0 else np.full(inverse.shape, np.nan + 1j * np.nan)
    eigenvalue = eigenvalue.numpy()[None, :]
    keep = _conjugate_pair_mask(eigenvalue, index, name, 0)[0]
    eigenvalue, projections = eigenvalue[0][keep], projections[keep]
    order = np.lexsort((-eigenvalue.imag, -eigenvalue.real))
    return eigenvalue[order], projections[order]


def _eigen_modes(index: int, name: str, generator: torch.Tensor, height: int, width: int) -> dict:
    """A shared generator's eigenvalues as spectrum modes (pair, y, x), broadcast over positions."""
    eigenvalue, _ = _sorted_modes(index, name, generator)
    pairs, positions = eigenvalue.size, height * width
    return {
        "level": index, "count": pairs * positions,
        "pair": np.repeat(np.arange(pairs, dtype=np.int32), positions),
        "y": np.tile(np.repeat(np.arange(height, dtype=np.int16), width), pairs),
        "x": np.tile(np.arange(width, dtype=np.int16), pairs * height),
        "alpha": np.repeat(eigenvalue.real, positions),
        "beta": np.repeat(np.abs(eigenvalue.imag), positions),
    }


def fit_lens(moments: LensMoments, sigmas, time="sigma", rank: int | None = DEFAULT_RANK,
             held_out: LensMoments | None = None, level_names: Sequence[str] | None = None,
             refine: bool = True, source=None, progress: bool = True, fit_threads: int | None = 1,
             **attrs) -> xr.Dataset:
    """The lens dataset from accumulated moments (see the module docstring for its contents).

    sigmas: the K+1 grid noise levels the moments were taken at (T first). time: a Koopman time kind
    ("sigma" | "log_sigma" | "karras") or a callable sigma (float64 tensor) -> s (then labelled
    "custom"). source: the object recorded in the provenance attrs (a Teacher), else nothing.
    fit_threads: torch CPU threads while fitting (restored after): the generators are small matrices,
    for which extra threads mostly add contention (None leaves the setting alone).
    """
    moments.check_complete()
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sigmas.numel() != moments.num_times:
        raise ValueError(f"{sigmas.numel()} sigmas for moments taken at {moments.num_times} grid times")
    kind, times = _koopman_times(sigmas, time)
    dt = times[1:] - times[:-1]
    shapes = moments.level_shapes
    names = list(level_names) if level_names is not None else [f"level{index}" for index in range(len(shapes))]
    if len(names) != len(shapes):
        raise ValueError(f"{len(names)} level names for {len(shapes)} levels")
    if held_out is not None:
        held_out.check_complete()
        if held_out.level_shapes != shapes or held_out.num_times != moments.num_times:
            raise ValueError("the held-out moments were taken on other levels or grid times than the training ones")

    previous_threads = torch.get_num_threads()
    if fit_threads is not None:
        torch.set_num_threads(int(fit_threads))
    try:
        return _fit_lens(moments, sigmas, kind, times, dt, shapes, names, rank, held_out, refine, source, progress,
                         attrs)
    finally:
        torch.set_num_threads(previous_threads)


def _fit_lens(moments, sigmas, kind, times, dt, shapes, names, rank, held_out, refine, source, progress,
              attrs) -> xr.Dataset:
    from tqdm.auto import tqdm
    parts, fits = [], []
    residual = np.full((len(shapes), len(dt)), np.nan)
    held_out_error = np.full((len(shapes), len(dt)), np.nan)
    constant = np.full((len(shapes), len(dt)), np.nan)
    path = np.full((len(shapes), len(times)), np.nan)
    path_constant = np.full((len(shapes), len(times)), np.nan)
    held_out_path = np.full((len(shapes), len(times)), np.nan)
    for index in tqdm(range(len(shapes)), desc="lens: fit generators", unit="level", disable=not progress,
                      leave=False):
        channels, height, width = shapes[index]
        fit = fit_level(moments.second[index], moments.cross[index], dt, rank=rank, refine=refine, seed=index)
        fits.append(fit)
        parts.append(_eigen_modes(index, names[index], fit["generator"], height, width))
        residual[index] = relative_errors(moments.second[index], moments.cross[index], dt, fit["basis"],
                                          fit["generator"])
        constant[index] = relative_errors(moments.second[index], moments.cross[index], dt, None, None)
        path[index] = path_errors(moments.second[index], moments.start[index], times, fit["basis"], fit["generator"])
        path_constant[index] = path_errors(moments.second[index], moments.start[index], times, None, None)
        if held_out is not None:
            held_out_error[index] = relative_errors(held_out.second[index], held_out.cross[index], dt, fit["basis"],
                                                    fit["generator"])
            held_out_path[index] = path_errors(held_out.second[index], held_out.start[index], times, fit["basis"],
                                               fit["generator"])

    total = sum(part["count"] for part in parts)
    columns = {key: np.concatenate([part[key] for part in parts]) if parts else np.empty(0)
               for key in ("pair", "y", "x", "alpha", "beta")}
    level_coord = np.concatenate([np.full(part["count"], part["level"], np.int16) for part in parts])
    alpha, beta = columns["alpha"].astype(np.float64), columns["beta"].astype(np.float64)
    eigenvalue = alpha + 1j * beta
    frequency = np.abs(beta) / (2 * math.pi)
    with np.errstate(divide="ignore"):
        period = 1 / frequency
    unit = koopman_time_label(kind) if kind in KOOPMAN_TIMES else "custom Koopman time"
    variables = {
        "alpha": ("mode", alpha, {"long_name": f"real part (growth/decay rate per unit of {unit})"}),
        "beta": ("mode", beta, {"long_name": f"imaginary part (angular frequency per unit of {unit})"}),
        "eigenvalue": ("mode", eigenvalue, {"long_name": "fitted generator eigenvalue alpha + i beta"}),
        "magnitude": ("mode", np.exp(alpha), {"long_name": "|exp(eigenvalue * step)|"}),
        "frequency": ("mode", frequency, {"long_name": "|beta| / (2 pi)", "units": f"cycles per unit of {unit}"}),
        "period": ("mode", period, {"long_name": "1 / frequency (inf for real eigenvalues)", "units": unit}),
        "fit_residual": (("fit_level", "transition"), residual,
                         {"long_name": "||z_{k+1} - exp(dt G) z_k|| / ||z_{k+1}|| on the training seeds"}),
        "held_out_error": (("fit_level", "transition"), held_out_error,
                           {"long_name": "||z_{k+1} - exp(dt G) z_k|| / ||z_{k+1}|| on the held-out seeds"}),
        "constant_residual": (("fit_level", "transition"), constant,
                              {"long_name": "||z_{k+1} - z_k|| / ||z_{k+1}|| (G = 0) on the training seeds"}),
        "path_error": (("fit_level", "time"), path,
                       {"long_name": "||z_t - exp((s(t) - s(T)) G) z_T|| / ||z_t|| on the training seeds "
                                     "(the analogue of an HKD's faithfulness koopman_error)"}),
        "held_out_path_error": (("fit_level", "time"), held_out_path,
                                {"long_name": "||z_t - exp((s(t) - s(T)) G) z_T|| / ||z_t|| on the held-out seeds"}),
        "constant_path_error": (("fit_level", "time"), path_constant,
                                {"long_name": "||z_t - z_T|| / ||z_t|| (feature kept constant) on the training seeds"}),
        "rank": ("fit_level", np.array([fit["basis"].shape[1] for fit in fits], np.int32),
                 {"long_name": "state dimension of the fitted generator"}),
        "fit_objective": ("fit_level", np.array([fit["objective"] for fit in fits]),
                          {"long_name": "sum_k ||z' - exp(dt G) z||^2 / ||z'||^2 minus its constant part"}),
    }
    for index, fit in enumerate(fits):
        name = names[index]
        size = fit["generator"].shape[0]
        variables[f"generator_{name}"] = ((f"row_{name}", f"column_{name}"), fit["generator"].numpy(),
                                          {"long_name": f"fitted generator of level {index} in its basis"})
        variables[f"basis_{name}"] = ((f"channel_{name}", f"column_{name}"), fit["basis"].numpy(),
                                      {"long_name": f"orthonormal basis (channels x {size}) of level {index}"})
    coords = {
        "level": ("mode", level_coord), "pair": ("mode", columns["pair"].astype(np.int16 if total == 0 or
                                                  columns["pair"].max() < 2 ** 15 else np.int32)),
        "y": ("mode", columns["y"].astype(np.int16)), "x": ("mode", columns["x"].astype(np.int16)),
        "fit_level": np.arange(len(shapes)),
        "fit_level_name": ("fit_level", np.array(names, dtype=object)),
        "time": ("time", sigmas.numpy(), {"long_name": "sigma (EDM time t), T first"}),
        "transition": np.arange(len(dt)),
        "sigma_from": ("transition", sigmas[:-1].numpy()),
        "sigma_to": ("transition", sigmas[1:].numpy()),
        "dt": ("transition", dt.numpy(), {"long_name": f"Koopman time step s(sigma_to) - s(sigma_from) ({unit})"}),
    }
    base = provenance_attrs(source) if source is not None else provenance_attrs(None)
    if source is None:
        base["checkpoint_sha256"] = "none"
    base.update({
        "analysis": "lens",
        "step": 1.0,
        "level_names": json.dumps(names),
        "level_shapes": json.dumps([list(shape) for shape in shapes]),
        "level_operators": json.dumps(["dense_shared"] * len(shapes)),
        "levels_read": json.dumps(list(range(len(shapes)))),
        "koopman_time": kind,
        "time_unit": f"eigenvalues per unit of Koopman time {kind} ({unit})",
        "method": LENS_METHOD,
        "methods_used": json.dumps([fit["method"] for fit in fits]),
        "rank_limit": -1 if rank is None else int(rank),
        "num_trajectories": int(moments.samples),
        "num_held_out": int(held_out.samples) if held_out is not None else 0,
    })
    for key, value in attrs.items():
        base[key] = json.dumps(value, sort_keys=True, default=str)
    return xr.Dataset(variables, coords=coords, attrs=base)


def _koopman_times(sigmas: torch.Tensor, time) -> tuple[str, torch.Tensor]:
    if callable(time):
        times = torch.as_tensor(time(sigmas.clone()), dtype=torch.float64).flatten()
        if times.shape != sigmas.shape or not bool(torch.isfinite(times).all()):
            raise ValueError("the custom Koopman time must map the sigmas to as many finite values")
        return "custom", times
    if time not in KOOPMAN_TIMES:
        raise ValueError(f"unknown Koopman time {time!r}; choose one of {KOOPMAN_TIMES} or pass a callable")
    return time, koopman_time(sigmas, time)


# -- the lens on a teacher ------------------------------------------------------------------------------
def lens(teacher, seeds=64, held_out_seeds=None, num_steps: int = 18, time="sigma", rank: int | None = DEFAULT_RANK,
         features=None, batch_size: int = 16, refine: bool = True, progress: bool = True,
         moments_device=None) -> xr.Dataset:
    """Fit one linear generator per U-Net level to `teacher`'s features along its PF-ODE.

    teacher: a `Teacher` (hkdviz.teacher.teacher; trained, imported EDM pickle, or an IdealDenoiser when
    `features` is given). seeds: training trajectories (a count n = seeds 0..n-1, or a list);
    held_out_seeds: the trajectories the held-out error is measured on (default: the 16 seeds after
    the largest training seed; [] for none). num_steps: Karras grid steps (18 = EDM's 35-NFE grid).
    time: Koopman time kind, "sigma" | "log_sigma" | "karras" (match the HKD you compare with:
    `model.koopman_time_kind`), or a callable. rank: largest generator fitted in full (None = all
    channels). features: a callable (x [N, C, H, W], sigma float) -> list of [N, d, h, w] with
    `level_shapes` [(d, h, w)] and optional `level_names`; default `TeacherFeatures(teacher)`.
    Memory: the moments (per level 3K + 2 matrices d x d, float64; twice with held-out seeds) plus one
    batch of trajectories and their features. `collect_moments` + `LensCollection.fit` split the two steps.
    """
    start = perf_counter()
    collection = collect_moments(teacher, seeds, held_out_seeds, num_steps=num_steps, features=features,
                                 batch_size=batch_size, progress=progress, moments_device=moments_device)
    collected = perf_counter()
    ds = fit_lens(collection.moments, collection.sigmas, time=time, rank=rank, held_out=collection.held_out,
                  level_names=collection.level_names, refine=refine, source=teacher, progress=progress,
                  seeds=collection.seeds, held_out_seeds=collection.held_out_seeds, num_steps=int(num_steps),
                  teacher=repr(teacher))
    # Where the time went (trajectories + features vs the generator fits), for benchmarks.
    ds.attrs["collect_seconds"] = round(collected - start, 3)
    ds.attrs["fit_seconds"] = round(perf_counter() - collected, 3)
    ds.attrs["moments_bytes"] = collection.nbytes
    return ds


class LensCollection:
    """What `collect_moments` gathered: the grid `sigmas`, training and held-out `LensMoments`, the seeds
    and level names. The moments do not depend on the Koopman time: `fit_lens` can refit them in any."""

    def __init__(self, sigmas, moments, held_out, seeds, held_out_seeds, level_names):
        self.sigmas, self.moments, self.held_out = sigmas, moments, held_out
        self.seeds, self.held_out_seeds, self.level_names = seeds, held_out_seeds, level_names

    @property
    def nbytes(self) -> int:
        return int(sum(matrix.numel() * matrix.element_size()
                       for part in (self.moments, self.held_out) if part is not None
                       for matrix in part.second + part.cross + part.start))

    def fit(self, time="sigma", **options) -> xr.Dataset:
        """`fit_lens` on these moments (options: rank, refine, source, progress, fit_threads, attrs)."""
        return fit_lens(self.moments, self.sigmas, time=time, held_out=self.held_out, level_names=self.level_names,
                        seeds=self.seeds, held_out_seeds=self.held_out_seeds, **options)


def collect_moments(teacher, seeds=64, held_out_seeds=None, num_steps: int = 18, features=None,
                    batch_size: int = 16, progress: bool = True, moments_device=None) -> LensCollection:
    """Run `teacher`'s PF-ODE from each seed (in batches) and stream its features into moments
    (arguments as for `lens`)."""
    from tqdm.auto import tqdm

    from ..model.hkd import check_seeds

    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count or a list of seeds, got {seeds}")
        seeds = list(range(int(seeds)))
    seeds = check_seeds(seeds)
    if held_out_seeds is None:
        first = max(seeds) + 1
        held_out_seeds = list(range(first, first + DEFAULT_HELD_OUT))
    held_out_seeds = check_seeds(held_out_seeds) if len(held_out_seeds) else []
    overlap = sorted(set(seeds) & set(held_out_seeds))
    if overlap:
        raise ValueError(f"held-out seeds overlap the training seeds: {overlap[:5]}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not callable(getattr(teacher, "states_at", None)) or not callable(getattr(teacher, "noise", None)):
        raise TypeError(f"teacher must be a hkdviz Teacher (noise, grid, states_at), got {type(teacher).__name__}")
    features = TeacherFeatures(teacher) if features is None else features
    shapes = [tuple(shape) for shape in features.level_shapes]
    names = list(getattr(features, "level_names", None) or [f"level{index}" for index in range(len(shapes))])
    sigmas = teacher.grid(num_steps)
    device = moments_device if moments_device is not None else teacher.device
    moments = LensMoments(shapes, sigmas.numel(), device)
    held_out = LensMoments(shapes, sigmas.numel(), device) if held_out_seeds else None

    batches = [(moments, seeds[i:i + batch_size]) for i in range(0, len(seeds), batch_size)]
    if held_out is not None:
        batches += [(held_out, held_out_seeds[i:i + batch_size]) for i in range(0, len(held_out_seeds), batch_size)]
    with torch.no_grad():
        for target, chunk in tqdm(batches, desc="lens: trajectories", unit="batch", disable=not progress):
            states = teacher.states_at(teacher.noise(chunk), sigmas)          # [B, K+1, C, H, W]
            for k in range(sigmas.numel()):
                target.add(k, features(states[:, k], float(sigmas[k])))
            del states
    return LensCollection(sigmas, moments, held_out, seeds, held_out_seeds, names)


def lens_summary(ds: xr.Dataset) -> dict:
    """Per level: median fit residual, held-out error and constant baseline over the grid transitions,
    the rank and the number of distinct eigenvalues; plus the overall medians."""
    rows = []
    for index in ds["fit_level"].values:
        level = ds.sel(fit_level=index)
        rows.append({
            "level": int(index), "name": str(level["fit_level_name"].values),
            "fit_residual": float(np.nanmedian(level["fit_residual"].values)),
            "held_out_error": float(np.nanmedian(level["held_out_error"].values))
            if np.isfinite(level["held_out_error"].values).any() else float("nan"),
            "constant_residual": float(np.nanmedian(level["constant_residual"].values)),
            "rank": int(level["rank"].values),
        })
    return {
        "levels": rows,
        "fit_residual_median": float(np.nanmedian(ds["fit_residual"].values)),
        "held_out_error_median": float(np.nanmedian(ds["held_out_error"].values))
        if np.isfinite(ds["held_out_error"].values).any() else float("nan"),
        "constant_residual_median": float(np.nanmedian(ds["constant_residual"].values)),
        "koopman_time": ds.attrs.get("koopman_time"),
    }


# -- comparing with an HKD -------------------------------------------------------------------------------
def spectrum_time_kind(spec: xr.Dataset) -> str:
    """The Koopman time a spectrum's eigenvalues are per unit of: a lens's `koopman_time` attr, else the
    HKD config's koopman.time (checkpoints from before Koopman time options: "sigma")."""
    if "koopman_time" in spec.attrs:
        return str(spec.attrs["koopman_time"])
    try:
        config = json.loads(spec.attrs.get("config", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"the spectrum's config attr is not JSON ({error})") from None
    return str((config.get("koopman") or {}).get("time", "sigma"))


def _level_values(spec: xr.Dataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    rows = spec["level"].values == index
    operators = json.loads(spec.attrs.get("level_operators", "[]"))
    if operators and operators[index] in SHARED_OPERATORS:
        # Shared generators are broadcast over positions: one position holds every distinct eigenvalue.
        rows &= (spec["y"].values == 0) & (spec["x"].values == 0)
    return spec["alpha"].values[rows], np.abs(spec["beta"].values[rows])


def compare_spectra(lens_spec: xr.Dataset, hkd_spec: xr.Dataset) -> xr.Dataset:
    """Per level (matched by name): 1-D Wasserstein distances between the lens's and the HKD's
    distributions of alpha and of |beta|, their medians and mode counts. Both spectra must be per unit
    of the same Koopman time (fit the lens with time=model.koopman_time_kind). Levels that either side
    lacks (identity levels have no modes) are left out. A dense_shared level counts each distinct
    eigenvalue once; the HKD's per-position modes each count once."""
    from scipy.stats import wasserstein_distance

    for name, spec in (("lens_spec", lens_spec), ("hkd_spec", hkd_spec)):
        if not isinstance(spec, xr.Dataset) or "alpha" not in spec or "level_names" not in spec.attrs:
            raise TypeError(f"{name} must be a spectrum dataset (hkdviz.spectrum or hkdviz.lens), "
                            f"got {type(spec).__name__}")
    lens_time, hkd_time = spectrum_time_kind(lens_spec), spectrum_time_kind(hkd_spec)
    if lens_time != hkd_time:
        raise ValueError(f"the spectra are in different Koopman times (lens: {lens_time!r}, HKD: {hkd_time!r}); "
                         f"refit the lens with time={hkd_time!r}")
    lens_names = json.loads(lens_spec.attrs["level_names"])
    hkd_names = json.loads(hkd_spec.attrs["level_names"])
    if lens_names != hkd_names:
        raise ValueError(f"the spectra have different levels: lens {lens_names} vs HKD {hkd_names}")
    lens_levels, hkd_levels = set(np.unique(lens_spec["level"].values)), set(np.unique(hkd_spec["level"].values))
    shared = sorted(int(level) for level in lens_levels & hkd_levels)
    if not shared:
        raise ValueError("the two spectra share no level with modes")
    columns = {key: [] for key in ("wasserstein_alpha", "wasserstein_abs_beta", "lens_alpha_median",
                                   "hkd_alpha_median", "lens_abs_beta_median", "hkd_abs_beta_median",
                                   "lens_modes", "hkd_modes")}
    for index in shared:
        lens_alpha, lens_beta = _level_values(lens_spec, index)
        hkd_alpha, hkd_beta = _level_values(hkd_spec, index)
        columns["wasserstein_alpha"].append(wasserstein_distance(lens_alpha, hkd_alpha))
        columns["wasserstein_abs_beta"].append(wasserstein_distance(lens_beta, hkd_beta))
        columns["lens_alpha_median"].append(np.median(lens_alpha))
        columns["hkd_alpha_median"].append(np.median(hkd_alpha))
        columns["lens_abs_beta_median"].append(np.median(lens_beta))
        columns["hkd_abs_beta_median"].append(np.median(hkd_beta))
        columns["lens_modes"].append(lens_alpha.size)
        columns["hkd_modes"].append(hkd_alpha.size)
    unit = f"per unit of Koopman time {lens_time}"
    descriptions = {
        "wasserstein_alpha": f"1-D Wasserstein distance between the alpha distributions ({unit})",
        "wasserstein_abs_beta": f"1-D Wasserstein distance between the |beta| distributions ({unit})",
        "lens_alpha_median": f"median alpha of the teacher's fitted generator ({unit})",
        "hkd_alpha_median": f"median alpha of the HKD's generators ({unit})",
        "lens_abs_beta_median": f"median |beta| of the teacher's fitted generator ({unit})",
        "hkd_abs_beta_median": f"median |beta| of the HKD's generators ({unit})",
        "lens_modes": "distinct eigenvalues (one per conjugate pair) of the fitted generator",
        "hkd_modes": "HKD modes (pair, position)",
    }
    variables = {key: ("level", np.asarray(values), {"long_name": descriptions[key]})
                 for key, values in columns.items()}
    coords = {"level": np.asarray(shared, np.int16),
              "level_name": ("level", np.array([lens_names[index] for index in shared], dtype=object))}
    attrs = {"analysis": "lens_comparison", "koopman_time": lens_time,
             "lens_checkpoint_sha256": lens_spec.attrs.get("checkpoint_sha256", ""),
             "hkd_checkpoint_sha256": hkd_spec.attrs.get("checkpoint_sha256", "")}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def linearity_and_faithfulness(lens_ds: xr.Dataset, faithfulness_ds: xr.Dataset) -> xr.Dataset:
    """The teacher's linearity next to an HKD's faithfulness, per level and grid time (dims level, time):
    `teacher_path_error` (lens `path_error`: the teacher's own features against one linear path from T),
    `teacher_constant_error`, `hkd_koopman_error` and `hkd_constant_error` (faithfulness, sample means:
    the HKD encoder's latents of the teacher's states against its Koopman path from T). The grids must
    match (same num_steps) and the levels too."""
    if "path_error" not in lens_ds or "koopman_error" not in faithfulness_ds:
        raise TypeError("expects a lens dataset (hkdviz.lens) and a faithfulness dataset (hkdviz.faithfulness)")
    lens_times, hkd_times = lens_ds["time"].values, faithfulness_ds["time"].values
    if lens_times.shape != hkd_times.shape or not np.allclose(lens_times, hkd_times, rtol=1e-6):
        raise ValueError(f"different time grids: lens {lens_times.size} times, faithfulness {hkd_times.size}; "
                         "use the same num_steps")
    lens_names = [str(name) for name in lens_ds["fit_level_name"].values]
    hkd_names = [str(name) for name in faithfulness_ds["level_name"].values]
    if lens_names != hkd_names:
        raise ValueError(f"different levels: lens {lens_names} vs faithfulness {hkd_names}")
    koopman = faithfulness_ds["koopman_error"].mean("sample").transpose("level", "time").values
    constant = faithfulness_ds["constant_error"].mean("sample").transpose("level", "time").values
    dims = ("level", "time")
    variables = {
        "teacher_path_error": (dims, lens_ds["path_error"].values, lens_ds["path_error"].attrs),
        "teacher_constant_error": (dims, lens_ds["constant_path_error"].values, lens_ds["constant_path_error"].attrs),
        "hkd_koopman_error": (dims, koopman, faithfulness_ds["koopman_error"].attrs),
        "hkd_constant_error": (dims, constant, faithfulness_ds["constant_error"].attrs),
    }
    coords = {"level": np.arange(len(lens_names)), "level_name": ("level", np.array(lens_names, dtype=object)),
              "time": ("time", lens_times, {"long_name": "sigma (EDM time t), T first"})}
    return xr.Dataset(variables, coords=coords, attrs={"analysis": "linearity_and_faithfulness",
                                                       "koopman_time": lens_ds.attrs.get("koopman_time", "")})


# -- spatial maps of the modes ---------------------------------------------------------------------------
class ModeAmplitudes:
    """Where each fitted mode lives: per level, mode and position, the RMS over samples and grid times of
    the mode's coordinate |c_j(y, x)|, c = V^-1 U^T z(y, x) (V: the generator's unit-norm right
    eigenvectors, U: the level's basis). Feed features with `add` (any times, any batches), then
    `result()` is the lens dataset with a variable `amplitude` (mode), which `mode_map(ds, level,
    "amplitude", pair=j)` draws. A second pass: the projections exist only once the fit is done."""

    def __init__(self, ds: xr.Dataset):
        if "fit_residual" not in ds or "level_names" not in ds.attrs:
            raise TypeError("ModeAmplitudes expects a lens dataset (hkdviz.lens)")
        self.ds = ds
        self.names = json.loads(ds.attrs["level_names"])
        self.shapes = [tuple(shape) for shape in json.loads(ds.attrs["level_shapes"])]
        self.projections, self.sums = [], []
        for index, name in enumerate(self.names):
            _, left = _sorted_modes(index, name, torch.as_tensor(ds[f"generator_{name}"].values))
            basis = ds[f"basis_{name}"].values                                  # [d, r]
            self.projections.append(torch.as_tensor(left @ basis.T))            # [modes, d] complex128
            _, height, width = self.shapes[index]
            self.sums.append(torch.zeros(left.shape[0], height, width, dtype=torch.float64))
        self.count = 0

    def add(self, features: Sequence[torch.Tensor]) -> None:
        if len(features) != len(self.names):
            raise ValueError(f"ModeAmplitudes.add: {len(features)} feature levels, expected {len(self.names)}")
        for index, feature in enumerate(features):
            if feature.ndim != 4 or tuple(feature.shape[1:]) != self.shapes[index]:
                raise ValueError(f"level {index}: features of shape {tuple(feature.shape)}, expected [N, "
                                 f"{', '.join(map(str, self.shapes[index]))}]")
            state = feature.detach().to("cpu", torch.complex128)
            coordinates = torch.einsum("md,ndhw->nmhw", self.projections[index], state)
            self.sums[index] += coordinates.abs().square().sum(0)
        self.count += features[0].shape[0]

    def result(self) -> xr.Dataset:
        if self.count == 0:
            raise ValueError("ModeAmplitudes: no features were added")
        amplitude = np.full(self.ds.sizes["mode"], np.nan)
        levels = self.ds["level"].values
        for index, total in enumerate(self.sums):
            rows = np.flatnonzero(levels == index)
            pair = self.ds["pair"].values[rows].astype(np.int64)
            y, x = self.ds["y"].values[rows].astype(np.int64), self.ds["x"].values[rows].astype(np.int64)
            amplitude[rows] = (total / self.count).sqrt().numpy()[pair, y, x]
        out = self.ds.copy()
        out["amplitude"] = ("mode", amplitude, {"long_name": "RMS over samples and grid times of the mode's "
                                                              "coordinate |(V^-1 U^T z)_j| at this position"})
        return out


def lens_mode_amplitudes(teacher, ds: xr.Dataset, seeds=4, features=None, batch_size: int = 16,
                         progress: bool = True) -> xr.Dataset:
    """`ds` with `amplitude` maps (see ModeAmplitudes) from `teacher`'s trajectories on the lens's own grid
    (attr num_steps), from `seeds` (a count or a list; a few are enough for a map)."""
    from tqdm.auto import tqdm

    from ..model.hkd import check_seeds

    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seeds = list(range(int(seeds)))
    seeds = check_seeds(seeds)
    features = TeacherFeatures(teacher) if features is None else features
    accumulator = ModeAmplitudes(ds)
    sigmas = teacher.grid(int(json.loads(str(ds.attrs["num_steps"]))))
    with torch.no_grad():
        for start in tqdm(range(0, len(seeds), batch_size), desc="lens: mode maps", disable=not progress):
            states = teacher.states_at(teacher.noise(seeds[start:start + batch_size]), sigmas)
            for k in range(sigmas.numel()):
                accumulator.add(features(states[:, k], float(sigmas[k])))
    return accumulator.result()


__all__ = ["lens", "collect_moments", "LensCollection", "fit_lens", "fit_level", "LensMoments", "TeacherFeatures",
           "lens_summary", "compare_spectra", "linearity_and_faithfulness", "spectrum_time_kind", "ModeAmplitudes",
           "lens_mode_amplitudes", "prediction_errors", "relative_errors", "path_errors"]
