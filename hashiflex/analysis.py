"""Analysis: shapes, exponents and exact integer bounds of every tensor of a graph (``annotate``), each layer
type's rule being its op definition's ``infer``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    return _propagate(g, require_quantized)[0]


def live_channels(g: Graph) -> dict[str, np.ndarray]:
    """For every tensor ("input" and each layer's output), which of its channels the network's output depends on
    (bool, one per channel); each layer type's rule is its op definition's ``channels_read``. A channel that no
    later layer reads (a pointwise conv's all-zero weight column, say) is dead: firtool removes its logic and the
    ports that carried it, so the full design computes no value for it."""
    _, state = _propagate(g, True)
    live = {name: np.zeros(t.shape[0], dtype=bool) for name, t in state.items()}
    live[g.layers[-1].name][:] = True
    srcs = g.sources()
    for k in reversed(range(len(g.layers))):
        layer = g.layers[k]
        reads = op_of(layer).channels_read(layer, [state[s] for s in srcs[k]], live[layer.name])
        for s, r in zip(srcs[k], reads):
            live[s] |= r
    return live


def _propagate(g: Graph, require_quantized: bool) -> tuple[list[LayerInfo], dict[str, Tensor]]:
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
    return infos, state
