"""Plain convolutional networks: a fast ``small-cnn``, SOAR's ``cnn6``/``cnn8`` and SAT's MNIST CNN.

All use ReLU, no BatchNorm and no dropout, so ``train()`` and ``eval()`` give the same outputs. The
flattened feature size is computed from ``input_size`` at build time; an adaptive average pool caps
the spatial side (at 8 for cnn6/cnn8/sat-cnn, 4 for small-cnn) so that large inputs keep a small
classifier and other input sizes still run.
"""

from __future__ import annotations

import torch
from torch import nn

from advbench.models._layers import check_positive, feature_size
from advbench.models.base import MODELS


class ConvNet(nn.Module):
    """``features`` -> adaptive average pool -> flatten -> ``classifier`` (ending in one nn.Linear)."""

    def __init__(
        self,
        features: nn.Sequential,
        hidden: tuple[int, ...],
        num_classes: int,
        in_channels: int,
        input_size: int,
        max_side: int,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = features
        channels, side = feature_size(features, in_channels, input_size)
        side = min(side, max_side)
        self.pool = nn.AdaptiveAvgPool2d(side)
        layers: list[nn.Module] = []
        width = channels * side * side
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=padding), nn.ReLU()]


def _keras_pairs(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Pairs of 3x3 convs ('same' then 'valid' padding), each pair followed by a 2x2 max-pool."""
    layers: list[nn.Module] = []
    cin = in_channels
    for w in widths:
        layers += _conv(cin, w, padding=1) + _conv(w, w, padding=0) + [nn.MaxPool2d(2)]
        cin = w
    return nn.Sequential(*layers)


@MODELS.register(
    "small-cnn", help="fast CNN for MNIST/synthetic data: conv16-conv16-pool-conv32-conv32-pool-fc128-fc"
)
def small_cnn(
    num_classes: int, in_channels: int = 3, input_size: int = 32, *, width: int = 16, hidden: int = 128
) -> ConvNet:
    """Small fast CNN (~85k parameters): 3x3 convs w-w-pool-2w-2w-pool, pool to 4x4, fc ``hidden``, fc."""
    check_positive(width, "option 'width' of model 'small-cnn'")
    check_positive(hidden, "option 'hidden' of model 'small-cnn'")
    features = nn.Sequential(
        *_conv(in_channels, width),
        *_conv(width, width),
        nn.MaxPool2d(2),
        *_conv(width, 2 * width),
        *_conv(2 * width, 2 * width),
        nn.MaxPool2d(2),
    )
    return ConvNet(features, (hidden,), num_classes, in_channels, input_size, max_side=4)


@MODELS.register(
    "cnn6", help="SOAR Table 14 CNN6 (reading: Keras CIFAR-10 example CNN, 4 conv + 2 fc, no BN)"
)
def cnn6(num_classes: int, in_channels: int = 3, input_size: int = 32, *, hidden: int = 512) -> ConvNet:
    """CNN6: conv32-conv32-pool-conv64-conv64-pool-fc512-fc (6 weight layers); see docs/models.md."""
    check_positive(hidden, "option 'hidden' of model 'cnn6'")
    return ConvNet(_keras_pairs(in_channels, (32, 64)), (hidden,), num_classes, in_channels, input_size, 8)


@MODELS.register(
    "cnn8", help="SOAR Table 14 CNN8 (reading: CNN6 plus a conv128-conv128-pool pair, 6 conv + 2 fc)"
)
def cnn8(num_classes: int, in_channels: int = 3, input_size: int = 32, *, hidden: int = 512) -> ConvNet:
    """CNN8: conv32-conv32-pool-conv64-conv64-pool-conv128-conv128-pool-fc512-fc (8 weight layers)."""
    check_positive(hidden, "option 'hidden' of model 'cnn8'")
    return ConvNet(
        _keras_pairs(in_channels, (32, 64, 128)), (hidden,), num_classes, in_channels, input_size, 8
    )


@MODELS.register(
    "sat-cnn", help="SAT's MNIST CNN: conv8x8/64 s2, conv6x6/128 s2, conv5x5/128 s1, fc (CleverHans-style)"
)
def sat_cnn(num_classes: int, in_channels: int = 3, input_size: int = 32) -> ConvNet:
    """3-conv + 1-fc CNN (strides 2, 2, 1 and SAME/VALID/VALID padding as in the CleverHans basic CNN)."""
    features = nn.Sequential(
        *_conv(in_channels, 64, k=8, stride=2, padding=3),
        *_conv(64, 128, k=6, stride=2, padding=0),
        *_conv(128, 128, k=5, stride=1, padding=0),
    )
    return ConvNet(features, (), num_classes, in_channels, input_size, max_side=8)
