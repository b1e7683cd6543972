"""Model definitions. The default is a small CNN for the 8x8 digits."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


class DigitsCNN(nn.Sequential):
    """conv3x3(1->c1) ReLU conv3x3/2(c1->c2) ReLU global-avg-pool linear(c2->classes)."""

    def __init__(self, c1: int = 8, c2: int = 16, classes: int = 10):
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, c1, 3, padding=1)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(c1, c2, 3, stride=2, padding=1)), ("relu2", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(c2, classes)),
        ]))


def mobilenet_v2(width: float = 1.0, num_classes: int = 1000, cifar: bool = False, dropout: float = 0.2):
    """torchvision's MobileNetV2 (inverted residual blocks, ReLU6, linear bottlenecks).

    ``cifar=True`` adapts it to 32x32 inputs the common way: the first conv and the first stride-2 inverted
    residual use stride 1, so the last feature map is 4x4 instead of 1x1.
    """
    from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

    m = tv_mobilenet_v2(weights=None, width_mult=width, num_classes=num_classes, dropout=dropout)
    if cifar:
        m.features[0][0].stride = (1, 1)
        m.features[2].conv[1][0].stride = (1, 1)  # first stride-2 block (its depthwise conv)
    return m


# A MobileNetV2 cut down for co-simulation: the same block types (stem, expansion-free first block, 6x expansion,
# depthwise stride 2, residual repeats, last 1x1, pool, classifier) with three stages instead of seven.
MINI_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]]


def mobilenet_v2_mini(width: float = 0.35, num_classes: int = 10, last_channel: int = 64, cifar: bool = True):
    """torchvision's MobileNetV2 blocks with ``MINI_SETTING`` and a ``last_channel``-wide final 1x1 conv."""
    from torchvision.models import MobileNetV2
    from torchvision.ops.misc import Conv2dNormActivation

    m = MobileNetV2(num_classes=num_classes, width_mult=width, inverted_residual_setting=MINI_SETTING)
    c = m.features[-1][0].in_channels
    m.features[-1] = Conv2dNormActivation(c, last_channel, kernel_size=1, norm_layer=nn.BatchNorm2d,
                                          activation_layer=nn.ReLU6)
    m.classifier[-1] = nn.Linear(last_channel, num_classes)
    if cifar:
        m.features[0][0].stride = (1, 1)
    return m
