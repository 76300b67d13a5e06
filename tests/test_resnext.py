"""resnext34-2x32 (Finlay & Oberman's CIFAR-10 network): parameter count from the layer formula, shapes of
every stage, the branch block against an explicit per-branch computation, the head and the options."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from advbench.errors import UserError
from advbench.models import build_model, count_parameters, last_linear, model_options


def expected_params(classes: int, in_ch: int = 3, base: int = 32, branches: int = 2, blocks: int = 5) -> int:
    """Counted from the layout: conv unit = k²·cin·cout weights + cout bias (its BN has no parameters);
    branch block on C: 3x3 C→bC, grouped 3x3 bC→bC (b groups: C inputs per output), two affine BNs on bC;
    head = 4C·classes weights + classes bias (BN1d without parameters)."""
    def unit(cin: int, cout: int, k: int) -> int:
        return k * k * cin * cout + cout

    def block(c: int) -> int:
        wide = branches * c
        return 9 * c * wide + 9 * c * wide + 2 * (2 * wide)

    total = unit(in_ch, base, 3)
    widths = [base, 2 * base, 4 * base]
    for i, c in enumerate(widths):
        if i > 0:
            total += unit(c // 2, c, 1)
        total += blocks * block(c)
    return total + widths[-1] * classes + classes


def test_parameter_count_matches_layer_formula() -> None:
    with torch.device("meta"):
        m10 = build_model("resnext34-2x32", num_classes=10)
        m100 = build_model("resnext34-2x32", num_classes=100)
        m1 = build_model("resnext34-2x32", num_classes=10, in_channels=1, input_size=28)
    assert count_parameters(m10) == expected_params(10) == 3_892_298  # the figure in docs/models.md
    assert count_parameters(m100) == expected_params(100)
    assert count_parameters(m1) == expected_params(10, in_ch=1)


def test_stage_shapes_and_logits() -> None:
    torch.manual_seed(0)
    model = build_model("resnext34-2x32", num_classes=10).eval()
    net = model.net
    seen: list[tuple[int, ...]] = []
    mods = [net.stem] + [stage[-1] for stage in net.stages]  # the stages run block by block
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape))) for m in mods]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen == [(2, 32, 32, 32), (2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8)]
    assert out.shape == (2, 10)
    assert bool((out >= 0).all())  # the released code's ReLU on the logits
    assert last_linear(model) is net.head
    assert sum(1 for m in net.modules() if isinstance(m, torch.nn.Conv2d)) + 1 == 34  # 33 convs + 1 linear
    small = build_model("resnext34-2x32", num_classes=7, in_channels=1, input_size=28).eval()
    with torch.no_grad():
        assert small(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_branch_block_is_mean_of_explicit_branches() -> None:
    torch.manual_seed(1)
    model = build_model("resnext34-2x32", num_classes=10).double().eval()
    blk = model.net.stages[1][3]  # a 64-channel block
    for bn in (blk.bn0, blk.bn1):  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 64, 6, 6, dtype=torch.float64)

    def bn_eval(t: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
        s = (bn.running_var + bn.eps).rsqrt() * bn.weight
        return (t - bn.running_mean.view(1, -1, 1, 1)) * s.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)

    a = F.relu(bn_eval(F.conv2d(x, blk.conv0.weight, padding=1), blk.bn0))
    paths = []
    for g in range(2):  # branch g: its 64 channels of the first conv, its own 3x3 conv, its BN slice
        ch = slice(64 * g, 64 * (g + 1))
        w = blk.conv1.weight[ch]  # [64, 64, 3, 3]
        z = F.conv2d(a[:, ch], w, padding=1)
        s = (blk.bn1.running_var[ch] + blk.bn1.eps).rsqrt() * blk.bn1.weight[ch]
        paths.append((z - blk.bn1.running_mean[ch].view(1, -1, 1, 1)) * s.view(1, -1, 1, 1)
                     + blk.bn1.bias[ch].view(1, -1, 1, 1))
    expected = F.relu(x + 0.5 * (paths[0] + paths[1]))
    with torch.no_grad():
        torch.testing.assert_close(blk(x), expected, rtol=1e-12, atol=1e-12)


def test_head_and_options() -> None:
    assert model_options("resnext34-2x32") == {"branches": 2, "width": 32, "logit_relu": True}
    torch.manual_seed(2)
    plain = build_model("resnext34-2x32", num_classes=10, options={"logit_relu": "false"}).eval()
    head = plain.net.head
    feats = torch.randn(4, 128)
    with torch.no_grad():
        z = head(feats)
        ref = (feats @ head.weight.T - head.bn.running_mean) / (head.bn.running_var + head.bn.eps).sqrt() + head.bias
    torch.testing.assert_close(z, ref)
    assert bool((z < 0).any())
    with torch.device("meta"):
        wide = build_model("resnext34-2x32", num_classes=10, options={"branches": "4", "width": "16"})
    assert count_parameters(wide) == expected_params(10, base=16, branches=4)
    with pytest.raises(UserError, match="branches"):
        build_model("resnext34-2x32", num_classes=10, options={"branches": "0"})


def test_double_backprop_in_train_mode() -> None:
    torch.manual_seed(3)
    model = build_model("resnext34-2x32", num_classes=10, options={"logit_relu": "false"}).train()
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    loss = F.cross_entropy(model(x), torch.arange(4))
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    g.pow(2).sum().backward()
    assert model.net.stages[2][-1].conv1.weight.grad is not None
    assert torch.isfinite(model.net.stem.conv.weight.grad).all()
