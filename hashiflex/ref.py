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


_EXACT_F32 = 1 << 24
_MAX_PARTS = 4


def weight_parts(x_max: int, wint: np.ndarray) -> tuple[int, list[np.ndarray]] | None:
    """Split integer weights into digit planes w = sum_j p_j * 2**(b*j) (|p_j| < 2**b, the sign of w) so that
    every plane's convolution with inputs of magnitude <= ``x_max`` is exact in float32: x_max * sum_k |p_jk| <
    2**24 bounds every product and partial sum of every output, in any summation order. Returns (b, planes),
    the fewest planes (up to 4) that are exact, or None when even 4 are not."""
    mag = np.abs(wint.astype(np.int64))
    sign = np.sign(wint).astype(np.int64)
    rows = mag.reshape(mag.shape[0], -1)
    top = int(mag.max(initial=0)).bit_length()
    for parts in range(1, _MAX_PARTS + 1):
        b = max(1, -(-top // parts))
        planes = [(rows >> (b * j)) & ((1 << b) - 1) for j in range(parts)]
        if all(x_max * int(p.sum(axis=1).max(initial=0)) < _EXACT_F32 for p in planes):
            return b, [(p.reshape(mag.shape) * sign) for p in planes]
    return None


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


def run(g: Graph, x: np.ndarray, trace: bool = False, fast: bool = True):
    """Run the quantized graph on integer inputs ``x`` (N, C, H, W). Returns the integer outputs
    (N, features) or, with ``trace``, also a dict layer name -> integer activation.

    ``fast`` (default): the same arithmetic through torch's float kernels where the annotated bounds prove it
    exact (:func:`run_torch`), else, and with ``fast=False``, in NumPy int64 as written below (the spec).
    Running many batches of one graph: :class:`Golden` analyses it once."""
    return Golden(g, fast).run(x, trace)


class Golden:
    """A quantized graph analysed once (bounds, and the torch plan when ``fast``): ``run(x)`` as :func:`run`."""

    def __init__(self, g: Graph, fast: bool = True):
        self.g, self.infos = g, annotate(g)
        for info in self.infos:
            if max(abs(info.out_bounds[0]), abs(info.out_bounds[1])) >= _INT64_SAFE:
                raise ValueError(f"layer {info.name!r}: bounds {info.out_bounds} exceed int64")
        self.plan = plan_torch(g, self.infos) if fast else None

    def run(self, x: np.ndarray, trace: bool = False):
        if self.plan is not None:
            _check_input(self.g, x)
            return _run_torch(self.g, self.infos, self.plan, np.asarray(x), trace)
        return _run_numpy(self.g, self.infos, x, trace)


def _check_input(g: Graph, x) -> None:
    lo, hi = g.input.type.range
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (g.input.channels, g.input.height, g.input.width):
        raise ValueError(f"input: expected shape (N, {g.input.channels}, {g.input.height}, {g.input.width}), "
                         f"found {x.shape}")
    if x.min(initial=lo) < lo or x.max(initial=hi) > hi:
        raise ValueError(f"input: values must lie in [{lo}, {hi}] ({g.input.type})")


def _run_numpy(g: Graph, infos, x: np.ndarray, trace: bool = False):
    """The spec: every layer in NumPy int64."""
    _check_input(g, x)
    x = np.asarray(x)
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
        else:
            raise TypeError(f"layer {layer.name!r}: no golden function for {type(layer).__name__}")
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


def _bound(b: tuple[int, int]) -> int:
    return max(abs(int(b[0])), abs(int(b[1])))


def run_torch(g: Graph, x: np.ndarray, infos=None, trace: bool = False):
    """Run ``g`` through :func:`plan_torch`'s plan, or return None when there is none."""
    infos = annotate(g) if infos is None else infos
    plan = plan_torch(g, infos)
    return None if plan is None else _run_torch(g, infos, plan, np.asarray(x), trace)


def plan_torch(g: Graph, infos=None):
    """The plan (weight planes, per-layer guards) to run :func:`run`'s arithmetic on torch tensors of exact
    integers (float32 where every value is below 2**24, float64 below 2**53), or None when the bounds do not
    prove that for every layer.

    Proof per layer, from :func:`hashiflex.passes.annotate`'s exact bounds: a conv/linear runs in float32 on the
    digit planes of its weights (:func:`weight_parts`: in_bound * sum |plane| < 2**24 for every output), whose
    results are summed, shifted, in float64 with the bias (in_bound * sum |w| + |bias| < 2**53), or, when no
    split into at most 4 planes is exact, as one float64 product (exact under the same bound); a requantize, add
    or pool is a float multiply by a power of two, a floor and a clamp, in float32 when the value plus its
    rounding offset stays below 2**24, else float64 (below 2**53). Results are then those of the
    int64 model bit for bit (the tests hold them equal on random graphs).
    """
    import torch

    infos = annotate(g) if infos is None else infos
    for info in infos:
        if max(_bound(info.out_bounds), _bound(info.in_bounds)) >= _EXACT_F64:
            return None
    plans, guards = {}, {}
    out_exp = {"input": g.input.type.exp}
    out_b = {"input": _bound(g.input.type.range)}
    for layer, info, srcs in zip(g.layers, infos, g.sources()):
        out_exp[layer.name], out_b[layer.name] = info.out_exp, _bound(info.out_bounds)
        if isinstance(layer, Add):  # the aligned operands and their sum
            guards[layer.name] = sum(out_b[s] << (out_exp[s] - info.acc_exp) for s in srcs)
            if guards[layer.name] + (1 << max(info.shift - 1, 0)) >= _EXACT_F64:
                return None
        if isinstance(layer, (Conv2d, Linear)):
            in_b, wint = _bound(info.in_bounds), layer.q.int_weights()
            # bounds any partial sum of the planes and the bias
            guards[layer.name] = _guard(np.array([in_b]), wint) + int(np.abs(layer.bias_int).max(initial=0))
            if guards[layer.name] >= _EXACT_F64:
                return None
            split = weight_parts(in_b, wint) if in_b < _EXACT_F32 else None
            if split is None:  # one float64 product, exact as the whole sum stays below 2**53
                plans[layer.name] = [(0, torch.from_numpy(wint.astype(np.float64)))]
            else:
                b, planes = split
                plans[layer.name] = [(b * j, torch.from_numpy(p.astype(np.float32))) for j, p in enumerate(planes)
                                     if p.any()]
    return plans, guards


def _run_torch(g: Graph, infos, plan, x: np.ndarray, trace: bool):
    import torch
    import torch.nn.functional as F

    from .quant.fakequant import conv2d_torch  # the one statement of a conv's padding in torch

    plans, guards = plan
    sources = g.sources()
    last_use = {s: i for i, srcs in enumerate(sources) for s in srcs}
    exps = {"input": g.input.type.exp}
    acts = {"input": torch.from_numpy(np.asarray(x, dtype=np.float32))}
    with torch.no_grad():
        for i, (layer, info, srcs) in enumerate(zip(g.layers, infos, sources)):
            y = acts[srcs[0]]
            if isinstance(layer, (Conv2d, Linear)):
                if isinstance(layer, Conv2d):
                    def op(w, y=y, layer=layer):
                        return conv2d_torch(y.to(w.dtype), w, None, layer)
                else:
                    y = y.reshape(y.shape[0], -1)

                    def op(w, y=y):
                        return F.linear(y.to(w.dtype), w)
                # float32 throughout when the whole sum stays below 2**24, else the planes meet in float64
                dt = torch.float32 if guards[layer.name] < _EXACT_F32 else torch.float64
                acc = None
                for shift, w in plans[layer.name]:
                    part = op(w).to(dt)
                    if shift:
                        part.mul_(float(2 ** shift))
                    acc = part if acc is None else acc.add_(part)
                bias = torch.from_numpy(layer.bias_int.astype(np.float64)).to(dt)
                shape = (1, -1, 1, 1) if isinstance(layer, Conv2d) else (1, -1)
                if acc is None:  # all-zero weights
                    oc, oh, ow = info.out_shape
                    acc = torch.zeros((y.shape[0], oc, oh, ow) if isinstance(layer, Conv2d) else (y.shape[0], oc),
                                      dtype=dt)
                y = acc.add_(bias.reshape(shape))
            elif isinstance(layer, (Requant, Add)):
                s = info.shift
                if isinstance(layer, Add):
                    e = info.acc_exp
                    sa, sb = exps[srcs[0]] - e, exps[srcs[1]] - e
                    # the aligned sum and its rounding offset must stay exact
                    dt = torch.float32 if guards[layer.name] + (1 << max(s - 1, 0)) < _EXACT_F32 else torch.float64
                    y = y.to(dt) * float(2 ** sa) + acts[srcs[1]].to(dt) * float(2 ** sb)
                else:  # the rounding offset must stay exact too
                    dt = torch.float32 if _bound(info.in_bounds) + (1 << max(s - 1, 0)) < _EXACT_F32 \
                        else torch.float64
                    y = y.to(dt, copy=True)
                if s > 0:
                    y = y.add_(float(2 ** (s - 1))).mul_(float(2.0 ** -s)).floor_()
                elif s < 0:
                    y = y.mul_(float(2 ** -s))
                lo, hi = layer.clamp()
                y = y.clamp_(float(lo), float(hi))
            elif isinstance(layer, SumPool):
                y = y.double().sum(dim=(2, 3))
            else:
                raise TypeError(f"layer {layer.name!r}: no golden function for {type(layer).__name__}")
            if _bound(info.out_bounds) < _EXACT_F32:
                y = y.float()
            acts[layer.name] = y
            exps[layer.name] = info.out_exp
            if not trace:
                for src in srcs:
                    if last_use[src] == i:
                        acts.pop(src, None)
    y = acts[g.layers[-1].name]
    y = y.reshape(y.shape[0], -1).double().numpy().astype(np.int64)
    if trace:
        del acts["input"]
        return y, {k: v.double().numpy().astype(np.int64) for k, v in acts.items()}
    return y
