"""What conv2d and linear share: Po2 weights summed by a planned adder graph, an integer bias, an exact
accumulator. Their own files say how they read their input (windows or a vector)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import adders
from ..ir import IRError, Po2Weights
from ..numfmt import width_for
from .base import (EXACT_F32, EXACT_F64, NOT_EXACT, Inferred, LayerHw, OpDef, SplitAcc, Tensor, dot_bounds,
                   pipeline_stages)
from .intmath import guard_of, weight_parts


@dataclass(frozen=True)
class _TorchPlan:
    """How the golden model runs a conv/linear on torch: ``planes`` (shift, bound on the plane's result) of the
    weights' digit planes, computed by ``weights`` (one tensor holding every plane stacked on the outputs, or one
    per plane), ``outputs`` output channels per plane; ``guard`` bounds the whole accumulator."""
    guard: int
    planes: list
    weights: list
    outputs: int


@dataclass(frozen=True)
class AdderGraph:
    """Counts of one pixel lane's adder graph (see :func:`shared_adder_graph`)."""
    adders: int            # with shared subtrees built once
    unshared: int          # every channel's tree on its own
    depth: int             # adder levels, the final bias/negation level included
    adder_bits: int | None = None  # sum of the adders' exact result widths (given the input bounds)
    plan: "adders.AdderPlan | None" = None  # the plan counted (share=True)


def sint_width(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement type holding [lo, hi] (the generator's TreePlan.sintWidth, whose
    BigInt.bitLength of a negative v is that of ~v)."""
    def bits(v: int) -> int:
        return v.bit_length() if v >= 0 else (~v).bit_length()
    return max(bits(-lo - 1), bits(hi)) + 1


def shared_adder_graph(codes: np.ndarray, bias_int: np.ndarray, depthwise: bool = False,
                       share: bool = True, in_bounds: tuple[int, int] | None = None, terms: int = 1) -> AdderGraph:
    """One pixel lane's adder graph as the generator builds it: the plan of :mod:`hashiflex.adders` (carried in
    design.json ``adders``), counted with the final level where each output meets its bias (one adder for
    root + bias, bias - root or 0 - root).

    ``codes``: of the weight shape (``terms`` 1), or (terms, *weight shape). A channel's inputs are its kxk window
    of all input channels, or of its own channel when depthwise. ``share=False`` counts every channel's sum on
    its own (nonzero codes - 1 per channel, plus the final level), the figure sharing is measured against.
    ``in_bounds``: the lane's input interval; with it, ``adder_bits`` sums every adder's width from interval
    arithmetic over the plan (what the generator sizes wires with).
    """
    plan = adders.plan_codes(codes, terms, depthwise)
    bias = np.asarray(bias_int).astype(np.int64)
    finals = plan.final_adders(bias)
    tc = np.asarray(codes) if terms > 1 else np.asarray(codes)[None]
    flat = tc.reshape(tc.shape[0], tc.shape[1], -1)
    per_row = np.count_nonzero(flat, axis=(0, 2))
    all_neg = (per_row > 0) & (np.count_nonzero(flat > 0, axis=(0, 2)) == 0)
    naive = int(np.maximum(per_row - 1, 0).sum() + ((per_row > 0) & ((bias != 0) | all_neg)).sum())
    depth = plan.depth() + (1 if finals.any() else 0)
    n_add = len(plan.sums) + int(finals.sum())
    bits = None
    if in_bounds is not None:
        vals = adders.node_bounds(plan, in_bounds)
        bits = sum(sint_width(lo, hi) for lo, hi in vals[plan.n_in:])
        bits += sum(sint_width(*b) for _, b in final_bounds(plan, vals, bias))
    return AdderGraph(n_add if share else naive, naive, depth, bits, plan if share else None)


def final_bounds(plan, vals: list[tuple[int, int]], bias: np.ndarray) -> list[tuple[int, tuple[int, int]]]:
    """The final level's adders (root + bias, bias - root or 0 - root): (root node, interval of the sum) for each
    output that spends one, from the nodes' intervals ``vals`` (:func:`hashiflex.adders.node_bounds`)."""
    out = []
    for (node, s, ng), b, f in zip(plan.roots.tolist(), bias.tolist(), plan.final_adders(bias).tolist()):
        if f:
            lo, hi = vals[node]
            lo, hi = (-(hi << s), -(lo << s)) if ng else (lo << s, hi << s)
            out.append((node, (lo + b, hi + b)))
    return out


class WeightedOp(OpDef):
    """A layer that sums Po2-weighted inputs: out[o] = sum_j w[o, j] x_j + bias[o], exactly."""
    weighted = True
    staged = True

    # --- what conv2d and linear say differently
    def check_input(self, layer, x: Tensor) -> tuple[int, int, int]:
        """Check the input tensor; return the output shape."""
        raise NotImplementedError

    def tree_bounds(self, layer, lo: int, hi: int) -> tuple[int, int]:
        """The interval the adder trees see (zero padding adds 0)."""
        return lo, hi

    def depthwise(self, layer) -> bool:
        return False

    def apply_torch(self, layer, x, w, b):
        """The layer's linear map in torch (float weights ``w``, bias ``b`` or None)."""
        raise NotImplementedError

    # --- shared
    def infer(self, layer, ins, require_quantized):
        x = ins[0]
        out_shape = self.check_input(layer, x)
        if layer.q is not None and x.exp is not None and x.bounds is not None:
            acc_exp = x.exp + layer.q.e_min
            bias_int = layer.bias_int if layer.bias_int is not None else np.zeros(out_shape[0], dtype=np.int64)
            bounds = dot_bounds(layer.q.int_weights(), bias_int, *self.tree_bounds(layer, *x.bounds))
            return Inferred(Tensor(out_shape, acc_exp, bounds, self.op == "linear" or x.vector), acc_exp)
        if require_quantized:
            raise IRError(f"layer {layer.name!r}: field 'weights': expected Po2 codes, found float weights")
        return Inferred(Tensor(out_shape, None, None, self.op == "linear" or x.vector))

    def torch_plan(self, layer, info, in_bounds, in_exps):
        import torch

        in_b, wint = in_bounds[0], layer.q.int_weights()
        # bounds any partial sum of the planes and the bias
        guard = guard_of(np.array([in_b]), wint) + int(np.abs(layer.bias_int).max(initial=0))
        if guard >= EXACT_F64:
            return NOT_EXACT
        split = weight_parts(in_b, wint) if in_b < EXACT_F32 else None
        if split is None:  # one float64 product, exact as the whole sum stays below 2**53
            return _TorchPlan(guard, [(0, guard)], [torch.from_numpy(wint.astype(np.float64))], len(wint))
        b, parts = split
        parts = [(b * j, p) for j, p in enumerate(parts) if p.any()]
        planes = [(shift, in_b * int(np.abs(p.reshape(len(p), -1)).sum(axis=1).max(initial=0)))
                  for shift, p in parts]
        groups = getattr(layer, "groups", 1)
        if groups == 1 and len(parts) > 1:  # one product computes every plane: its weights stacked on outputs
            w = [torch.from_numpy(np.concatenate([p for _, p in parts]).astype(np.float32))]
        else:
            w = [torch.from_numpy(p.astype(np.float32)) for _, p in parts]
        return _TorchPlan(guard, planes, w, len(wint))

    def golden_torch(self, layer, info, xs, exps, plan):
        import torch

        x = xs[0]
        if len(plan.weights) == 1:
            y = self.apply_torch(layer, x.to(plan.weights[0].dtype), plan.weights[0], None)
            qs = [y[:, j * plan.outputs:(j + 1) * plan.outputs] for j in range(len(plan.planes))]
        else:
            qs = [self.apply_torch(layer, x.to(w.dtype), w, None) for w in plan.weights]
        if not qs:  # all-zero weights
            oc, oh, ow = info.out_shape
            shape = (x.shape[0], oc, oh, ow) if self.op == "conv2d" else (x.shape[0], oc)
            qs, plan = [torch.zeros(shape, dtype=torch.float32)], _TorchPlan(plan.guard, [(0, 0)], [], plan.outputs)
        acc = SplitAcc([(shift, q, b) for (shift, b), q in zip(plan.planes, qs)], layer.bias_int, plan.guard)
        # float32 planes whose sum needs more than 24 bits stay apart for the requantizer (exact in float32)
        return acc if qs[0].dtype == torch.float32 and plan.guard >= EXACT_F32 else acc.dense()

    def fake(self, layer, xs, exps, net):
        w, b, exp = net.layer_weights(layer, exps[0])
        return self.apply_torch(layer, xs[0], w, b), exp

    def to_json(self, layer, info, srcs):
        return {"weights": {"bits": layer.q.bits, "e_min": layer.q.e_min, "terms": layer.q.terms,
                            "shape": list(layer.q.shape), "codes": [int(v) for v in np.asarray(layer.q.codes).ravel()]},
                "bias": [int(v) for v in np.asarray(layer.bias_int).ravel()],
                "adders": adders.to_json(adders.plan_codes(layer.q.codes, layer.q.terms, self.depthwise(layer)))}

    def weights_from_json(self, l: dict, where: str) -> tuple[Po2Weights, np.ndarray]:
        wq = l["weights"]
        codes = np.asarray(wq["codes"], dtype=np.int64)
        shape, terms = tuple(wq["shape"]), wq["terms"]
        if codes.size != terms * int(np.prod(shape)):
            raise IRError(f"{where}.weights.codes: expected {terms * int(np.prod(shape))} entries "
                          f"({terms} term{'s' * (terms > 1)} of shape {list(shape)}), found {codes.size}")
        limit = (1 << (wq["bits"] - 1)) - 1
        bad = np.flatnonzero(np.abs(codes) > limit)
        if bad.size:
            raise IRError(f"{where}.weights.codes[{int(bad[0])}]: expected a code in [-{limit}, {limit}] for "
                          f"{wq['bits']}-bit weights, found {int(codes[bad[0]])}"
                          + (f" ({bad.size} codes out of range)" if bad.size > 1 else ""))
        codes = codes.reshape((terms,) + shape if terms > 1 else shape)
        bias = np.asarray(l["bias"], dtype=np.int64)
        if bias.shape != (shape[0],):
            raise IRError(f"{where}.bias: expected {shape[0]} entries, found {bias.size}")
        return Po2Weights(codes, wq["e_min"], wq["bits"], terms), bias

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        ag = shared_adder_graph(layer.q.codes, layer.bias_int, self.depthwise(layer),
                                in_bounds=self.tree_bounds(layer, *info.in_bounds), terms=layer.q.terms)
        stages = pipeline_stages(ag.depth, levels_per_stage)
        return LayerHw(layer.name, self.op, width_for(*info.out_bounds)[0], ag.adders * p_out, stages, **beats,
                       adders_unshared=ag.unshared * p_out, adder_bits=ag.adder_bits * p_out)
