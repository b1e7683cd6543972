"""max_pool2d: the maximum over k x k windows with stride and padding, a comparator tree on the line buffer.

Padding never wins a maximum (torch pads with -inf): the generator pads with the smallest value of the input
format, which is below every input, and every window holds at least one pixel of the image (checked), so the
result is the maximum over the window's pixels inside the image, exactly. Values, exponent and bounds pass
through unchanged. Generator side: MaxPool.scala (on WindowGen, Window.scala).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir import IRError, Windowed, normalized_padding
from . import base
from .base import Inferred, LayerHw, Tensor


@dataclass
class MaxPool2d(Windowed):
    name: str
    kernel: int
    stride: int
    padding: int | tuple[int, int, int, int] = 0  # one integer, or (top, bottom, left, right)
    src: str | None = None

    def __post_init__(self):
        for f in ("kernel", "stride"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or not 1 <= v <= 15:
                raise IRError(f"layer {self.name!r}: field {f!r}: expected an integer in [1, 15], found {v!r}")
        self.kernel, self.stride = int(self.kernel), int(self.stride)
        self.padding = normalized_padding(self.name, self.padding)
        # with less than a kernel of padding on every side, every window holds a pixel of the image
        if max(self.pads) >= self.kernel:
            raise IRError(f"layer {self.name!r}: field 'padding': expected less than the kernel {self.kernel} on every "
                          f"side (a window of padding alone has no maximum), found {self.padding}")


class MaxPool2dOp(base.OpDef):
    op = "max_pool2d"
    staged = True
    layer_type = MaxPool2d
    channelwise = True

    def keeps_parallelism(self, layer):
        return "a 1x1 pool maps pixels one to one" if layer.pointwise else ""

    def infer(self, layer, ins, require_quantized):
        x = ins[0]
        c, h, w = x.shape
        if x.vector:
            raise IRError(f"layer {layer.name!r}: max_pool2d needs a feature map, but {layer.src!r} is a vector")
        if not layer.fits(h, w):
            raise IRError(f"layer {layer.name!r}: kernel {layer.kernel}, stride {layer.stride}, padding "
                          f"{layer.padding} do not fit {h}x{w} (every window must hold a pixel of the image)")
        return Inferred(Tensor((c, *layer.out_hw(h, w)), x.exp, x.bounds, False))

    def golden(self, layer, info, xs, exps):
        t, b, l, r = layer.pads
        k, s = layer.kernel, layer.stride
        xp = np.pad(xs[0], ((0, 0), (0, 0), (t, b), (l, r)), constant_values=np.iinfo(np.int64).min)
        oh, ow = info.out_shape[1:]
        win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :oh, :ow]
        return win.max(axis=(4, 5))

    def _torch(self, layer, x):
        import torch.nn.functional as F

        t, b, l, r = layer.pads
        if layer.padded:
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
        return F.max_pool2d(x, layer.kernel, layer.stride)

    def golden_torch(self, layer, info, xs, exps, plan):
        return self._torch(layer, xs[0])  # a maximum of exact integers is exact in any float type

    def fake(self, layer, xs, exps, net):
        return self._torch(layer, xs[0]), exps[0]

    def to_json(self, layer, info, srcs):
        return dict(kernel=layer.kernel, stride=layer.stride,
                    padding=layer.padding if isinstance(layer.padding, int) else list(layer.pads))

    def from_json(self, l, where):
        return MaxPool2d(l["name"], l["kernel"], l["stride"], l["padding"], src=l["src"])

    @staticmethod
    def depth(layer) -> int:
        """Comparator levels of one window's tree."""
        return math.ceil(math.log2(layer.kernel * layer.kernel))

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        from ..numfmt import width_for

        comparators = info.out_shape[0] * (layer.kernel * layer.kernel - 1) * p_out
        return LayerHw(layer.name, self.op, width_for(*info.out_bounds)[0], 0,
                       base.pipeline_stages(self.depth(layer), levels_per_stage), **beats, comparators=comparators)


base.register(MaxPool2dOp())
