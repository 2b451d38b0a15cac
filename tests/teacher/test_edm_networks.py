"""Every NVlabs/edm network kind as a teacher: architectures, preconditionings, import, checkpoints.

Known answers: the layers' FIR resampling on constant and [1, 1] inputs; each network against an
independent evaluation of EDM's definition (edm_reference.py); the preconditioning formulas of
Karras et al. 2022, Table 1, computed by hand from the raw network; VP's sigma(t) round trip and
iDDPM's u grid. Pickles are written the way EDM's training loop writes them (edm_pickles.py).
"""
import math
import sys
import time

import pytest
import torch
from torch.nn import functional as F

import edm_reference
from edm_pickles import network_pickle
from hkdviz.model.unet import SongUNet as DDPMSongUNet
from hkdviz.teacher.edm import EDMPrecond
from hkdviz.teacher.edm_import import EDMImportError, import_edm_pickle
from hkdviz.teacher.teacher import import_edm_teacher
from hkdviz.teacher.networks import (EDM_NETWORK_KEY, DhariwalUNet, EDMPreconditioning, IDDPMPreconditioning,
                                     NetworkSpecError, SongUNet, VEPreconditioning, VPPreconditioning, build_checked,
                                     iddpm_noise_levels)
from hkdviz.teacher.networks.layers import Conv2d
from hkdviz.teacher.sampler import karras_grid
from hkdviz.teacher.teacher import Teacher, load_teacher

pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: tiny models run on one thread

RESOLUTION = 16
SONG = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0)
NCSNPP = dict(SONG, embedding_type="fourier", channel_mult_noise=2, encoder_type="residual", resample_filter=[1, 3, 3, 1])
NCSNPP_SKIP = dict(NCSNPP, encoder_type="skip", decoder_type="skip")
# 128 channels at 8x8: ADM's attention there has two heads of 64 channels.
ADM = dict(model_channels=32, channel_mult=[1, 4], num_blocks=1, attn_resolutions=[8], dropout=0.0)

# name -> (preconditioning class, model_type, network arguments, label_dim)
KINDS = {
    "VP + DDPM++": (VPPreconditioning, "SongUNet", SONG, 0),
    "VE + NCSN++": (VEPreconditioning, "SongUNet", NCSNPP, 0),
    "VE + NCSN++ skip/skip": (VEPreconditioning, "SongUNet", NCSNPP_SKIP, 0),
    "EDM + NCSN++": (EDMPreconditioning, "SongUNet", NCSNPP, 0),
    "EDM + ADM (class-conditional)": (EDMPreconditioning, "DhariwalUNet", ADM, 5),
    "iDDPM + ADM (class-conditional)": (IDDPMPreconditioning, "DhariwalUNet", ADM, 5),
}


def perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (EDM zero-initialises output layers, which would hide errors);
    derived buffers (resampling filters, iDDPM's u grid) keep their values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            scale = 0.3 if parameter.ndim > 1 else 0.2
            noise = torch.randn(parameter.shape, generator=generator) / max(1, parameter[0].numel()) ** 0.25
            parameter.copy_(parameter + scale * noise)
    return module.eval().requires_grad_(False)


def make(kind: str, seed: int = 0):
    cls, model_type, model_kwargs, label_dim = KINDS[kind]
    torch.manual_seed(seed)
    return perturbed(cls(RESOLUTION, 3, label_dim, model_type=model_type, **model_kwargs), seed)


def inputs(label_dim: int, batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, RESOLUTION, RESOLUTION, generator=generator, dtype=torch.float64)
    labels = torch.eye(label_dim, dtype=torch.float64)[torch.arange(batch) % label_dim] if label_dim else None
    return x, labels


def reference_network(model_type, state, model_kwargs, x, noise, labels, label_dim, out_channels):
    state = {name: tensor.to(torch.float64) for name, tensor in state.items()}
    kwargs = dict(model_kwargs, img_resolution=RESOLUTION, label_dim=label_dim)
    function = edm_reference.song_unet if model_type == "SongUNet" else edm_reference.dhariwal_unet
    output = function(state, kwargs, x, noise.to(torch.float64), labels)
    assert output.shape[1] == out_channels
    return output


def hand_preconditioned(denoiser, x, sigma: float, labels):
    """Karras et al. 2022, Table 1, by hand, around the reference evaluation of the raw network."""
    name = denoiser.edm_name
    if name == "VEPrecond":
        c_skip, c_out, c_in, c_noise = 1.0, sigma, 1.0, math.log(0.5 * sigma)
    elif name == "VPPrecond":
        beta_d, beta_min, M = 19.9, 0.1, 1000
        t = (math.sqrt(beta_min ** 2 + 2 * beta_d * math.log(1 + sigma ** 2)) - beta_min) / beta_d
        c_skip, c_out, c_in, c_noise = 1.0, -sigma, 1 / math.sqrt(sigma ** 2 + 1), (M - 1) * t
    elif name == "iDDPMPrecond":
        u = denoiser.u.double()
        index = int((u - sigma).abs().argmin())
        c_skip, c_out, c_in, c_noise = 1.0, -sigma, 1 / math.sqrt(sigma ** 2 + 1), 999 - index
    else:
        sd = 0.5
        c_skip, c_out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / math.sqrt(sigma ** 2 + sd ** 2)
        c_in, c_noise = 1 / math.sqrt(sigma ** 2 + sd ** 2), math.log(sigma) / 4
    state = {name[len("model."):]: tensor for name, tensor in denoiser.state_dict().items() if name.startswith("model.")}
    noise = torch.full((x.shape[0],), float(c_noise))
    raw = reference_network(denoiser.model_type, state, denoiser.model_kwargs, c_in * x, noise, labels,
                            denoiser.label_dim, 3 * denoiser.output_factor)
    return c_skip * x + c_out * raw[:, :3]


# -- layers ---------------------------------------------------------------------------------------
def test_fir_resampling_known_answers():
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    down = Conv2d(2, 2, kernel=0, down=True, resample_filter=[1, 1])
    up = Conv2d(2, 2, kernel=0, up=True, resample_filter=[1, 1])
    assert torch.allclose(down(x), F.avg_pool2d(x, 2), atol=1e-6)  # [1, 1]: 2x2 average ...
    assert torch.allclose(up(x), F.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-6)  # ... and nearest
    constant = torch.full((1, 1, 8, 8), 3.0)
    fir_down = Conv2d(1, 1, kernel=0, down=True, resample_filter=[1, 3, 3, 1])
    fir_up = Conv2d(1, 1, kernel=0, up=True, resample_filter=[1, 3, 3, 1])
    assert torch.allclose(fir_down(constant)[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 3.0))  # the filter sums to 1
    assert torch.allclose(fir_up(constant)[..., 1:-1, 1:-1], torch.full((1, 1, 14, 14), 3.0))  # mean kept when up-sampling
    assert fir_down.resample_filter.shape == (1, 1, 4, 4)
    assert torch.allclose(fir_down.resample_filter[0, 0, 0], torch.tensor([1, 3, 3, 1]) / 64)
    for layer, function in ((fir_down, edm_reference.fir_down), (fir_up, edm_reference.fir_up)):
        assert torch.allclose(layer(x[:, :1]).double(), function(x[:, :1].double(), [1, 3, 3, 1]), atol=1e-6)


def test_ddpmpp_song_unet_equals_hkdviz_own():
    torch.manual_seed(0)
    own = perturbed(DDPMSongUNet(img_resolution=RESOLUTION, in_channels=3, out_channels=3, **SONG), 1)
    general = SongUNet(img_resolution=RESOLUTION, in_channels=3, out_channels=3, **SONG).eval()
    result = general.load_state_dict(own.state_dict(), strict=False)
    assert not result.unexpected_keys and all(name.endswith("resample_filter") for name in result.missing_keys)
    x, noise = torch.randn(2, 3, RESOLUTION, RESOLUTION), torch.tensor([0.3, -1.2])
    assert torch.allclose(general(x, noise), own(x, noise), atol=1e-5)


@pytest.mark.parametrize("model_type, model_kwargs, label_dim", [
    ("SongUNet", SONG, 0), ("SongUNet", NCSNPP, 0), ("SongUNet", NCSNPP_SKIP, 3), ("DhariwalUNet", ADM, 5)],
    ids=["DDPM++", "NCSN++", "NCSN++ skip/skip, labels", "ADM, labels"])
def test_networks_match_the_reference_evaluation(model_type, model_kwargs, label_dim):
    torch.manual_seed(2)
    cls = SongUNet if model_type == "SongUNet" else DhariwalUNet
    network = perturbed(cls(img_resolution=RESOLUTION, in_channels=3, out_channels=3, label_dim=label_dim,
                            **model_kwargs), 3).double()
    x, labels = inputs(label_dim)
    noise = torch.tensor([0.7, -2.1], dtype=torch.float64)
    ours = network(x, noise, labels)
    reference = reference_network(model_type, network.state_dict(), model_kwargs, x, noise, labels, label_dim, 3)
    assert ours.abs().mean() > 0.05  # the perturbed weights make every path count
    # (float64 everywhere except the noise embedding and attention softmax, which EDM computes in float32)
    assert torch.allclose(ours, reference, atol=2e-5, rtol=1e-5), float((ours - reference).abs().max())


def test_adm_at_edm_size_has_edm_parameter_count():
    with torch.device("meta"):  # shapes only
        network = DhariwalUNet(img_resolution=64, in_channels=3, out_channels=3, label_dim=1000)
    # EDM's paper, Table 7: ADM (ImageNet-64) has 296M parameters; its attention uses 64-channel heads.
    assert round(sum(parameter.numel() for parameter in network.parameters()) / 1e6) == 296
    assert network.dec["8x8_in0"].num_heads == 768 // 64 and network.enc["64x64_block0"].num_heads == 0


# -- preconditionings -----------------------------------------------------------------------------
def test_ve_coefficients():
    ve = VEPreconditioning(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    sigma = torch.tensor([0.02, 1.0, 80.0]).reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = ve.coefficients(sigma)
    assert c_skip == 1 and c_in == 1 and torch.equal(c_out, sigma)
    assert torch.allclose(c_noise.flatten(), torch.log(torch.tensor([0.01, 0.5, 40.0])))
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
    assert ve.config["diffusion"]["sigma_min"] == 0.02 and ve.config["diffusion"]["sigma_max"] == 80.0


def test_vp_sigma_and_its_inverse():
    vp = VPPreconditioning(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(vp.sigma_inv(vp.sigma(t)), t, rtol=1e-9)
    assert math.isclose(vp.sigma_max, math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1), rel_tol=1e-12)
    assert math.isclose(vp.sigma_min, math.sqrt(math.exp(0.5 * 19.9e-10 + 1e-6) - 1), rel_tol=1e-9)
    sigma = torch.tensor([0.5], dtype=torch.float64).reshape(1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = vp.coefficients(sigma)
    assert c_skip == 1 and float(c_out) == -0.5 and math.isclose(float(c_in), 1 / math.sqrt(1.25))
    assert math.isclose(float(c_noise), 999 * float(vp.sigma_inv(torch.tensor(0.5, dtype=torch.float64))))


def test_iddpm_grid_and_round_sigma():
    u = iddpm_noise_levels()
    assert u.shape == (1001,) and u[1000] == 0 and bool((u[1:] < u[:-1]).all())
    # The first step from u_M = 0: u_{M-1} = sqrt(1 / max(alpha_bar(M-1) / alpha_bar(M), C_1) - 1).
    alpha = lambda j: math.sin(0.5 * math.pi * j / 1000 / 1.008) ** 2  # noqa: E731
    # (EDM computes the grid in float32, where alpha_bar's ratio - 1 ~ 4e-5 keeps three digits or so)
    assert math.isclose(float(u[999]), math.sqrt(alpha(1000) / alpha(999) - 1), rel_tol=2e-3)
    iddpm = IDDPMPreconditioning(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    assert torch.equal(iddpm.u, u) and iddpm.sigma_min == float(u[999]) and iddpm.sigma_max == float(u[0])
    index = torch.tensor([10, 200, 500, 900])
    grid = u[index]
    # 30% of the way towards the larger / the smaller neighbour: still nearest to the grid value.
    off_grid = grid + 0.3 * torch.stack([u[index - 1] - grid, u[index + 1] - grid])[torch.tensor([0, 1, 0, 1]), torch.arange(4)]
    assert torch.equal(iddpm.round_sigma(off_grid), grid)
    assert iddpm.round_sigma(off_grid, return_index=True).tolist() == [10, 200, 500, 900]
    _, _, _, c_noise = iddpm.coefficients(off_grid.reshape(-1, 1, 1, 1))
    assert c_noise.flatten().tolist() == [989, 799, 499, 99]  # M - 1 - j


def test_iddpm_teacher_samples_on_its_noise_levels():
    iddpm = IDDPMPreconditioning(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    teacher = Teacher(iddpm)
    u = iddpm.u.double()
    # EDM's sampler range [0.002, 80] clipped to iDDPM's [u_999, u_0] and snapped onto the levels.
    assert teacher.sigma_min == float(u[999]) and teacher.sigma_max == float(u[(u - 80).abs().argmin()])
    grid = teacher.grid(18)
    assert grid.dtype == torch.float64 and all(bool((u == value).any()) for value in grid)
    assert bool((grid[1:] < grid[:-1]).all()) and float(grid[0]) == teacher.sigma_max
    with pytest.raises(ValueError, match="400 steps are finer than iDDPM's 1000 noise levels"):
        teacher.grid(400)
    ve = Teacher(VEPreconditioning(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[]))
    assert torch.equal(ve.grid(18), karras_grid(18, 0.02, 80.0))  # other teachers: the plain Karras grid


@pytest.mark.parametrize("kind", list(KINDS))
def test_preconditioned_denoiser_follows_the_formulas(kind):
    denoiser = make(kind).double()
    x, labels = inputs(denoiser.label_dim)
    for sigma in (0.05, 1.3, 30.0):
        expected = hand_preconditioned(denoiser, x * sigma, sigma, labels)
        ours = denoiser(x * sigma, sigma, labels)  # (float32 noise embedding: c_out times ~1e-6 errors)
        assert torch.allclose(ours, expected, atol=5e-5 * max(1.0, sigma), rtol=1e-5), float((ours - expected).abs().max())


# -- import ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pickles(tmp_path_factory):
    """(denoiser, pickle path) per kind: each written the way EDM's training loop does."""
    directory = tmp_path_factory.mktemp("edm-pickles")
    written = {}
    for index, kind in enumerate(KINDS):
        denoiser = make(kind, seed=index)
        # Protocol 2 for one kind, 4 for the rest; one pickled as plain training.networks instances.
        path = network_pickle(denoiser, directory / f"kind{index}.pkl", protocol=2 if index == 1 else 4,
                              plain=(index == 2))
        written[kind] = (denoiser, path)
    return written


@pytest.mark.parametrize("kind", list(KINDS))
def test_import_gives_the_architecture_s_outputs(pickles, kind):
    original, path = pickles[kind]
    imported = import_edm_pickle(path)
    assert "torch_utils" not in sys.modules and "training.networks" not in sys.modules
    assert type(imported) is type(original) and imported.describe() == original.describe()
    assert imported.network_spec() == original.network_spec()
    assert imported.meta["edm_network"] == original.describe() and imported.meta["hkd_distillable"] is False
    assert not imported.training
    x, labels = inputs(original.label_dim)
    for sigma in (0.1, 2.0, 60.0):
        expected = hand_preconditioned(original.double(), x * sigma, sigma, labels)
        ours = imported(x.float() * sigma, sigma, None if labels is None else labels.float())
        assert torch.allclose(ours.double(), expected, atol=2e-4 * max(1.0, sigma), rtol=1e-4)


def test_teacher_checkpoint_round_trip_and_pickle_as_teacher(pickles, tmp_path):
    original, path = pickles["VE + NCSN++"]
    teacher = load_teacher(str(path), device="cpu")  # a pickle where a checkpoint directory is expected
    assert isinstance(teacher.denoiser, VEPreconditioning) and teacher.checkpoint_sha256
    assert (teacher.sigma_min, teacher.sigma_max) == (0.02, 80.0)  # EDM's sampler range clipped to VE's
    teacher.save(tmp_path / "ve")
    config = (tmp_path / "ve" / "config.json").read_text()
    assert EDM_NETWORK_KEY in config and "VEPrecond" in config and "Infinity" not in config
    loaded = load_teacher(tmp_path / "ve", device="cpu")
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    assert torch.equal(loaded(x, 3.0), teacher(x, 3.0))
    assert loaded.meta["source_sha256"] == teacher.checkpoint_sha256
    samples = loaded.sample([0, 1], num_steps=3, progress=False)
    assert samples.shape == (2, 3, RESOLUTION, RESOLUTION) and bool(torch.isfinite(samples).all())
    # EDMPrecond's unbounded range (0, inf) is left out of config.json (JSON has no inf) and comes back.
    adm = import_edm_teacher(pickles["EDM + ADM (class-conditional)"][1])
    adm.save(tmp_path / "adm")
    assert "Infinity" not in (tmp_path / "adm" / "config.json").read_text()
    reloaded = load_teacher(tmp_path / "adm", device="cpu")
    assert reloaded.denoiser.sigma_max == math.inf and reloaded.denoiser.sigma_min == 0
    labels = torch.eye(5)[[1, 4]]
    assert torch.equal(reloaded(x, 0.5, labels), adm(x, 0.5, labels))


def test_class_conditional_teacher_needs_labels(pickles):
    teacher = import_edm_teacher(pickles["iDDPM + ADM (class-conditional)"][1])
    labels = torch.eye(5)[[0, 3]]
    samples = teacher.sample([0, 1], num_steps=2, class_labels=labels, progress=False)
    assert bool(torch.isfinite(samples).all())
    with pytest.raises(ValueError, match=r"class-conditional \(label_dim=5\): pass class_labels"):
        teacher.sample([0], num_steps=2, progress=False)


def test_edm_precond_ddpmpp_still_imports_as_hkdviz_edmprecond(tmp_path):
    denoiser = make("VP + DDPM++")
    spec = denoiser.network_spec()
    edm = EDMPreconditioning(RESOLUTION, 3, model_type="SongUNet", **spec["model_kwargs"])
    edm.load_state_dict(denoiser.state_dict())
    imported = import_edm_pickle(network_pickle(edm.eval(), tmp_path / "ddpmpp.pkl"))
    assert isinstance(imported, EDMPrecond) and imported.meta["hkd_distillable"] is True
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    assert torch.allclose(imported(x, 0.8), edm(x, 0.8), atol=1e-5)


def test_embedded_source_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = network_pickle(make("VE + NCSN++"), tmp_path / "source.pkl",
                          module_src=f"open({str(marker)!r}, 'w').write('pwned')")
    import_edm_pickle(path)
    assert not marker.exists()


# -- hostile or inconsistent pickles ----------------------------------------------------------------
def _network(data):
    return data["ema"].state["_modules"]["model"]


def _self_containing(data):
    network = _network(data)
    network.state["_modules"]["map_layer0"].state["_modules"]["loop"] = network


def _self_containing_list(data):
    nested = []
    nested.append(nested)
    _network(data).state["_init_kwargs"]["channel_mult"] = nested


def _huge(key, value):
    def edit(data):
        _network(data).state["_init_kwargs"][key] = value
    return edit


def _wrong_filter(data):
    block = _network(data).state["_modules"]["enc"]._modules["8x8_down"]
    block.state["_modules"]["conv0"].state["_buffers"]["resample_filter"] = torch.full((1, 1, 4, 4), 1 / 16)


def _wrong_grid(data):
    data["ema"].state["C_2"] = 0.02  # the stored u grid was computed with 0.008


def _unknown_argument(data):
    _network(data).state["_init_kwargs"]["attention_type"] = "flash"


def _loss_as_network(data):
    data["ema"] = data["loss_fn"]


def _no_sampling_range(data):
    data["ema"].state["sigma_max"] = 0.001  # below EDM's smallest sampled sigma (0.002)


def _filter_not_a_list(data):
    _network(data).state["_init_kwargs"]["resample_filter"] = 4


def _integer_weights(data):
    layer = _network(data).state["_modules"]["map_layer0"]
    layer.state["_parameters"]["weight"] = torch.zeros(layer.state["_parameters"]["weight"].shape, dtype=torch.int64)


@pytest.mark.parametrize("kind, edit, message", [
    ("VE + NCSN++", _self_containing, r"module map_layer0\.loop appears twice"),
    ("VE + NCSN++", _self_containing_list, r"channel_mult is nested more than 32 deep \(or contains itself\)"),
    ("VE + NCSN++", _huge("num_blocks", 10 ** 9), r"asks for \d+ U-Net blocks"),
    ("VE + NCSN++", _huge("model_channels", 10 ** 7), r"do not match the described network: mis-shaped"),
    ("VE + NCSN++", _huge("model_channels", "wide"), "argument model_channels must be a non-negative integer"),
    ("VE + NCSN++", _unknown_argument, r"SongUNet takes no argument\(s\) \['attention_type'\]"),
    ("VE + NCSN++", _wrong_filter, r"model\.enc\.8x8_down\.conv0\.resample_filter differs from the one its arguments define"),
    ("VE + NCSN++", _loss_as_network, "EDM's EDMLoss; supported are"),
    ("VE + NCSN++", _integer_weights, r"map_layer0\.weight has dtype torch\.int64"),
    ("VE + NCSN++", _no_sampling_range, r"VEPrecond settings give no usable sampling range \(need 0 < sigma_min"),
    ("VE + NCSN++", _filter_not_a_list, "argument resample_filter must be a short list of numbers, got 4"),
    ("iDDPM + ADM (class-conditional)", _wrong_grid, r"\bu differs from the one its arguments define"),
    ("iDDPM + ADM (class-conditional)", _huge("num_blocks", 2), r"do not match the described network: missing \[.model\.dec"),
])
def test_hostile_or_inconsistent_pickles_are_refused_before_building(tmp_path, kind, edit, message):
    path = network_pickle(make(kind), tmp_path / "odd.pkl", edit=edit)
    started = time.perf_counter()
    with pytest.raises(EDMImportError, match=message) as error:
        import_edm_pickle(path)
    assert str(path) in str(error.value)
    assert time.perf_counter() - started < 20  # refused from shapes, not after allocating 10^7-channel layers


def test_iddpm_m_that_does_not_fit_the_grid_is_refused_before_computing_it(tmp_path):
    def edit(data):
        data["ema"].state["M"] = 10 ** 9  # computing u would loop 10^9 times
    path = network_pickle(make("iDDPM + ADM (class-conditional)"), tmp_path / "m.pkl", edit=edit)
    with pytest.raises(EDMImportError, match=r"M = 1000000000 does not fit the stored u grid \(1001 values"):
        import_edm_pickle(path)


def test_checkpoint_descriptions_are_checked_too(pickles, tmp_path):
    denoiser = make("VE + NCSN++")
    state = denoiser.state_dict()
    spec = denoiser.network_spec()
    with pytest.raises(NetworkSpecError, match=r"there: precond 'XPrecond' is not one of EDM's"):
        build_checked({**spec, "precond": "XPrecond"}, state, "there")
    wide = {**spec, "model_kwargs": {**spec["model_kwargs"], "model_channels": 4096}}
    with pytest.raises(NetworkSpecError, match=r"there: the weights do not match the described network: mis-shaped"):
        build_checked(wide, state, "there")
    rebuilt = build_checked(spec, state, "there")
    x = torch.randn(1, 3, RESOLUTION, RESOLUTION)
    assert torch.equal(rebuilt(x, 1.0), denoiser(x, 1.0))


def test_plain_instances_by_module_path_at_protocol_zero(tmp_path):
    # Without EDM's persistence the classes are named by module path (training.networks.VEPrecond, ...);
    # protocol 0 builds them through copyreg._reconstructor. Both map onto inert records.
    path = network_pickle(make("VE + NCSN++"), tmp_path / "p0.pkl", protocol=0, plain=True)
    raw = path.read_bytes()
    assert b"training.networks" in raw and b"copy_reg" in raw and b"_reconstruct_persistent_obj" not in raw
    assert isinstance(import_edm_pickle(path), VEPreconditioning)


def test_imported_network_checkpoint_with_nan_weights_is_refused(pickles, tmp_path):
    """An imported network's teacher checkpoint loads through the same checked path as every kind
    (checkpoint.load_checkpoint): a NaN in its weights is refused by name, as for HKD and EDMPrecond."""
    import json

    from safetensors.torch import load_file, save_file

    from hkdviz.checkpoint import CheckpointError, file_sha256

    load_teacher(str(pickles["VE + NCSN++"][1]), device="cpu").save(tmp_path / "ve")
    weights = tmp_path / "ve" / "model.safetensors"
    state = load_file(str(weights))
    name = sorted(name for name, tensor in state.items() if tensor.is_floating_point())[-1]
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    meta = json.loads((tmp_path / "ve" / "meta.json").read_text())
    meta["weights_sha256"] = file_sha256(weights)  # the hash in step: only the value check may object
    (tmp_path / "ve" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"weights hold NaN or inf in \\[{name}\\]"):
        load_teacher(tmp_path / "ve", device="cpu")
