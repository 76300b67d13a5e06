"""VGG-16 with BatchNorm (Simonyan & Zisserman, 2015), CIFAR variant: 13 convs, then 512 -> linear."""

from __future__ import annotations

import torch
from torch import nn

from advbench.models.base import MODELS

#: conv widths per stage; every stage ends with a 2x2 max-pool
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class VGG(nn.Module):
    """Conv3x3-BN-ReLU stacks with 2x2 max-pools, global average pool, ``classifier`` = one linear layer.

    Pools use ``ceil_mode=True`` so that 28 px inputs survive five poolings (identical to floor mode
    for 32, 64 and 224 px).
    """

    def __init__(self, stages: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        cin = in_channels
        for widths in stages:
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@MODELS.register(
    "vgg16",
    aliases=("vgg16-bn",),
    help="VGG-16 with BatchNorm, CIFAR variant (13 conv layers, 512 -> linear)",
)
def vgg16(num_classes: int, in_channels: int = 3, input_size: int = 32) -> VGG:
    """VGG-16-BN for CIFAR-sized inputs (global average pooling makes larger inputs work too)."""
    return VGG(VGG16_STAGES, num_classes, in_channels)
