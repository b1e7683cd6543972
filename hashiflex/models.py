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
