"""The golden model: a bit-exact integer NumPy model of what the hardware computes. It is the spec.

All arithmetic is int64 and exact (bounds are checked by :func:`hashiflex.passes.annotate`); the number
formats are those of :mod:`hashiflex.numfmt`. Batch-first, vectorized.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph
from .ops import op_of
from .ops.base import EXACT_F32 as _EXACT_F32
from .ops.base import EXACT_F64 as _EXACT_F64
from .ops.base import NOT_EXACT, SplitAcc
from .ops.base import bound as _bound
from .ops.intmath import conv2d_int, exact_matmul, weight_parts  # noqa: F401 (re-exported: the golden arithmetic)
from .analysis import annotate

_INT64_SAFE = 1 << 62


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
    lo, hi = g.input.range
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
        y = op_of(layer).golden(layer, info, [acts[s] for s in srcs], [exps[s] for s in srcs])
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
    infos = annotate(g) if infos is None else infos
    for info in infos:
        if max(_bound(info.out_bounds), _bound(info.in_bounds)) >= _EXACT_F64:
            return None
    plans = {}
    out_exp = {"input": g.input.type.exp}
    out_b = {"input": _bound(g.input.range)}
    for layer, info, srcs in zip(g.layers, infos, g.sources()):
        out_exp[layer.name], out_b[layer.name] = info.out_exp, _bound(info.out_bounds)
        plan = op_of(layer).torch_plan(layer, info, [out_b[s] for s in srcs], [out_exp[s] for s in srcs])
        if plan is NOT_EXACT:
            return None
        plans[layer.name] = plan
    return plans


def _run_torch(g: Graph, infos, plan, x: np.ndarray, trace: bool):
    import torch

    sources = g.sources()
    last_use = {s: i for i, srcs in enumerate(sources) for s in srcs}
    exps = {"input": g.input.type.exp}
    acts = {"input": torch.from_numpy(np.asarray(x, dtype=np.float32))}
    with torch.no_grad():
        for i, (layer, info, srcs) in enumerate(zip(g.layers, infos, sources)):
            op = op_of(layer)
            ins = [acts[s] for s in srcs]
            if not op.reads_split_acc:
                ins = [a.dense() if isinstance(a, SplitAcc) else a for a in ins]
            y = op.golden_torch(layer, info, ins, [exps[s] for s in srcs], plan[layer.name])
            if trace and isinstance(y, SplitAcc):
                y = y.dense()
            if not isinstance(y, SplitAcc) and _bound(info.out_bounds) < _EXACT_F32:
                y = y.float()
            acts[layer.name] = y
            exps[layer.name] = info.out_exp
            if not trace:
                for src in srcs:
                    if last_use[src] == i:
                        acts.pop(src, None)
    y = acts[g.layers[-1].name]
    y = y.dense() if isinstance(y, SplitAcc) else y
    y = y.reshape(y.shape[0], -1).double().numpy().astype(np.int64)
    if trace:
        del acts["input"]
        return y, {k: v.double().numpy().astype(np.int64) for k, v in acts.items()}
    return y
