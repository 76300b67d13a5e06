"""Pre-activation ResNets (He et al., 2016, "Identity Mappings in Deep Residual Networks").

``preact-resnet18`` follows the layout of the robust-overfitting code (Rice et al., 2020): 3x3 stem,
four stages of two pre-activation BasicBlocks (64-128-256-512), 1x1 conv shortcut without BN,
final BN + ReLU, global average pooling, ``linear``. ``preact-resnet20`` is the CIFAR PRN-20 used by
SAT: 3x3 stem with 16 channels, three stages of three blocks with 16-32-64 channels (times ``width``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from advbench.models._layers import GradCheckpointing, check_positive, run_blocks
from advbench.models.base import MODELS


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut (taken after the first ReLU)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation residual block forward."""
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(GradCheckpointing, nn.Module):
    """Pre-activation ResNet: stem conv, stages of :class:`PreActBlock`, BN-ReLU, avg-pool, ``linear``."""

    def __init__(
        self,
        stem_width: int,
        widths: tuple[int, ...],
        num_blocks: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, stride=1, padding=1, bias=False)
        in_planes = stem_width
        for index, (planes, blocks) in enumerate(zip(widths, num_blocks, strict=True)):
            layers = []
            for i in range(blocks):
                stride = 2 if (i == 0 and index > 0) else 1
                layers.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
            self.add_module(f"layer{index + 1}", nn.Sequential(*layers))
        self.num_stages = len(widths)
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        out = self.conv1(x)
        for index in range(self.num_stages):
            out = run_blocks(getattr(self, f"layer{index + 1}"), out, self.grad_checkpointing)
        out = F.relu(self.bn(out))
        return self.linear(torch.flatten(self.pool(out), 1))


@MODELS.register("preact-resnet18", help="PreActResNet-18 (Rice et al. robust-overfitting layout), 64-512 ch")
def preact_resnet18(num_classes: int, in_channels: int = 3, input_size: int = 32) -> PreActResNet:
    """PreActResNet-18: pre-activation BasicBlocks [2,2,2,2], 1x1 conv shortcuts without BN."""
    return PreActResNet(64, (64, 128, 256, 512), (2, 2, 2, 2), num_classes, in_channels)


@MODELS.register(
    "preact-resnet20",
    aliases=("prn20", "prn-20"),
    help="PRN-20 (SAT): pre-activation ResNet, 3 stages x 3 blocks, 16-32-64 ch",
)
def preact_resnet20(
    num_classes: int, in_channels: int = 3, input_size: int = 32, *, width: int = 1
) -> PreActResNet:
    """PRN-20 for CIFAR; ``width`` multiplies the stage widths (the 16-channel stem is kept)."""
    check_positive(width, "option 'width' of model 'preact-resnet20'")
    return PreActResNet(16, (16 * width, 32 * width, 64 * width), (3, 3, 3), num_classes, in_channels)
