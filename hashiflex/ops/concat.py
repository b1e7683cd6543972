"""concat: channel concatenation (``torch.cat(xs, dim=1)``) of tensors of one height and width. Wiring, plus
stream alignment in hardware: each operand is aligned to the finest exponent by a left shift (exact), so the
output holds every operand's values exactly. Generator side: Concat.scala (a join of the operands' streams,
the shorter paths buffered in FIFOs sized like a residual add's)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import IRError
from ..numfmt import width_for
from . import base
from .base import Inferred, LayerHw, Tensor


@dataclass
class Concat:
    name: str
    rest: tuple[str, ...]          # the operands after ``src``, in channel order
    src: str | None = None

    def __post_init__(self):
        self.rest = tuple(self.rest)
        if not self.rest or not all(isinstance(r, str) and r for r in self.rest):
            raise IRError(f"layer {self.name!r}: field 'inputs': expected at least two operands, found "
                          f"{[self.src, *self.rest]}")

    @property
    def extra(self) -> tuple[str, ...]:
        return self.rest


class ConcatOp(base.OpDef):
    op = "concat"
    layer_type = Concat

    def reads(self, layer):
        return layer.rest

    def channels_read(self, layer, ins, live):
        ends = np.cumsum([0] + [t.shape[0] for t in ins])  # the operands' channels follow one another
        return [live[a:b].copy() for a, b in zip(ends[:-1], ends[1:])]

    def value_exp(self, layer, in_exps):
        return min(in_exps)  # every operand aligned to the finest

    def keeps_parallelism(self, layer):
        return "a concatenation is wiring, pixel for pixel"

    def infer(self, layer, ins, require_quantized):
        names = [repr(layer.src) if layer.src else "the layer before", *map(repr, layer.rest)]
        first = ins[0]
        for name, t in zip(names[1:], ins[1:]):
            if t.shape[1:] != first.shape[1:] or t.vector != first.vector:
                raise IRError(f"layer {layer.name!r}: field 'inputs': expected every operand of height x width "
                              f"{first.shape[1]}x{first.shape[2]} (like {names[0]}), found {t.shape[1]}x{t.shape[2]} "
                              f"from {name}")
        shape = (sum(t.shape[0] for t in ins), *first.shape[1:])
        if any(t.exp is None or t.bounds is None for t in ins):
            return Inferred(Tensor(shape, None, None, first.vector))
        e = min(t.exp for t in ins)
        lo = min(t.bounds[0] << (t.exp - e) for t in ins)
        hi = max(t.bounds[1] << (t.exp - e) for t in ins)
        return Inferred(Tensor(shape, e, (lo, hi), first.vector), e)

    @staticmethod
    def shifts(info, exps) -> list[int]:
        return [x - info.out_exp for x in exps]

    def golden(self, layer, info, xs, exps):
        return np.concatenate([x << s for x, s in zip(xs, self.shifts(info, exps))], axis=1)

    def golden_torch(self, layer, info, xs, exps, plan):
        import torch

        dt = torch.float32 if base.bound(info.out_bounds) < base.EXACT_F32 else torch.float64
        return torch.cat([x.to(dt) * float(2 ** s) for x, s in zip(xs, self.shifts(info, exps))], dim=1)

    def torch_plan(self, layer, info, in_bounds, in_exps):
        return None  # exact: every shifted value is within the output bounds, checked below 2**53 for the graph

    def fake(self, layer, xs, exps, net):
        import torch

        # value domain: the shift to the finest exponent is exact, so this is a plain concatenation
        return torch.cat(xs, dim=1), min(exps)

    def to_json(self, layer, info, srcs):
        return {"inputs": list(srcs)}

    def from_json(self, l, where):
        ins = l["inputs"]
        if not ins or ins[0] != l["src"]:
            raise IRError(f"{where}.inputs: expected the operands in channel order, starting with src "
                          f"{l['src']!r}, found {ins}")
        return Concat(l["name"], tuple(ins[1:]), src=l["src"])

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        return LayerHw(layer.name, self.op, width_for(*info.out_bounds)[0], 0, 0, **beats)


base.register(ConcatOp())
