"""ResNet-50 v1 (He et al., 2016), the ImageNet network of Finlay & Oberman's ImageNet block (DAWNBench recipe).

The layer layout is torchvision's ``ResNet(Bottleneck, [3, 4, 6, 3])`` (the v1.5 placement of the stride in the
3x3 conv of a downsampling Bottleneck, which torchvision and the DAWNBench code share), built through torchvision
rather than written again; advbench changes three things:

* the last BatchNorm of every Bottleneck starts with γ = 0 (``zero_init_residual=True``): each block is the
  identity at initialisation, as the DAWNBench recipe (Goyal et al.'s "zero γ") asks;
* the classifier ``fc`` is drawn from N(0, 0.01²) with a zero bias (the recipe's initialisation) instead of
  torchvision's uniform default;
* every ReLU is out of place, so double backprop through the model works (see docs/models.md), and the four
  stages run block by block, so ``--grad-checkpointing`` works as for the other residual networks.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``): a torchvision state dict
loads after adding the ``net.`` prefix of :class:`~advbench.models.Normalized`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from advbench.models._layers import GradCheckpointing, run_blocks
from advbench.models.base import MODELS

#: Bottlenecks per stage of ResNet-50
RESNET50_BLOCKS = (3, 4, 6, 3)
FC_STD = 0.01


class ResNet50(GradCheckpointing, ResNet):
    """torchvision's ResNet-50 with zero-γ residual BNs, an N(0, 0.01²) classifier and out-of-place ReLUs."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__(Bottleneck, list(RESNET50_BLOCKS), num_classes=num_classes, zero_init_residual=True)
        self.num_classes = num_classes
        if in_channels != 3:  # the 7x7/2 stem for other channel counts, initialised as torchvision's convs
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
        nn.init.normal_(self.fc.weight, mean=0.0, std=FC_STD)
        nn.init.zeros_(self.fc.bias)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = run_blocks(stage, out, self.grad_checkpointing)
        return self.fc(torch.flatten(self.avgpool(out), 1))


@MODELS.register(
    "resnet50",
    help="ResNet-50 v1: Bottleneck [3,4,6,3], ImageNet stem, zero-init last BN γ per block, fc ~ N(0, 0.01)",
)
def resnet50(num_classes: int, in_channels: int = 3, input_size: int = 224) -> ResNet50:
    """ResNet-50 (torchvision layout; 25,557,032 parameters for 1000 classes). ``input_size`` is not used: the
    network ends in a global average pool, so it takes any size from 32 px (the DAWNBench phases use 128, 224
    and 288 px)."""
    del input_size
    return ResNet50(num_classes, in_channels)
