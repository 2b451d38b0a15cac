"""HKD loss terms on hand-made tensors with known values."""
import math

import pytest
import torch

import hkdviz
from hkdviz.train.loss import (HKDDistance, HKDLoss, LPIPSDistance, MSEDistance, PseudoHuberDistance, make_distance)


def test_mse_distance_known_values():
    prediction = torch.zeros(2, 3, 4, 4)
    target = torch.stack([torch.full((3, 4, 4), 2.0), torch.full((3, 4, 4), -0.5)])
    assert torch.allclose(MSEDistance()(prediction, target), torch.tensor([4.0, 0.25]))


def test_pseudo_huber_known_values():
    dim = 3 * 4 * 4
    c = 0.00054 * math.sqrt(dim)
    prediction = torch.zeros(3, 3, 4, 4)
    target = torch.zeros(3, 3, 4, 4)
    target[1] = 0.5          # ||d||^2 = 48 * 0.25 = 12
    target[2, 0, 0, 0] = 3.0  # ||d||^2 = 9
    expected = torch.tensor([0.0, math.sqrt(12 + c * c) - c, math.sqrt(9 + c * c) - c])
    assert torch.allclose(PseudoHuberDistance()(prediction, target), expected, atol=1e-6)
    # Near the target it behaves like a scaled squared L2: ||d||^2 / (2c) (float64 keeps the digits).
    tiny = torch.full((1, 3, 4, 4), 1e-6, dtype=torch.float64)
    assert PseudoHuberDistance()(tiny, torch.zeros_like(tiny)).item() == pytest.approx(48e-12 / (2 * c), rel=1e-6)


def test_distances_reject_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        MSEDistance()(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))


def test_hkd_distance_lambda1_schedule_and_sum():
    distance = HKDDistance()
    assert distance.lambda1(0.0) == pytest.approx(1.0)
    assert distance.lambda1(0.5) == pytest.approx(10 ** -1.5)
    assert distance.lambda1(1.0) == pytest.approx(1e-3)
    assert distance.lambda1(2.0) == pytest.approx(1e-3)  # clamped to the end value
    prediction, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    total, mse, perceptual = distance(prediction, target, progress=1 / 3)
    c = 0.00054 * math.sqrt(48)
    assert mse.item() == pytest.approx(0.25)
    assert perceptual.item() == pytest.approx(math.sqrt(12 + c * c) - c, rel=1e-6)
    assert total.item() == pytest.approx(0.1 * 0.25 + perceptual.item(), rel=1e-6)


def test_time_indices_ranges_and_reproducibility():
    loss = HKDLoss()
    generator = torch.Generator().manual_seed(0)
    indices = loss.time_indices(256, 19, generator)
    assert indices.shape == (256, 5)
    assert (indices[:, 0] == 0).all()
    assert indices[:, 1:].min() == 1 and indices[:, 1:].max() == 18  # eps end included
    again = loss.time_indices(256, 19, torch.Generator().manual_seed(0))
    assert torch.equal(indices, again)
    interior = HKDLoss(include_eps=False).time_indices(256, 19, torch.Generator().manual_seed(0))
    assert interior[:, 1:].max() == 17
    only_recon = HKDLoss(t_consistency=False).time_indices(4, 19)
    assert only_recon.shape == (4, 1) and (only_recon == 0).all()


class IdentityModel(torch.nn.Module):
    """f(x_t, sigma) = x_t; records the sigmas it was called with."""

    def forward(self, x, sigma, class_labels=None):
        self.sigma = sigma
        return x


def test_hkd_loss_known_values_on_hand_made_trajectories():
    # Two trajectories of 4 states; state k of sample b is the constant image values[b, k]; eps = last.
    values = torch.tensor([[8.0, 4.0, 2.0, 1.0], [0.0, 1.0, 3.0, 3.0]])
    states = values.reshape(2, 4, 1, 1, 1).expand(2, 4, 3, 2, 2).clone()
    sigmas = torch.tensor([80.0, 10.0, 1.0, 0.002])
    indices = torch.tensor([[0, 1, 2, 3, 3], [0, 2, 2, 1, 3]])
    distance = HKDDistance(MSEDistance(), lambda1_start=1.0, lambda1_end=1.0, lambda2=0.0)
    loss = HKDLoss(distance)
    model = IdentityModel()
    total, stats = loss(model, states, sigmas, indices=indices)
    # Identity model: term = (value_at_index - value_at_eps)^2.
    terms = torch.tensor([[49.0, 9.0, 1.0, 0.0, 0.0], [9.0, 0.0, 0.0, 4.0, 0.0]])
    assert total.item() == pytest.approx(terms.mean().item())
    assert stats["loss_recon"].item() == pytest.approx(terms[:, 0].mean().item())
    assert stats["loss_consistency"].item() == pytest.approx(terms[:, 1:].mean().item())
    assert torch.equal(model.sigma, sigmas[indices].reshape(-1))
    # Ablation without L_t-consist: only the T term.
    recon_only, stats = HKDLoss(distance, t_consistency=False)(model, states, sigmas)
    assert recon_only.item() == pytest.approx(29.0)
    assert "loss_consistency" not in stats


def test_hkd_loss_matches_encode_evolve_decode(tiny_model):
    torch.manual_seed(1)
    states = torch.randn(2, 5, 3, 32, 32)
    sigmas = torch.tensor([80.0, 20.0, 2.0, 0.1, 0.002])
    indices = torch.tensor([[0, 1, 4], [0, 3, 2]])
    loss = HKDLoss(num_times=2)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads cost more than they save
    with torch.no_grad():
        total, _ = loss(tiny_model, states, sigmas, progress=0.25, indices=indices)
        expected = []
        for sample in range(2):
            for column in range(3):
                sigma = sigmas[indices[sample, column]]
                x_t = states[sample, indices[sample, column]].unsqueeze(0)
                latents = tiny_model.encode(x_t, sigma)
                image = tiny_model.decode(tiny_model.evolve(latents, tiny_model.sigma_min - sigma))
                expected.append(loss.distance(image, states[sample, -1].unsqueeze(0), 0.25)[0])
    torch.set_num_threads(previous)
    assert total.item() == pytest.approx(torch.cat(expected).mean().item(), rel=1e-4)


def test_koopman_ablation_configs_build():
    none = hkdviz.build("tiny", koopman={"levels": "none"})
    bottleneck = hkdviz.build("tiny", koopman={"levels": "bottleneck"})
    assert {level.operator for level in none.levels} == {"identity"}
    assert [level.operator for level in bottleneck.levels].count("block") == 1


# -- LPIPS ---------------------------------------------------------------------------------------
def _fake_lpips_state(net: str = "alex") -> dict:
    """A state dict in the `lpips` package's layout (random weights, as if saved from lpips.LPIPS)."""
    from hkdviz.train.loss import _LPIPS_ARCHITECTURES

    torch.manual_seed(0)
    architecture = _LPIPS_ARCHITECTURES[net]
    state = {"scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1),
             "scaling_layer.scale": torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)}
    for slice_index, (start, stop) in enumerate(architecture["slices"], start=1):
        for index in range(start, stop):
            layer = architecture["layers"][index]
            if layer[0] == "conv":
                _, cin, cout, kernel, _, _ = layer
                state[f"net.slice{slice_index}.{index}.weight"] = torch.randn(cout, cin, kernel, kernel) * 0.05
                state[f"net.slice{slice_index}.{index}.bias"] = torch.zeros(cout)
    for index, channels in enumerate(architecture["channels"]):
        weight = torch.rand(1, channels, 1, 1)
        state[f"lin{index}.model.1.weight"] = weight
        state[f"lins.{index}.model.1.weight"] = weight
    return state


def test_lpips_needs_local_weights(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        LPIPSDistance()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LPIPSDistance(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read LPIPS weights"):
        LPIPSDistance(garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save({"net.slice1.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="not an LPIPS state dict"):
        LPIPSDistance(wrong, net="alex")
    with pytest.raises(ValueError, match="unknown distance"):
        make_distance("fid")


def test_lpips_from_local_state_dict(tmp_path):
    path = tmp_path / "lpips_alex.pt"
    torch.save(_fake_lpips_state("alex"), path)
    distance = make_distance({"name": "lpips", "weights": str(path), "net": "alex", "resize": None})
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    same = distance(x, x)
    assert torch.allclose(same, torch.zeros(2), atol=1e-6)
    different = distance(x, y)
    assert (different > 0).all()
    assert torch.allclose(different, distance(y, x), rtol=1e-5)


def test_latent_path_term_known_answers():
    """Zero when the encoder's latents lie on the Koopman path (A = 0 and equal inputs at equal sigmas);
    positive, with gradients reaching the generators, when they do not."""
    import hkdviz
    from hkdviz.model import randomize_generators
    model = hkdviz.build({"preset": "tiny", "unet": {"model_channels": 8, "img_resolution": 16},
                          "output": "consistency", "koopman": {"time": "log_sigma"}})
    loss = HKDLoss(num_times=2, latent_weight=1.0)
    x = torch.randn(2, 1, 3, 16, 16).expand(2, 3, 3, 16, 16).contiguous()
    sigmas = torch.full((2, 3), 5.0)
    target = torch.zeros(2, 3, 16, 16)
    _, stats = loss.compute(model, x, sigmas, target)
    assert float(stats["loss_latent"]) == pytest.approx(0.0, abs=1e-10)
    randomize_generators(model, seed=1)
    sigmas = torch.tensor([[80.0, 10.0, 1.0], [80.0, 3.0, 0.5]])
    total, stats = loss.compute(model, x, sigmas, target)
    assert float(stats["loss_latent"]) > 0
    total.backward()
    assert any(level.generator.grad is not None and level.generator.grad.abs().sum() > 0 for level in model.koopman)
    with pytest.raises(ValueError, match="latent_weight"):
        HKDLoss(latent_weight=-1)
