"""Bad values at the public API: each must end in a clear error naming the argument, key or level; and the
checks must leave normal outputs unchanged bit for bit. (CLI failures: test_cli_errors.py.)"""
import math

import numpy as np
import pytest
import torch

import hkdviz
from hkdviz.analysis.editing import EditSession, editing_sweep, frequency_edit, gain_edit
from hkdviz.analysis.interventions import Gain, Mix, PhaseRotation, spectral_masking
from hkdviz.checkpoint import CheckpointError, check_dtype, resolve_device
from hkdviz.model import ConfigError
from hkdviz.model.hkd import LATENT_LIMIT, check_output_memory, check_seeds
from hkdviz.train.presets import PresetError, resolve_training_config

pytestmark = pytest.mark.usefixtures("single_thread")


@torch.no_grad()
def latents_of(model, seeds=(0,)):
    return model.encode(model.noise(list(seeds)), model.sigma_max)


# -- model config: (override, message) ---------------------------------------------------------------
CONFIG_CASES = [
    ({"diffusion": {"decoder_sigma": -1}}, "diffusion.decoder_sigma must be positive, got -1"),
    ({"diffusion": {"sigma_max": math.inf}}, "diffusion.sigma_max must be finite, got inf"),
    ({"diffusion": {"sigma_max": math.nan}}, "diffusion.sigma_max must be finite, got nan"),
    ({"diffusion": {"sigma_data": 0}}, "diffusion.sigma_data must be positive, got 0"),
    ({"diffusion": {"sigma_min": "0.002"}}, "diffusion.sigma_min must be a number, got '0.002'"),
    ({"unet": {"channel_mult": []}}, "unet.channel_mult must be a non-empty list of integers, got []"),
    ({"unet": {"channel_mult": [1, 0]}}, "unet.channel_mult must hold integers >= 1, got 0"),
    ({"unet": {"channel_mult": [1, 2.0]}}, "unet.channel_mult must hold integers >= 1, got 2.0"),
    ({"unet": {"channel_mult": "12"}}, "unet.channel_mult must be a non-empty list"),
    ({"unet": {"img_resolution": 0}}, "unet.img_resolution must lie in [1, 4096], got 0"),
    ({"unet": {"img_resolution": -32}}, "unet.img_resolution must lie in [1, 4096], got -32"),
    ({"unet": {"img_resolution": 32.0}}, "unet.img_resolution must be an integer, got 32.0"),
    ({"unet": {"dropout": "x"}}, "unet.dropout must be a number, got 'x'"),
    ({"unet": {"dropout": 1.0}}, "unet.dropout and unet.label_dropout must lie in [0, 1)"),
    ({"unet": {"dropout": -0.1}}, "unet.dropout must lie in [0.0, 1.0], got -0.1"),
    ({"unet": {"num_blocks": 0}}, "unet.num_blocks must lie in [1, 64], got 0"),
    ({"unet": {"model_channels": 24.5}}, "unet.model_channels must be an integer, got 24.5"),
    ({"unet": {"model_channels": True}}, "unet.model_channels must be an integer, got True"),
    ({"unet": {"attn_resolutions": [8, "16"]}}, "unet.attn_resolutions must hold integers >= 1, got '16'"),
    ({"unet": {"embedding_type": "sinusoidal"}}, "unet.embedding_type must be one of 'positional', 'fourier'"),
    ({"koopman": {"operator": True}},
     "koopman.operator must be one of 'block', 'block_shared', 'dense', 'dense_shared', got True"),
    ({"koopman": {"max_exponent": -1}}, "koopman.max_exponent must be positive, got -1"),
    ({"unet": {"bogus": 1}}, "unknown config key 'unet.bogus'"),
]


@pytest.mark.parametrize("override, message", CONFIG_CASES)
def test_bad_model_config_names_the_key_and_value(override, message):
    with pytest.raises(ConfigError) as error:
        hkdviz.build({"preset": "tiny", **override})
    assert message in str(error.value)


# -- training config and --set: (assignment, message) --------------------------------------------------
TRAINING_CASES = [
    ("hkd.lr=NaN", "hkd.lr must be finite, got nan"),
    ("hkd.lr=nan", "hkd.lr must be a number, got 'nan'"),
    ("hkd.lr=0", "hkd.lr must be positive, got 0"),
    ("teacher.lr=-1e-3", "teacher.lr must be positive, got -0.001"),
    ("teacher.batch_size=0", "teacher.batch_size must be a positive integer, got 0"),
    ("teacher.batch_size=null", "teacher.batch_size must be an integer, got None"),
    ("trajectories.batch_size=0", "trajectories.batch_size must be a positive integer, got 0"),
    ("classifier.batch_size=null", "classifier.batch_size must be an integer, got None"),
    ("hkd.steps=-5", "hkd.steps must be a positive integer, got -5"),
    ("hkd.lr_cooldown_steps=-1", "hkd.lr_cooldown_steps must be a non-negative integer, got -1"),
    ('teacher.xflip="yes"', "teacher.xflip must be true or false, got 'yes'"),
    ("hkd.t_consistency=1", "hkd.t_consistency must be true or false, got 1"),
    ("hkd.betas=[0.9]", "hkd.betas must be two numbers in [0, 1), got [0.9]"),
    ("seed=-1", "seed must be in [0, 9223372036854775807], got -1"),
    ("steps_scale=Infinity", "steps_scale must be finite, got inf"),
    ("hkd.dropout=1", "hkd.dropout must lie in [0, 1), got 1"),
    ("trajectories.count=1.5", "trajectories.count must be an integer, got 1.5"),
    ("trajectories.storage_dtype=int8", "trajectories.storage_dtype must be 'float16' or 'float32', got 'int8'"),
    ("hkd.autocast=fp16", "hkd.autocast must be 'bfloat16' or 'float16' or null, got 'fp16'"),
    ('model.unet.dropout="x"', "model config: unet.dropout must be a number, got 'x'"),
    ("model.diffusion.sigma_max=Infinity", "model config: diffusion.sigma_max must be finite, got inf"),
    ("hkd.bogus=1", "unknown config key 'hkd.bogus'"),
    ("hkd.lr", "--set expects key=value"),
]


@pytest.mark.parametrize("assignment, message", TRAINING_CASES)
def test_bad_training_config_names_the_key_and_value(assignment, message):
    with pytest.raises(PresetError) as error:
        resolve_training_config("smoke", None, [assignment])
    assert message in str(error.value)


def test_every_preset_still_passes_the_schema():
    for name in ("smoke", "default", "default-cpu", "cifar10", "ffhq64"):
        resolve_training_config(name)  # raises on any value outside the schema


# -- model API: (call(model), exception type, message) ---------------------------------------------------
API_CASES = [
    ("evolve tau nan", lambda m: m.evolve(latents_of(m), math.nan), ValueError, "tau must be finite, got nan"),
    ("evolve tau inf", lambda m: m.evolve(latents_of(m), math.inf), ValueError, "tau must be finite, got inf"),
    ("evolve tau tensor nan", lambda m: m.evolve(latents_of(m), torch.tensor([[0.0], [math.nan]])), ValueError,
     "tau must be finite"),
    ("evolve tau string", lambda m: m.evolve(latents_of(m), "1"), TypeError, "tau must be a real number"),
    ("evolve tau complex", lambda m: m.evolve(latents_of(m), 1j), TypeError, "tau must be a real number"),
    ("evolve tau [3] for 2 samples", lambda m: m.evolve(latents_of(m, (0, 1)), torch.ones(3)), ValueError,
     "tau of shape (3,) does not broadcast against the latents' leading dims (2,)"),
    ("evolve one tensor", lambda m: m.evolve(latents_of(m)[0], 1.0), TypeError, "latents must be a list of 7 tensors"),
    ("evolve too few", lambda m: m.evolve(latents_of(m)[:-1], 1.0), ValueError, "expected 7 latents (one per level), got 6"),
    ("evolve wrong shape", lambda m: m.evolve([z[:, :2] for z in latents_of(m)], 1.0), ValueError,
     "latent of level 0 (32x32_conv) must have shape [N, 24, 32, 32]"),
    ("decode unbatched", lambda m: m.decode([z[0] for z in latents_of(m)]), ValueError,
     "latent of level 0 (32x32_conv) must have shape [N, 24, 32, 32] (or more leading dims), got (24, 32, 32)"),
    ("decode int latent", lambda m: m.decode([z.long() for z in latents_of(m)]), TypeError,
     "latent of level 0 (32x32_conv) must be floating point, got torch.int64"),
    ("decode mixed leading dims", lambda m: m.decode([latents_of(m)[0][None]] + latents_of(m)[1:]), ValueError,
     "latent of level 1 (32x32_block0) has leading dims (1,), level 0 has (1, 1)"),
    ("decode numpy latent", lambda m: m.decode([z.numpy() for z in latents_of(m)]), TypeError,
     "latent of level 0 (32x32_conv) must be a tensor"),
    ("decode meta latent", lambda m: m.decode([z.to("meta") for z in latents_of(m)]), ValueError,
     "latent of level 0 (32x32_conv) is on meta, the model on cpu"),
    ("encode nan", lambda m: m.encode(torch.full((1, 3, 32, 32), math.nan), 1.0), ValueError,
     "x_t contains NaN or infinite values"),
    ("encode sigma inf", lambda m: m.encode(torch.zeros(1, 3, 32, 32), math.inf), ValueError,
     "sigma must be positive and finite"),
    ("encode sigma 0", lambda m: m(torch.zeros(1, 3, 32, 32), 0.0), ValueError, "sigma must be positive and finite"),
    ("sample batch_size None", lambda m: m.sample([0], batch_size=None), TypeError,
     "batch_size must be a positive integer, got None"),
    ("sample batch_size 0", lambda m: m.sample([0], batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    ("sample batch_size 2.5", lambda m: m.sample([0], batch_size=2.5), TypeError, "batch_size must be a positive integer"),
    ("sample seed 2**64", lambda m: m.sample([2 ** 64]), ValueError, "seeds must be in [0, 2**63), got 18446744073709551616"),
    ("sample seed -1", lambda m: m.sample([-1]), ValueError, "seeds must be in [0, 2**63), got -1"),
    ("sample seed bool", lambda m: m.sample(True), TypeError, "seeds must be an integer or a sequence"),
    ("sample seed list bool", lambda m: m.sample([0, True]), TypeError, "seeds must be integers, got True"),
    ("sample seed float", lambda m: m.sample([1.0]), TypeError, "seeds must be integers, got 1.0"),
    ("sample seed string", lambda m: m.sample("0-3"), TypeError, "seeds must be an integer or a sequence"),
    ("sample empty", lambda m: m.sample([]), ValueError, "seeds is empty"),
    ("sample range negative", lambda m: m.sample(range(-1, 3)), ValueError, "seeds must be in [0, 2**63)"),
    ("sample range too large", lambda m: m.sample(range(10 ** 12)), MemoryError, "1,000,000,000,000 samples"),
    ("sample labels on an unconditional model", lambda m: m.sample([0], class_labels=torch.ones(1, 10)), ValueError,
     "this model is unconditional"),
    ("sample autocast string", lambda m: m.sample([0], autocast_dtype="bfloat16"), ValueError,
     "autocast_dtype must be None, torch.bfloat16 or torch.float16, got 'bfloat16'"),
    ("sample autocast int32", lambda m: m.sample([0], autocast_dtype=torch.int32), ValueError, "autocast_dtype must be"),
    ("Mix other NaN", lambda m: Mix("all", other=[z * math.nan for z in latents_of(m)], ratio=0.5), ValueError,
     "Mix: other latent of level 0 contains NaN or infinite values"),
    ("EditSession reference_seed 2**64", lambda m: EditSession(m, [0], torch.zeros(3, 32, 32), reference_seed=2 ** 64),
     ValueError, "reference_seed must be in [0, 2**63)"),
    ("Gain nan", lambda m: Gain("high", gain=math.nan), ValueError, "gain must be finite, got nan"),
    ("Gain string", lambda m: Gain("high", gain="2"), TypeError, "gain must be a real number, got '2'"),
    ("PhaseRotation inf", lambda m: PhaseRotation("high", angle=math.inf), ValueError, "angle must be finite"),
    ("Mix ratio 1.5", lambda m: Mix("high", other=(), ratio=1.5), ValueError, "ratio must lie in [0, 1], got 1.5"),
    ("Mix ratio nan", lambda m: Mix("high", other=(), ratio=math.nan), ValueError, "ratio must be finite"),
    ("gain_edit nan", lambda m: gain_edit(m, [0], gain=math.nan), ValueError, "gain must be finite, got nan"),
    ("frequency_edit ratio -0.1", lambda m: frequency_edit(m, [0], torch.zeros(3, 32, 32), ratio=-0.1), ValueError,
     "ratio must lie in [0, 1], got -0.1"),
    ("frequency_edit empty reference", lambda m: frequency_edit(m, [0], torch.zeros(0, 3, 32, 32), ratio=0.5),
     ValueError, "reference is empty: shape (0, 3, 32, 32) holds no image"),
    ("frequency_edit nan reference", lambda m: frequency_edit(m, [0], torch.full((3, 32, 32), math.nan), ratio=0.5),
     ValueError, "reference contains NaN or infinite values"),
    ("editing_sweep ratio nan", lambda m: editing_sweep(m, [0], torch.zeros(3, 32, 32), ratios=[0.1, math.nan]),
     ValueError, "ratio must be finite"),
    ("EditSession time nan", lambda m: EditSession(m, [0], torch.zeros(3, 32, 32), time=math.nan), ValueError,
     "time must lie in [eps, T]"),
    ("spectral_masking batch None", lambda m: spectral_masking(m, [0], batch_size=None), TypeError,
     "batch_size must be a positive integer, got None"),
]


@pytest.mark.parametrize("name, call, error_type, message", API_CASES, ids=[case[0] for case in API_CASES])
def test_bad_api_input_is_a_clear_error(tiny_model, name, call, error_type, message):
    with pytest.raises(error_type) as error:
        call(tiny_model)
    assert message in str(error.value), str(error.value)


# -- load arguments -----------------------------------------------------------------------------------
LOAD_CASES = [
    ({"dtype": torch.int64}, ValueError, "dtype must be a floating-point dtype"),
    ({"dtype": "half"}, ValueError, "dtype must be one of float32, float16, bfloat16, float64"),
    ({"dtype": 16}, TypeError, "dtype must be None, a torch.dtype"),
    ({"device": "meta"}, ValueError, "device 'meta' holds no values"),
    ({"device": "gpu"}, ValueError, "device 'gpu' is not a device name"),
    ({"device": 3}, TypeError, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got 3"),
]


@pytest.mark.parametrize("arguments, error_type, message", LOAD_CASES)
def test_bad_load_arguments(tiny_checkpoint, arguments, error_type, message):
    with pytest.raises(error_type) as error:
        hkdviz.load(tiny_checkpoint, **arguments)
    assert message in str(error.value)


def test_load_typo_is_not_found_and_names_the_shipped_ones():
    with pytest.raises(CheckpointError, match="checkpoint 'defualt' not found"):
        hkdviz.load("defualt")


def test_load_accepts_dtype_names(tiny_checkpoint):
    model = hkdviz.load(tiny_checkpoint, device="cpu", dtype="float64")
    assert model.dtype == torch.float64
    assert check_dtype(None) is None and check_dtype("torch.bfloat16") is torch.bfloat16
    assert resolve_device("cpu") == torch.device("cpu")


# -- normal outputs unchanged, overflow saturates ------------------------------------------------------
def test_latent_clamp_leaves_normal_decodes_bit_identical(tiny_model):
    latents = latents_of(tiny_model, range(3))
    decoded = tiny_model.decode(latents)
    sigma = torch.full((3,), tiny_model.decoder_sigma)
    embedding = tiny_model.unet.embed(sigma.log() / 4, None)
    unclamped = tiny_model.unet.decode(latents, embedding)  # the decoder without the clamp
    assert torch.equal(decoded, unclamped)


def test_saturate_passes_normal_latents_through_and_clamps_huge_ones():
    from hkdviz.model.hkd import saturate
    normal = [torch.randn(2, 4, 3, 3), torch.randn(2, 8, 2, 2) * 1e3]
    assert all(out is latent for out, latent in zip(saturate(normal), normal))   # the same tensors, untouched
    huge = [normal[0], torch.full((2, 8, 2, 2), -1e30)]
    clamped = saturate(huge)
    assert torch.equal(clamped[0], normal[0]) and float(clamped[1].min()) == -LATENT_LIMIT
    assert saturate([torch.zeros(0, 4, 3, 3)])[0].shape == (0, 4, 3, 3)


def test_sample_is_unchanged_by_streaming_and_checks(tiny_model):
    seeds = [5, 0, 7, 3, 11]
    together = tiny_model.sample(seeds, batch_size=8, progress=False)
    streamed = tiny_model.sample(seeds, batch_size=2, progress=False)
    single = torch.cat([tiny_model.sample([seed]) for seed in seeds])
    # Batches of another size may pick other convolution kernels: equal up to float rounding.
    torch.testing.assert_close(streamed, together, rtol=0, atol=1e-5)
    torch.testing.assert_close(single, together, rtol=0, atol=1e-5)
    # The pre-check path: the same images through encode / evolve / decode by hand.
    x_T = tiny_model.noise(seeds)
    by_hand = tiny_model(x_T, tiny_model.sigma_max).clamp(-1, 1)
    assert torch.equal(together, by_hand)


def test_sample_shows_progress_only_for_several_batches(tiny_model, capsys):
    tiny_model.sample([0, 1, 2], batch_size=1)
    assert "hkdviz sample" in capsys.readouterr().err
    tiny_model.sample([0, 1, 2], batch_size=1, progress=False)
    tiny_model.sample([0, 1, 2], batch_size=4)
    assert "hkdviz sample" not in capsys.readouterr().err


def test_check_seeds_range_is_checked_from_its_ends():
    assert check_seeds(range(3, 6)) == [3, 4, 5]
    with pytest.raises(ValueError, match=r"2\*\*63"):
        check_seeds(range(2 ** 63 - 1, 2 ** 63 + 1))
    with pytest.raises(MemoryError, match="sample fewer seeds per call"):
        check_output_memory(10 ** 12, (3, 32, 32), torch.device("cpu"))
    check_output_memory(10, (3, 32, 32), torch.device("cpu"))  # small: no question asked


@pytest.mark.parametrize("tau", [1e9, -1e9])
def test_huge_evolution_saturates_instead_of_nan(tiny_model, tau):
    latents = latents_of(tiny_model, range(2))
    evolved = tiny_model.evolve(latents, tau)
    image = tiny_model.decode(evolved)
    assert bool(torch.isfinite(image).all())
    # Saturation: the same image as decoding the latents clipped at the limit by hand.
    clipped = [latent.clamp(-LATENT_LIMIT, LATENT_LIMIT) for latent in evolved]
    assert torch.equal(image, tiny_model.decode(clipped))


def test_huge_gain_saturates_to_the_limit(tiny_model):
    images = gain_edit(tiny_model, [0, 1], band="all", gain=1e30)
    assert bool(torch.isfinite(images).all()) and float(images.abs().max()) <= 1
    # Every nonzero latent entry is beyond the limit at gain 1e30 and 1e35 alike: the same saturated image.
    assert torch.equal(images, gain_edit(tiny_model, [0, 1], band="all", gain=1e35))
    assert np.isfinite(gain_edit(tiny_model, [0], band="all", gain=-1e30).numpy()).all()


def test_decode_refuses_nan_latents_outside_training():
    model = hkdviz.build({"preset": "tiny", "unet": {"model_channels": 8}}).eval()
    with torch.no_grad():
        latents = model.encode(model.noise([0]), model.sigma_max)
        latents[2][0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"latents hold NaN values \(levels \[2\]\)"):
            model.decode(latents)
