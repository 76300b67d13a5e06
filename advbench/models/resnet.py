"""ResNet-10/18/34 with BasicBlocks (He et al., 2016), CIFAR stem by default, optional BatchNorm.

Layout follows the widely used CIFAR variant (3x3 stem, no max-pool, stages of 64-128-256-512
channels, 1x1 conv + BN projection shortcuts, global average pooling, one linear layer); the
ImageNet stem (7x7 stride 2 + 3x3 max-pool) is used for large inputs when asked for.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from advbench.models._layers import GradCheckpointing, norm2d, resolve_conv_bias, resolve_stem, run_blocks
from advbench.models.base import MODELS, parse_bool


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (projection shortcut when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int, bn: bool, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = norm2d(planes, bn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        self.bn2 = norm2d(planes, bn)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias), norm2d(planes, bn)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(GradCheckpointing, nn.Module):
    """BasicBlock ResNet with four stages (64-128-256-512) and a linear classifier ``linear``."""

    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int = 3,
        *,
        bn: bool = True,
        conv_bias: bool = False,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=conv_bias)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=conv_bias)
            self.maxpool = nn.Identity()
        self.bn1 = norm2d(64, bn)
        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, bn, conv_bias))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = run_blocks(stage, out, self.grad_checkpointing)
        return self.linear(torch.flatten(self.pool(out), 1))


def _resnet(
    name: str,
    blocks: tuple[int, int, int, int],
    num_classes: int,
    in_channels: int,
    input_size: int,
    bn: object,
    conv_bias: object,
    stem: object,
) -> ResNet:
    use_bn = parse_bool(bn, f"option 'bn' of model '{name}'")
    bias = resolve_conv_bias(conv_bias, use_bn, f"option 'conv_bias' of model '{name}'")
    stem_kind = resolve_stem(stem, input_size, f"option 'stem' of model '{name}'")
    return ResNet(blocks, num_classes, in_channels, bn=use_bn, conv_bias=bias, stem=stem_kind)


@MODELS.register(
    "resnet10", help="SOAR ResNet-10: BasicBlock [1,1,1,1], 64-512 ch, CIFAR stem; bn=false for SOAR"
)
def resnet10(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    bn: bool = True,
    conv_bias: str = "auto",
    stem: str = "cifar",
) -> ResNet:
    """ResNet-10 of the SOAR paper (1 stem conv + 8 block convs + fc). ``bn=False`` removes all BatchNorm."""
    return _resnet("resnet10", (1, 1, 1, 1), num_classes, in_channels, input_size, bn, conv_bias, stem)


@MODELS.register("resnet18", help="ResNet-18, CIFAR variant: BasicBlock [2,2,2,2], 3x3 stem, no max-pool")
def resnet18(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    bn: bool = True,
    conv_bias: str = "auto",
    stem: str = "cifar",
) -> ResNet:
    """ResNet-18 (CIFAR variant unless ``stem`` says otherwise)."""
    return _resnet("resnet18", (2, 2, 2, 2), num_classes, in_channels, input_size, bn, conv_bias, stem)


@MODELS.register(
    "resnet34", help="ResNet-34: BasicBlock [3,4,6,3]; CIFAR stem < 64 px, ImageNet stem >= 64 px"
)
def resnet34(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    bn: bool = True,
    conv_bias: str = "auto",
    stem: str = "auto",
) -> ResNet:
    """ResNet-34; ``stem="auto"`` picks the ImageNet stem (7x7/2 + max-pool) for inputs of 64 px or more."""
    return _resnet("resnet34", (3, 4, 6, 3), num_classes, in_channels, input_size, bn, conv_bias, stem)
