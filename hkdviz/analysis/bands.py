"""Bands: named, serializable selections of Koopman modes, turned into per-level latent masks.

A mode is one eigenvalue pair alpha +- i beta of a block Koopman level at one position: (level, pair,
y, x). Its latent channels are k = pair and k + d/2, so a band mask of shape (d, h, w) per level holds
the same value on both channels of a pair.

Kinds of band
- ``quantile``: per level, rank all pairs (every position) by real part alpha; keep ranks in
  [lower, upper) of the level's count (upper = 1 keeps the top). The three thirds partition the level.
- ``frequency``: the same on |beta| ranks, or with ``absolute=True`` on |beta| values in [lower, upper)
  (angular frequency, rad per unit time; spectrum()'s ``frequency`` is |beta| / 2 pi).
- ``levels``: every mode of the listed levels.
- ``explicit``: a list of (level, pair, y, x).
- ``all``: everything.
- intersection ``a & b`` and union ``a | b``.

Ties in alpha (an untrained model has alpha = 0 everywhere) are broken by the flat (pair, y, x) index
(stable sort), so the quantile bands still partition the modes exactly.

Names. Bands are named by alpha order: "smallest" (ranks [0, 1/3)), "intermediate" ([1/3, 2/3)),
"largest" ([2/3, 1]). The image-frequency aliases follow what the shipped checkpoints measure:

    "high_frequency" = "high" = "largest"       (what frequency-aware editing injects by default)
    "mid"                     = "intermediate"
    "low_frequency"  = "low"  = "smallest"

"high"/"low" therefore mean image frequency, never alpha order. Why largest = high here: hkdviz evolves
from T towards the data with tau = t - T < 0, so a mode scales by exp(alpha tau) = exp(|alpha| |tau|)
for alpha < 0: the most negative alpha grows most and carries the sample's global structure, while
alpha near 0 keeps what the encoder read off the noise at T, the fine, noise-like detail. The paper
(HKD sec. 4) finds low-range modes -> global structure and high-range -> fine detail, as measured
here; its other remark (large alpha = low frequency, the smallest-real-part band looks like noise)
fits these measurements only with the time axis reversed (hkdviz's first release followed it).
Measured with `edit_metrics.band_spectra` (share of each band's decoded power above 0.125 cycles/px;
benchmarks/bench_editing.py): on every shipped checkpoint so far the largest band has the most
high-frequency power and the smallest the least, and on the first one editing with the largest band
disturbed the low-pass image far less than with the smallest (the numbers: docs/results.md, "Which
band carries the fine detail").

A checkpoint may learn otherwise (models trained with the state term do: intermediate, not smallest,
carries the least detail there, and largest and smallest tie or swap with the training seed), so the
aliases are read per model: the training loop measures which third is which, with paired margins
(`edit_metrics.measure_band_aliases`), and records it in the checkpoint's meta.json (ALIASES_META_KEY);
`model_aliases(model)` returns that reading, or ALIASES for a checkpoint without one. Every analysis
that takes a model resolves its bands with `band_for_model`, so "low" names the model's own
least-detailed third in the masks and in the provenance alike.

Regions (`region_mask`, `region_masks`): spatial selections in image space, resized to each level by
area averaging; `selection_masks(model, band, region)` is their product with a band's masks.

Non-block levels. Identity levels (no Koopman dynamics) have no eigenvalues: their mask is all ones
for ``all`` and for ``levels`` bands that name them, zeros for spectral kinds (quantile, frequency).
``explicit`` modes may name any level that has channel pairs. Dense levels mix channels, so a channel
mask is not a mode mask there: spectral kinds raise a ValueError on models with dense levels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..model.koopman import BLOCK_OPERATORS

KINDS = ("quantile", "frequency", "levels", "explicit", "all", "intersection", "union")

# Named bands (alpha order), plus the image-frequency aliases (measured reading, see the module docstring).
_THIRD = 1.0 / 3.0
NAMED = {
    "smallest": ("quantile", 0.0, _THIRD),
    "intermediate": ("quantile", _THIRD, 2 * _THIRD),
    "largest": ("quantile", 2 * _THIRD, 1.0),
}
ALIASES = {
    "high_frequency": "largest", "high": "largest",
    "mid": "intermediate",
    "low_frequency": "smallest", "low": "smallest",
}
BAND_NAMES = tuple(NAMED) + tuple(ALIASES) + ("all",)


@dataclass(frozen=True)
class Band:
    """A selection of Koopman modes. Build with the class methods or `as_band(name)`; combine with & and |."""

    kind: str
    lower: float = 0.0
    upper: float = 1.0
    absolute: bool = False
    levels: tuple = ()
    modes: tuple = ()
    parts: tuple = ()
    name: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown band kind {self.kind!r}; choose one of {KINDS}")
        if self.kind in ("quantile", "frequency"):
            lower, upper = float(self.lower), float(self.upper)
            if self.kind == "quantile" or not self.absolute:
                if not 0.0 <= lower < upper <= 1.0:
                    raise ValueError(f"{self.kind} band needs 0 <= lower < upper <= 1, got lower={lower}, upper={upper}")
            elif not 0.0 <= lower < upper:
                raise ValueError(f"absolute frequency band needs 0 <= lower < upper (|beta| values), got {lower}, {upper}")
            object.__setattr__(self, "lower", lower)
            object.__setattr__(self, "upper", upper)
        if self.kind == "levels":
            levels = tuple(sorted({_index(level, "levels") for level in self.levels}))
            if not levels:
                raise ValueError("a levels band needs at least one level index")
            object.__setattr__(self, "levels", levels)
        if self.kind == "explicit":
            modes = []
            for mode in self.modes:
                if len(tuple(mode)) != 4:
                    raise ValueError(f"explicit modes are (level, pair, y, x) tuples, got {mode!r}")
                modes.append(tuple(_index(value, "explicit mode") for value in mode))
            object.__setattr__(self, "modes", tuple(modes))
        if self.kind in ("intersection", "union"):
            if len(self.parts) < 2 or not all(isinstance(part, Band) for part in self.parts):
                raise ValueError(f"an {self.kind} band needs at least two Band parts")
            object.__setattr__(self, "parts", tuple(self.parts))

    # -- constructors --------------------------------------------------------------------------------
    @classmethod
    def quantile(cls, lower: float, upper: float, name: str = "") -> "Band":
        """Pairs whose alpha rank (per level, over all positions) is in [lower, upper) of the level's count."""
        return cls("quantile", lower=lower, upper=upper, name=name)

    @classmethod
    def frequency(cls, lower: float, upper: float, absolute: bool = False, name: str = "") -> "Band":
        """Pairs by |beta|: rank quantiles in [0, 1], or (absolute=True) |beta| values in [lower, upper)."""
        return cls("frequency", lower=lower, upper=upper, absolute=absolute, name=name)

    @classmethod
    def at_levels(cls, *levels: int, name: str = "") -> "Band":
        if len(levels) == 1 and not hasattr(levels[0], "__index__") and hasattr(levels[0], "__iter__"):
            levels = tuple(levels[0])  # at_levels([0, 2]) or at_levels(range(3))
        return cls("levels", levels=tuple(levels), name=name)

    @classmethod
    def explicit(cls, modes, name: str = "") -> "Band":
        """Given modes: an iterable of (level, pair, y, x)."""
        return cls("explicit", modes=tuple(tuple(mode) for mode in modes), name=name)

    @classmethod
    def all(cls) -> "Band":
        return cls("all", name="all")

    @classmethod
    def named(cls, name: str) -> "Band":
        """One of BAND_NAMES: smallest / intermediate / largest / all and the aliases high, mid, low,
        high_frequency, low_frequency (see the module docstring for the frequency reading)."""
        if not isinstance(name, str):
            raise TypeError(f"band name must be a string, got {type(name).__name__}")
        if name == "all":
            return cls.all()
        canonical = ALIASES.get(name, name)
        if canonical not in NAMED:
            raise ValueError(f"unknown band {name!r}; valid names: {', '.join(BAND_NAMES)} "
                             f"(or a Band / band dict)")
        kind, lower, upper = NAMED[canonical]
        return cls(kind, lower=lower, upper=upper, name=name)

    # -- combination ---------------------------------------------------------------------------------
    def __and__(self, other) -> "Band":
        other = as_band(other)
        return Band("intersection", parts=_flatten("intersection", self, other))

    def __or__(self, other) -> "Band":
        other = as_band(other)
        return Band("union", parts=_flatten("union", self, other))

    # -- serialization -------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """A short human-readable name (used as a dataset coordinate)."""
        if self.name:
            return self.name
        if self.kind in ("quantile", "frequency"):
            unit = "|beta|" if self.kind == "frequency" and self.absolute else ""
            return f"{self.kind}[{self.lower:.3g},{self.upper:.3g}){unit}"
        if self.kind == "levels":
            return "levels" + ",".join(map(str, self.levels))
        if self.kind == "explicit":
            return f"explicit({len(self.modes)} modes)"
        if self.kind in ("intersection", "union"):
            joiner = " & " if self.kind == "intersection" else " | "
            return "(" + joiner.join(part.label for part in self.parts) + ")"
        return self.kind

    def to_dict(self) -> dict:
        data = {"kind": self.kind}
        if self.name:
            data["name"] = self.name
        if self.kind in ("quantile", "frequency"):
            data.update(lower=self.lower, upper=self.upper)
            if self.kind == "frequency":
                data["absolute"] = self.absolute
        elif self.kind == "levels":
            data["levels"] = list(self.levels)
        elif self.kind == "explicit":
            data["modes"] = [list(mode) for mode in self.modes]
        elif self.kind in ("intersection", "union"):
            data["parts"] = [part.to_dict() for part in self.parts]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Band":
        if not isinstance(data, dict) or "kind" not in data:
            raise ValueError(f"a band dict needs a 'kind' key, got {data!r}")
        data = dict(data)
        kind = data.pop("kind")
        known = {"name", "lower", "upper", "absolute", "levels", "modes", "parts"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown band dict keys {sorted(unknown)}; known: {sorted(known | {'kind'})}")
        if "levels" in data:
            data["levels"] = tuple(data["levels"])
        if "modes" in data:
            data["modes"] = tuple(tuple(mode) for mode in data["modes"])
        if "parts" in data:
            data["parts"] = tuple(cls.from_dict(part) for part in data["parts"])
        return cls(kind, **data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Band":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"band JSON is not valid JSON ({error}): {text!r}") from None
        return cls.from_dict(data)


def _index(value, what: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be integers, got {value!r}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{what} must be non-negative, got {value}")
    return value


def _flatten(kind: str, *bands: Band) -> tuple:
    parts = []
    for band in bands:
        parts.extend(band.parts if band.kind == kind else (band,))
    return tuple(parts)


def as_band(band) -> Band:
    """A Band from a Band, a name (see BAND_NAMES), a band dict or its JSON string."""
    if isinstance(band, Band):
        return band
    if isinstance(band, dict):
        return Band.from_dict(band)
    if isinstance(band, str):
        if band.lstrip().startswith("{"):
            return Band.from_json(band)
        return Band.named(band)
    raise TypeError(f"band must be a Band, a band name ({', '.join(BAND_NAMES)}), a band dict or JSON, "
                    f"got {type(band).__name__}")


# -- the aliases as one model reads them ------------------------------------------------------------
ALIASES_META_KEY = "band_aliases"  # meta.json: {"high": ..., "mid": ..., "low": ..., + the measurement}
FREQUENCY_ALIASES = ("high", "mid", "low")


def recorded_aliases(model):
    """The checkpoint's band-alias record (meta.json's ALIASES_META_KEY, as written), or None."""
    return (getattr(model, "meta", None) or {}).get(ALIASES_META_KEY)


def model_aliases(model) -> dict:
    """The image-frequency aliases as `model` reads them: ALIASES's keys, each mapped to an alpha third.

    A checkpoint trained by this hkdviz records in meta.json which third carries the most, the middle and
    the least decoded high-frequency power (`edit_metrics.measure_band_aliases`, at the end of training);
    "high"/"high_frequency", "mid" and "low"/"low_frequency" then follow that measurement. A checkpoint
    without it (or a model not loaded from one) reads ALIASES, measured on the shipped checkpoints."""
    measured = recorded_aliases(model)
    if measured is None:
        return dict(ALIASES)
    if (not isinstance(measured, dict) or not set(FREQUENCY_ALIASES) <= set(measured)
            or sorted(str(measured[alias]) for alias in FREQUENCY_ALIASES) != sorted(NAMED)):
        where = getattr(model, "checkpoint_path", None)
        raise ValueError(f"{where + '/meta.json: ' if where else ''}{ALIASES_META_KEY!r} must map high, mid and "
                         f"low to the three alpha thirds ({', '.join(NAMED)}), each once; got {measured!r}")
    return {"high_frequency": measured["high"], "high": measured["high"], "mid": measured["mid"],
            "low_frequency": measured["low"], "low": measured["low"]}


def describe_aliases(model) -> str:
    """One line: which alpha third "high", "mid" and "low" name on `model`, where that comes from, and
    which of the recorded margins are within two standard errors (a tie: name the thirds instead). A
    malformed record is described, not raised (meta.json is hand-editable)."""
    try:
        aliases = model_aliases(model)
    except ValueError as error:
        return f"(unreadable band_aliases in meta.json: {error})"
    record = recorded_aliases(model)
    source = "measured when trained" if record else "not recorded: hkdviz's table, measured on the shipped checkpoints"
    ties = []
    for name, (upper, lower) in (("high_over_mid", ("high", "mid")), ("mid_over_low", ("mid", "low"))):
        try:
            difference, error = (float(value) for value in record["margins"][name])
        except (TypeError, KeyError, ValueError):
            continue  # a record without margins (or a hand-edited one): nothing to judge
        if not difference > 2 * error:
            ties.append(f"{upper} and {lower} not separated, {difference:+.3f} +- {error:.3f}")
    if ties:
        source += "; " + "; ".join(ties) + ": name the thirds instead"
    return f"high = {aliases['high']}, mid = {aliases['mid']}, low = {aliases['low']} ({source})"


def band_for_model(model, band) -> Band:
    """`band` (anything as_band takes) with its aliases read for `model` (model_aliases).

    On a model whose measured "low" band is the intermediate third, Band.named("low") becomes that third,
    still labelled "low"; combinations are resolved part by part. Bands given by their bounds, and
    every band on a model that reads the global ALIASES, are returned unchanged. Every analysis that
    takes a model and a band resolves it here, so its masks and its provenance name the same modes."""
    band = as_band(band)
    aliases = model_aliases(model)
    return band if aliases == ALIASES else _realias(band, aliases)


def _realias(band: Band, aliases: dict) -> Band:
    if band.kind in ("intersection", "union"):
        return Band(band.kind, parts=tuple(_realias(part, aliases) for part in band.parts), name=band.name)
    if band.name in ALIASES and band == Band.named(band.name):  # made by name, not by explicit bounds
        kind, lower, upper = NAMED[aliases[band.name]]
        return Band(kind, lower=lower, upper=upper, name=band.name)
    return band


# -- masks -------------------------------------------------------------------------------------------
def _rank_quantile(values: torch.Tensor) -> torch.Tensor:
    """Rank of each element (stable: ties keep flat order) divided by the count, same shape as values."""
    flat = values.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(flat.numel(), device=flat.device)
    return (ranks.to(torch.float64) / flat.numel()).reshape(values.shape)


def _in_range(position: torch.Tensor, lower: float, upper: float, closed_top: bool) -> torch.Tensor:
    keep = position >= lower
    return keep if closed_top else keep & (position < upper)


def _pair_mask(level, info, band: Band) -> torch.Tensor:
    """Boolean keep-mask of shape (d/2, h, w) for one level (channel pairs k, k + d/2)."""
    pairs, height, width = info.channels // 2, info.height, info.width
    device = next(iter(level.parameters()), torch.empty(0)).device
    if band.kind == "all":
        return torch.ones(pairs, height, width, dtype=torch.bool, device=device)
    if band.kind == "levels":
        return torch.full((pairs, height, width), info.index in band.levels, dtype=torch.bool, device=device)
    if band.kind == "explicit":
        mask = torch.zeros(pairs, height, width, dtype=torch.bool, device=device)
        modes = [mode for mode in band.modes if mode[0] == info.index]
        if modes:
            index = torch.tensor(modes, device=device)
            bad = (index[:, 1] >= pairs) | (index[:, 2] >= height) | (index[:, 3] >= width)
            if bool(bad.any()):
                mode = tuple(index[bad][0].tolist())
                raise ValueError(f"explicit mode {mode} is out of range for level {info.index} "
                                 f"({pairs} pairs, {height}x{width} positions)")
            mask[index[:, 1], index[:, 2], index[:, 3]] = True
        return mask
    if band.kind in ("intersection", "union"):
        masks = [_pair_mask(level, info, part) for part in band.parts]
        combined = masks[0]
        for mask in masks[1:]:
            combined = combined & mask if band.kind == "intersection" else combined | mask
        return combined
    # Spectral kinds.
    if info.operator == "identity":
        return torch.zeros(pairs, height, width, dtype=torch.bool, device=device)
    if info.operator not in BLOCK_OPERATORS:
        raise ValueError(f"band kind {band.kind!r} needs block Koopman levels; level {info.index} ({info.name}) "
                         f"is {info.operator!r}, whose modes are not channel pairs")
    with torch.no_grad():
        if band.kind == "quantile":
            return _in_range(_rank_quantile(level.alpha.detach()), band.lower, band.upper, band.upper >= 1.0)
        magnitude = level.beta.detach().abs()
        if band.absolute:
            return _in_range(magnitude.to(torch.float64), band.lower, band.upper, False)
        return _in_range(_rank_quantile(magnitude), band.lower, band.upper, band.upper >= 1.0)


def band_masks(model, band, device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """Per-level masks [d_l, h_l, w_l] (1 = keep) for `band` (a Band, name, dict or JSON).

    Each pair's value is written to both of its channels (k and k + d/2). Built with vectorised
    sorts per level, no loops over modes. Aliases ("high", "low", ...) are read for this model
    (band_for_model).
    """
    band = band_for_model(model, band)
    masks = []
    for level, info in zip(model.koopman, model.levels):
        if info.channels % 2:
            if band.kind == "all" or (band.kind == "levels" and info.index in band.levels):
                keep = torch.ones(info.channels, info.height, info.width, dtype=torch.bool)
            elif band.kind == "levels":
                keep = torch.zeros(info.channels, info.height, info.width, dtype=torch.bool)
            else:
                raise ValueError(f"level {info.index} ({info.name}) has an odd channel count {info.channels}: "
                                 f"it has no channel pairs, so band {band.label!r} cannot select modes there")
        else:
            pair = _pair_mask(level, info, band)
            keep = torch.cat([pair, pair], dim=0)
        masks.append(keep.to(device=device if device is not None else model.device, dtype=dtype))
    return masks


# -- regions -----------------------------------------------------------------------------------------
REGIONS = ("lower-left", "upper-right", "lower", "upper", "left", "right", "all")


def region_mask(region, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """An image-space region mask [height, width] with values in [0, 1].

    Named regions (y grows downwards):
    - "lower-left": the paper's "lower-left half", the triangle below the main diagonal (the line from
      the top-left to the bottom-right corner): 1 where y > x, 0.5 on the diagonal, 0 above, so it
      covers exactly half the area (for square images). "upper-right" is its complement.
    - "lower" / "upper": bottom / top half of the rows; "left" / "right": left / right half of the
      columns; "all": everything.
    A tensor [height, width] (bool, or float in [0, 1]) is used as given.
    """
    if isinstance(region, str):
        rows = torch.arange(height, dtype=torch.float64).reshape(-1, 1).expand(height, width)
        cols = torch.arange(width, dtype=torch.float64).reshape(1, -1).expand(height, width)
        # Pixel-centre coordinates scaled to [0, 1] so non-square images split along their diagonal.
        y = (rows + 0.5) / height
        x = (cols + 0.5) / width
        if region == "lower-left":
            mask = (y > x).double() + 0.5 * (y == x).double()
        elif region == "upper-right":
            mask = (y < x).double() + 0.5 * (y == x).double()
        elif region == "lower":
            mask = (y > 0.5).double()
        elif region == "upper":
            mask = (y < 0.5).double()
        elif region == "left":
            mask = (x < 0.5).double()
        elif region == "right":
            mask = (x > 0.5).double()
        elif region == "all":
            mask = torch.ones(height, width, dtype=torch.float64)
        else:
            raise ValueError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)} or pass a "
                             f"[{height}, {width}] mask tensor")
        return mask.to(device=device, dtype=dtype)
    if not isinstance(region, torch.Tensor):
        raise TypeError(f"region must be a region name ({', '.join(REGIONS)}) or a [{height}, {width}] tensor, "
                        f"got {type(region).__name__}")
    if region.dtype != torch.bool and not region.is_floating_point():
        raise TypeError(f"region mask must be bool or floating point, got {region.dtype}")
    if tuple(region.shape) != (height, width):
        raise ValueError(f"region mask must have shape [{height}, {width}] (the image size), got {tuple(region.shape)}")
    region = region.to(dtype=torch.float64)
    if not bool(torch.isfinite(region).all()) or float(region.min()) < 0 or float(region.max()) > 1:
        raise ValueError("region mask values must lie in [0, 1]")
    return region.to(device=device, dtype=dtype)


def region_masks(model, region, device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """The region mask resized to every level, [1, h_l, w_l] each, by area averaging (a level position
    gets the fraction of its image footprint inside the region)."""
    _, height, width = model.image_shape
    image = region_mask(region, height, width, dtype=torch.float64)
    device = device if device is not None else model.device
    masks = []
    for info in model.levels:
        resized = torch.nn.functional.interpolate(image[None, None], size=(info.height, info.width), mode="area")
        masks.append(resized[0].to(device=device, dtype=dtype))
    return masks


def selection_masks(model, band="all", region="all", device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """Band mask x resized region mask per level, [d_l, h_l, w_l], values in [0, 1]."""
    bands = band_masks(model, band, device=device, dtype=dtype)
    if isinstance(region, str) and region == "all":
        return bands
    return [mask * spatial for mask, spatial in zip(bands, region_masks(model, region, device=device, dtype=dtype))]


def kept_fraction(masks: list[torch.Tensor]) -> list[float]:
    """Fraction of modes each level's mask keeps."""
    return [float(mask.float().mean()) for mask in masks]


__all__ = ["Band", "BAND_NAMES", "NAMED", "ALIASES", "REGIONS", "as_band", "band_masks", "region_mask",
           "model_aliases", "recorded_aliases", "describe_aliases", "band_for_model", "ALIASES_META_KEY",
           "region_masks", "selection_masks", "kept_fraction"]
