"""Tests for advbench.models: shapes, normalisation wrapper, BN-free ResNet-10, parameter counts,
double backprop, option handling and the classifier lookup."""

from __future__ import annotations

import functools
import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advbench.errors import UserError
from advbench.models import (
    MODELS,
    Normalized,
    build_model,
    count_parameters,
    last_linear,
    model_names,
    model_options,
)

ALL_MODELS = [
    "small-cnn",
    "cnn6",
    "cnn8",
    "sat-cnn",
    "resnet10",
    "resnet18",
    "resnet34",
    "preact-resnet18",
    "preact-resnet20",
    "wrn-34-10",
    "wrn-28-10",
    "wrn-28-4",
    "vgg16",
    "mobilenetv2",
    "resnext34-2x32",
]
BIG = {"wrn-34-10", "wrn-28-10"}  # not run at 28 px
HEAVY = BIG | {"resnet18", "resnet34", "preact-resnet18", "wrn-28-4", "vgg16", "mobilenetv2"}  # batch of 1


def on_meta(name: str, **kwargs: object) -> nn.Module:
    """Build without allocating or initialising weights (for counting parameters only)."""
    with torch.device("meta"):
        return build_model(name, **kwargs)


@functools.cache
def cached(name: str, num_classes: int, in_channels: int, input_size: int) -> Normalized:
    torch.manual_seed(0)
    return build_model(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size).eval()


# --------------------------------------------------------------------------- expected sizes from layouts
def conv(cin: int, cout: int, k: int, bias: bool = False, groups: int = 1) -> int:
    return cin // groups * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def linear(i: int, o: int) -> int:
    return i * o + o


def resnet_size(
    blocks: tuple[int, ...], nc: int, use_bn: bool = True, bias: bool = False, stem_k: int = 3
) -> int:
    """Kuang-Liu-style BasicBlock ResNet: stem conv(+BN), blocks with 1x1 conv(+BN) projections, linear."""
    total = conv(3, 64, stem_k, bias) + (bn(64) if use_bn else 0)
    cin = 64
    for planes, n, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2), strict=True):
        for i in range(n):
            s = stride if i == 0 else 1
            total += (
                conv(cin, planes, 3, bias) + conv(planes, planes, 3, bias) + (2 * bn(planes) if use_bn else 0)
            )
            if s != 1 or cin != planes:
                total += conv(cin, planes, 1, bias) + (bn(planes) if use_bn else 0)
            cin = planes
    return total + linear(512, nc)


def preact_size(stem: int, widths: tuple[int, ...], blocks: tuple[int, ...], nc: int, cin: int = 3) -> int:
    """Pre-activation ResNet: BN-conv-BN-conv blocks, 1x1 conv shortcut without BN, final BN, linear."""
    total = conv(cin, stem, 3)
    c = stem
    for index, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for i in range(n):
            s = 2 if (i == 0 and index > 0) else 1
            total += bn(c) + conv(c, w, 3) + bn(w) + conv(w, w, 3)
            if s != 1 or c != w:
                total += conv(c, w, 1)
            c = w
    return total + bn(c) + linear(c, nc)


def wrn_size(depth: int, widen: int, nc: int) -> int:
    n = (depth - 4) // 6
    return preact_size(16, (16 * widen, 32 * widen, 64 * widen), (n, n, n), nc)


def vgg16_size(nc: int) -> int:
    layout = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    total, c = 0, 3
    for w in layout:
        total += conv(c, w, 3, bias=True) + bn(w)
        c = w
    return total + linear(512, nc)


def mobilenetv2_size(nc: int) -> int:
    settings = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
    total, c = conv(3, 32, 3) + bn(32), 32
    for t, w, n in settings:
        for _ in range(n):
            h = c * t
            if t != 1:
                total += conv(c, h, 1) + bn(h)
            total += conv(h, h, 3, groups=h) + bn(h) + conv(h, w, 1) + bn(w)
            c = w
    return total + conv(320, 1280, 1) + bn(1280) + linear(1280, nc)


EXPECTED_SIZES = [
    # (name, options, expected number of parameters for 10 classes, 3 channels, 32 px)
    ("preact-resnet18", {}, 11_172_170),  # ~11.17M, worked out by hand from the layer layout
    ("resnet18", {}, 11_173_962),  # ~11.17M
    ("wrn-34-10", {}, 46_160_474),  # ~46.16M
    ("preact-resnet18", {}, preact_size(64, (64, 128, 256, 512), (2, 2, 2, 2), 10)),
    ("resnet18", {}, resnet_size((2, 2, 2, 2), 10)),
    ("resnet10", {}, resnet_size((1, 1, 1, 1), 10)),
    ("resnet10", {"bn": False}, resnet_size((1, 1, 1, 1), 10, use_bn=False, bias=True)),
    ("resnet10", {"bn": False, "conv_bias": False}, resnet_size((1, 1, 1, 1), 10, use_bn=False)),
    ("resnet34", {}, resnet_size((3, 4, 6, 3), 10)),
    ("preact-resnet20", {}, preact_size(16, (16, 32, 64), (3, 3, 3), 10)),
    ("preact-resnet20", {"width": "2"}, preact_size(16, (32, 64, 128), (3, 3, 3), 10)),
    ("wrn-34-10", {}, wrn_size(34, 10, 10)),
    ("wrn-28-10", {}, wrn_size(28, 10, 10)),
    ("wrn-28-4", {}, wrn_size(28, 4, 10)),
    ("wrn-28-4", {"depth": "16", "widen": "2"}, wrn_size(16, 2, 10)),
    ("vgg16", {}, vgg16_size(10)),
    ("mobilenetv2", {}, mobilenetv2_size(10)),
    # cnn6: Keras CIFAR-10 example (32 px: 64 x 6 x 6 features into fc512)
    (
        "cnn6",
        {},
        conv(3, 32, 3, True)
        + conv(32, 32, 3, True)
        + conv(32, 64, 3, True)
        + conv(64, 64, 3, True)
        + linear(64 * 6 * 6, 512)
        + linear(512, 10),
    ),
    (
        "cnn8",
        {},
        conv(3, 32, 3, True)
        + conv(32, 32, 3, True)
        + conv(32, 64, 3, True)
        + conv(64, 64, 3, True)
        + conv(64, 128, 3, True)
        + conv(128, 128, 3, True)
        + linear(128 * 2 * 2, 512)
        + linear(512, 10),
    ),
    (
        "small-cnn",
        {},
        conv(3, 16, 3, True)
        + conv(16, 16, 3, True)
        + conv(16, 32, 3, True)
        + conv(32, 32, 3, True)
        + linear(32 * 4 * 4, 128)
        + linear(128, 10),
    ),
]


# --------------------------------------------------------------------------- registry and shapes
def test_all_models_registered() -> None:
    assert set(ALL_MODELS) <= set(model_names())
    for name in model_names():
        assert MODELS.help(name)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_3ch_32px(name: str) -> None:
    model = cached(name, 10, 3, 32)
    batch = 1 if name in HEAVY else 3
    x = torch.rand(batch, 3, 32, 32)
    x_copy = x.clone()
    with torch.no_grad():
        out1 = model(x)
        out2 = model(x)
    assert out1.shape == (batch, 10)
    assert torch.isfinite(out1).all()
    assert torch.equal(out1, out2), "eval mode must be deterministic"
    assert torch.equal(x, x_copy), "the model must not change its input"


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n not in BIG])
def test_forward_1ch_28px_and_last_linear(name: str) -> None:
    """7 classes from 1-channel 28 px inputs; last_linear is the layer that produces the output."""
    model = cached(name, 7, 1, 28)
    batch = 1 if name in HEAVY else 2
    layer = last_linear(model)
    assert isinstance(layer, nn.Linear) and layer.out_features == 7
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            out = model(torch.rand(batch, 1, 28, 28))
    finally:
        handle.remove()
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()
    assert len(seen) == 1 and torch.equal(seen[0], out)


@pytest.mark.parametrize("name", ["small-cnn", "resnet34", "mobilenetv2"])
def test_forward_large_input(name: str) -> None:
    model = cached(name, 10, 3, 64)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_resnet34_stem_follows_input_size() -> None:
    small = on_meta("resnet34", num_classes=10, input_size=32).net
    large = on_meta("resnet34", num_classes=10, input_size=224).net
    assert small.conv1.kernel_size == (3, 3) and not isinstance(small.maxpool, nn.MaxPool2d)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    assert count_parameters(large) == resnet_size((3, 4, 6, 3), 10, stem_k=7)


def test_no_inplace_activations() -> None:
    for name in ALL_MODELS:
        if name in BIG:
            continue
        for module in cached(name, 10, 3, 32).modules():
            assert not getattr(module, "inplace", False), f"{name}: {module} is in-place"


# --------------------------------------------------------------------------- Normalized
def test_normalized_is_exact_and_saved() -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    torch.manual_seed(1)
    model = build_model("small-cnn", num_classes=10, mean=mean, std=std).eval()
    assert isinstance(model, Normalized)
    x = torch.rand(4, 3, 32, 32)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(x), model.net((x - m) / s))
    state = model.state_dict()
    assert torch.equal(state["mean"], m) and torch.equal(state["std"], s)

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    torch.manual_seed(2)
    other = build_model("small-cnn", num_classes=10).eval()  # different init and mean/std
    other.load_state_dict(loaded)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    assert torch.equal(other.mean, m)


def test_normalized_buffers_follow_dtype_and_broadcast() -> None:
    model = build_model("small-cnn", num_classes=3, in_channels=1, input_size=28, mean=(0.5,), std=(0.25,))
    model = model.to(torch.float64).eval()
    assert model.mean.dtype == torch.float64
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(x), model.net((x - 0.5) / 0.25))
    # build_model stores one value per channel; Normalized itself broadcasts a single value
    model3 = build_model("small-cnn", num_classes=3, mean=(0.5,), std=(0.5,))
    assert model3.mean.shape == (1, 3, 1, 1)
    wrapped = Normalized(nn.Identity(), mean=(0.5,), std=(0.25,))
    x3 = torch.rand(2, 3, 8, 8)
    assert wrapped.mean.shape == (1, 1, 1, 1) and torch.equal(wrapped(x3), (x3 - 0.5) / 0.25)


def test_normalized_rejects_bad_mean_std() -> None:
    with pytest.raises(UserError):
        build_model("small-cnn", num_classes=10, in_channels=3, mean=(0.1, 0.2), std=(0.3, 0.3))
    with pytest.raises(UserError):
        Normalized(nn.Identity(), mean=(0.1,), std=(0.0,))


# --------------------------------------------------------------------------- ResNet-10 without BN
def test_resnet10_without_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_model("resnet10", num_classes=10, options={"bn": False})
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 8 + 3  # stem, 8 block convs, 3 projection shortcuts
    assert all(c.bias is not None for c in convs), "conv_bias='auto' gives biases when BN is off"
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert torch.equal(train_out, eval_out)


def test_resnet10_with_batchnorm() -> None:
    model = build_model("resnet10", num_classes=10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 + 8 + 3
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model.train()(x), model.eval()(x))


# --------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(("name", "options", "expected"), EXPECTED_SIZES)
def test_parameter_counts(name: str, options: dict, expected: int) -> None:
    model = on_meta(name, num_classes=10, options=options)
    assert count_parameters(model) == expected


def test_parameter_counts_match_torchvision() -> None:
    """An independent oracle for the layouts that torchvision also implements."""
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        ref34 = count_parameters(tv.models.resnet34(num_classes=10))
        ref_mb = count_parameters(tv.models.mobilenet_v2(num_classes=10))
        ref_vgg = count_parameters(tv.models.vgg16_bn().features)
    assert count_parameters(on_meta("resnet34", num_classes=10, input_size=224)) == ref34
    assert count_parameters(on_meta("mobilenetv2", num_classes=10)) == ref_mb
    assert count_parameters(on_meta("vgg16", num_classes=10)) == ref_vgg + linear(512, 10)


def test_count_parameters_trainable_only() -> None:
    model = build_model("small-cnn", num_classes=10)
    total = count_parameters(model)
    model.net.classifier.requires_grad_(False)
    frozen = sum(p.numel() for p in model.net.classifier.parameters())
    assert count_parameters(model, trainable_only=True) == total - frozen
    assert count_parameters(model) == total


# --------------------------------------------------------------------------- double backprop
@pytest.mark.parametrize(
    ("name", "options", "size"),
    [("small-cnn", {}, 32), ("resnet10", {"bn": False}, 32), ("preact-resnet18", {}, 16)],  # 16 px: CPU time
)
def test_double_backprop(name: str, options: dict, size: int) -> None:
    """grad_w of ||grad_x CE||^2 (train mode, so through BatchNorm batch statistics where present)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_size=size, options=options).train()
    x = torch.rand(2, 3, size, size, requires_grad=True)
    y = torch.tensor([1, 7])
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    penalty = g.pow(2).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    used = [gr for gr in grads if gr is not None]
    assert used, "the input-gradient penalty must depend on the weights"
    assert all(torch.isfinite(gr).all() for gr in used)
    assert sum(gr.abs().sum().item() for gr in used) > 0


# --------------------------------------------------------------------------- last_linear
def test_last_linear_with_hidden_layer_of_class_width() -> None:
    model = build_model("small-cnn", num_classes=10, options={"hidden": 10})
    assert last_linear(model) is model.net.classifier[-1]
    assert last_linear(model, num_classes=10) is model.net.classifier[-1]
    with pytest.raises(UserError):
        last_linear(nn.Sequential(nn.Conv2d(3, 4, 3)), num_classes=10)


def test_wrn_names_match_trades_layout() -> None:
    model = cached("wrn-34-10", 10, 3, 32)
    keys = set(model.net.state_dict())
    assert {
        "conv1.weight",
        "block1.layer.0.convShortcut.weight",
        "block3.layer.4.conv2.weight",
        "bn1.running_mean",
        "fc.weight",
    } <= keys
    assert last_linear(model) is model.net.fc


# --------------------------------------------------------------------------- names and options
def test_unknown_model_suggests() -> None:
    with pytest.raises(UserError, match="did you mean 'resnet10'"):
        build_model("resnet-10", num_classes=10)
    with pytest.raises(UserError, match="wrn-34-10"):
        model_options("wrn3410")


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        build_model("resnet10", num_classes=10, options={"x": 1})
    assert str(err.value) == "unknown option 'x' for model 'resnet10'; valid: bn, conv_bias, stem"
    with pytest.raises(UserError, match=r"valid: \(none\)"):
        build_model("vgg16", num_classes=10, options={"bn": False})


def test_model_options_defaults() -> None:
    assert model_options("resnet10") == {"bn": True, "conv_bias": "auto", "stem": "cifar"}
    assert model_options("wrn-34-10") == {"depth": 34, "widen": 10, "dropout": 0.0}
    assert model_options("preact-resnet20") == {"width": 1}
    assert model_options("preact_resnet18") == {}
    for name in model_names():
        assert isinstance(model_options(name), dict)


def test_string_options_are_converted() -> None:
    no_bn = build_model("resnet10", num_classes=10, options={"bn": "false"})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    with_bn = build_model("resnet10", num_classes=10, options={"bn": "True", "conv-bias": "true"})
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert all(m.bias is not None for m in with_bn.modules() if isinstance(m, nn.Conv2d))
    wide = build_model("preact-resnet20", num_classes=10, options={"width": "4"})
    assert wide.net.linear.in_features == 256
    drop = build_model("mobilenetv2", num_classes=10, options={"dropout": "0.2"})
    assert drop.net.dropout == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet10", {"bn": "maybe"}),
        ("resnet10", {"conv_bias": "sometimes"}),
        ("resnet10", {"stem": "huge"}),
        ("preact-resnet20", {"width": "4.5"}),
        ("preact-resnet20", {"width": "0"}),
        ("wrn-28-4", {"depth": "30"}),
        ("wrn-28-4", {"dropout": "1.5"}),
    ],
)
def test_bad_option_values(name: str, options: dict) -> None:
    with pytest.raises(UserError):
        build_model(name, num_classes=10, options=options)
