"""Analysis: shapes, exponents and exact integer bounds of every tensor of a graph (``annotate``), each layer
type's rule being its op definition's ``infer``."""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph, IRError
from .ops import Tensor, op_of


@dataclass(frozen=True)
class LayerInfo:
    """Shapes, exponents and value bounds at one layer (what the hardware must carry)."""
    name: str
    in_shape: tuple[int, int, int]     # (C, H, W); H = W = 1 for vectors
    out_shape: tuple[int, int, int]
    in_exp: int | None
    out_exp: int | None
    in_bounds: tuple[int, int] | None
    out_bounds: tuple[int, int] | None
    acc_exp: int | None = None         # conv/linear: exponent of the accumulator
    shift: int | None = None           # requant: out.exp - in_exp


def annotate(g: Graph, require_quantized: bool = True) -> list[LayerInfo]:
    """Propagate shapes, exponents and exact integer bounds through the graph; check consistency (each layer
    type's rule is its op definition's ``infer``)."""
    state = {"input": Tensor((g.input.channels, g.input.height, g.input.width), g.input.type.exp,
                             g.input.range, False)}
    infos: list[LayerInfo] = []
    for layer, srcs in zip(g.layers, g.sources()):
        op = op_of(layer)
        for s in srcs:
            if s not in state:
                raise IRError(f"layer {layer.name!r}: field 'src': {s!r} is not an earlier layer")
        if layer.name in state:
            raise IRError(f"layer {layer.name!r}: the name is used twice")
        x = state[srcs[0]]
        r = op.infer(layer, [state[s] for s in srcs], require_quantized)
        infos.append(LayerInfo(layer.name, x.shape, r.out.shape, x.exp, r.out.exp, x.bounds, r.out.bounds,
                               r.acc_exp, r.shift))
        state[layer.name] = r.out
    return infos
