"""resnet50 (the ImageNet block of Finlay & Oberman): parameter count from the Bottleneck layout (and the known
figure for 1000 classes), the zero-γ residual BNs, the N(0, 0.01) classifier, forward at the DAWNBench phase
sizes, double backprop and grad checkpointing."""

from __future__ import annotations

import torch
from torch import nn

from advbench.models import build_model, count_parameters, enable_grad_checkpointing, last_linear


def bottleneck_resnet_params(classes: int, in_ch: int = 3, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> int:
    """Counted from the layout: 7x7 stem in_ch -> 64 + BN; a Bottleneck of width w (in c, out 4w) has 1x1 c->w,
    3x3 w->w, 1x1 w->4w (no biases) and three BNs (2 parameters per channel); the first block of a stage adds a
    1x1 projection c->4w + BN; fc 2048 -> classes with bias."""
    total = 49 * in_ch * 64 + 2 * 64
    c = 64
    for width, n in zip((64, 128, 256, 512), blocks, strict=True):
        for i in range(n):
            total += c * width + 9 * width * width + width * 4 * width + 2 * (width + width + 4 * width)
            if i == 0:
                total += c * 4 * width + 2 * 4 * width
            c = 4 * width
    return total + 2048 * classes + classes


def test_parameter_count() -> None:
    with torch.device("meta"):
        m1000 = build_model("resnet50", num_classes=1000, input_size=224)
        m10 = build_model("resnet50", num_classes=10, input_size=224)
        m1 = build_model("resnet50", num_classes=10, in_channels=1, input_size=128)
    assert count_parameters(m1000) == bottleneck_resnet_params(1000) == 25_557_032  # torchvision's published count
    assert count_parameters(m10) == bottleneck_resnet_params(10) == 23_528_522  # the figure in docs/models.md
    assert count_parameters(m1) == bottleneck_resnet_params(10, in_ch=1)


def test_initialisation() -> None:
    torch.manual_seed(0)
    net = build_model("resnet50", num_classes=1000, input_size=224).net
    blocks = [b for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for b in stage]
    assert len(blocks) == 16
    for b in blocks:  # the last BN of each Bottleneck starts at γ = 0 (the block is the identity); the others at 1
        assert torch.equal(b.bn3.weight, torch.zeros_like(b.bn3.weight))
        assert torch.equal(b.bn1.weight, torch.ones_like(b.bn1.weight))
    fc = net.fc
    assert fc.out_features == 1000 and fc.in_features == 2048
    assert abs(float(fc.weight.detach().std()) - 0.01) < 2e-4  # 2M draws: the sample std is within 0.1% of 0.01
    assert abs(float(fc.weight.detach().mean())) < 5e-5
    assert torch.equal(fc.bias, torch.zeros(1000))
    assert not any(getattr(m, "inplace", False) for m in net.modules())


def test_forward_at_phase_sizes_and_last_linear() -> None:
    torch.manual_seed(1)
    model = build_model("resnet50", num_classes=7, input_size=224).eval()
    assert last_linear(model) is model.net.fc
    with torch.no_grad():
        for size in (128, 224, 288):
            out = model(torch.rand(1, 3, size, size))
            assert out.shape == (1, 7) and torch.isfinite(out).all()
    # with every residual branch zeroed the signal still flows through the projections: different images,
    # different logits
    with torch.no_grad():
        a, b = model(torch.zeros(1, 3, 64, 64)), model(torch.ones(1, 3, 64, 64))
    assert not torch.allclose(a, b)


def test_double_backprop_and_checkpointing_agree() -> None:
    torch.manual_seed(2)
    model = build_model("resnet50", num_classes=5, input_size=64).train()
    for m in model.modules():  # non-zero γ, so every block takes part in the gradient
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = torch.tensor([1, 3])

    def input_grad_penalty_grad() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        (w,) = torch.autograd.grad(g.pow(2).sum(), model.net.fc.weight)
        return w

    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = input_grad_penalty_grad()
    model.load_state_dict(state)  # the BN running statistics as before the first forward
    enable_grad_checkpointing(model, "resnet50")
    assert model.net.grad_checkpointing
    checked = input_grad_penalty_grad()
    assert plain.abs().sum() > 0
    torch.testing.assert_close(checked, plain, rtol=1e-4, atol=1e-7)
