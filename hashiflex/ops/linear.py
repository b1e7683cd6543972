"""linear: a fully connected layer on one vector per image. Generator side: LinearLayer (Layers.scala)."""
from __future__ import annotations

import numpy as np

from ..ir import IRError, Linear
from . import base
from .intmath import exact_matmul, guard_of
from .weighted import WeightedOp


class LinearOp(WeightedOp):
    op = "linear"
    layer_type = Linear

    def check_input(self, layer, x):
        c, h, w = x.shape
        if h * w != 1:  # the generator's rule too (Design.scala)
            raise IRError(f"layer {layer.name!r}: field 'src': a linear layer reads a vector (one pixel), found the "
                          f"{h}x{w} map of {layer.src!r} (pool it first: AdaptiveAvgPool2d(1))")
        if layer.in_features != c:
            raise IRError(f"layer {layer.name!r}: field 'in_channels': expected {c}, found {layer.in_features}")
        return (layer.out_features, 1, 1)

    def apply_torch(self, layer, x, w, b):
        import torch.nn.functional as F

        return F.linear(x.flatten(1), w, b)

    def channels_read(self, layer, ins, live):
        return [(layer.q.int_weights()[live] != 0).any(axis=0)]  # a vector: one input channel per feature

    def golden(self, layer, info, xs, exps):
        y, wint = xs[0], layer.q.int_weights()
        return exact_matmul(y.reshape(y.shape[0], -1), wint.T, guard_of(y, wint)) + layer.bias_int

    def from_json(self, l, where):
        q, bias = self.weights_from_json(l, where)
        if len(q.shape) != 2:
            raise IRError(f"{where}.weights.shape: expected [out, in], found {list(q.shape)}")
        return Linear(l["name"], np.zeros(q.shape), np.zeros(q.shape[0]), q, bias, src=l["src"])


base.register(LinearOp())
