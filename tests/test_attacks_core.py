"""FGSM and PGD against analytic optima on a linear model; ball, box, mode and weight invariants."""

from __future__ import annotations

import copy

import pytest
import torch

from advbench.attacks import ATTACKS, build_attack
from advbench.attacks.losses import cw_loss, dlr_loss, margin
from advbench.attacks.pgd import pgd_perturb
from advbench.threat import ThreatModel


def _signed_margin(model, x, y):
    s = model(x)[:, 1]
    return torch.where(y == 1, s, -s)


@pytest.mark.parametrize("init", ["zero", "uniform"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_reaches_analytic_optimum(linear_problem, norm, eps, init):
    model, x, y, w, b = linear_problem
    threat = ThreatModel(norm, eps, str(eps))
    steps = 50 if init == "zero" else 400  # from a random L2 start the off-axis part decays geometrically
    x_adv = pgd_perturb(model, x, y, threat, steps=steps, alpha=eps / 4, init=init, select="last")
    sign = torch.where(y == 1, 1.0, -1.0).double()
    dual = w.abs().sum() if norm == "linf" else w.norm()
    expected_margin = _signed_margin(model, x, y) - eps * dual
    assert torch.allclose(_signed_margin(model, x_adv, y), expected_margin, atol=1e-9)
    tol = 1e-9 if (init == "zero" or norm == "linf") else 1e-5
    if norm == "linf":
        expected = x - eps * sign.view(-1, 1, 1, 1) * w.sign().view(1, 3, 4, 4)
    else:
        expected = x - eps * sign.view(-1, 1, 1, 1) * (w / w.norm()).view(1, 3, 4, 4)
    assert torch.allclose(x_adv, expected, atol=tol)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_robust_accuracy_equals_analytic_fraction(linear_problem, norm, eps):
    model, x, y, w, b = linear_problem
    threat = ThreatModel(norm, eps, str(eps))
    res = build_attack("pgd", threat, {"steps": 20})(model, x, y)
    dual = w.abs().sum() if norm == "linf" else w.norm()
    analytic = (_signed_margin(model, x, y) > eps * dual)
    assert torch.equal(res.correct, analytic)


def test_fgsm_is_the_linf_optimum_on_a_linear_model(linear_problem):
    model, x, y, w, b = linear_problem
    threat = ThreatModel("linf", 8 / 255, "8/255")
    res = build_attack("fgsm", threat)(model, x, y)
    sign = torch.where(y == 1, 1.0, -1.0).double()
    expected = x - threat.eps * sign.view(-1, 1, 1, 1) * w.sign().view(1, 3, 4, 4)
    assert torch.allclose(res.x_adv, expected, atol=1e-12)
    assert res.forward == 2 * len(x) and res.backward == len(x)  # one gradient + the final prediction


def test_losses_match_hand_computation():
    z = torch.tensor([[2.0, 5.0, 1.0], [0.5, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    assert torch.allclose(margin(z, y), torch.tensor([3.0, -2.5]))
    assert torch.allclose(cw_loss(z, y, kappa=50), torch.tensor([-53.0, -47.5]))
    assert torch.allclose(cw_loss(z, y, kappa=0.0), torch.tensor([-3.0, 0.0]))
    # DLR: -(z_y - max_other) / (z_1st - z_3rd)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-3.0 / (5 - 1), 2.5 / (3 + 1)]))


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 8 * 8, 5))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_attack_stays_in_ball_and_box_and_leaves_model_unchanged(name, norm, eps):
    assert name in ATTACKS
    torch.manual_seed(0)
    model = _SmallNet().train()  # in TRAIN mode: the attack must use eval and restore train
    x = torch.rand(16, 3, 8, 8)
    x[:4] = 0.0  # corners of the box
    x[4:8] = 1.0
    y = torch.randint(0, 5, (16,))
    before = copy.deepcopy(model.state_dict())
    grads_before = [p.requires_grad for p in model.parameters()]
    threat = ThreatModel(norm, eps, str(eps))
    res = build_attack(name, threat, {"steps": 5} if name == "pgd" else {})(model, x, y)
    delta = (res.x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-7
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == grads_before
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    # the correctness flags are those of the eval-mode model on x_adv
    model.eval()
    with torch.no_grad():
        assert torch.equal(res.correct, model(res.x_adv).argmax(1) == y)


def test_more_steps_and_restarts_never_raise_accuracy():
    torch.manual_seed(1)
    model = _SmallNet().eval()
    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, 5, (64,))
    threat = ThreatModel("linf", 4 / 255, "4/255")

    def acc(**opts):
        g = torch.Generator().manual_seed(3)
        return build_attack("pgd", threat, opts)(model, x, y, generator=g).correct.float().mean().item()

    a5, a20 = acc(steps=5), acc(steps=20)
    assert a20 <= a5
    assert acc(steps=5, restarts=5) <= a5


# ---------------------------------------------------------------------------------------------------------
# losses, targeted PGD, CW-inf, selection rules, SCORPIO objectives (evaluation-protocols.md Part C 1, 3-5)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["ce", "cw", "margin", "log-margin"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_every_margin_monotone_loss_reaches_the_linear_optimum(linear_problem, norm, eps, loss):
    model, x, y, w, b = linear_problem
    threat = ThreatModel(norm, eps, str(eps))
    x_adv = pgd_perturb(model, x, y, threat, steps=8, alpha=eps / 4, init="zero", select="last", loss=loss)
    dual = w.abs().sum() if norm == "linf" else w.norm()
    assert torch.allclose(_signed_margin(model, x_adv, y), _signed_margin(model, x, y) - eps * dual, atol=1e-9)


def test_targeted_pgd_to_the_other_class_is_the_untargeted_optimum(linear_problem):
    model, x, y, w, b = linear_problem
    threat = ThreatModel("linf", 8 / 255, "8/255")
    other = 1 - y
    x_t = pgd_perturb(model, x, y, threat, steps=8, alpha=2 / 255, init="zero", select="last", targeted=True,
                      target=other)
    x_u = pgd_perturb(model, x, y, threat, steps=8, alpha=2 / 255, init="zero", select="last")
    assert torch.allclose(x_t, x_u, atol=1e-12)
    # the registered attack with a random target (necessarily the other class here) gives the analytic accuracy
    res = build_attack("pgd", threat, {"target": "random", "init": "zero"})(model, x, y,
                                                                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.correct, _signed_margin(model, x, y) > threat.eps * w.abs().sum())


def test_random_targets_are_uniform_over_the_wrong_classes():
    from advbench.attacks.pgd import pick_targets

    model = torch.nn.Linear(6, 5)
    x, y = torch.rand(4000, 6), torch.randint(0, 5, (4000,))
    t = pick_targets(model, x, y, "random", None, torch.Generator().manual_seed(0))
    assert not bool((t == y).any())
    counts = torch.bincount((t - y) % 5, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 900  # each of the 4 offsets ~1000 times


def test_log_margin_is_positive_iff_correct_and_dlr_is_shift_and_scale_invariant():
    from advbench.attacks.losses import log_margin

    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 7, generator=g) * 3
    y = torch.randint(0, 7, (500,), generator=g)
    assert torch.equal(log_margin(z, y) > 0, z.argmax(1) == y)
    assert torch.allclose(log_margin(z, y), margin(z, y), atol=1e-5)  # the log-partition cancels
    assert torch.allclose(dlr_loss(2.5 * z + 4.0, y), dlr_loss(z, y), atol=1e-5)


def test_cw_inf_loss_and_its_gradient_vanish_below_minus_kappa():
    z = torch.tensor([[0.0, 60.0, 1.0], [0.0, 10.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0])  # margins -60 (below -50) and -10
    loss = cw_loss(z, y, kappa=50.0)
    assert torch.allclose(loss, torch.tensor([0.0, -40.0]))
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(g[0], torch.zeros(3)) and g[1].abs().sum() > 0
    # CW-inf on a linear model: points misclassified by more than kappa never move
    w = torch.ones(12, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2).double())
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(12), 100 * w]))
        model[1].bias.zero_()
    x = torch.full((2, 3, 2, 2), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1])  # sample 0: margin -600 (< -50); sample 1: correctly classified
    res = build_attack("cw-inf", ThreatModel("linf", 0.01, "0.01"), {"init": "zero", "select": "last"})(model, x, y)
    assert torch.equal(res.x_adv[0], x[0]) and not torch.equal(res.x_adv[1], x[1])


def test_best_loss_selection_never_decreases_with_more_steps():
    torch.manual_seed(2)
    model = _SmallNet().eval()
    x, y = torch.rand(32, 3, 8, 8), torch.randint(0, 5, (32,))
    threat = ThreatModel("linf", 4 / 255, "4/255")
    from advbench.attacks.losses import ce_loss

    best = []
    for steps in (1, 3, 10, 30):
        x_adv = pgd_perturb(model.eval(), x, y, threat, steps=steps, alpha=1 / 255, select="best-loss",
                            generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            best.append(ce_loss(model(x_adv), y))
    for a, b in zip(best, best[1:], strict=False):
        assert bool((b >= a - 1e-6).all())


def test_restarts_only_add_successes_per_sample():
    torch.manual_seed(3)
    model = _SmallNet().eval()
    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, 5, (64,))
    threat = ThreatModel("linf", 3 / 255, "3/255")
    one = build_attack("pgd", threat, {"steps": 5})(model, x, y, generator=torch.Generator().manual_seed(7)).correct
    many = build_attack("pgd", threat, {"steps": 5, "restarts": 6})(model, x, y,
                                                                     generator=torch.Generator().manual_seed(7)).correct
    assert bool((many <= one).all()) and many.sum() < one.sum()


@pytest.mark.parametrize("name,sign", [("scorpio-ul", -1), ("scorpio-um", -1), ("scorpio-tl", 1), ("scorpio-tm", 1)])
def test_scorpio_objectives_move_the_margin_the_expected_way_each_step(linear_problem, name, sign):
    """Two classes: the random target r is the other class; UL/UM lower M(x, y), TL/TM raise M(x, r)."""
    from advbench.attacks.losses import log_margin

    model, x, y, w, b = linear_problem
    threat = ThreatModel("linf", 8 / 255, "8/255")
    r = 1 - y
    label = y if sign < 0 else r
    values = []
    for steps in range(0, 6):
        if steps == 0:
            x_adv = x
        else:
            x_adv = build_attack(name, threat, {"steps": steps, "select": "last", "step_size": 1 / 255})(
                model, x, y, generator=torch.Generator().manual_seed(0)).x_adv
        values.append(log_margin(model(x_adv), label))
    for a, c in zip(values, values[1:], strict=False):
        assert bool((sign * (c - a) > 0).all())


def test_ul_and_um_are_monotone_and_tl_minimises_ce_to_the_target_on_a_multiclass_linear_model():
    from advbench.attacks.losses import ce_loss, log_margin
    from advbench.attacks.pgd import pick_targets

    g = torch.Generator().manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 6)).double().eval()
    x = 0.3 + 0.4 * torch.rand(40, 3, 4, 4, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    threat = ThreatModel("linf", 4 / 255, "4/255")
    ce_path, m_path = [], []
    for steps in range(1, 6):
        o = {"steps": steps, "select": "last", "step_size": 1 / 255}
        ce_path.append(ce_loss(model(build_attack("scorpio-ul", threat, o)(model, x, y).x_adv), y))
        m_path.append(log_margin(model(build_attack("scorpio-um", threat, o)(model, x, y).x_adv), y))
    for a, c in zip(ce_path, ce_path[1:], strict=False):
        assert bool((c >= a - 1e-12).all())  # ascent on a convex objective
    for a, c in zip(m_path, m_path[1:], strict=False):
        assert bool((c <= a + 1e-12).all())  # descent on a concave objective
    gen = torch.Generator().manual_seed(9)
    r = pick_targets(model, x, y, "random", None, torch.Generator().manual_seed(9))
    x_tl = build_attack("scorpio-tl", threat, {"steps": 10})(model, x, y, generator=gen).x_adv
    assert bool((ce_loss(model(x_tl), r) < ce_loss(model(x), r)).all())


def test_set_options_are_typed_before_they_key_a_job():
    """``--set steps=5`` (text) and ``{"steps": 5}`` (API) are the same job: stored results are reused."""
    from advbench.api.jobs import suite_for as _suite_for

    cli = _suite_for(None, "pgd", {"steps": "5", "loss": "cw"})
    py = _suite_for(None, "pgd", {"steps": 5, "loss": "cw"})
    assert cli == py
    assert cli.entries[0].options == {"steps": 5, "loss": "cw"}


def test_suites_defined_by_paper_recipes_are_found_by_name():
    import advbench.api  # noqa: F401  (the api installs the lookup of paper and smoke suites)
    from advbench.attacks import SUITES
    from advbench.errors import UserError

    assert SUITES.get("soar-init").name == "soar-init"
    assert SUITES.get("pgd-smoke100").entries  # smoke variants register on demand
    with pytest.raises(UserError, match="unknown suite"):
        SUITES.get("no-such-suite")
