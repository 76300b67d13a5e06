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

The class lives in :mod:`advbench.models._resnet50_net`, imported when a ResNet-50 is built: importing advbench does
not import torchvision.
"""

from __future__ import annotations

from torch import nn

from advbench.models.base import MODELS


@MODELS.register(
    "resnet50",
    help="ResNet-50 v1: Bottleneck [3,4,6,3], ImageNet stem, zero-init last BN γ per block, fc ~ N(0, 0.01)",
)
def resnet50(num_classes: int, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    """ResNet-50 (torchvision layout; 25,557,032 parameters for 1000 classes). ``input_size`` is not used: the
    network ends in a global average pool, so it takes any size from 32 px (the DAWNBench phases use 128, 224
    and 288 px)."""
    del input_size
    from advbench.models._resnet50_net import ResNet50  # torchvision, imported when a ResNet-50 is built

    return ResNet50(num_classes, in_channels)
