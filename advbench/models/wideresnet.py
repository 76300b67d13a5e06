"""Wide ResNets (Zagoruyko & Komodakis, 2016) in the layout used by the TRADES/MART code.

depth = 6n + 4: a 3x3 stem with 16 channels, three stages of n pre-activation blocks with
16k-32k-64k channels (k = widen), final BN + ReLU, global average pooling and ``fc``. Module names
(``block1.layer.0.conv1``, ``convShortcut``, ``fc``) match that code's checkpoints, except that the
unused ``sub_block1`` of the TRADES file is not created (drop those keys when loading).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from advbench.errors import UserError
from advbench.models._layers import GradCheckpointing, check_dropout, check_positive, run_blocks
from advbench.models.base import MODELS


class WideBasicBlock(nn.Module):
    """Pre-activation block; when the shape changes, the shortcut is a 1x1 conv of the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut: nn.Module | None = None  # noqa: N815 (checkpoint-compatible name)
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation residual block forward."""
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``num_layers`` blocks, the first one changing width and stride."""

    def __init__(self, num_layers: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout
                )
                for i in range(num_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage."""
        return self.layer(x)


class WideResNet(GradCheckpointing, nn.Module):
    """WRN-depth-widen with He-normal (fan-out) conv init, BN weight 1 / bias 0 and zero linear bias."""

    def __init__(
        self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(
                f"WideResNet depth must be 6n+4 with n >= 1 (e.g. 16, 22, 28, 34, 40), got {depth}"
            )
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, dropout)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, dropout)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (already normalised) images."""
        out = self.conv1(x)
        for stage in (self.block1, self.block2, self.block3):
            out = run_blocks(stage.layer, out, self.grad_checkpointing)
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(self.pool(out), 1))


def _wrn(name: str, num_classes: int, in_channels: int, depth: int, widen: int, dropout: float) -> WideResNet:
    check_positive(widen, f"option 'widen' of model '{name}'")
    check_dropout(dropout, f"option 'dropout' of model '{name}'")
    return WideResNet(depth, widen, num_classes, in_channels, dropout)


@MODELS.register("wrn-34-10", help="WideResNet-34-10 (TRADES/MART layout, 5 blocks per stage, dropout 0)")
def wrn_34_10(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    depth: int = 34,
    widen: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-34-10; ``depth`` (6n+4), ``widen`` and ``dropout`` can be changed."""
    return _wrn("wrn-34-10", num_classes, in_channels, depth, widen, dropout)


@MODELS.register("wrn-28-10", help="WideResNet-28-10 (4 blocks per stage, widen 10, dropout 0)")
def wrn_28_10(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    depth: int = 28,
    widen: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-28-10; ``depth`` (6n+4), ``widen`` and ``dropout`` can be changed."""
    return _wrn("wrn-28-10", num_classes, in_channels, depth, widen, dropout)


@MODELS.register("wrn-28-4", help="WideResNet-28-4 (the MMA paper's model; 4 blocks per stage, widen 4)")
def wrn_28_4(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    depth: int = 28,
    widen: int = 4,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-28-4; ``depth`` (6n+4), ``widen`` and ``dropout`` can be changed."""
    return _wrn("wrn-28-4", num_classes, in_channels, depth, widen, dropout)
