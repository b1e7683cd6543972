"""add: a residual add. Both operands are aligned to the finer exponent by left shifts, summed exactly, then
requantized (shift with round half up, clamp). Generator side: ResidualAdd (Layers.scala), residual FIFOs
sized by Pipeline.plan."""
from __future__ import annotations

from ..ir import Add, IRError, TensorType
from ..numfmt import requant
from . import base
from .base import Inferred, LayerHw, Tensor
from .requant import calibrated_type


class AddOp(base.OpDef):
    op = "add"
    layer_type = Add
    channelwise = True
    calibrated = True

    def reads(self, layer):
        return (layer.skip,)

    def out_type(self, layer, a, bits):
        return calibrated_type(layer, a, bits, True)

    def keeps_parallelism(self, layer):
        return "add maps pixels one to one"

    def infer(self, layer, ins, require_quantized):
        x, y = ins
        if y.shape != x.shape:
            raise IRError(f"layer {layer.name!r}: field 'skip': expected shape {x.shape} from {layer.src!r}, found "
                          f"{y.shape} from {layer.skip!r}")
        if layer.out is not None and x.exp is not None and y.exp is not None:
            e = min(x.exp, y.exp)
            lo = (x.bounds[0] << (x.exp - e)) + (y.bounds[0] << (y.exp - e))
            hi = (x.bounds[1] << (x.exp - e)) + (y.bounds[1] << (y.exp - e))
            shift = base.shift_in_range(layer, layer.out.exp - e)
            return Inferred(Tensor(x.shape, layer.out.exp, base.requant_bounds((lo, hi), shift, layer.clamp()),
                                   x.vector), e, shift)
        if require_quantized:
            raise IRError(f"layer {layer.name!r}: field 'out': expected a calibrated output type, found none")
        return Inferred(Tensor(x.shape, None, None, x.vector))

    def golden(self, layer, info, xs, exps):
        e = info.acc_exp
        return requant((xs[0] << (exps[0] - e)) + (xs[1] << (exps[1] - e)), info.shift, *layer.clamp())

    def torch_plan(self, layer, info, in_bounds, in_exps):
        guard = sum(b << (e - info.acc_exp) for b, e in zip(in_bounds, in_exps))  # the aligned operands' sum
        return guard if guard + (1 << max(info.shift - 1, 0)) < base.EXACT_F64 else base.NOT_EXACT

    def golden_torch(self, layer, info, xs, exps, guard):
        import torch

        e, s = info.acc_exp, info.shift
        # the aligned sum and its rounding offset must stay exact
        dt = torch.float32 if guard + (1 << max(s - 1, 0)) < base.EXACT_F32 else torch.float64
        y = xs[0].to(dt) * float(2 ** (exps[0] - e)) + xs[1].to(dt) * float(2 ** (exps[1] - e))
        return base.requant_torch(y, s, layer.clamp(), guard)

    def fake(self, layer, xs, exps, net):
        # value domain: aligning both operands to the finer scale is exact, so this is a plain sum
        return base.calibrated_output(layer, xs[0] + xs[1], exps[0], net)

    def to_json(self, layer, info, srcs):
        return dict(skip=srcs[1], shift=info.shift, acc_exp=info.acc_exp, bits=layer.out.bits,
                    signed=layer.out.signed, clamp=list(layer.clamp()))

    def from_json(self, l, where):
        return Add(l["name"], l["skip"], TensorType(l["bits"], l["signed"], l["out_exp"]), src=l["src"])

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        # the sum, plus the rounding constant when shifting right
        c = info.in_shape[0]
        return LayerHw(layer.name, self.op, None, c * p_in * (2 if info.shift > 0 else 1), 0, **beats)


base.register(AddOp())
