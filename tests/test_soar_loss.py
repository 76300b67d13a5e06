"""SOAR Table 8's diagnostic `soar-loss` (SOAR's regularized loss with R averaged over n draws of z) against the
regularizer of Eq. 11 computed with the exact Hessian-vector product in float64, and the Table 8 grid end to end."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advbench import api, runs
from advbench.attacks import ATTACKS
from advbench.report import load_frame
from advbench.report.paper_grids import build_paper_grid
from advbench.threat import ThreatModel


def _tanh_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.rand(6, 3, 2, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    return model.eval(), x, torch.randint(0, 3, (6,), generator=g)


def _exact(model, x, y, eps: float, draws, lam: float) -> torch.Tensor:
    """ℓ(x) + λ·mean_z R(x; z) with R = ((dε²+1)/2)·‖[‖z_d‖·H ẑ_d + z_1 g ; gᵀz_d + z_1]‖₂, exact H."""
    out = []
    d = x[0].numel()
    factor = 0.5 * (d * eps**2 + 1)
    for i in range(x.shape[0]):
        def loss(xi, i=i):
            return F.cross_entropy(model(xi[None]), y[i:i + 1])
        xi = x[i].clone().requires_grad_(True)
        g = torch.autograd.grad(loss(xi), xi)[0]
        regs = []
        for z_d, z_1 in draws:
            zd, z1 = z_d[i], z_1[i]
            zh = zd / zd.norm()
            hv = torch.autograd.functional.hvp(loss, xi.detach(), zh)[1]
            top = zd.norm() * hv + z1 * g
            bot = (g * zd).sum() + z1
            regs.append(factor * torch.cat([top.flatten(), bot[None]]).norm())
        out.append(loss(xi.detach()) + lam * torch.stack(regs).mean())
    return torch.stack(out).detach()


def test_soar_loss_equals_the_regularized_loss_with_the_exact_hessian():
    model, x, y = _tanh_net()
    threat = ThreatModel.parse("8/255", "linf")
    for n_z in (1, 3):
        attack = ATTACKS.get("soar-loss")(threat, n_z=n_z, h=1e-6, lam=0.5, init="zero")
        got = attack.perturb_ex(model, x, y, torch.Generator().manual_seed(1))
        g = torch.Generator().manual_seed(1)  # the attack's draws, in its order
        draws = [(torch.randn(x.shape, generator=g).double(), torch.randn(x.shape[0], generator=g).double())
                 for _ in range(n_z)]
        want = _exact(model, x, y, 8 / 255, draws, 0.5)
        assert torch.equal(got.x_adv, x)  # init zero: x' = x
        assert torch.allclose(torch.tensor(got.per_sample["soar_loss"], dtype=torch.float64), want, rtol=1e-4)
        summary = attack.summarize(got.per_sample, {}, [], threat)
        assert abs(summary["soar_loss_mean"] - float(want.mean())) < 1e-4 * float(want.abs().mean())


def test_soar_loss_refuses_bad_options():
    import pytest

    from advbench.errors import UserError

    for bad in ({"n_z": 0}, {"h": 0.0}, {"lam": -1.0}, {"init": "nope"}):
        with pytest.raises(UserError):
            ATTACKS.get("soar-loss")(ThreatModel.parse("8/255", "linf"), **bad)


def test_soar_table8_grid_shows_the_stored_mean_loss(tmp_path):
    tiny = {"epochs": 1, "base_epochs": 1, "base_n_train": 48, "n_train": 48, "batch_size": 16, "val_n": 8,
            "val_attack_steps": 1, "train_attack_steps": 2, "n_eval": 4, "n_eval_expensive": 4,
            "synthetic_options": {"n_train": 120, "n_test": 16}}
    api.reproduce("soar", "8", out=tmp_path, smoke=tiny, device="cpu", seeds=[0])
    grid = build_paper_grid(load_frame([tmp_path]), "soar", "8")
    for row in ("Beginning of SOAR", "End of SOAR"):
        run = grid.runs_per_row[row][0]
        stored = next(p for p in (tmp_path.rglob("soar-loss-nz*.json")) if str(p).startswith(run))
        for r in runs.read_json(stored)["results"]:
            values = r["per_sample"]["soar_loss"]
            assert grid.values[(row, r["label"])] == [sum(values) / len(values)]
