"""Adversarial-training family: TRADES, MART, AWP, MMA, P-SAT, H-SAT, DAT, CAT, RAT.

Math oracles (hand computations, analytic optima on linear models, exact power iteration) plus the
reductions the papers state (λ = 1 is PGD-AT, η = 0 is the base method) checked bit for bit.
End-to-end 2-epoch runs on ``synthetic`` live in ``tests/test_at_train.py``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.pgd import pgd_perturb, random_init
from advbench.attacks.training import curriculum_pgd, trades_kl_attack
from advbench.core.passes import frozen
from advbench.defenses import DEFENSES, StepContext, build_defense
from advbench.defenses.awp import AWP_DEFAULTS
from advbench.defenses.dat import fosc, fosc_active
from advbench.defenses.h_sat import hessian_scores, hsat_perturb, top_hessian_eigenvalue
from advbench.defenses.kl_divergence import per_sample_kl
from advbench.defenses.mart import mart_objective
from advbench.defenses.mma import bisect_margin, soft_logit_margin
from advbench.defenses.p_sat import prob_gap
from advbench.defenses.rat import last_layer_row_sums, reg_gap, taylor_targets, taylor_terms
from advbench.defenses.sat_curriculum import sat_lambda
from advbench.defenses.trades import trades_objective
from advbench.errors import UserError
from advbench.threat import ThreatModel

LINF = ThreatModel.parse("8/255")


def ctx(epoch: int = 0, num_classes: int = 10, idx: torch.Tensor | None = None, step: int = 0) -> StepContext:
    return StepContext(epoch=epoch, step=step, steps_per_epoch=10, epochs=100, num_classes=num_classes, idx=idx)


class TinyCNN(nn.Module):
    """conv-BN-ReLU-pool-linear on 3×8×8 inputs (BN present to check BN modes)."""

    def __init__(self, classes: int = 10, bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.fc = nn.Linear(6 * 4 * 4, classes)
        self.num_classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def tiny_batch(n: int = 16, classes: int = 10, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def tiny_model(classes: int = 10, seed: int = 0, bn: bool = True, dtype=torch.float32) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(classes, bn).to(dtype)


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n


def train_steps(name: str, options: dict, model: nn.Module, x, y, seed: int, n: int = 1, epoch: int = 0,
                lr: float = 0.1, classes: int = 10) -> list[dict]:
    """Run ``n`` train_steps of a freshly built defense from ``seed``; returns the logs."""
    d = build_defense(name, LINF, options)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    torch.manual_seed(seed)
    model.train()
    return [d.train_step(model, opt, x, y, ctx(epoch, classes, idx=torch.arange(len(x)))) for _ in range(n)]


# ---------------------------------------------------------------- registry


def test_registry_names_and_aliases():
    for name in ("trades", "mart", "mma", "awp", "trades-awp", "p-sat", "h-sat", "dat", "cat", "rat"):
        assert name in DEFENSES
        cls = DEFENSES.get(name)
        assert cls.name == name
    assert DEFENSES.canonical("psat") == "p-sat"
    assert DEFENSES.canonical("hsat") == "h-sat"
    assert DEFENSES.canonical("cat20") == "cat"


def test_options_are_typed_and_validated():
    d = build_defense("trades", LINF, {"beta": "9", "step_size": "2/255"})
    assert d.options.beta == 9.0 and d.options.step_size == pytest.approx(2 / 255)
    with pytest.raises(UserError):
        build_defense("trades", LINF, {"beta": "-1"})
    with pytest.raises(UserError):
        build_defense("h-sat", LINF, {"bound": "exact"})
    with pytest.raises(UserError):
        build_defense("rat", LINF, {"eta": "1.5"})
    rat = build_defense("rat", LINF, {"base": "awp"})
    assert rat.options.base == "awp-trades"
    with pytest.raises(UserError, match="cc"):
        rat.cc_for(7)
    with pytest.raises(UserError):
        build_defense("trades-awp", LINF, {"init": "uniform"})
    # options whose default depends on the base or the threat are recorded as resolved values
    assert build_defense("trades-awp", LINF).describe()["resolved"]["gamma"] == 0.005
    assert build_defense("h-sat", LINF).describe()["resolved"]["lambda_schedule"] == "linear-hsat"
    assert build_defense("mma", ThreatModel.parse("0.5", "l2")).describe()["resolved"]["margin"] == 2.0


# ---------------------------------------------------------------- TRADES


def test_trades_loss_equals_hand_computed_ce_plus_beta_kl():
    """TRADES loss through the defense equals CE + β·KL written out element by element."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x = torch.tensor([[0.1, 0.9, 0.3, 0.5], [0.7, 0.2, 0.8, 0.4]], dtype=torch.float64)
    x_adv = x + torch.tensor([[0.02, -0.03, 0.01, 0.0], [-0.01, 0.03, 0.02, -0.02]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    d = build_defense("trades", LINF, {"beta": 6.0})
    d.craft = lambda m, inp: x_adv  # the hand computation fixes x′
    loss, logs = d.loss(model, x, y, ctx(num_classes=3))
    with torch.no_grad():
        ce = kl = 0.0
        for i in range(2):
            z, za = model(x[i]).tolist(), model(x_adv[i]).tolist()
            p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
            q = [math.exp(v) / sum(math.exp(u) for u in za) for v in za]
            ce += -math.log(p[int(y[i])])
            kl += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q, strict=True))
    expected = ce / 2 + 6.0 * kl / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    assert logs["kl"] == pytest.approx(kl / 2, rel=1e-12)


def test_trades_reductions_beta_zero_and_target_gradient():
    torch.manual_seed(1)
    z, za = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    lq, p = F.log_softmax(za, 1), F.softmax(z, 1)
    assert torch.allclose(F.kl_div(lq, p, reduction="sum") / 5, F.kl_div(lq, p, reduction="batchmean"), atol=0)
    loss0, ce, _ = trades_objective(z, za, y, beta=0.0)
    assert float(loss0) == float(ce) == float(F.cross_entropy(z, y))  # no grad here: plain tensors
    # the KL target branch gets a gradient (not detached) unless asked
    z1 = z.clone().requires_grad_(True)
    _, _, kl = trades_objective(z1, za, y, beta=1.0)
    (g,) = torch.autograd.grad(kl, z1)
    assert g.abs().sum() > 0
    z2 = z.clone().requires_grad_(True)
    _, _, kl2 = trades_objective(z2, za, y, beta=1.0, detach_target=True)
    assert not kl2.requires_grad
    mean = trades_objective(z, za, y, beta=1.0, reduction="mean")[2]
    assert float(mean) == pytest.approx(float(kl.detach()) / 4, rel=1e-12)


def test_trades_inner_maximisation_increases_kl():
    model = tiny_model().eval()
    x, _ = tiny_batch(32)
    with torch.no_grad():
        p = F.softmax(model(x), 1)

    def kl_at(steps: int) -> float:
        torch.manual_seed(3)
        with frozen(model, "eval"):
            xa = trades_kl_attack(model, x, LINF, steps=steps, alpha=2 / 255)
        if steps:  # the 0.001·N start is not clamped (reference code); every step projects and clamps
            assert (xa - x).abs().max() <= LINF.eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
        with torch.no_grad():
            return float(per_sample_kl(F.log_softmax(model(xa), 1), p).sum())

    start, one, ten = kl_at(0), kl_at(1), kl_at(10)
    assert start < one < ten
    assert ten > 10 * start


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_attack_bn_mode_option_is_wired(mode):
    model = tiny_model()
    x, y = tiny_batch()
    d = build_defense("trades", LINF, {"attack_bn_mode": mode, "steps": 2})
    before = model.bn.running_mean.clone()
    model.train()
    d.craft(model, x)
    changed = not torch.equal(before, model.bn.running_mean)
    assert changed == (mode == "train")
    assert model.training and all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- MART


def test_kl_terms_keep_finite_gradients_for_a_saturated_target():
    """Fine-tuning from a confident model: softmax underflows to exactly 0 for some classes. The KL target
    keeps its gradient (TRADES, MART reference), and the probability form p·log p then gives NaN
    everywhere; the log-target form gives the same values and gradients where those are finite."""
    torch.manual_seed(3)
    y = torch.randint(0, 4, (6,))
    za = torch.randn(6, 4, dtype=torch.float64)
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    # unsaturated: the log-target form equals autograd through the probability form
    _, _, kl = trades_objective(z, za, y, beta=1.0)
    g_new = torch.autograd.grad(kl, z)[0]
    ref = F.kl_div(F.log_softmax(za, 1), F.softmax(z, 1), reduction="batchmean")
    g_ref = torch.autograd.grad(ref, z)[0]
    assert float(kl.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert torch.allclose(g_new, g_ref, atol=1e-12)
    # saturated (float32, as in training): the old form is NaN, the objectives stay finite
    zs = torch.tensor([[120.0, 0.0, -5.0, 3.0]] * 6, requires_grad=True)
    zas = za.float().requires_grad_(True)
    old = F.kl_div(F.log_softmax(zas, 1), F.softmax(zs, 1), reduction="batchmean")
    assert torch.isnan(torch.autograd.grad(old, zs)[0]).any()
    for objective in (lambda: trades_objective(zs, zas, y, beta=6.0)[0], lambda: mart_objective(zs, zas, y, 6.0)[0]):
        grads = torch.autograd.grad(objective(), [zs, zas])
        assert all(torch.isfinite(g).all() for g in grads)


def test_mart_objective_pieces():
    torch.manual_seed(2)
    z = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    za = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    loss, bce, robust = mart_objective(z, za, y, beta=6.0)
    p_adv, p_nat = F.softmax(za, 1).detach(), F.softmax(z, 1).detach()
    # hand computation of every piece
    exp_bce = exp_rob = 0.0
    for i in range(8):
        order = p_adv[i].argsort(descending=True).tolist()
        new_y = order[1] if order[0] == int(y[i]) else order[0]
        assert new_y != int(y[i])
        exp_bce += -math.log(p_adv[i, y[i]]) - math.log(1.0001 - p_adv[i, new_y] + 1e-12)
        kl_i = sum(float(p_nat[i, c]) * (math.log(p_nat[i, c]) - math.log(p_adv[i, c] + 1e-12)) for c in range(5))
        exp_rob += kl_i * (1.0000001 - float(p_nat[i, y[i]]))
    assert float(bce.detach()) == pytest.approx(exp_bce / 8, rel=1e-10)
    assert float(robust.detach()) == pytest.approx(exp_rob / 8, rel=1e-10)
    assert float(loss.detach()) == pytest.approx(exp_bce / 8 + 6 * exp_rob / 8, rel=1e-10)
    # the default keeps w_i and the KL target attached: detaching either changes the gradient
    g = torch.autograd.grad(loss, z)[0]
    for opt in ({"detach_weight": True}, {"detach_target": True}):
        other = mart_objective(z, za, y, 6.0, **opt)[0]
        assert not torch.allclose(torch.autograd.grad(other, z)[0], g)


# ---------------------------------------------------------------- AWP


@pytest.mark.parametrize("name", ["awp", "trades-awp"])
def test_awp_step_is_unperturbed_step_on_perturbed_loss(name):
    """Weights after the step = w − lr·∇L(w + v): an unperturbed SGD step on the perturbed loss."""
    model = tiny_model(dtype=torch.float64)
    x, y = tiny_batch(16, dtype=torch.float64)
    d = build_defense(name, LINF, {"warmup_epochs": 0, "steps": 2})
    model.train()
    torch.manual_seed(5)
    x_adv = d.craft(model, x, y)
    v = d.perturbation(model, x, x_adv, y)
    assert set(v) == {"conv.weight", "fc.weight"}  # weights only: no BN, no biases
    gamma = AWP_DEFAULTS[d.options.base]["gamma"]
    for name_, p in model.named_parameters():
        if name_ in v:
            assert float(v[name_].norm()) == pytest.approx(gamma * float(p.detach().norm()), rel=1e-10)
    # reference: a copy with the perturbation added in place, its gradient, a plain SGD step on w
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in v:
                p.add_(v[n])
    loss_ref = d.objective(ref, x, x_adv, y)[0]
    grads = torch.autograd.grad(loss_ref, list(ref.parameters()))
    expected = [p.detach() - 0.05 * g for p, g in zip(model.parameters(), grads, strict=True)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(5)
    logs = d.train_step(model, opt, x, y, ctx(epoch=0))
    assert logs["awp_rel_norm"] == pytest.approx(gamma, rel=1e-6)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-14)


def test_awp_perturbation_removed_exactly_and_warmup():
    model = tiny_model()
    x, y = tiny_batch()
    before = params_of(model)
    buffers = [b.clone() for b in model.buffers()]
    d = build_defense("awp", LINF, {"steps": 1})
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.train()
    d.train_step(model, opt, x, y, ctx())
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # bit-exact: the weights are never modified in place
    assert any(not torch.equal(a, b) for a, b in zip(model.buffers(), buffers, strict=True))  # one train forward
    t = build_defense("trades-awp", LINF)
    assert t.on_epoch_start(9, model)["awp_active"] == 0.0 and t.on_epoch_start(10, model)["awp_active"] == 1.0
    assert t.on_epoch_start(10, model)["awp_gamma"] == 0.005
    logs = t.loss(model, x, y, ctx(epoch=3))[1]
    assert "awp_rel_norm" not in logs  # warm-up: plain TRADES
    same = build_defense("awp", LINF, {"base": "trades"})
    assert all(same.options.resolved(k) == t.options.resolved(k) for k in AWP_DEFAULTS["trades"])


# ---------------------------------------------------------------- MMA


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_mma_search_finds_the_linear_margin(norm, linear_problem):
    """ANPGD + bisection on a binary linear model return the exact distance |m|/‖Δw‖_dual (to bracket/2^10)."""
    model, x, y, w, b = linear_problem
    threat = ThreatModel.parse("0.05" if norm == "linf" else "0.5", norm)
    # L2 from a zero start walks exactly along ±w (a uniform start leaves an orthogonal residue)
    d = build_defense("mma", threat, {"margin": float(threat.eps), "min_eps": 0.001, "steps": 20,
                                      "init": "zero" if norm == "l2" else "uniform"})
    s = x.flatten(1) @ w + b
    margin = torch.where(y == 1, s, -s)
    keep = margin > 0
    dual = w.abs().sum() if norm == "linf" else w.norm()
    dist = margin[keep] / dual
    eps0 = torch.full_like(dist, 0.6 * threat.eps)
    torch.manual_seed(0)
    x_found, eps = d.search(model, x[keep], y[keep], eps0)
    max_eps = 1.05 * threat.eps
    inside = dist < max_eps
    tol = torch.where(dist < eps0, eps0, max_eps - eps0) / 2**10
    assert inside.sum() > 10
    assert torch.all((eps[inside] - dist[inside]).abs() <= tol[inside] + 1e-12)
    assert torch.all(eps[~inside] == max_eps)
    with torch.no_grad():
        assert torch.all(soft_logit_margin(model(x_found[inside]), y[keep][inside]) >= 0)


def test_mma_bisection_bracket_and_state_survives_resume():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        model[1].bias.copy_(torch.tensor([0.0, -0.5]))
    x = torch.tensor([[0.2, 0.5, 0.5, 0.5]], dtype=torch.float64)  # class 0, margin 0.3 along +e1
    unit = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    t = bisect_margin(model, x, torch.tensor([0]), unit, torch.tensor([0.1], dtype=torch.float64), 1.0, 10)
    assert abs(float(t) - 0.3) <= 0.9 / 2**10
    d = build_defense("mma", LINF)
    d.store.set(torch.tensor([3, 7]), torch.tensor([0.01, 0.02]))
    other = build_defense("mma", LINF)
    other.load_state_dict(d.state_dict())
    assert torch.equal(other.store.get(torch.tensor([7, 3, 9])), torch.tensor([0.02, 0.01, 0.0]))


def test_mma_loss_stores_radii_that_a_resumed_defense_reuses():
    model = tiny_model(bn=False)
    x, y = tiny_batch(16)
    with torch.no_grad():
        model.fc.weight.mul_(30.0)  # confident predictions: soft margin < 0 where argmax = y
        y[:10] = model(x[:10]).argmax(1)
    opts = {"steps": 2, "bisection_steps": 6, "min_eps": 0.001}
    d = build_defense("mma", LINF, {**opts, "clean_loss_coeff": 1.0})
    idx = torch.arange(100, 116)
    torch.manual_seed(0)
    loss, logs = d.loss(model, x, y, ctx(idx=idx))
    clean = float(F.cross_entropy(model(x), y).detach())
    assert float(loss.detach()) == pytest.approx(clean, rel=1e-6)  # clean_loss_coeff 1: the clean CE only
    stored = d.store.get(idx)
    correct = soft_logit_margin(model(x).detach(), y) < 0
    assert correct.sum() >= 5
    assert torch.all(stored[~correct] == 0) and torch.all(stored[correct] > 0)
    # a defense restored from the state starts each sample's search at its stored radius: same result
    resumed, fresh = build_defense("mma", LINF, opts), build_defense("mma", LINF, opts)
    resumed.load_state_dict(d.state_dict())
    d.options = resumed.options
    out = []
    for defense in (d, resumed, fresh):
        torch.manual_seed(1)
        out.append(defense.loss(model, x, y, ctx(idx=idx))[1]["mma_avg_eps"])
    assert out[0] == out[1] != out[2]


# ---------------------------------------------------------------- SAT: schedules


EPOCHS = [0, 29, 30, 40, 45, 50, 60, 69, 70, 100]
PAPER_LAMBDA = {  # SAT App. A / Fig. 5, read off the text
    "step-mnist": [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1],
    "step-prn20": [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1],
    "step-wrn": [0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1],
    "linear-hsat": [0.8, 0.8 + 0.2 * 29 / 30, 1, 1, 1, 1, 1, 1, 1, 1],
    "linear-psat": [0, 0, 0, 0.25, 0.375, 0.5, 0.75, 39 / 40, 1, 1],
}


@pytest.mark.parametrize("schedule", sorted(PAPER_LAMBDA))
def test_lambda_schedules_match_the_paper(schedule):
    got = [sat_lambda(schedule, e) for e in EPOCHS]
    assert got == pytest.approx(PAPER_LAMBDA[schedule], abs=1e-12)
    assert sat_lambda(schedule, 8.0, scale=0.1) == pytest.approx(sat_lambda(schedule, 80.0))


def test_lambda_recorded_per_epoch_and_linear_picks_the_method():
    model = tiny_model()
    assert build_defense("p-sat", LINF).on_epoch_start(50, model) == {"sat_lambda": 0.5}
    assert build_defense("h-sat", LINF).on_epoch_start(15, model) == {"sat_lambda": pytest.approx(0.9)}
    d = build_defense("p-sat", LINF, {"lambda_schedule": "step-wrn", "schedule_per_iteration": True})
    assert d.lam_at(ctx(epoch=29, step=9)) == 0.0  # progress 29.9 < 30
    assert d.lam_at(StepContext(29, 10, 10, 100, 10)) == pytest.approx(1 / 3)
    assert build_defense("dat", LINF).on_epoch_start(40, model) == {"dat_fosc_threshold": 0.25}


# ---------------------------------------------------------------- P-SAT


def test_psat_binary_gamma_equivalence():
    """Binary: ψ_P ≤ λ ⇔ CE ≤ −log((1 − λ)/2); multi-class: ⇔ CE ≤ −log(p_other − λ) when p_other > λ."""
    for py in torch.linspace(0.01, 0.99, 37, dtype=torch.float64):
        logits = torch.log(torch.stack([py, 1 - py]))[None]
        for lam in torch.linspace(-0.95, 0.95, 39, dtype=torch.float64):
            gap = float(prob_gap(logits, torch.tensor([0])))
            ce = float(F.cross_entropy(logits, torch.tensor([0])))
            if abs(gap - float(lam)) > 1e-9:
                assert (gap <= lam) == (ce <= -math.log((1 - float(lam)) / 2))
    torch.manual_seed(0)
    z = torch.randn(200, 5, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (200,))
    p = F.softmax(z, 1)
    p_other = p.scatter(1, y[:, None], 0).max(1).values
    for lam in (-0.5, 0.0, 0.3):
        ok = p_other > lam
        lhs = prob_gap(z, y) <= lam
        rhs = F.cross_entropy(z, y, reduction="none") <= -torch.log(p_other - lam).nan_to_num(nan=0.0)
        assert torch.equal(lhs[ok], rhs[ok])


def test_psat_samples_above_lambda_never_move():
    model = tiny_model().eval()
    x, y = tiny_batch(64)
    torch.manual_seed(7)
    start = x + random_init(x, LINF, "uniform")
    with torch.no_grad():
        gap0 = prob_gap(model(start), y)
    lam = float(gap0.median())
    d = build_defense("p-sat", LINF, {"lambda_schedule": "constant", "lam": lam})
    torch.manual_seed(7)
    x_adv, taken = d.perturb(model, x, y, lam)
    above = gap0 > lam
    assert above.any() and (~above).any()
    assert torch.equal(x_adv[above], start[above])  # frozen at the random start
    assert torch.all(taken[above] == 0)
    assert torch.all(taken[~above] > 0)
    # λ below every gap: P-SAT returns exactly the random start
    torch.manual_seed(7)
    x_none, taken = d.perturb(model, x, y, -1.0)
    assert torch.equal(x_none, start) and int(taken.sum()) == 0


def test_psat_early_termination_point_on_linear_model(linear_problem):
    """The returned point is the first PGD iterate whose gap exceeds λ (or the last iterate)."""
    model, x, y, w, b = linear_problem
    threat = ThreatModel.parse("0.05")
    lam, alpha, steps = 0.2, 0.01, 8
    with frozen(model, "eval"):
        got, _ = curriculum_pgd(model, x, y, threat, steps=steps, alpha=alpha, init="zero",
                                logit_mask=lambda z, t: prob_gap(z, t) <= lam)
    # by hand: plain PGD iterates of the linear model, stop at the first violating one
    direction = torch.where(y[:, None] == 1, -w.sign(), w.sign()).view_as(x)
    expected = []
    for i in range(len(x)):
        xi = x[i]
        for k in range(steps + 1):
            delta = (k * alpha * direction[i]).clamp(-threat.eps, threat.eps)
            s = float((xi + delta).flatten() @ w + b)
            p1 = 1 / (1 + math.exp(-s))
            gap = (p1 - (1 - p1)) * (1 if int(y[i]) == 0 else -1)
            if gap > lam or k == steps:
                expected.append(xi + delta)
                break
    torch.testing.assert_close(got, torch.stack(expected), rtol=0, atol=1e-12)


def test_psat_at_max_lambda_equals_pgd_at_step_for_step():
    x, y = tiny_batch(32)
    a, b = tiny_model(), tiny_model()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    pgd = build_defense("pgd-at", LINF, {"steps": 3, "attack_bn_mode": "eval"})
    psat = build_defense("p-sat", LINF, {"steps": 3, "lambda_schedule": "constant", "lam": 1.0})
    a.train()
    b.train()
    for step in range(3):
        torch.manual_seed(100 + step)
        la = pgd.train_step(a, opt_a, x, y, ctx(step=step))
        torch.manual_seed(100 + step)
        lb = psat.train_step(b, opt_b, x, y, ctx(step=step))
        assert la["loss"] == lb["loss"]
        assert_same_params(a, b)
        assert all(torch.equal(u, v) for u, v in zip(a.buffers(), b.buffers(), strict=True))


# ---------------------------------------------------------------- H-SAT


def quadratic_loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.squeeze(1) - t) ** 2


def test_hsat_eigen_machinery_on_quadratic_loss():
    """ℓ_i(θ) = ½(x_iᵀθ − y_i)²: Hessian x_i x_iᵀ, top eigenvalue ‖x_i‖²."""
    torch.manual_seed(0)
    model = nn.Linear(6, 1, bias=False).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    t = torch.randn(10, dtype=torch.float64)
    exact = (x * x).sum(1)
    power = top_hessian_eigenvalue(model, x, t, iters=5, loss_fn=quadratic_loss)
    torch.testing.assert_close(power, exact, rtol=1e-8, atol=0)
    ray, _ = hessian_scores(model, x, t, chunk=1, bound="rayleigh", loss_fn=quadratic_loss)
    torch.testing.assert_close(ray, exact, rtol=1e-6, atol=0)
    # printed bounds (Eq. 20 and 19) against a hand evaluation with chunk = 1
    up, _ = hessian_scores(model, x, t, chunk=1, bound="upper", loss_fn=quadratic_loss)
    lo, _ = hessian_scores(model, x, t, chunk=1, bound="lower", loss_fn=quadratic_loss)
    theta = model.weight.detach()[0]
    for i in range(10):
        r = float(x[i] @ theta - t[i])
        g = r * x[i]
        n = float(g.norm())
        a = 0.01 * n

        def ell(th, i=i):
            return 0.5 * float(x[i] @ th - t[i]) ** 2

        l0, lp, lm = ell(theta), ell(theta + 0.01 * g), ell(theta - 0.01 * g)
        assert float(up[i]) == pytest.approx((lp + a * n) / a - l0, rel=1e-9)
        assert float(lo[i]) == pytest.approx(max(lp - a * n, lm + a * n) / a - l0, rel=1e-9)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_hsat_eigenvalue_estimate_ranks_like_power_iteration():
    """Fixture: a small tanh MLP trained to fit its data (float64); per-sample estimate (chunk 1) vs the
    exact top eigenvalue by power iteration. The printed bounds are reported, not asserted (see docs)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    x = torch.randn(40, 20, dtype=torch.float64)
    y = torch.randint(0, 10, (40,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    exact = top_hessian_eigenvalue(model, x, y, iters=40, generator=torch.Generator().manual_seed(0))
    ray, _ = hessian_scores(model, x, y, chunk=1, bound="rayleigh")
    assert _spearman(exact, ray) > 0.8
    upper32, _ = hessian_scores(model, x, y, chunk=32, bound="upper")
    assert _spearman(exact, upper32) > 0.3  # the paper's chunked setting: positive, weaker (paper: > 0.6)


def test_hsat_subset_size_and_choice():
    model = tiny_model().eval()
    x, y = tiny_batch(20)
    lam = 0.3
    torch.manual_seed(4)
    start = x + random_init(x, LINF, "uniform")
    scores, _ = hessian_scores(model, start, y, chunk=8)
    torch.manual_seed(4)
    out, taken = hsat_perturb(model, x, y, LINF, steps=1, alpha=2 / 255, lam=lam, chunk=8, unselected="noise")
    moved = (out - start).flatten(1).abs().amax(1) > 0
    k = round(lam * 20)
    assert int(moved.sum()) == k == int(taken.sum())
    assert set(moved.nonzero().squeeze(1).tolist()) == set(scores.argsort()[:k].tolist())
    assert torch.equal(out[~moved], start[~moved])


def test_hsat_rescore_every_keeps_the_subset_between_rankings():
    model = tiny_model().eval()
    x, y = tiny_batch(20)
    torch.manual_seed(4)
    out, taken = hsat_perturb(model, x, y, LINF, steps=4, alpha=2 / 255, lam=0.25, chunk=8, rescore_every=2)
    assert taken.sum() == 4 * 5  # round(0.25·20) samples per step
    assert torch.all((taken % 2) == 0)  # a subset chosen at a ranking step also takes the following step
    d = build_defense("h-sat", LINF, {"rescore_every": 2})
    assert d.inherent_passes == (10 + 5 + 2.0, 12.0)


def test_hsat_lambda_zero_is_standard_and_one_is_pgd_at():
    x, y = tiny_batch(16)
    for lam, other, opts in ((0.0, "standard", {}), (1.0, "pgd-at", {"steps": 3, "attack_bn_mode": "eval"})):
        a, b = tiny_model(), tiny_model()
        la = train_steps(other, opts, a, x, y, seed=9, n=2)
        lb = train_steps("h-sat", {"lambda_schedule": "constant", "lam": lam, "steps": 3}, b, x, y, seed=9, n=2)
        assert [r["loss"] for r in la] == [r["loss"] for r in lb]
        assert_same_params(a, b)
    # the ranking path itself at λ = 1 also walks PGD's iterates (up to chunked-gradient rounding)
    model = tiny_model(dtype=torch.float64).eval()
    xd = x.double()
    torch.manual_seed(2)
    ref = pgd_perturb(model, xd, y, LINF, steps=3, alpha=2 / 255, select="last")
    torch.manual_seed(2)
    got, taken = hsat_perturb(model, xd, y, LINF, steps=3, alpha=2 / 255, lam=1.0, chunk=5)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert torch.all(taken == 3)
    # λ = 0 with the default: no sample leaves x
    out, _ = hsat_perturb(model, xd, y, LINF, steps=2, alpha=2 / 255, lam=0.0, chunk=5)
    assert torch.equal(out, xd)


# ---------------------------------------------------------------- DAT


def test_dat_fosc_and_stop_at_vertex(linear_problem):
    a = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    eps = 0.1
    assert torch.allclose(fosc(torch.zeros_like(a), a, eps, "linf"), eps * a.flatten(1).abs().sum(1))
    assert torch.all(fosc(eps * a.sign(), a, eps, "linf") == 0)
    model, x, y, w, b = linear_problem
    threat = ThreatModel.parse("0.05")
    alpha = 0.012
    with frozen(model, "eval"):
        out, taken = curriculum_pgd(model, x, y, threat, steps=10, alpha=alpha, init="zero",
                                    grad_mask=lambda d, g: fosc_active(d, g, threat.eps, "linf", 0.0))
    vertex = x + threat.eps * torch.where(y[:, None] == 1, -w.sign(), w.sign()).view_as(x)
    torch.testing.assert_close(out, vertex, rtol=0, atol=1e-15)
    assert torch.all(taken == math.ceil(threat.eps / alpha))
    d = build_defense("dat", LINF)
    assert [d.threshold(e) for e in (0, 40, 80, 100)] == [0.5, 0.25, 0.0, 0.0]


# ---------------------------------------------------------------- CAT


class ConstantModel(nn.Module):
    """Predicts class 0 whatever the input (logits independent of x), so correctness is fixed by the label."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([5.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 3) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_cat_radius_bookkeeping_and_labels():
    model = ConstantModel()
    x, _ = tiny_batch(4, classes=3)
    y = torch.tensor([0, 0, 1, 2])  # first two always correct, last two always wrong
    d = build_defense("cat", LINF, {"steps": 1})
    idx = torch.tensor([10, 11, 12, 13])
    for k in range(1, 12):
        d.loss(model, x, y, ctx(num_classes=3, idx=idx))
        eps = d.store.get(idx)
        assert eps[:2] == pytest.approx([min(k * 0.005, 8 / 255)] * 2, abs=1e-7)
        assert torch.all(eps[2:] == 0)
    labels = d.smooth_labels(torch.tensor([0, 1, 2]), torch.tensor([0.0, 0.01, 0.03]), 3)
    torch.testing.assert_close(labels.sum(1), torch.ones(3))
    assert torch.all(labels >= 0) and float(labels[0, 0]) == 1.0


# ---------------------------------------------------------------- RAT


def test_rat_closed_form_row_sums_match_autograd():
    torch.manual_seed(0)
    head = nn.Linear(7, 4).double()
    h = torch.randn(12, 7, dtype=torch.float64)
    y = torch.randint(0, 4, (12,))
    z = head(h)
    (g,) = torch.autograd.grad(F.cross_entropy(z, y), head.weight)
    torch.testing.assert_close(last_layer_row_sums(z, h, y), g.sum(1), rtol=0, atol=1e-12)


def test_reg_gap_hand_computation_and_guards():
    cc = 0.8
    m, guards = reg_gap(torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64), cc)
    expected = torch.tensor([[1 - cc, cc, 0.0], [cc, 1 - cc, 0.0], [0.25 * cc, 0.75 * cc, 1 - cc]],
                            dtype=torch.float64)
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-15)
    assert guards == 0
    torch.manual_seed(0)
    m, _ = reg_gap(torch.randn(10, dtype=torch.float64), 0.98)
    torch.testing.assert_close(m.sum(1), torch.ones(10, dtype=torch.float64))
    assert torch.all(m.diagonal() == 1 - 0.98) and torch.all(m >= 0)
    for v in (torch.ones(4), torch.tensor([0.0, 0.0, 2.0, 0.0])):  # constant; one-hot after the shift
        m, guards = reg_gap(v, cc)
        assert guards > 0 and torch.isfinite(m).all()
        torch.testing.assert_close(m.sum(1), torch.ones(4))


def test_rat_soft_label_targets_two_class_toy():
    """2 classes: every row of reg_gap is (1 − cc on the label, cc on the other class); the loss terms
    equal the KLs written out by hand."""
    cc = 0.7
    z = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-0.3, 0.4]], dtype=torch.float64)
    za = torch.tensor([[1.0, 0.0], [0.1, 0.6], [-0.8, 0.9]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    h, ha = torch.tensor([[1.0], [2.0], [0.5]]), torch.tensor([[1.5], [1.0], [0.5]])
    r_nat, r_adv = last_layer_row_sums(z, h, y), last_layer_row_sums(za, ha, y)
    # hand: r_j = mean_b (p_bj − 1[y_b = j])·h_b
    p = F.softmax(z, 1)
    hand = [sum((float(p[b_, j]) - (1.0 if int(y[b_]) == j else 0.0)) * float(h[b_, 0]) for b_ in range(3)) / 3
            for j in range(2)]
    assert r_nat.tolist() == pytest.approx(hand, rel=1e-12)
    targets, _ = taylor_targets(r_nat, r_adv, y, cc)
    want = torch.tensor([[1 - cc, cc], [1 - cc, cc], [cc, 1 - cc]], dtype=torch.float64)
    for key in ("y1", "y2", "yy1", "yy2"):
        torch.testing.assert_close(targets[key], want, rtol=0, atol=1e-15)
    first, second = taylor_terms(z, za, targets)

    def kl(t, logits):
        q = F.softmax(logits, 1)
        return sum(float(t[i, c]) * math.log(float(t[i, c]) / float(q[i, c])) for i in range(3) for c in range(2)) / 3

    assert float(first) == pytest.approx(0.5 * (kl(want, za) + kl(want, z)), rel=1e-12)
    assert float(second) == pytest.approx(float(first), rel=1e-12)


def test_rat_second_target_options_differ_only_in_yy1():
    torch.manual_seed(3)
    z, za = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    r_nat, r_adv = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    tc, _ = taylor_targets(r_nat, r_adv, y, 0.8, "code")
    ts, _ = taylor_targets(r_nat, r_adv, y, 0.8, "symmetric")
    eta = 0.2
    diff = 0.5 * eta * (taylor_terms(z, za, tc)[1] - taylor_terms(z, za, ts)[1])
    lqa = F.log_softmax(za, 1)
    t2_, t2 = reg_gap(r_adv**2 - r_nat**2, 0.8)[0], reg_gap(r_nat**2 - r_adv**2, 0.8)[0]
    hand = 0.5 * eta * 0.5 * (F.kl_div(lqa, t2_[y], reduction="batchmean")
                              - F.kl_div(lqa, t2[y], reduction="batchmean"))
    assert float(diff) == pytest.approx(float(hand), abs=1e-12)
    assert torch.equal(tc["yy2"], ts["yy2"]) and torch.equal(tc["y1"], ts["y1"])


@pytest.mark.parametrize("base,other,extra", [
    ("trades", "trades", {}),
    ("awp-trades", "trades-awp", {}),
    ("pgd-at", "pgd-at", {"attack_bn_mode": "eval"}),
])
def test_rat_with_eta_zero_and_no_noise_is_its_base(base, other, extra):
    x, y = tiny_batch(16)
    a, b = tiny_model(), tiny_model()
    epoch = 10  # after AWP's warm-up
    la = train_steps(other, {"steps": 2, **extra}, a, x, y, seed=3, n=2, epoch=epoch)
    lb = train_steps("rat", {"base": base, "eta": 0.0, "noise_std": 0.0, "steps": 2}, b, x, y, seed=3, n=2,
                     epoch=epoch)
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert_same_params(a, b)


def test_rat_noise_is_isolated_and_has_the_right_std():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 5), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(64 * 4 * 4, 10))
    d = build_defense("rat", LINF, {"noise_std": 0.01})
    names = d.noisy_params(model)
    assert names == ["0.weight", "0.bias"]
    noise = d.weight_noise(model)
    assert float(noise["0.weight"].std()) == pytest.approx(0.01, rel=0.05)
    before = params_of(model)
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    model.train()
    d.craft(model, x, y)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)
    assert build_defense("rat", LINF, {"noise_layers": "weights"}).noisy_params(model) == ["0.weight", "3.weight"]
    assert build_defense("rat", LINF, {"base": "awp-trades"}).weight_noise(model) == {}


def test_rat_loss_adds_the_taylor_terms():
    model = tiny_model()
    x, y = tiny_batch(16)
    d0 = build_defense("rat", LINF, {"eta": 0.0, "noise_std": 0.0, "steps": 1})
    d = build_defense("rat", LINF, {"eta": 0.2, "noise_std": 0.0, "steps": 1})
    model.eval()  # deterministic forwards for the comparison
    torch.manual_seed(0)
    l0, logs0 = d0.loss(model, x, y, ctx())
    torch.manual_seed(0)
    l1, logs1 = d.loss(model, x, y, ctx())
    expected = 0.8 * logs0["ce"] + 6.0 * logs0["kl"] + 0.2 * logs1["rat_first"] + 0.1 * logs1["rat_second"]
    assert float(l1.detach()) == pytest.approx(expected, rel=1e-5)
    assert logs1["rat_guards"] == 0
