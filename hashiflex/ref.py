"""The golden model: a bit-exact integer NumPy model of what the hardware computes. It is the spec.

All arithmetic is int64 and exact (bounds are checked by :func:`hashiflex.passes.annotate`); the number
formats are those of :mod:`hashiflex.numfmt`. Batch-first, vectorized.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ir import Add, Conv2d, Graph, Linear, Requant, SumPool
from .numfmt import requant
from .passes import annotate

_INT64_SAFE = 1 << 62


_EXACT_F64 = 1 << 53


def exact_matmul(a: np.ndarray, w: np.ndarray, guard: int) -> np.ndarray:
    """Integer a (M, K) @ w (K, O), exactly. ``guard`` bounds sum_k |a_mk w_ko| for every output: below 2**53
    every partial sum is an exactly representable float64, so BLAS's float64 product is exact in any
    summation order (fast); otherwise int64 arithmetic is used."""
    if guard < _EXACT_F64:
        return np.rint(a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ w.astype(np.int64)


def _guard(x: np.ndarray, wint: np.ndarray) -> int:
    xmax = int(np.abs(x).max(initial=0))
    return xmax * int(np.abs(wint.reshape(wint.shape[0], -1)).sum(axis=1).max(initial=0))


def conv2d_int(x: np.ndarray, wint: np.ndarray, bias: np.ndarray, stride: int,
               padding: int | tuple[int, int, int, int], groups: int = 1) -> np.ndarray:
    """x (N, C, H, W) int64, wint (O, C/groups, k, k) int64 -> (N, O, OH, OW) exact integer accumulators.
    ``padding``: zeros on every side, or (top, bottom, left, right)."""
    k = wint.shape[-1]
    n, c = x.shape[:2]
    o = wint.shape[0]
    t, b, l, r = (padding,) * 4 if isinstance(padding, (int, np.integer)) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N C OH OW k k
    oh, ow = win.shape[2:4]
    guard = _guard(x, wint)
    if groups == 1 and k == 1:  # pointwise: one batched matmul over channels, no im2col copy
        xs = xp[:, :, ::stride, ::stride][:, :, :oh, :ow].reshape(n, c, oh * ow)
        w2 = wint.reshape(o, c)
        if guard < _EXACT_F64:
            acc = np.rint(np.matmul(w2.astype(np.float64), xs.astype(np.float64))).astype(np.int64)
        else:
            acc = np.matmul(w2, xs)
        acc = acc.reshape(n, o, oh, ow)
    elif groups == 1:  # im2col + one exact matmul
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
        acc = exact_matmul(cols, wint.reshape(o, -1).T, guard)
        acc = acc.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    elif groups == c == o:  # depthwise: k*k shifted multiply-adds
        acc = np.zeros((n, c, oh, ow), dtype=np.int64)
        for i in range(k):
            for j in range(k):
                tap = xp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
                acc += tap * wint[:, 0, i, j].reshape(1, c, 1, 1)
    else:
        wg = win.reshape(n, groups, c // groups, oh, ow, k, k)
        acc = np.einsum("ngcyxij,gocij->ngoyx", wg, wint.reshape(groups, o // groups, c // groups, k, k),
                        optimize=True).reshape(n, o, oh, ow)
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
    acts = {"input": x.astype(np.int64)}
    exps = {"input": g.input.type.exp}
    sources = g.sources()
    last_use = {s: i for i, srcs in enumerate(sources) for s in srcs}
    for i, (layer, info, srcs) in enumerate(zip(g.layers, infos, sources)):
        y = acts[srcs[0]]
        if isinstance(layer, Conv2d):
            y = conv2d_int(y, layer.q.int_weights(), layer.bias_int, layer.stride, layer.padding,
                           layer.groups)
        elif isinstance(layer, Linear):
            wint = layer.q.int_weights()
            y = exact_matmul(y.reshape(y.shape[0], -1), wint.T, _guard(y, wint)) + layer.bias_int
        elif isinstance(layer, Requant):
            y = requant(y, info.shift, *layer.clamp())
        elif isinstance(layer, Add):
            e = info.acc_exp
            y = (y << (exps[srcs[0]] - e)) + (acts[srcs[1]] << (exps[srcs[1]] - e))
            y = requant(y, info.shift, *layer.clamp())
        elif isinstance(layer, SumPool):
            y = y.sum(axis=(2, 3))
        acts[layer.name] = y
        exps[layer.name] = info.out_exp
        if not trace:  # free the activations no later layer reads
            for s in srcs:
                if last_use[s] == i:
                    acts.pop(s, None)
    y = acts[g.layers[-1].name]
    y = y.reshape(y.shape[0], -1)
    if trace:
        del acts["input"]
        return y, acts
    return y


def output_exp(g: Graph) -> int:
    return annotate(g)[-1].out_exp
