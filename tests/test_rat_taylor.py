"""RAT's paper-literal Taylor terms (``taylor=paper``): the forward-mode directional derivatives against exact
Jacobians/Hessians and finite differences, the Taylor statement (Eq. 6) as an O(‖u‖³) remainder, the terms'
value and gradient, the layer choice, the passes and the reduction to the base at η = 0 (all float64 on a tiny
tanh net, except the defense-level checks on the contract's conv net)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advbench.core.passes import PassCounter
from advbench.defenses import build_defense
from advbench.defenses.rat import directional_derivatives, paper_taylor_terms
from advbench.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from test_defense_contract import LINF, TinyNet, batch, train_step  # noqa: E402


class TanhNet(nn.Module):
    """4 → 5 → 3, tanh hidden layer (smooth, so every derivative exists)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 5)
        self.out = nn.Linear(5, 3)
        self.num_classes = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def tanh_setup(seed: int = 0) -> tuple[TanhNet, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    net = TanhNet().double()
    x = torch.randn(2, 4, dtype=torch.float64)
    u = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    return net, x, u


def flat_logits(net: nn.Module, x: torch.Tensor, names: list[str]):
    """The logits as a function of the chosen parameters flattened into one vector (for autograd.functional)."""
    params = dict(net.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        state = {**params, **{n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}}
        return functional_call(net, state, (x,)).reshape(-1)

    w = torch.cat([params[n].detach().reshape(-1) for n in names])
    return f, w


def test_jvp_terms_equal_exact_jacobian_and_hessian() -> None:
    net, x, u = tanh_setup()
    names = list(u)
    f, w = flat_logits(net, x, names)
    du = torch.cat([u[n].reshape(-1) for n in names])
    jac = torch.autograd.functional.jacobian(f, w)  # [6, P]
    hess = [torch.autograd.functional.hessian(lambda v, k=k: f(v)[k], w) for k in range(6)]
    exact_first = (jac @ du).reshape(2, 3)
    exact_second = torch.stack([du @ h @ du for h in hess]).reshape(2, 3)
    out, first, second = directional_derivatives(net, x, u, order=2)
    torch.testing.assert_close(out, net(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(first, exact_first, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second, exact_second, rtol=1e-12, atol=1e-12)
    assert second.abs().max() > 1e-3  # a real second derivative, not a zero matched by a zero
    _, first1, none = directional_derivatives(net, x, u, order=1)
    assert none is None
    torch.testing.assert_close(first1, exact_first, rtol=1e-12, atol=1e-12)


def test_jvp_terms_equal_finite_differences() -> None:
    net, x, u = tanh_setup(1)
    names = list(u)
    f, w = flat_logits(net, x, names)
    du = torch.cat([u[n].reshape(-1) for n in names])
    h = 1e-4
    with torch.no_grad():
        fp, f0, fm = f(w + h * du), f(w), f(w - h * du)
    fd_first = ((fp - fm) / (2 * h)).reshape(2, 3)
    fd_second = ((fp - 2 * f0 + fm) / h**2).reshape(2, 3)
    _, first, second = directional_derivatives(net, x, u, order=2)
    torch.testing.assert_close(first, fd_first, rtol=0, atol=1e-7)  # central difference error O(h²)
    torch.testing.assert_close(second, fd_second, rtol=0, atol=1e-5)  # O(h²) plus rounding ε/h²


def test_taylor_remainder_is_third_order() -> None:
    """‖f_{w+tu} − (f_w + t g′ᵀu + ½t² uᵀg″u)‖ = O(t³): log-log slope ≈ 3 over t ∈ {1e-1, 1e-2, 1e-3}."""
    net, x, u = tanh_setup(2)
    names = list(u)
    f, w = flat_logits(net, x, names)
    du = torch.cat([u[n].reshape(-1) for n in names])
    f0, first, second = directional_derivatives(net, x, u, order=2)
    ts = [1e-1, 1e-2, 1e-3]
    errs = []
    first_only = []
    with torch.no_grad():
        for t in ts:
            exact = f(w + t * du).reshape(2, 3)
            errs.append(float((exact - (f0 + t * first + 0.5 * t * t * second)).norm()))
            first_only.append(float((exact - (f0 + t * first)).norm()))
    slopes = [math.log10(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(abs(s - 3.0) < 0.15 for s in slopes), (errs, slopes)
    slopes1 = [math.log10(first_only[i] / first_only[i + 1]) for i in range(2)]
    assert all(abs(s - 2.0) < 0.15 for s in slopes1), slopes1  # without the second-order term: O(t²)


def test_paper_terms_value_and_gradient() -> None:
    """first/second = mean over draws of KL(softmax(Ju_s) ‖ softmax(Ju_s′)) (and the same with uᵀHu), batch mean;
    their gradient w.r.t. a weight matches a central finite difference of the term."""
    net, x, _ = tanh_setup(3)
    x_adv = x + 0.1 * torch.randn_like(x)
    g = torch.Generator().manual_seed(5)
    draws = [{n: 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in net.named_parameters()}
             for _ in range(2)]
    first, second = paper_taylor_terms(net, x, x_adv, draws, order=2)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p, q = F.softmax(a, 1), F.softmax(b, 1)
        return (p * (p.log() - q.log())).sum(1).mean()

    ref1, ref2 = [], []
    for u in draws:
        _, jn, hn = directional_derivatives(net, x, u, 2)
        _, ja, ha = directional_derivatives(net, x_adv, u, 2)
        ref1.append(kl(jn, ja))
        ref2.append(kl(hn, ha))
    torch.testing.assert_close(first, torch.stack(ref1).mean(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(second, torch.stack(ref2).mean(), rtol=1e-12, atol=1e-14)
    assert float(first.detach()) > 1e-4 and float(second.detach()) > 1e-4

    weight = net.hidden.weight
    grad_first = torch.autograd.grad(first, weight, retain_graph=True)[0]
    grad_second = torch.autograd.grad(second, weight)[0]
    h = 1e-6
    for i, j in [(0, 0), (3, 2)]:
        for term, grad in ((0, grad_first), (1, grad_second)):
            vals = []
            for sgn in (1, -1):
                with torch.no_grad():
                    weight[i, j] += sgn * h
                vals.append(float(paper_taylor_terms(net, x, x_adv, draws, order=2)[term].detach()))
                with torch.no_grad():
                    weight[i, j] -= sgn * h
            assert abs((vals[0] - vals[1]) / (2 * h) - float(grad[i, j])) < 1e-7


def test_subset_of_weights_is_the_restricted_derivative() -> None:
    """Along u on the last layer's weight only, g′ᵀu is the Jacobian w.r.t. that weight applied to u."""
    net, x, _ = tanh_setup(4)
    u = {"out.weight": torch.randn(3, 5, dtype=torch.float64)}
    f, w = flat_logits(net, x, ["out.weight"])
    jac = torch.autograd.functional.jacobian(f, w)
    _, first, second = directional_derivatives(net, x, u, order=2)
    torch.testing.assert_close(first, (jac @ u["out.weight"].reshape(-1)).reshape(2, 3), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second, torch.zeros_like(second), rtol=0, atol=1e-14)  # logits linear in W_out
    defense = build_defense("rat", LINF, {"taylor": "paper", "taylor_layers": "last"})
    assert defense.taylor_params(net) == ["out.weight"]
    assert defense.taylor_params(TinyNet()) == ["fc.weight"]
    assert build_defense("rat", LINF, {"taylor": "paper"}).taylor_params(TinyNet()) == ["conv.weight", "conv.bias"]
    assert build_defense("rat", LINF, {"taylor": "paper", "taylor_layers": "weights"}).taylor_params(
        TinyNet()) == ["conv.weight", "fc.weight"]


def test_bn_running_statistics_untouched() -> None:
    torch.manual_seed(0)
    model = TinyNet().train()
    before = [b.clone() for b in model.buffers()]
    u = {"conv.weight": torch.randn_like(model.conv.weight)}
    directional_derivatives(model, torch.rand(4, 3, 8, 8), u, order=2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))


def test_eta_zero_is_the_base() -> None:
    """At η = 0 (σ = 0 so both craft the same x′) taylor=paper gives the base's loss and update, bit for bit."""
    for base, ref, opts in (("trades", "trades", {}), ("pgd-at", "pgd-at", {"attack_bn_mode": "eval"})):
        results = []
        for name, o in (("rat", {"base": base, "taylor": "paper", "eta": 0.0, "noise_std": 0.0}), (ref, opts)):
            torch.manual_seed(0)
            model = TinyNet().train()
            defense = build_defense(name, LINF, {"steps": 2, **o})
            logs = train_step(defense, model, 0)
            results.append((logs["loss"], [p.detach().clone() for p in model.parameters()]))
        assert results[0][0] == results[1][0], (base, results[0][0], results[1][0])
        assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_passes_and_terms_logged() -> None:
    for opts in ({"taylor": "paper"}, {"taylor": "paper", "order": "1", "taylor_samples": 2},
                 {"taylor": "paper", "base": "pgd-at"}, {"taylor": "paper", "base": "awp-trades"}):
        torch.manual_seed(0)
        model = TinyNet().train()
        defense = build_defense("rat", LINF, {"steps": 2, "warmup_epochs": 0, "noise_std": 0.05, **opts})
        with PassCounter(model) as counter:
            logs = train_step(defense, model, 0)
        assert (counter.forward / 8, counter.backward / 8) == defense.inherent_passes, opts
        assert logs["rat_first"] > 0 and math.isfinite(logs["loss"])
        assert ("rat_second" in logs) == (opts.get("order") != "1")
        assert "rat_guards" not in logs


def test_bad_options() -> None:
    with pytest.raises(UserError, match="taylor_samples"):
        build_defense("rat", LINF, {"taylor": "paper", "taylor_samples": 0})
    with pytest.raises(UserError):
        build_defense("rat", LINF, {"taylor": "exact"})
    x, y, ctx = batch(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 10))
    defense = build_defense("rat", LINF, {"taylor": "paper", "steps": 1})  # conv layers only: none here
    with pytest.raises(UserError, match="taylor_layers"):
        defense.loss(model, x, y, ctx)
