"""conv2d: a k x k convolution (dense or depthwise) over line-buffered windows, with zero padding (possibly
asymmetric, TF 'SAME') and stride. Generator side: Conv2dLayer (Layers.scala) on WindowGen (Window.scala)."""
from __future__ import annotations

import numpy as np

from ..ir import Conv2d, IRError
from . import base
from .intmath import conv2d_int
from .weighted import WeightedOp


def pad_torch(x, layer: Conv2d):
    """``x`` with ``layer``'s zero padding (top, bottom, left, right; possibly asymmetric, TF 'SAME') applied."""
    import torch.nn.functional as F

    t, bot, l, r = layer.pads
    return F.pad(x, (l, r, t, bot))


def conv2d_torch(x, w, b, layer: Conv2d):
    """``layer``'s convolution in torch, its zero padding (possibly asymmetric, TF 'SAME') included."""
    import torch.nn.functional as F

    if isinstance(layer.padding, int):
        return F.conv2d(x, w, b, stride=layer.stride, padding=layer.padding, groups=layer.groups)
    return F.conv2d(pad_torch(x, layer), w, b, stride=layer.stride, groups=layer.groups)


class Conv2dOp(WeightedOp):
    op = "conv2d"
    layer_type = Conv2d

    def keeps_parallelism(self, layer):
        return "a 1x1 conv maps pixels one to one" if layer.pointwise else ""

    def check_input(self, layer, x):
        c, h, w = x.shape
        if x.vector:
            raise IRError(f"layer {layer.name!r}: conv2d after a global pool is not supported")
        if layer.in_channels != c:
            raise IRError(f"layer {layer.name!r}: field 'in_channels': expected {c}, found {layer.in_channels}")
        if not layer.fits(h, w):
            raise IRError(f"layer {layer.name!r}: kernel {layer.kernel}, stride {layer.stride}, padding "
                          f"{layer.padding} do not fit {h}x{w}")
        if layer.groups != 1 and not layer.groups == c == layer.out_channels:
            raise IRError(f"layer {layer.name!r}: field 'groups': expected 1 or {c} (depthwise: groups = in = "
                          f"out channels), found {layer.groups}")
        return (layer.out_channels, *layer.out_hw(h, w))

    def channels_read(self, layer, ins, live):
        used = (layer.q.int_weights() != 0).any(axis=(2, 3))  # (out, in / groups): a nonzero weight reads it
        if layer.groups == 1:
            return [(used & live[:, None]).any(axis=0)]
        return [live & used[:, 0]]  # depthwise: output c reads input c alone

    def tree_bounds(self, layer, lo, hi):
        return (min(lo, 0), max(hi, 0)) if layer.padded else (lo, hi)  # padding feeds zeros into the windows

    def depthwise(self, layer):
        return layer.depthwise

    def apply_torch(self, layer, x, w, b):
        return conv2d_torch(x, w, b, layer)

    def golden(self, layer, info, xs, exps):
        return conv2d_int(xs[0], layer.q.int_weights(), layer.bias_int, layer.stride, layer.padding, layer.groups)

    def to_json(self, layer, info, srcs):
        padding = layer.padding if isinstance(layer.padding, int) else list(layer.pads)
        return dict(kernel=layer.kernel, stride=layer.stride, padding=padding, groups=layer.groups,
                    **super().to_json(layer, info, srcs))

    def from_json(self, l, where):
        q, bias = self.weights_from_json(l, where)
        shape = q.shape
        if len(shape) != 4 or shape[2] != shape[3] or shape[2] != l["kernel"]:
            raise IRError(f"{where}.weights.shape: expected [out, in/groups, {l['kernel']}, {l['kernel']}], found "
                          f"{list(shape)}")
        return Conv2d(l["name"], np.zeros(shape), np.zeros(shape[0]), l["stride"], l["padding"], q, bias,
                      groups=l["groups"], src=l["src"])


base.register(Conv2dOp())
