"""requant: a requantizing shift with round half up and a clamp (the clamp implements ReLU/ReLU6), pixel for
pixel. Generator side: Requant (Layers.scala)."""
from __future__ import annotations

import math

import numpy as np

from ..ir import IRError, Requant, TensorType
from ..numfmt import requant
from . import base
from .base import Inferred, LayerHw, Tensor


def calibrated_type(layer, a: np.ndarray, bits: int, signed: bool, cap: float | None = None) -> TensorType:
    """A ``bits``-wide type whose Po2 scale covers the observed activations ``a`` (at most ``cap``):
    exp = ceil(log2(max / top)), top the largest code (2**bits - 1 unsigned, 2**(bits-1) - 1 signed)."""
    base.check_finite(a, f"layer {layer.name!r}: calibration activations")
    m = float(np.max(np.abs(a))) if signed else float(np.max(a))
    if cap is not None:
        m = min(m, cap)
    m = max(m, 2.0 ** -30)
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return TensorType(bits, signed, int(math.ceil(math.log2(m / top))))


class RequantOp(base.OpDef):
    op = "requant"
    layer_type = Requant
    channelwise = True
    reads_split_acc = True
    calibrated = True

    def out_type(self, layer, a, bits):
        """After ReLU/ReLU6 unsigned (ReLU6 at most 6), elsewhere signed."""
        return calibrated_type(layer, a, bits, layer.act not in ("relu", "relu6"), 6.0 if layer.act == "relu6" else None)

    def keeps_parallelism(self, layer):
        return "requant maps pixels one to one"

    def infer(self, layer, ins, require_quantized):
        x = ins[0]
        if layer.out is not None and x.exp is not None:
            shift = base.shift_in_range(layer, layer.out.exp - x.exp)
            return Inferred(Tensor(x.shape, layer.out.exp, base.requant_bounds(x.bounds, shift, layer.clamp()),
                                   x.vector), None, shift)
        if require_quantized:
            raise IRError(f"layer {layer.name!r}: field 'out': expected a calibrated output type, found none")
        return Inferred(Tensor(x.shape, None, None, x.vector))

    def golden(self, layer, info, xs, exps):
        return requant(xs[0], info.shift, *layer.clamp())

    def torch_plan(self, layer, info, in_bounds, in_exps):
        return None if in_bounds[0] + (1 << max(info.shift - 1, 0)) < base.EXACT_F64 else base.NOT_EXACT

    def golden_torch(self, layer, info, xs, exps, plan):
        return base.requant_torch(xs[0], info.shift, layer.clamp(), base.bound(info.in_bounds))

    def fake(self, layer, xs, exps, net):
        import torch

        x = xs[0]
        if not net.quantize:  # the float activation (quantizing clamps to the same range)
            x = torch.clamp(x, min=0.0, max=6.0) if layer.act == "relu6" else (
                torch.relu(x) if layer.act == "relu" else x)
        return base.calibrated_output(layer, x, exps[0], net)

    def to_json(self, layer, info, srcs):
        return dict(shift=info.shift, act=layer.act, bits=layer.out.bits, signed=layer.out.signed,
                    clamp=list(layer.clamp()))

    def from_json(self, l, where):
        return Requant(l["name"], l["act"], TensorType(l["bits"], l["signed"], l["out_exp"]), src=l["src"])

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        # the rounding constant 2**(s-1) costs one adder per lane when shifting right
        c = info.in_shape[0]
        return LayerHw(layer.name, self.op, None, c * p_in if info.shift > 0 else 0, 0, **beats)


base.register(RequantOp())
