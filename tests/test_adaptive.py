"""Adaptive attacks: EOT with a deterministic verdict, BPDA (submodule hooks, straight-through ops, the breaker
finder), adaptive-pgd against four kinds of deliberately masked models, and AutoAttack's own flags.

The masked models wrap the trained fixture model (``test_attacks_models.small_problem``) without changing its
predictions much; ``Plain`` accuracies are the oracle an adapted attack must come close to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TwoClassLinear
from test_attacks_models import SaturatedLogits, small_problem
from torch import nn

from advbench.attacks import build_attack
from advbench.attacks.aa_checks import autoattack_flags
from advbench.attacks.base import AttackContext
from advbench.attacks.bpda import bpda_hooks, find_gradient_breakers, straight_through_ops
from advbench.attacks.eot import batch_verdict, eot_logits
from advbench.threat import ThreatModel

EPS = ThreatModel.parse("8/255")


class NoisyInput(nn.Module):
    """Randomized defence: Gaussian noise on the input at test time, from the global generator."""

    def __init__(self, net: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.sigma * torch.randn_like(x))


class Quantize(nn.Module):
    """Input quantisation to 16 levels: zero gradient almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 15) / 15


class NumpyBlur(nn.Module):
    """Non-differentiable preprocessing: half the image plus its 3x3 box blur, computed in numpy (no gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().numpy()
        p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        box = sum(p[:, :, i:i + a.shape[2], j:j + a.shape[3]] for i in range(3) for j in range(3)) / 9
        return torch.from_numpy(0.5 * a + 0.5 * box).to(x)


class TorchBlur(nn.Module):
    """NumpyBlur's differentiable twin (the unmasked reference and a BPDA approximation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return 0.5 * x + 0.5 * box


class Preprocessed(nn.Module):
    """``net(prep(x))`` with the preprocessing as the submodule ``prep`` (and an optional ``smooth`` approximation)."""

    def __init__(self, prep: nn.Module, net: nn.Module, smooth: nn.Module | None = None) -> None:
        super().__init__()
        self.prep, self.net = prep, net
        if smooth is not None:
            self.smooth = smooth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prep(x))


def masked_models(net: nn.Module) -> dict[str, nn.Module]:
    """The four masked wrappers of ``net`` (and the plain model and unmasked twins as references)."""
    return {"randomized": NoisyInput(net).eval(), "quantized": Preprocessed(Quantize(), net).eval(),
            "saturated": SaturatedLogits(net).eval(), "numpy-blur": Preprocessed(NumpyBlur(), net).eval()}


def _acc(attack: str, model: nn.Module, x, y, **opts) -> float:
    res = build_attack(attack, EPS, opts)(model, x, y, generator=torch.Generator().manual_seed(0))
    return float(res.correct.float().mean())


def test_verdict_is_a_deterministic_function_of_each_image_and_leaves_the_global_generator_alone():
    net, x, y = small_problem(32)
    model = NoisyInput(net, sigma=0.3).eval()
    verdict = batch_verdict(model, 8, batch=3)
    state = torch.get_rng_state()
    first = verdict.judge(x, y)
    assert torch.equal(torch.get_rng_state(), state)  # the attack's own stream is untouched
    assert torch.equal(first, verdict.judge(x, y))
    changed = x.clone()
    changed[5:] = torch.rand_like(changed[5:])  # other rows change: rows 0..4 keep their verdict
    assert torch.equal(verdict.judge(changed, y)[:5], first[:5])
    assert not torch.equal(batch_verdict(model, 8, batch=4).scores(x), verdict.scores(x))  # seeded per batch
    single = [(model(x).argmax(1) == y) for _ in range(6)]
    assert any(not torch.equal(single[0], s) for s in single[1:])  # one noisy pass is not a function of the image


def test_eot_logits_average_draws_and_one_draw_is_the_model():
    net, x, _ = small_problem(8)
    assert torch.equal(eot_logits(net, x, 1, "prob"), net(x))
    model = NoisyInput(net, sigma=0.3)
    torch.manual_seed(0)
    draws = [net(x + 0.3 * torch.randn_like(x)) for _ in range(4)]
    torch.manual_seed(0)
    got = eot_logits(model, x, 4, "prob")
    expected = torch.log(torch.stack([d.softmax(1) for d in draws]).mean(0))
    assert torch.allclose(got, expected, atol=1e-6)
    torch.manual_seed(0)
    assert torch.allclose(eot_logits(model, x, 4, "logits"), torch.stack(draws).mean(0), atol=1e-6)


def test_bpda_hook_keeps_the_value_and_backpropagates_the_approximation():
    net, x, _ = small_problem(16)
    model = Preprocessed(Quantize(), net, smooth=TorchBlur()).eval()
    xg = x.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(model(xg).sum(), xg)
    assert float(g0.abs().sum()) == 0  # rounding masks the gradient completely
    q = Quantize()(x).requires_grad_(True)
    (g_net,) = torch.autograd.grad(net(q).sum(), q)  # the oracle: the gradient at the quantised input
    with bpda_hooks(model, ["prep"]):
        out = model(xg)
        (g1,) = torch.autograd.grad(out.sum(), xg)
    assert torch.equal(out.detach(), model(x).detach())  # forward values bit for bit
    assert torch.allclose(g1, g_net)  # identity approximation: d prep / dx = I
    with bpda_hooks(model, ["prep"], approx="smooth"):
        (g2,) = torch.autograd.grad(model(xg).sum(), xg)
    xs = x.clone().requires_grad_(True)
    (g_smooth,) = torch.autograd.grad(TorchBlur()(xs), xs, g_net)  # VJP of the named approximation
    assert torch.allclose(g2, g_smooth, atol=1e-6)
    assert not model.prep._forward_hooks  # removed: the model is as before
    with pytest.raises(Exception, match="no submodule 'nope'"):
        with bpda_hooks(model, ["nope"]):
            pass


def test_straight_through_ops_give_inline_rounding_the_identity_gradient():
    net, x, _ = small_problem(16)

    class Inline(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, z):
            return self.net(z.mul(255).round() / 255 + torch.floor(z) * 0)  # method and function forms

    model = Inline().eval()
    xg = x.clone().requires_grad_(True)
    q = (torch.round(x * 255) / 255).requires_grad_(True)
    (g_net,) = torch.autograd.grad(net(q).sum(), q)
    with straight_through_ops():
        out = model(xg)
        (g,) = torch.autograd.grad(out.sum(), xg)
    assert torch.equal(out.detach(), model(x).detach())
    assert torch.allclose(g, g_net, atol=1e-6)
    (g_off,) = torch.autograd.grad(model(xg).sum(), xg)
    assert float(g_off.abs().sum()) == 0


def test_find_gradient_breakers_names_the_innermost_breaking_submodule_and_nothing_else():
    net, x, _ = small_problem(16)
    assert find_gradient_breakers(net, x) == []  # BN, ReLU, strided conv: differentiable
    assert find_gradient_breakers(SaturatedLogits(net), x) == []  # saturation is not a broken graph
    assert find_gradient_breakers(Preprocessed(Quantize(), net), x) == ["prep"]
    assert find_gradient_breakers(Preprocessed(NumpyBlur(), net), x) == ["prep"]  # no gradient at all
    nested = Preprocessed(nn.Sequential(nn.Sequential(Quantize(), nn.Identity()), nn.Identity()), net)
    assert find_gradient_breakers(nested, x) == ["prep.0.0"]

    class Constant(nn.Module):
        def forward(self, z):
            return torch.zeros_like(z)  # zero gradient, but its output does not change with its input

    assert find_gradient_breakers(Preprocessed(Constant(), net), x) == []


def test_adaptive_pgd_on_a_plain_model_is_pgd():
    net, x, y = small_problem(64)
    opts = {"steps": 10, "init": "zero"}
    pgd = build_attack("pgd", EPS, opts)(net, x, y)
    ada = build_attack("adaptive-pgd", EPS, opts)(net, x, y)
    assert torch.equal(pgd.correct, ada.correct)
    assert torch.allclose(pgd.x_adv, ada.x_adv, atol=1e-6)
    assert ada.info["eot_samples"] == 1 and ada.info["bpda"] == [] and not ada.info["bpda_ops"]


def test_adaptive_pgd_gets_each_masked_model_to_the_plain_models_accuracy():
    net, x, y = small_problem(128)
    plain = _acc("pgd", net, x, y, steps=20)
    for name, model in masked_models(net).items():
        unadapted = _acc("pgd", model, x, y, steps=20)
        loss = "dlr" if name == "saturated" else "ce"
        adapted = _acc("adaptive-pgd", model, x, y, steps=20, loss=loss)
        assert unadapted > plain + 0.2, name  # the masking works: plain PGD is fooled by it
        assert abs(adapted - plain) <= 0.08, (name, adapted, plain)  # and the adaptation undoes it
    reference = Preprocessed(TorchBlur(), net).eval()  # the blur model's differentiable twin
    assert abs(_acc("adaptive-pgd", masked_models(net)["numpy-blur"], x, y, steps=20)
               - _acc("pgd", reference, x, y, steps=20)) <= 0.05


def test_adaptive_pgd_result_is_its_own_verdict_and_records_the_adaptations():
    net, x, y = small_problem(48)
    model = NoisyInput(net).eval()
    attack = build_attack("adaptive-pgd", EPS, {"steps": 6, "eot_samples": 3, "verdict_samples": 5},
                          AttackContext(batch=2))
    res = attack(model, x, y)
    assert torch.equal(res.correct, batch_verdict(model, 5, batch=2).judge(res.x_adv, y))
    assert res.info == {"randomized": True, "eot_samples": 3, "verdict_samples": 5, "bpda": [], "bpda_ops": False,
                        "loss": "ce"}
    again = attack(model, x, y)  # its randomness is seeded by (seed, batch): reproducible
    assert torch.equal(again.correct, res.correct) and torch.equal(again.x_adv, res.x_adv)


def test_dlr_on_two_classes_falls_back_to_the_margin_loss(linear_problem):
    model, x, y, _, _ = linear_problem
    res = build_attack("adaptive-pgd", ThreatModel.parse("0.05"), {"steps": 5, "loss": "dlr"})(model, x, y)
    assert res.info["loss"] == "margin"
    assert isinstance(model, TwoClassLinear)


def test_autoattack_flags_are_computed_on_any_model_and_miss_saturated_logits():
    net, x, y = small_problem(64)

    class Probabilities(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, z):
            return self.net(z).softmax(1)

    def checks_of(model):
        return {f["check"] for f in autoattack_flags(model.eval(), x, y)}

    assert checks_of(net) == set()
    assert "randomized" in checks_of(NoisyInput(net))
    assert "output_range" in checks_of(Probabilities())
    assert checks_of(SaturatedLogits(net)) == set()  # AutoAttack's checks miss it; advbench's zero_gradients does not
    flags = autoattack_flags(Preprocessed(Quantize(), net).eval(), x, y)
    assert [f["check"] for f in flags] == ["zero_gradients"] and flags[0]["fraction"] == 1.0


def test_autoattack_with_eot_samples_attacks_the_eot_view_and_judges_by_the_verdict():
    net, x, y = small_problem(48)
    model = NoisyInput(net).eval()
    opts = {"version": "custom", "attacks": ["apgd-ce"], "n_restarts": 1}
    plain = build_attack("autoattack", EPS, opts, AttackContext(batch=1))(model, x, y)
    eot = build_attack("autoattack", EPS, {**opts, "eot_samples": 3}, AttackContext(batch=1))(model, x, y)
    judge = batch_verdict(model, 10, batch=1).judge
    assert torch.equal(eot.correct, judge(eot.x_adv, y))  # the reported result is the deterministic verdict's
    assert eot.info["flags"] == [] and any("randomized" in f for f in plain.info["flags"])
    cls = type(build_attack("autoattack", EPS, opts))
    assert cls.suited_to({"eot_samples": 3}, eot.info) == {"randomized"}
    assert cls.suited_to({"eot_samples": 1}, plain.info) == set()
