"""sum_pool: a global pool as an exact sum over all pixels; an average's 1/N is folded into the next linear
layer (by the importer). Generator side: SumPool (Layers.scala)."""
from __future__ import annotations

from ..ir import IRError, SumPool
from ..numfmt import width_for
from . import base
from .base import Inferred, LayerHw, Tensor


class SumPoolOp(base.OpDef):
    op = "sum_pool"
    layer_type = SumPool
    channelwise = True

    def infer(self, layer, ins, require_quantized):
        x = ins[0]
        if x.vector:
            raise IRError(f"layer {layer.name!r}: global pool needs a feature map, found a vector")
        c, h, w = x.shape
        bounds = None if x.bounds is None else (x.bounds[0] * h * w, x.bounds[1] * h * w)
        return Inferred(Tensor((c, 1, 1), x.exp, bounds, True))

    def golden(self, layer, info, xs, exps):
        return xs[0].sum(axis=(2, 3))

    def golden_torch(self, layer, info, xs, exps, plan):
        return xs[0].double().sum(dim=(2, 3))

    def fake(self, layer, xs, exps, net):
        return xs[0].sum(dim=(2, 3)), exps[0]

    def to_json(self, layer, info, srcs):
        return {}

    def from_json(self, l, where):
        return SumPool(l["name"], src=l["src"])

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        # per channel: the beat's pixels plus the accumulator
        return LayerHw(layer.name, self.op, width_for(*info.out_bounds)[0], info.in_shape[0] * p_in, 1, **beats)


base.register(SumPoolOp())
