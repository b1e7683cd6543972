"""lut: an activation function other than ReLU (Hardswish, Hardsigmoid, SiLU, Sigmoid, Tanh, GELU) as an exact
integer lookup on the quantized input, with no multiplier: y = clamp(round_half_up(f(x * 2**in_exp) / 2**out_exp))
for every integer x the input can hold. Python computes the table once, from the input's exact bounds, with the
same torch function the fake-quant model applies, and carries it in design.json; the generator checks its length
and bounds and builds it as a read-only table per lane. Generator side: Lut.scala."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import IRError, TensorType
from . import base
from .base import Inferred, LayerHw, Tensor
from .requant import calibrated_type

MAX_ENTRIES = 1 << 12  # the widest input a table is built for (12 bits)

# name -> (torch function of a float64 tensor, signed output, the torch modules and functions that spell it)
FUNCTIONS = {
    "hardswish": (lambda t: __import__("torch").nn.functional.hardswish(t), True),
    "hardsigmoid": (lambda t: __import__("torch").nn.functional.hardsigmoid(t), False),
    "silu": (lambda t: __import__("torch").nn.functional.silu(t), True),
    "sigmoid": (lambda t: __import__("torch").sigmoid(t), False),
    "tanh": (lambda t: __import__("torch").tanh(t), True),
    "gelu": (lambda t: __import__("torch").nn.functional.gelu(t), True),
}


@dataclass
class Lut:
    name: str
    act: str                       # a key of FUNCTIONS
    out: TensorType | None = None  # set by calibrate_activations
    src: str | None = None

    def __post_init__(self):
        if self.act not in FUNCTIONS:
            raise IRError(f"layer {self.name!r}: field 'act': expected one of {', '.join(sorted(FUNCTIONS))}, "
                          f"found {self.act!r}")

    def clamp(self) -> tuple[int, int]:
        if self.out is None:
            raise IRError(f"layer {self.name!r}: field 'out': expected a calibrated output type, found none")
        return self.out.range

    def function(self, x):
        """The activation on a float64 torch tensor (value domain)."""
        return FUNCTIONS[self.act][0](x)

    def table(self, in_exp: int, in_bounds: tuple[int, int]) -> np.ndarray:
        """The output integer of every input integer in ``in_bounds`` (int64, in order from the low bound)."""
        import torch

        lo, hi = int(in_bounds[0]), int(in_bounds[1])
        if hi - lo + 1 > MAX_ENTRIES:
            raise IRError(f"layer {self.name!r}: field 'in_bounds': a lookup table is built for at most "
                          f"{MAX_ENTRIES} input values, found [{lo}, {hi}] ({hi - lo + 1}); requantize its input "
                          "narrower first")
        x = torch.arange(lo, hi + 1, dtype=torch.float64) * 2.0 ** in_exp
        y = torch.floor(self.function(x) / 2.0 ** self.out.exp + 0.5)
        c_lo, c_hi = self.clamp()
        return y.clamp(c_lo, c_hi).numpy().astype(np.int64)


class LutOp(base.OpDef):
    op = "lut"
    layer_type = Lut
    channelwise = True
    calibrated = True

    def out_type(self, layer, a, bits):
        return calibrated_type(layer, a, bits, FUNCTIONS[layer.act][1])

    def keeps_parallelism(self, layer):
        return "a lookup maps pixels one to one"

    def infer(self, layer, ins, require_quantized):
        x = ins[0]
        if layer.out is not None and x.exp is not None and x.bounds is not None:
            t = layer.table(x.exp, x.bounds)
            return Inferred(Tensor(x.shape, layer.out.exp, (int(t.min()), int(t.max())), x.vector))
        if require_quantized:
            raise IRError(f"layer {layer.name!r}: field 'out': expected a calibrated output type, found none")
        return Inferred(Tensor(x.shape, None, None, x.vector))

    def golden(self, layer, info, xs, exps):
        return layer.table(exps[0], info.in_bounds)[xs[0] - info.in_bounds[0]]

    def torch_plan(self, layer, info, in_bounds, in_exps):
        import torch

        return torch.from_numpy(layer.table(in_exps[0], info.in_bounds).astype(np.float64))

    def golden_torch(self, layer, info, xs, exps, table):
        return table[(xs[0].double() - info.in_bounds[0]).long()]

    def fake(self, layer, xs, exps, net):
        return base.calibrated_output(layer, layer.function(xs[0]), exps[0], net)

    def to_json(self, layer, info, srcs):
        return dict(act=layer.act, bits=layer.out.bits, signed=layer.out.signed,
                    table=[int(v) for v in layer.table(info.in_exp, info.in_bounds)])

    def from_json(self, l, where):
        return Lut(l["name"], l["act"], TensorType(l["bits"], l["signed"], l["out_exp"]), src=l["src"])

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        from ..numfmt import width_for

        return LayerHw(layer.name, self.op, width_for(*info.out_bounds)[0], 0, 0, **beats)


base.register(LutOp())
