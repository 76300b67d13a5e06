"""The ResNet-50 network class of :mod:`advbench.models.resnet50`, kept apart so that importing advbench does not
import torchvision (about 1.3 s, most of a command's start-up besides torch): the registry's factory imports
this module when a ResNet-50 is built."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from advbench.models._layers import GradCheckpointing, run_blocks

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
