"""SCORPIO (scorpio.md §5): Frank-Wolfe on known quadratics, FD on exact quadratic models, detach semantics,
ball membership and the (h, r) table. float64 throughout."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.tensors import per_sample_norm
from advbench.defenses import StepContext, build_defense
from advbench.defenses.input_gradients import input_grad
from advbench.defenses.scorpio import HR_TABLE, dual_exponent, frank_wolfe, fw_quadratic_attack, lmo
from advbench.errors import UserError
from advbench.threat import ThreatModel

CTX = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, num_classes=3)
INF = float("inf")


class QuadraticLoss(nn.Module):
    """A 'model' whose single output is the per-sample loss ℓ(x) = ½xᵀAx + bᵀx (use with :func:`identity_loss`)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        return (0.5 * ((f @ self.a) * f).sum(1) + f @ self.b)[:, None]


def identity_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out[:, 0]


def random_psd(d: int, g: torch.Generator) -> torch.Tensor:
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return m @ m.T / d


def q_value(v: torch.Tensor, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Q(v) = gᵀv + ½vᵀAv per sample."""
    return (v * g).sum(1) + 0.5 * ((v @ a) * v).sum(1)


def tanh_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()


def test_linear_q_is_solved_in_one_step():
    """∇²ℓ = 0 (affine loss aᵀx, FD exact): FW(N=1) returns eps·LMO(a) and Q = eps‖a‖_q."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, generator=g, dtype=torch.float64)
    model = QuadraticLoss(torch.zeros(12, 12, dtype=torch.float64), a)
    x = torch.rand(3, 12, generator=g, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    eps = 0.1
    for p in (2.0, INF):
        g0 = input_grad(model, x, y, loss_fn=identity_loss).grad
        v = fw_quadratic_attack(model, x, y, g0, eps=eps, p=p, steps=1, h=0.7, loss_fn=identity_loss)
        torch.testing.assert_close(v, eps * lmo(a.expand(3, 12), p))
        torch.testing.assert_close((v * a).sum(1), eps * per_sample_norm(a.expand(3, 12), dual_exponent(p)))


def test_linf_diagonal_psd_maximum_is_reached_by_the_first_sign_step():
    """Diagonal PSD A over the box: max gᵀv + ½vᵀAv = eps‖g‖₁ + ½eps²·tr(A) at eps·sign(g); one FW step
    from v⁰ = eps·sign(g) reaches it and stays there (the Linf vertex step is a sign step)."""
    gen = torch.Generator().manual_seed(1)
    d, eps = 10, 0.2
    a = torch.diag(torch.rand(d, generator=gen, dtype=torch.float64) * 3)
    g = torch.randn(4, d, generator=gen, dtype=torch.float64)
    path: list[torch.Tensor] = []
    frank_wolfe(lambda v: g + v @ a, eps * lmo(g, INF), eps, INF, steps=6, history=path)
    best = eps * g.abs().sum(1) + 0.5 * eps**2 * torch.diagonal(a).sum()
    for v in path:
        torch.testing.assert_close(v, eps * g.sign())
        torch.testing.assert_close(q_value(v, g, a), best)


def test_linf_fw_is_monotone_and_bounded_by_the_vertex_maximum():
    """Random PSD A, d = 10: Q(v^k) is non-decreasing for k >= 1 (Prop. 1) and never exceeds the brute-force
    maximum over the 2^d vertices (the convex Q peaks at a vertex)."""
    gen = torch.Generator().manual_seed(2)
    d, eps = 10, 0.3
    verts = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64) * eps
    for _ in range(10):
        a = random_psd(d, gen)
        g = torch.randn(1, d, generator=gen, dtype=torch.float64)
        path: list[torch.Tensor] = []
        frank_wolfe(lambda v, a=a, g=g: g + v @ a, g.clone(), eps, INF, steps=20, history=path)
        qs = [float(q_value(v, g, a)) for v in path]
        brute = float(q_value(verts, g.expand(len(verts), d), a).max())
        assert all(q2 >= q1 - 1e-12 for q1, q2 in zip(qs, qs[1:], strict=False))
        assert max(qs) <= brute + 1e-12
        assert all(float(per_sample_norm(v, INF).max()) <= eps + 1e-12 for v in path)


def test_l2_fw_reaches_the_top_eigenvalue_maximum():
    """g = 0, PSD A with an eigengap (λ₁ = 2, others in [0, 1]), L2 ball: Q → ½eps²λ₁ from a random start."""
    gen = torch.Generator().manual_seed(3)
    d, eps = 10, 0.5
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eig = torch.cat([torch.tensor([2.0], dtype=torch.float64), torch.rand(d - 1, generator=gen, dtype=torch.float64)])
    a = basis @ torch.diag(eig) @ basis.T
    v0 = torch.randn(5, d, generator=gen, dtype=torch.float64)
    v0 = eps * v0 / v0.norm(dim=1, keepdim=True)
    zero = torch.zeros(5, d, dtype=torch.float64)
    v = frank_wolfe(lambda v: v @ a, v0, eps, 2.0, steps=1000)
    assert float(per_sample_norm(v, 2).max()) <= eps + 1e-12
    q = q_value(v, zero, a)
    torch.testing.assert_close(q, torch.full((5,), 0.5 * eps**2 * 2.0, dtype=torch.float64), rtol=0.01, atol=0)


def test_l2_isotropic_quadratic_maximizer_in_one_step():
    """A = c·I with a gradient: the L2-ball maximizer of gᵀv + ½c‖v‖² is eps·g/‖g‖, reached by the first step."""
    gen = torch.Generator().manual_seed(4)
    d, eps = 8, 0.4
    a = 1.7 * torch.eye(d, dtype=torch.float64)
    g = torch.randn(3, d, generator=gen, dtype=torch.float64)
    v = frank_wolfe(lambda v: g + v @ a, torch.zeros_like(g), eps, 2.0, steps=4)
    torch.testing.assert_close(v, eps * g / g.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("scheme", ["fe", "cd"])
@pytest.mark.parametrize("p", [2.0, INF])
def test_fd_attack_on_an_exact_quadratic_equals_exact_frank_wolfe(scheme, p):
    """ℓ(x) = ½xᵀAx + bᵀx: FE and CD HVPs equal Av for any h, so the attack equals FW with exact gradients."""
    gen = torch.Generator().manual_seed(5)
    d, eps, h = 10, 0.25, 1.05
    a = random_psd(d, gen)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    model = QuadraticLoss(a, b)
    x = torch.randn(4, d, generator=gen, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    g0 = input_grad(model, x, y, loss_fn=identity_loss).grad
    torch.testing.assert_close(g0, x @ a + b)
    v = fw_quadratic_attack(model, x, y, g0, eps=eps, p=p, steps=3, h=h, scheme=scheme, loss_fn=identity_loss)
    exact = frank_wolfe(lambda v: g0 + v @ a, eps * lmo(g0, p), eps, p, steps=3)
    torch.testing.assert_close(v, exact, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("init", ["lmo", "text", "alg1"])
def test_attack_stays_in_the_ball(norm, eps, steps, init):
    model = tanh_net()
    x = torch.rand(6, 2, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    p = INF if norm == "linf" else 2.0
    g0 = input_grad(model, x, y).grad
    v = fw_quadratic_attack(model, x, y, g0, eps=eps, p=p, steps=steps, h=1.0, init=init)
    assert not v.requires_grad
    assert float(per_sample_norm(v, p).max()) <= eps + 1e-7


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("scheme", ["fe", "cd"])
def test_step_gradient_is_the_literal_or_detached_objective(detach, scheme):
    """train_step's parameter gradient equals autograd of (1−r)·CE(x) + r·CE(x + v_Q) (literal) or
    CE(x) + r·CE(x + v_Q) (detach variant), v_Q constant."""
    threat = ThreatModel.parse("8/255", "linf")
    defense = build_defense("scorpio", threat, {"detach_clean_in_reg": detach, "scheme": scheme})
    model = tanh_net(1)
    params = list(model.parameters())
    x = torch.rand(5, 2, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    g0 = input_grad(model, x, y).grad
    v_q = fw_quadratic_attack(model, x, y, g0, eps=threat.eps, p=INF, steps=3, h=defense.h, scheme=scheme)
    r = defense.r
    clean_w = 1.0 if detach else 1.0 - r
    ref_loss = clean_w * F.cross_entropy(model(x), y) + r * F.cross_entropy(model(x + v_q), y)
    ref = torch.autograd.grad(ref_loss, params)
    defense.train_step(model, torch.optim.SGD(params, lr=0.0), x, y, CTX)
    for p, gr in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad, gr, rtol=1e-10, atol=1e-14)
    # the reference path (loss) gives the same gradient
    loss, logs = defense.loss(model, x, y, CTX)
    for t, gr in zip(torch.autograd.grad(loss, params), ref, strict=True):
        torch.testing.assert_close(t, gr, rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        assert logs["reg"] == pytest.approx(float(F.cross_entropy(model(x + v_q), y) - F.cross_entropy(model(x), y)))


def test_h_and_r_come_from_the_paper_table():
    linf, l2 = ThreatModel.parse("8/255", "linf"), ThreatModel.parse("0.5", "l2")
    d = build_defense("scorpio", linf)
    assert (d.h, d.r) == HR_TABLE[("cifar10", "linf", "fe", 3)] == (1.05, 1.05)
    d = build_defense("scorpio", l2, {"scheme": "cd", "fw_steps": 1})
    assert (d.h, d.r) == (1.25, 0.999)
    d = build_defense("scorpio", linf, {"preset": "svhn"})
    assert (d.h, d.r) == (1.5, 1.25)
    d = build_defense("scorpio", linf, {"h": 0.5})
    assert (d.h, d.r) == (0.5, 1.05)
    assert d.describe()["resolved"] == {"h": 0.5, "r": 1.05}
    with pytest.raises(UserError, match="set both"):
        build_defense("scorpio", linf, {"preset": "svhn", "scheme": "cd"})
    with pytest.raises(UserError):
        build_defense("scorpio", linf, {"fw_steps": 0})
