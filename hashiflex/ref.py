"""The golden model: a bit-exact integer NumPy model of what the hardware computes. It is the spec.

All arithmetic is int64 and exact (bounds are checked by :func:`hashiflex.passes.annotate`); the number
formats are those of :mod:`hashiflex.numfmt`. Batch-first, vectorized.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ir import Conv2d, Graph, Linear, Requant, SumPool
from .numfmt import codes_to_int_weights, requant
from .passes import annotate

_INT64_SAFE = 1 << 62


def conv2d_int(x: np.ndarray, wint: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """x (N, C, H, W) int64, wint (O, C, k, k) int64 -> (N, O, OH, OW) exact integer accumulators."""
    k = wint.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N C OH OW k k
    acc = np.einsum("ncyxij,ocij->noyx", win, wint, optimize=True)
    return acc + bias.reshape(1, -1, 1, 1)


def run(g: Graph, x: np.ndarray, trace: bool = False):
    """Run the quantized graph on integer inputs ``x`` (N, C, H, W). Returns the integer outputs
    (N, features) or, with ``trace``, also a dict layer name -> integer activation."""
    infos = annotate(g)
    lo, hi = g.input.type.range
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (g.input.channels, g.input.height, g.input.width):
        raise ValueError(f"input: expected shape (N, {g.input.channels}, {g.input.height}, {g.input.width}), "
                         f"found {x.shape}")
    if x.min(initial=lo) < lo or x.max(initial=hi) > hi:
        raise ValueError(f"input: values must lie in [{lo}, {hi}] ({g.input.type})")
    for info in infos:
        if max(abs(info.out_bounds[0]), abs(info.out_bounds[1])) >= _INT64_SAFE:
            raise ValueError(f"layer {info.name!r}: bounds {info.out_bounds} exceed int64")
    y = x.astype(np.int64)
    acts = {}
    for layer in g.layers:
        if isinstance(layer, Conv2d):
            y = conv2d_int(y, codes_to_int_weights(layer.q.codes), layer.bias_int, layer.stride, layer.padding)
        elif isinstance(layer, Linear):
            y = y.reshape(y.shape[0], -1) @ codes_to_int_weights(layer.q.codes).T + layer.bias_int
        elif isinstance(layer, Requant):
            info = infos[g.layers.index(layer)]
            y = requant(y, info.shift, *layer.clamp())
        elif isinstance(layer, SumPool):
            y = y.sum(axis=(2, 3))
        if trace:
            acts[layer.name] = y
    y = y.reshape(y.shape[0], -1)
    return (y, acts) if trace else y


def output_exp(g: Graph) -> int:
    return annotate(g)[-1].out_exp
