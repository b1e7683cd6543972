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
