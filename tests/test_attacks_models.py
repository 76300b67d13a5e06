"""Fixture models for the attack tests (trained once per process), and checks that they are what the tests assume.

``small_problem()`` trains a small BN CNN on 4-class noisy-template images (3x8x8) in a few seconds: clean
accuracy ~87% and PGD-20 accuracy that falls gradually with eps, so attack comparisons are not trivial.
``QuantizedInput`` and ``SaturatedLogits`` wrap it into deliberately gradient-masked models.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

K = 4


def template_data(n: int, seed: int, sigma: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of K noisy class templates (templates fixed, noise and labels from ``seed``), in [0, 1]."""
    g = torch.Generator().manual_seed(1234)
    mu = 0.4 + 0.2 * torch.rand(K, 3, 8, 8, generator=g)
    g2 = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g2)
    x = (mu[y] + sigma * torch.randn(n, 3, 8, 8, generator=g2)).clamp(0, 1)
    return x, y


class SmallNet(nn.Module):
    """conv-BN-ReLU, strided conv-ReLU, linear: logits for K classes from [0, 1] inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                               nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, K))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class QuantizedInput(nn.Module):
    """Gradient masking by input quantisation: round(x·255)/255 has zero gradient everywhere."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 255) / 255)


class SaturatedLogits(nn.Module):
    """Gradient masking by saturation: logits scaled by 1e4, so softmax (and CE's gradient) underflows."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e4


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = SmallNet()
        x, y = template_data(2000, 1)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), 100):
                idx = perm[i:i + 100]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return {k: v.clone() for k, v in model.state_dict().items()}


def small_problem(n_test: int = 500) -> tuple[SmallNet, torch.Tensor, torch.Tensor]:
    """A fresh copy of the trained fixture model (eval mode) and the first ``n_test`` test images."""
    model = SmallNet()
    model.load_state_dict(_trained_state())
    x, y = template_data(500, 2)
    return model.eval(), x[:n_test], y[:n_test]


def test_fixture_model_is_trained_and_attackable():
    from advbench.attacks import build_attack
    from advbench.threat import ThreatModel

    model, x, y = small_problem(300)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert clean > 0.8
    accs = []
    for eps in ("2/255", "8/255"):
        res = build_attack("pgd", ThreatModel.parse(eps), {"steps": 10})(model, x, y,
                                                                          generator=torch.Generator().manual_seed(0))
        accs.append(res.correct.float().mean().item())
    assert clean > accs[0] > accs[1] > 0.05  # graded, neither trivial nor hopeless


def test_masked_wrappers_mask_gradients_but_keep_predictions():
    model, x, y = small_problem(64)
    for wrapper in (QuantizedInput(model), SaturatedLogits(model)):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(wrapper(xg), y, reduction="sum"), xg)
        zero = (g.flatten(1).abs().sum(1) == 0).float().mean().item()
        assert zero > 0.5
        agree = (wrapper(x).argmax(1) == model(x).argmax(1)).float().mean().item()
        assert agree > 0.9
