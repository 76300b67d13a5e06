"""MobileNetV2 (Sandler et al., 2018) with the CIFAR change of strides for small inputs.

Layout of the paper: 3x3 stem (32 ch), inverted residual blocks (t, c, n, s) = (1,16,1,1),
(6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1), 1x1 conv to 1280, global
average pool, linear. Residual connections only where stride is 1 and the width is unchanged.
CIFAR variant (``stem="cifar"``, chosen by "auto" below 64 px): the stem and the first 24-channel
block use stride 1 (overall stride 8: a 4x4 map for 32 px inputs).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from advbench.models._layers import check_dropout, resolve_stem
from advbench.models.base import MODELS

SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """1x1 expansion (t > 1) -> 3x3 depthwise -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted residual block forward."""
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with ``features``, global average pooling and a linear ``classifier``."""

    def __init__(
        self, num_classes: int, in_channels: int = 3, *, cifar: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, 32, 3, stride=1 if cifar else 2)]
        cin = 32
        for index, (t, c, n, s) in enumerate(SETTINGS):
            stride = 1 if (cifar and index == 1) else s
            for i in range(n):
                layers.append(InvertedResidual(cin, c, stride if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = dropout
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        out = torch.flatten(self.pool(self.features(x)), 1)
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.classifier(out)


@MODELS.register(
    "mobilenetv2",
    aliases=("mobilenet-v2",),
    help="MobileNetV2, CIFAR variant below 64 px (stride-1 stem and first 24-ch block)",
)
def mobilenetv2(
    num_classes: int, in_channels: int = 3, input_size: int = 32, *, stem: str = "auto", dropout: float = 0.0
) -> MobileNetV2:
    """MobileNetV2; ``stem="auto"`` uses the CIFAR strides below 64 px and the ImageNet strides above."""
    check_dropout(dropout, "option 'dropout' of model 'mobilenetv2'")
    kind = resolve_stem(stem, input_size, "option 'stem' of model 'mobilenetv2'")
    return MobileNetV2(num_classes, in_channels, cifar=kind == "cifar", dropout=dropout)
