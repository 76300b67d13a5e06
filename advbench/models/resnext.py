"""ResNeXt-34 (2x32), the CIFAR-10 network of Finlay & Oberman (gradient regularization, ICLR 2020 submission).

The paper names the network only; the layout follows the authors' released model (``cfinlay/tulip``,
``ResNeXt34_2x32``), as described in ``shared/specs/gradient-regularization.md``:

* stem: 3x3 conv ``in_channels`` -> 32, then BatchNorm without affine parameters, a separate per-channel
  bias and a ReLU (a "conv unit");
* three stages of 5 branch blocks with 32, 64 and 128 channels; the second and third stages open with a
  1x1 conv unit (C/2 -> C) followed by 2x2 average pooling;
* branch block on C channels: 3x3 conv C -> 2C, BN (affine), ReLU, grouped 3x3 conv 2C -> 2C (2 groups),
  BN (affine); the two groups of C channels (the branches) are averaged, added to the input, ReLU;
* global average pooling and a linear unit 128 -> classes: weight without bias, BatchNorm1d without
  affine parameters, a separate bias and — as in the released code — a ReLU on the logits
  (``logit_relu=false`` leaves it out).

34 = 1 stem conv + 15 blocks x 2 convs + 2 transition convs + 1 linear layer. Weights and biases of the
units are drawn from U(−1/√fan_in, 1/√fan_in), the block convs and BN keep PyTorch's defaults.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from advbench.models._layers import GradCheckpointing, check_positive, run_blocks
from advbench.models.base import MODELS


def _uniform_fan_in(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """U(−1/√fan_in, 1/√fan_in) for a unit's weight and bias (fan_in = inputs × kernel area)."""
    bound = 1.0 / math.sqrt(weight[0].numel())
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


class ConvUnit(nn.Module):
    """conv (no bias) → BatchNorm2d(affine=False) → + bias → ReLU; padding keeps the size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=False)
        self.bias = nn.Parameter(torch.empty(out_channels))
        _uniform_fan_in(self.conv.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unit's output."""
        return F.relu(self.bn(self.conv(x)) + self.bias.view(1, -1, 1, 1))


class BranchBlock(nn.Module):
    """Residual block of ``branches`` parallel paths of width C whose outputs are averaged (no 1x1 merge)."""

    def __init__(self, channels: int, branches: int = 2) -> None:
        super().__init__()
        wide = channels * branches
        self.branches = branches
        self.conv0 = nn.Conv2d(channels, wide, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(wide)
        self.conv1 = nn.Conv2d(wide, wide, 3, padding=1, groups=branches, bias=False)
        self.bn1 = nn.BatchNorm2d(wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + mean over branches of the grouped path, then ReLU."""
        y = self.bn1(self.conv1(F.relu(self.bn0(self.conv0(x)))))
        b, _, h, w = y.shape
        y = y.view(b, self.branches, -1, h, w).mean(dim=1)  # group g holds channels g·C .. (g+1)·C − 1
        return F.relu(x + y)


class LinearUnit(nn.Linear):
    """The released code's head: ``x Wᵀ`` → BatchNorm1d(affine=False) → + bias → ReLU (optional).

    An ``nn.Linear`` (``weight``, ``bias``) whose bias is added after the normalisation, so
    :func:`advbench.models.last_linear` finds the layer that produces the logits. The logits are not
    ``W h + b``: statistics that assume a plain linear head (RAT's closed-form row sums) do not apply.
    """

    def __init__(self, in_features: int, out_features: int, relu: bool) -> None:
        super().__init__(in_features, out_features, bias=True)
        self.bn = nn.BatchNorm1d(out_features, affine=False)
        self.relu = relu
        _uniform_fan_in(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        y = self.bn(F.linear(x, self.weight)) + self.bias
        return F.relu(y) if self.relu else y


class ResNeXtBranch(GradCheckpointing, nn.Module):
    """Stages of branch blocks with widths ``base``, 2·base, 4·base, ...; see the module docstring."""

    def __init__(self, blocks: tuple[int, ...], base: int, branches: int, num_classes: int,
                 in_channels: int = 3, logit_relu: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvUnit(in_channels, base, 3)
        stages: list[nn.Sequential] = []
        width = base
        for i, n in enumerate(blocks):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [ConvUnit(width, 2 * width, 1), nn.AvgPool2d(2)]
                width *= 2
            layers += [BranchBlock(width, branches) for _ in range(n)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head = LinearUnit(width, num_classes, logit_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        out = self.stem(x)
        for stage in self.stages:
            out = run_blocks(stage, out, self.grad_checkpointing)
        return self.head(out.mean(dim=(2, 3)))


@MODELS.register(
    "resnext34-2x32",
    help="ResNeXt-34 (2x32) of Finlay & Oberman: 3 stages x 5 two-branch blocks, 32-64-128 ch (tulip layout)",
)
def resnext34_2x32(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    branches: int = 2,
    width: int = 32,
    logit_relu: bool = True,
) -> ResNeXtBranch:
    """ResNeXt-34 (2x32): ``branches`` paths per block, ``width`` channels in the first stage; the released
    code's ReLU on the logits unless ``logit_relu=false``."""
    check_positive(branches, "option 'branches' of model 'resnext34-2x32'")
    check_positive(width, "option 'width' of model 'resnext34-2x32'")
    return ResNeXtBranch((5, 5, 5), width, branches, num_classes, in_channels, logit_relu)
