"""HKD training loss: distances in image space and the trajectory-consistency loss.

    L = L_t-consist + L_recon,   both d(D(exp((eps - t) A) E(x_t, t)), x_eps)   (docs/method.md, section 3)

Each training sample contributes five terms: the reconstruction term at t = T (input: the
trajectory's noise x_T) and `num_times` = 4 intermediate times; the loss is their mean.

[choice] Intermediate times are drawn uniformly, with replacement, over the stored solver grid
indices 1..N (index 0 = T, index N = eps). That is U[eps, T) over the grid: T is excluded (it is
the reconstruction term) and eps is included, where the target is the input itself and the map
must be the identity (the consistency boundary condition). `include_eps=False` draws from 1..N-1.

`time_sampling="log_sigma"` (issue #19) draws index i instead with probability proportional to the
width in ln sigma of the grid cell it stands for: the draw then approximates ln sigma ~ U[ln eps,
ln T) as closely as the grid allows, instead of following the grid's own density (EDM's grid packs
its points near eps in sigma but spreads them there in ln sigma). Cell i = the ln-sigma interval
nearer to node i than to any other node, i.e. between the midpoints to its neighbours:
    w_i = (ln sigma_{i-1} - ln sigma_{i+1}) / 2   for 1 <= i < N,
which are the trapezoidal-rule weights of the integral over [ln eps, ln T] on the grid nodes
(T's half-cell is the reconstruction term's, not drawn). [choice] Below eps there are no noise
levels, so eps's cell stops at ln eps: w_N = (ln sigma_{N-1} - ln sigma_N) / 2, half its neighbour
gap (the trapezoidal end weight); it is finite. With include_eps=False index N is not drawn and its
half-cell is dropped (not given to N - 1). `recon_weight` weighs the x_T term against each
intermediate term: loss = (r d_T + sum_m d_m) / (r + M) per sample (r = 1: the plain mean).
`generator_smoothness` adds the mean squared difference between neighbouring positions' generator
entries of per-position block levels (see HKDLoss.generator_smoothness_penalty).

`state_weight` (not in the paper) adds a state term: the readout of every input's own latents, decoded
without evolution (`HKDModel.readout`), against the frozen teacher's denoised estimate D(x_t, t) of the
same input, by the same distance, averaged over all terms (x_T included). The paper's loss only scores the
evolved latents, so nothing makes a latent describe its trajectory's current state: a teacher-initialised
encoder can map every x_t straight to the endpoint's latent and leave the generators near zero (what the
screens measured: the Koopman path then equals the constant latent to two digits). With the state term a
latent of x_t must decode to the teacher's current estimate (a blurred mean at T, the image near eps), so
the evolution from t to eps has to carry what the teacher adds from there.

Distances map (prediction, target) [B, C, H, W] to one value per sample [B]; every callable here is
a small class with plain-data constructor arguments (`config()` returns them).
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


def _precise(tensor: torch.Tensor) -> torch.Tensor:
    # Distances in float32 at least (bf16 autocast outputs), float64 when given float64.
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _unwrap(model):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    if prediction.ndim < 2:
        raise ValueError(f"expected images [B, ...], got shape {tuple(prediction.shape)}")


class MSEDistance:
    """Mean squared error per sample (mean over every non-batch element)."""

    name = "mse"

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(prediction, target)
        return (_precise(prediction) - _precise(target)).square().flatten(1).mean(1)

    def config(self) -> dict:
        return {"name": self.name}


class PseudoHuberDistance:
    """Pseudo-Huber distance of improved consistency training (Song & Dhariwal 2023):
    sqrt(||x - y||^2 + c^2) - c with c = 0.00054 * sqrt(dim), dim = C * H * W.

    Weights-free; our default perceptual-ish term where LPIPS weights are unavailable.
    """

    name = "pseudo_huber"

    def __init__(self, c_factor: float = 0.00054):
        self.c_factor = float(c_factor)

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(prediction, target)
        difference = (_precise(prediction) - _precise(target)).flatten(1)
        c = self.c_factor * math.sqrt(difference.shape[1])
        return (difference.square().sum(1) + c * c).sqrt() - c

    def config(self) -> dict:
        return {"name": self.name, "c_factor": self.c_factor}


# -- LPIPS ---------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018) needs pretrained VGG16/AlexNet features plus learned linear heads. Those
# weights cannot be downloaded here, and the `lpips` package imports torchvision, so this is a
# self-contained re-implementation that reads a full LPIPS state dict in the `lpips` package's key
# layout (net.sliceK.<torchvision features index>.*, linK.model.1.weight), e.g. one written by
# `torch.save(lpips.LPIPS(net="vgg").state_dict(), path)` on a machine that has the weights.

_LPIPS_ARCHITECTURES = {
    # torchvision `features` layers: ("conv", in, out, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride)
    "vgg": {
        "layers": [("conv", 3, 64, 3, 1, 1), ("relu",), ("conv", 64, 64, 3, 1, 1), ("relu",), ("pool", 2, 2),
                   ("conv", 64, 128, 3, 1, 1), ("relu",), ("conv", 128, 128, 3, 1, 1), ("relu",), ("pool", 2, 2),
                   ("conv", 128, 256, 3, 1, 1), ("relu",), ("conv", 256, 256, 3, 1, 1), ("relu",),
                   ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 2, 2),
                   ("conv", 256, 512, 3, 1, 1), ("relu",), ("conv", 512, 512, 3, 1, 1), ("relu",),
                   ("conv", 512, 512, 3, 1, 1), ("relu",), ("pool", 2, 2),
                   ("conv", 512, 512, 3, 1, 1), ("relu",), ("conv", 512, 512, 3, 1, 1), ("relu",),
                   ("conv", 512, 512, 3, 1, 1), ("relu",)],
        "slices": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)],
        "channels": [64, 128, 256, 512, 512],
    },
    "alex": {
        "layers": [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",),
                   ("pool", 3, 2), ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
                   ("conv", 256, 256, 3, 1, 1), ("relu",)],
        "slices": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
        "channels": [64, 192, 384, 256, 256],
    },
}


def _make_layer(spec) -> nn.Module:
    if spec[0] == "conv":
        _, cin, cout, kernel, stride, padding = spec
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
    if spec[0] == "relu":
        return nn.ReLU(inplace=False)
    return nn.MaxPool2d(kernel_size=spec[1], stride=spec[2])


class _LPIPSNetwork(nn.Module):
    def __init__(self, net: str):
        super().__init__()
        architecture = _LPIPS_ARCHITECTURES[net]
        self.register_buffer("scaling_layer_shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scaling_layer_scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.slices = nn.ModuleList()
        for start, stop in architecture["slices"]:
            block = nn.Sequential()
            for index in range(start, stop):  # keep torchvision's indices so state-dict keys match
                block.add_module(str(index), _make_layer(architecture["layers"][index]))
            self.slices.append(block)
        self.lins = nn.ModuleList(nn.Conv2d(channels, 1, 1, bias=False) for channels in architecture["channels"])

    def load_lpips_state(self, state: dict, source) -> None:
        mapped = {}
        for key, value in state.items():
            if key.startswith("scaling_layer."):
                mapped["scaling_layer_" + key.split(".", 1)[1]] = value.reshape(1, 3, 1, 1)
            elif key.startswith("net.slice"):
                slice_name, rest = key[len("net.slice"):].split(".", 1)
                mapped[f"slices.{int(slice_name) - 1}.{rest}"] = value
            elif re.fullmatch(r"lin\d+\.model\.\d+\.weight", key):  # ("lins.K..." duplicates these)
                mapped[f"lins.{int(key[3:key.index('.')])}.weight"] = value
        expected = self.state_dict()
        missing = sorted(set(expected) - set(mapped))
        wrong = sorted(key for key in set(expected) & set(mapped) if expected[key].shape != mapped[key].shape)
        if missing or wrong:
            raise ValueError(f"{source}: not an LPIPS state dict for this network "
                             f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, wrong shapes {wrong[:4]})")
        self.load_state_dict({key: mapped[key] for key in expected}, strict=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = (x - self.scaling_layer_shift) / self.scaling_layer_scale
        y = (y - self.scaling_layer_shift) / self.scaling_layer_scale
        total = x.new_zeros(x.shape[0])
        for block, lin in zip(self.slices, self.lins):
            x, y = block(x), block(y)
            # Unit-normalise each feature vector over channels, as LPIPS does.
            nx = x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10)
            ny = y / (y.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny).square()).mean(dim=(1, 2, 3))
        return total


class LPIPSDistance:
    """LPIPS from a local weights file; never downloads.

    `weights`: path to a torch state dict of a full LPIPS model (backbone + linear heads) in the
    `lpips` package's key layout. Images in [-1, 1] are resized to `resize` px (bilinear) first, as
    consistency-model training does for 32x32 data; `resize=None` keeps them as they are.
    """

    name = "lpips"

    def __init__(self, weights: str | Path | None = None, net: str = "vgg", resize: int | None = 224,
                 device=None):
        if net not in _LPIPS_ARCHITECTURES:
            raise ValueError(f"LPIPS net must be one of {sorted(_LPIPS_ARCHITECTURES)}, got {net!r}")
        if weights is None:
            raise ValueError("LPIPS needs pretrained weights, which hkdviz never downloads: pass a local LPIPS state "
                             "dict (e.g. torch.save(lpips.LPIPS(net='vgg').state_dict(), 'lpips_vgg.pt') on a machine "
                             "that has them) as weights=..., or use the default pseudo-Huber distance")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"{path}: cannot read LPIPS weights ({type(error).__name__}: {error})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
        self.weights = str(path)
        self.net_name = net
        self.resize = resize
        self.network = _LPIPSNetwork(net)
        self.network.load_lpips_state(state, path)
        self.network.eval().requires_grad_(False)
        if device is not None:
            self.network.to(device)

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(prediction, target)
        network = self.network
        if next(network.parameters()).device != prediction.device:
            network.to(prediction.device)
        prediction, target = prediction.float(), target.float()
        if self.resize is not None and prediction.shape[-1] != self.resize:
            prediction = F.interpolate(prediction, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
            target = F.interpolate(target, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return network(prediction, target)

    def config(self) -> dict:
        return {"name": self.name, "weights": self.weights, "net": self.net_name, "resize": self.resize}


# -- teacher features ---------------------------------------------------------------------------------
# [choice] The teacher's features at sigma = 0.3 by default: EDM trains its denoiser with ln sigma ~
# N(P_mean = -1.2, P_std = 1.2), whose median is e^-1.2 = 0.30, so the encoder's features are trained
# best around there.
TEACHER_FEATURES_SIGMA = 0.3


class TeacherFeatureDistance:
    """A weights-free perceptual distance from the frozen teacher's own encoder (no LPIPS heads, no
    evaluation classifier): the skip and bottleneck features that HKD's latents come from.

    Both images go through the teacher U-Net's encoder at one fixed noise level `sigma`, with EDM's input
    scaling c_in(sigma) and noise embedding ln(sigma) / 4, and no noise added. [choice] No noise: the
    distance is then a deterministic function of the pair (zero on identical images, symmetric, no extra
    variance in the loss and no extra random stream to keep for an exact resume); adding the same noise to
    both would still leave a draw-dependent value. Each level's feature vectors are unit-normalised over
    channels at every position (as LPIPS does), and the distance is the squared difference of the unit
    vectors summed over channels, averaged over positions, then over levels (each level counts once;
    LPIPS with every learned head weight set to 1). The teacher's parameters are frozen; the target's
    features are computed without a graph; the gradient reaches the prediction only.
    """

    name = "teacher_features"

    def __init__(self, teacher, sigma: float = TEACHER_FEATURES_SIGMA, device=None):
        denoiser = getattr(teacher, "denoiser", teacher)
        network = getattr(denoiser, "net", None)
        if network is None or not (hasattr(network, "encode") and hasattr(network, "embed")):
            describe = getattr(denoiser, "describe", lambda: type(denoiser).__name__)()
            raise ValueError(f"the teacher_features distance needs an EDMPrecond teacher with a DDPM++ U-Net "
                             f"(its encoder gives the features), got {describe}")
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"teacher_features sigma must be a positive finite number, got {sigma!r}")
        if network.map_label is not None:
            raise ValueError("the teacher_features distance needs an unconditional teacher (unet.label_dim = 0)")
        self.sigma = sigma
        self.sigma_data = float(denoiser.sigma_data)
        # A private frozen copy: the loop's HKD model was initialised from the same weights, and nothing
        # may move or train these.
        self.network = copy.deepcopy(network).float().eval().requires_grad_(False)
        if device is not None:
            self.network.to(device)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised encoder features [B, C_l, H_l, W_l] per level of images [B, C, H, W]."""
        network = self.network
        scale = 1 / math.sqrt(self.sigma ** 2 + self.sigma_data ** 2)
        noise_labels = torch.full((images.shape[0],), math.log(self.sigma) / 4, device=images.device)
        emb = network.embed(noise_labels)
        features = []
        for feature in network.encode(images * scale, emb.to(images.dtype)):
            feature = feature.float()
            features.append(feature / (feature.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return features

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(prediction, target)
        if next(self.network.parameters()).device != prediction.device:
            self.network.to(prediction.device)
        predicted = self.features(prediction.float())
        with torch.no_grad():
            wanted = self.features(target.float())
        per_level = [(a - b).square().sum(1).flatten(1).mean(1) for a, b in zip(predicted, wanted)]
        return torch.stack(per_level).mean(0)

    def config(self) -> dict:
        return {"name": self.name, "sigma": self.sigma}


DISTANCES = ("pseudo_huber", "mse", "lpips", "teacher_features")


def make_distance(config: dict | str | None, device=None, teacher=None):
    """A perceptual distance from plain data: "pseudo_huber" (default), "mse", {"name": "lpips", "weights": ...},
    or {"name": "teacher_features", "sigma": S} (needs `teacher`: the HKD loop passes its teacher)."""
    if config is None:
        config = "pseudo_huber"
    if isinstance(config, str):
        config = {"name": config}
    options = dict(config)
    name = options.pop("name", None)
    if name == "pseudo_huber":
        return PseudoHuberDistance(**options)
    if name == "mse":
        return MSEDistance()
    if name == "lpips":
        return LPIPSDistance(device=device, **options)
    if name == "teacher_features":
        if teacher is None:
            raise ValueError("the teacher_features distance needs the teacher (make_distance(..., teacher=...); "
                             "the HKD loop passes its own)")
        unknown = sorted(set(options) - {"sigma"})
        if unknown:
            raise ValueError(f"unknown teacher_features option(s) {unknown}; it takes 'sigma' only")
        return TeacherFeatureDistance(teacher, device=device, **options)
    raise ValueError(f"unknown distance {name!r}; choose one of {', '.join(map(repr, DISTANCES))}")


class HKDDistance:
    """d = lambda_1(progress) * MSE + lambda_2 * perceptual, with lambda_1 = start * (end / start)^progress
    (10^(-3 * progress) for the defaults: 1 -> 1e-3 over training) and lambda_2 = 1.

    [choice] progress = step / total_steps, continuous (the paper steps it per epoch).
    Returns (total [B], mse [B], perceptual [B]).
    """

    def __init__(self, perceptual=None, lambda1_start: float = 1.0, lambda1_end: float = 1e-3,
                 lambda2: float = 1.0):
        self.perceptual = PseudoHuberDistance() if perceptual is None else perceptual
        self.mse = MSEDistance()
        if lambda1_start <= 0 or lambda1_end <= 0:
            raise ValueError("lambda1_start and lambda1_end must be positive")
        self.lambda1_start = float(lambda1_start)
        self.lambda1_end = float(lambda1_end)
        self.lambda2 = float(lambda2)

    def lambda1(self, progress: float) -> float:
        progress = min(max(float(progress), 0.0), 1.0)
        return self.lambda1_start * (self.lambda1_end / self.lambda1_start) ** progress

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor, progress: float = 0.0):
        mse = self.mse(prediction, target)
        perceptual = self.perceptual(prediction, target) if self.lambda2 else torch.zeros_like(mse)
        return self.lambda1(progress) * mse + self.lambda2 * perceptual, mse, perceptual

    def config(self) -> dict:
        return {"perceptual": self.perceptual.config(), "lambda1_start": self.lambda1_start,
                "lambda1_end": self.lambda1_end, "lambda2": self.lambda2}


class HKDLoss:
    """The HKD training objective on a batch of teacher trajectories.

    `num_times` intermediate grid indices per sample plus the reconstruction term at T; with
    `t_consistency=False` (ablation) only the reconstruction term is used (alone, not repeated).
    `latent_weight` > 0 adds a latent path term (not in the paper, which trains in image space only): per
    level, ||exp((s(t) - s(T)) A) E(x_T, T) - E(x_t, t)||^2 / ||E(x_t, t)||^2 (the denominator held
    constant), averaged over levels and drawn times, which pulls the encoder's own latents of the
    teacher's states onto the linear Koopman path (and the path onto them).
    The Koopman ablations are model configs, not loss switches: koopman.levels = "none" (no
    Koopman evolution) or "bottleneck" (non-hierarchical).
    Issue #19 options (module docstring): `time_sampling` ("uniform" over the grid indices, or
    "log_sigma": by each index's cell width in ln sigma), `recon_weight` (the x_T term's weight against
    each intermediate term), `generator_smoothness` (weight of a neighbour-difference penalty on
    per-position block generators) and `state_weight` (the readout of the unevolved latents against the
    teacher's D(x_t, t); `state_teacher` is that frozen denoiser, called as state_teacher(x, sigma, labels)
    without a graph). Their defaults reproduce the loss without them bit for bit.
    """

    TIME_SAMPLINGS = ("uniform", "log_sigma")

    def __init__(self, distance: HKDDistance | None = None, num_times: int = 4, t_consistency: bool = True,
                 include_eps: bool = True, latent_weight: float = 0.0, time_sampling: str = "uniform",
                 recon_weight: float = 1.0, generator_smoothness: float = 0.0, state_weight: float = 0.0,
                 state_teacher=None):
        if num_times < 1 and t_consistency:
            raise ValueError(f"num_times must be >= 1 with t_consistency, got {num_times}")
        for name, value in (("latent_weight", latent_weight), ("recon_weight", recon_weight),
                            ("generator_smoothness", generator_smoothness), ("state_weight", state_weight)):
            if not float(value) >= 0 or float(value) == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if time_sampling not in self.TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {self.TIME_SAMPLINGS}, got {time_sampling!r}")
        if float(recon_weight) == 0 and not t_consistency:
            raise ValueError("recon_weight = 0 without t_consistency leaves no loss term")
        if float(state_weight) > 0 and state_teacher is None:
            raise ValueError("state_weight > 0 needs state_teacher: the frozen teacher's denoiser D(x, sigma)")
        self.latent_weight = float(latent_weight)
        self.distance = HKDDistance() if distance is None else distance
        self.num_times = int(num_times)
        self.t_consistency = bool(t_consistency)
        self.include_eps = bool(include_eps)
        self.time_sampling = time_sampling
        self.recon_weight = float(recon_weight)
        self.generator_smoothness = float(generator_smoothness)
        self.state_weight = float(state_weight)
        self.state_teacher = state_teacher if self.state_weight > 0 else None

    @property
    def terms_per_sample(self) -> int:
        return 1 + (self.num_times if self.t_consistency else 0)

    def time_indices(self, batch_size: int, num_states: int, generator: torch.Generator | None = None,
                     device=None, sigmas: torch.Tensor | None = None) -> torch.Tensor:
        """Grid indices [B, terms_per_sample] into trajectories of `num_states` = N + 1 states; column 0 = T.

        `sigmas` (the grid [N + 1], T first) is needed by time_sampling="log_sigma" only."""
        first = torch.zeros(batch_size, 1, dtype=torch.long)
        if not self.t_consistency:
            return first.to(device)
        high = num_states if self.include_eps else num_states - 1
        if high <= 1:
            raise ValueError(f"trajectories with {num_states} states leave no intermediate time to draw")
        if self.time_sampling == "uniform":
            drawn = torch.randint(1, high, (batch_size, self.num_times), generator=generator)
        else:
            if sigmas is None or sigmas.ndim != 1 or sigmas.shape[0] != num_states:
                got = None if sigmas is None else tuple(sigmas.shape)
                raise ValueError(f"time_sampling='log_sigma' needs the sigma grid [{num_states}] (T first), got {got}")
            cumulative = self.log_sigma_probabilities(sigmas, self.include_eps).cumsum(0)
            # Inverse CDF in float64 on the CPU (the generator is the CPU one shared by every rank).
            uniform = torch.rand(batch_size, self.num_times, generator=generator, dtype=torch.float64)
            position = torch.searchsorted(cumulative, uniform * cumulative[-1], right=True)
            drawn = 1 + position.clamp_max(cumulative.shape[0] - 1)  # u * total == total: the last cell
        return torch.cat([first, drawn], dim=1).to(device)

    @staticmethod
    def log_sigma_probabilities(sigmas: torch.Tensor, include_eps: bool = True) -> torch.Tensor:
        """P(index i) for i = 1..N (or 1..N-1 without eps), float64: each node's cell width in ln sigma,
        between the midpoints to its neighbours; eps's cell stops at ln eps (module docstring)."""
        log_sigma = torch.as_tensor(sigmas, dtype=torch.float64).cpu().log()
        if log_sigma.ndim != 1 or log_sigma.shape[0] < 2 or not bool(torch.isfinite(log_sigma).all()):
            raise ValueError(f"the sigma grid must be 1-D with >= 2 positive finite values, got {sigmas}")
        if not bool((log_sigma[1:] < log_sigma[:-1]).all()):
            raise ValueError("the sigma grid must decrease strictly (T first, eps last)")
        upper = (log_sigma[:-1] + log_sigma[1:]) / 2          # cell i's top: the midpoint to node i - 1
        lower = torch.cat([upper[1:], log_sigma[-1:]])       # its bottom: the midpoint to i + 1; eps: ln eps
        widths = upper - lower                               # [N], cells of nodes 1..N
        if not include_eps:
            widths = widths[:-1]
        if widths.numel() == 0:
            raise ValueError("the sigma grid leaves no intermediate time to draw")
        return widths / widths.sum()

    @staticmethod
    def generator_smoothness_penalty(model) -> torch.Tensor:
        """Mean over per-position block levels of the mean squared difference between neighbouring
        positions' generator entries: per level, the squared x and y neighbour differences of every entry
        (alpha and beta) pooled, sum / count; levels with a single position have no neighbours and are
        skipped. Zero for a generator constant over positions."""
        levels = [level for level in _unwrap(model).koopman
                  if getattr(level, "kind", "") == "block" and level.height * level.width > 1]
        if not levels:
            raise ValueError("hkd.generator_smoothness needs per-position block Koopman levels (koopman.operator = "
                             "'block' with more than one position); this model has none")
        penalties = []
        for level in levels:
            generator = level.generator.float()
            across = generator[:, :, 1:] - generator[:, :, :-1]   # x neighbours
            down = generator[:, 1:, :] - generator[:, :-1, :]     # y neighbours
            total = across.square().sum() + down.square().sum()
            penalties.append(total / (across.numel() + down.numel()))
        return torch.stack(penalties).mean()

    def __call__(self, model, states: torch.Tensor, sigmas: torch.Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None, indices: torch.Tensor | None = None,
                 class_labels: torch.Tensor | None = None):
        """Loss on full trajectories: states [B, K, C, H, W] (T first, eps last), sigmas [K] or [B, K].

        Returns (scalar loss, dict of detached terms). `indices` ([B, M], column 0 = 0) overrides the draw.
        """
        if states.ndim != 5:
            raise ValueError(f"states must be [B, K, C, H, W], got shape {tuple(states.shape)}")
        batch, num_states = states.shape[:2]
        if indices is None:
            indices = self.time_indices(batch, num_states, generator, sigmas=sigmas if sigmas.ndim == 1 else None)
        indices = indices.to(states.device)
        sigmas = sigmas.to(states.device)
        if sigmas.ndim == 1:
            sigmas = sigmas.expand(batch, num_states)
        rows = torch.arange(batch, device=states.device).unsqueeze(1)
        return self.compute(model, states[rows, indices], sigmas[rows, indices], states[:, -1], progress, class_labels)

    def compute(self, model, inputs: torch.Tensor, input_sigmas: torch.Tensor, target: torch.Tensor,
                progress: float = 0.0, class_labels: torch.Tensor | None = None):
        """Loss on gathered inputs [B, M, C, H, W] at noise levels [B, M] (column 0 = T) and targets x_eps [B, C, H, W]."""
        batch, terms = inputs.shape[:2]
        flat_inputs = inputs.reshape(batch * terms, *inputs.shape[2:])
        labels = None if class_labels is None else class_labels.repeat_interleave(terms, dim=0)
        # One forward pass over all B * M inputs: the cost of a step is that of 5B images.
        flat_sigmas = input_sigmas.reshape(-1).float()
        latent_term = state_term = None
        want_latents = self.latent_weight > 0 and terms > 1
        if want_latents or self.state_weight > 0:
            prediction, *extras = model(flat_inputs, flat_sigmas, labels, return_latents=want_latents,
                                        return_readout=self.state_weight > 0)
            if want_latents:
                latent_term = self.latent_path_error(_unwrap(model), extras.pop(0), input_sigmas, batch, terms)
            if self.state_weight > 0:
                with torch.no_grad():
                    denoised = self.state_teacher(flat_inputs, flat_sigmas, labels)
                state_term = self.distance(extras.pop(0).float(), denoised.float(), progress)[0].mean()
        else:
            prediction = model(flat_inputs, flat_sigmas, labels)
        flat_target = target.unsqueeze(1).expand(batch, terms, *target.shape[1:]).reshape_as(prediction)
        total, mse, perceptual = self.distance(prediction.float(), flat_target.float(), progress)
        total, mse, perceptual = (value.reshape(batch, terms) for value in (total, mse, perceptual))
        if self.recon_weight == 1.0 or terms == 1:
            loss = total.mean()  # the plain mean (bit for bit what the loss was before recon_weight)
        else:
            weights = torch.ones(terms, dtype=total.dtype, device=total.device)
            weights[0] = self.recon_weight
            loss = (total * weights).sum(1).mean() / weights.sum()
        if latent_term is not None:
            loss = loss + self.latent_weight * latent_term
        if state_term is not None:
            loss = loss + self.state_weight * state_term
        smoothness = None
        if self.generator_smoothness > 0:
            smoothness = self.generator_smoothness_penalty(model)
            loss = loss + self.generator_smoothness * smoothness
        stats = {"loss": loss.detach(), "loss_recon": total[:, 0].mean().detach(),
                 "mse": mse.mean().detach(), "perceptual": perceptual.mean().detach(),
                 "lambda1": torch.tensor(self.distance.lambda1(progress))}
        if terms > 1:
            stats["loss_consistency"] = total[:, 1:].mean().detach()
        if latent_term is not None:
            stats["loss_latent"] = latent_term.detach()
        if state_term is not None:
            stats["loss_state"] = state_term.detach()
        if smoothness is not None:
            stats["loss_smoothness"] = smoothness.detach()
        return loss, stats

    @staticmethod
    def latent_path_error(model, latents, input_sigmas: torch.Tensor, batch: int, terms: int) -> torch.Tensor:
        """Mean over levels and drawn times of the squared relative distance between the Koopman path
        from column 0 (x_T at T) and the encoder's own latents at the other columns."""
        own = [latent.float().reshape(batch, terms, *latent.shape[1:]) for latent in latents]
        starts = [latent[:, :1].expand(batch, terms - 1, *latent.shape[2:]) for latent in own]
        # tau [B, M - 1] broadcasts over the latents' two leading dims.
        path = model.evolve_between(starts, input_sigmas[:, :1].double(), input_sigmas[:, 1:].double())
        errors = []
        for linear, latent in zip(path, own):
            target = latent[:, 1:]
            squared = (linear - target).flatten(2).square().sum(-1)
            errors.append(squared / target.detach().flatten(2).square().sum(-1).clamp_min(1e-12))
        return torch.stack(errors).mean()

    def config(self) -> dict:
        return {"distance": self.distance.config(), "num_times": self.num_times,
                "t_consistency": self.t_consistency, "include_eps": self.include_eps, "latent_weight": self.latent_weight,
                "time_sampling": self.time_sampling, "recon_weight": self.recon_weight,
                "generator_smoothness": self.generator_smoothness, "state_weight": self.state_weight}


__all__ = ["MSEDistance", "PseudoHuberDistance", "LPIPSDistance", "TeacherFeatureDistance", "HKDDistance", "HKDLoss",
           "make_distance"]
