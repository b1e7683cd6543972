"""The op definition interface, the registry, and the exact-arithmetic rules op definitions share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..ir import IRError


class Tensor(NamedTuple):
    """What a layer reads or writes, as the analysis sees it: (C, H, W), exponent and exact integer bounds
    (None before quantization), and whether it is a vector (after a global pool or a linear layer)."""
    shape: tuple[int, int, int]
    exp: int | None
    bounds: tuple[int, int] | None
    vector: bool


class Inferred(NamedTuple):
    out: Tensor
    acc_exp: int | None = None   # conv/linear/add: the exponent of the exact accumulator
    shift: int | None = None     # requantizing shift (out exponent - accumulator exponent)


def pipeline_stages(depth: int, levels_per_stage: int) -> int:
    """Register stages of a tree of ``depth`` levels (adders, comparators) pipelined every ``levels_per_stage``
    levels, as the generator builds it (StageSchedule in ShiftAdd.scala): a register at the tree's inputs, after
    every ``levels_per_stage`` levels and after the last. The input register ends every path from the module
    feeding the tree (a line buffer's window multiplexers, a requantizer, a residual add: combinational on the
    stream) at a flip-flop, so no path runs through two modules' logic into the first adder levels."""
    if depth == 0:
        return 1
    return 1 + -(-depth // levels_per_stage)


@dataclass(frozen=True)
class LayerHw:
    """What the generator must build for a layer, as Python predicts it (compared with hw_params.json)."""
    name: str
    op: str
    acc_width: int | None
    adders: int
    stages: int
    beats_in: int        # stream beats consumed per image
    beats_out: int       # stream beats produced per image
    parallelism: int     # pixels per output beat
    adders_unshared: int | None = None  # adder trees: without common-subexpression sharing
    adder_bits: int | None = None       # adder trees: the adders' exact widths, summed
    comparators: int = 0                # max pools: two-input comparators (all lanes)


class OpDef:
    """One layer type. Subclasses set ``op`` (its name in design.json and hw_params.json) and ``layer_type``
    (its IR dataclass) and define every method below; :func:`register` adds them to the registry."""
    op: str = ""
    layer_type: type = type(None)
    weighted = False    # Po2 weights and an integer bias (quantized by passes.quantize_weights)
    calibrated = False  # an output type chosen from calibration activations (``layer.out``)
    reads_split_acc = False  # golden_torch takes a :class:`SplitAcc` input (others get it summed)
    staged = False      # an adder or comparator tree pipelined every ``levels_per_stage`` levels (its own in
                        # design.json when given, else the design's ``hardware.adder_levels_per_stage``)

    channelwise = False  # output channel c reads channel c of every input and nothing else (elementwise, pools)

    def channels_read(self, layer, ins: list[Tensor], live: np.ndarray) -> list[np.ndarray]:
        """Which channels of each input (``ins``: src first, then :meth:`reads`) the output channels marked in
        ``live`` (bool, one per output channel) depend on, one bool array per input (the liveness behind
        :func:`hashiflex.analysis.live_channels`)."""
        if self.channelwise:
            return [live.copy() for _ in ins]
        raise NotImplementedError(f"{type(self).__name__}.channels_read")

    def reads(self, layer) -> tuple[str, ...]:
        """Tensors read besides ``layer.src`` (a residual add's skip operand)."""
        return ()

    def keeps_parallelism(self, layer) -> str:
        """Why the output must have its inputs' pixels per beat ("" when it need not: a windowed layer, a pool)."""
        return ""

    def value_exp(self, layer, in_exps: list[int]) -> int:
        """The exponent of the values the layer computes on, from its inputs' (before weights or requantization
        apply theirs): the input's, or for several inputs what they are aligned to."""
        return in_exps[0]

    def infer(self, layer, ins: list[Tensor], require_quantized: bool) -> Inferred:
        """Output shape, exponent and exact bounds from the inputs (src first); raises IRError naming the field."""
        raise NotImplementedError(f"{type(self).__name__}.infer")

    def golden(self, layer, info, xs: list[np.ndarray], exps: list[int]) -> np.ndarray:
        """The spec: int64 NumPy output from the int64 inputs (batch first)."""
        raise NotImplementedError(f"{type(self).__name__}.golden")

    def torch_plan(self, layer, info, in_bounds: list[int], in_exps: list[int]):
        """Whatever :meth:`golden_torch` needs, proven exact from the bounds; :data:`NOT_EXACT` when the bounds do
        not prove torch's float arithmetic exact (the golden model then runs in NumPy)."""
        return None

    def golden_torch(self, layer, info, xs: list, exps: list[int], plan):
        """The same integers as :meth:`golden`, on torch float tensors of exact integers."""
        raise NotImplementedError(f"{type(self).__name__}.golden_torch")

    def fake(self, layer, xs: list, exps: list[int], net):
        """Fake-quant forward in the value domain: (output, its exponent). ``net`` is the FakeQuantNet (its
        ``quantize`` flag, weights and recording)."""
        raise NotImplementedError(f"{type(self).__name__}.fake")

    def to_json(self, layer, info, srcs: tuple[str, ...]) -> dict:
        """The op's own design.json fields (the common ones are written by the exporter)."""
        raise NotImplementedError(f"{type(self).__name__}.to_json")

    def from_json(self, l: dict, where: str):
        """The IR layer of a schema-valid design.json record; raises naming ``where``'s field."""
        raise NotImplementedError(f"{type(self).__name__}.from_json")

    def hw(self, layer, info, p_in: int, p_out: int, levels_per_stage: int, beats: dict) -> LayerHw:
        """What the generator builds: adders, register stages, beats (``beats``: beats_in, beats_out,
        parallelism)."""
        raise NotImplementedError(f"{type(self).__name__}.hw")


NOT_EXACT = object()

OPS: dict[type, OpDef] = {}
_BY_NAME: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.layer_type in OPS or op.op in _BY_NAME:
        raise ValueError(f"op {op.op!r} ({op.layer_type.__name__}) is registered twice")
    OPS[op.layer_type] = op
    _BY_NAME[op.op] = op
    return op


def op_of(layer) -> OpDef:
    """The definition of ``layer``'s type; raises IRError naming the layer when there is none."""
    try:
        return OPS[type(layer)]
    except KeyError:
        raise IRError(f"layer {getattr(layer, 'name', layer)!r}: unknown layer type {type(layer).__name__} (known: "
                      f"{', '.join(sorted(t.__name__ for t in OPS))}); define it in hashiflex/ops") from None


def op_named(op: str, where: str = "op") -> OpDef:
    """The definition of design.json op ``op``; raises IRError naming ``where`` when there is none."""
    try:
        return _BY_NAME[op]
    except (KeyError, TypeError):
        raise IRError(f"{where}: expected one of {', '.join(repr(k) for k in sorted(_BY_NAME))}, found {op!r}") \
            from None


# ------------------------------------------------------------------------------- exact arithmetic, shared
def check_finite(a, what: str) -> None:
    """Raise :class:`IRError` naming ``what``, the count and the first index when ``a`` holds a NaN or an Inf."""
    a = np.asarray(a, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[first]) else ("+Inf" if a[first] > 0 else "-Inf")
        raise IRError(f"{what}: expected finite values, found {int(bad.sum())} of {a.size} not finite "
                      f"({kind} at index {list(first)})")


MAX_SHIFT = 62  # the largest requantizing shift (either way) the integer model and the generator take


def dot_bounds(wint: np.ndarray, bias: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Exact bounds of sum_j wint[o, j] * x_j + bias[o] over x_j in [lo, hi], min/max over o."""
    wint = wint.reshape(wint.shape[0], -1).astype(object)
    pos = np.where(wint > 0, wint, 0).sum(axis=1)
    neg = np.where(wint < 0, wint, 0).sum(axis=1)
    b = np.asarray(bias, dtype=object)
    los = pos * lo + neg * hi + b
    his = pos * hi + neg * lo + b
    return int(min(los)), int(max(his))


def shift_in_range(layer, shift: int) -> int:
    if not -MAX_SHIFT <= shift <= MAX_SHIFT:
        raise IRError(f"layer {layer.name!r}: field 'shift': expected a requantizing shift in [-{MAX_SHIFT}, "
                      f"{MAX_SHIFT}] (out exponent - accumulator exponent), found {shift}: the exponents of this "
                      f"layer and its input (weights.e_min, out_exp) are inconsistent")
    return shift


def requant_bounds(bounds: tuple[int, int], shift: int, clamp: tuple[int, int]) -> tuple[int, int]:
    """Requantization is monotone: it maps the interval's ends to the output interval's ends (exact, Python ints)."""
    def rq(v: int) -> int:
        y = (v + (1 << (shift - 1))) >> shift if shift > 0 else v << -shift
        return min(max(y, clamp[0]), clamp[1])
    return rq(int(bounds[0])), rq(int(bounds[1]))


EXACT_F32 = 1 << 24
EXACT_F64 = 1 << 53


def bound(b: tuple[int, int]) -> int:
    return max(abs(int(b[0])), abs(int(b[1])))


def requant_torch(y, s: int, clamp: tuple[int, int], guard: int):
    """Round half up by 2**s and clamp, on a torch tensor of exact integers whose magnitude is below ``guard``
    (float32 when the value plus its rounding offset stays below 2**24, else float64), or on a
    :class:`SplitAcc` (exact in float32 where its bounds allow, else summed in float64 first)."""
    import torch

    if isinstance(y, SplitAcc):
        out = y.requant(s, clamp)
        if out is not None:
            return out
        y = y.dense()
    dt = torch.float32 if guard + (1 << max(s - 1, 0)) < EXACT_F32 else torch.float64
    if s > 0:
        y = torch.add(y.to(dt), float(2 ** (s - 1))).mul_(float(2.0 ** -s)).floor_()
    elif s < 0:
        y = torch.mul(y.to(dt), float(2 ** -s))
    else:
        y = y.to(dt, copy=True)
    return y.clamp_(float(clamp[0]), float(clamp[1]))


class SplitAcc:
    """An exact integer accumulator kept as float32 planes, acc = sum_j Q_j * 2**shift_j + bias (bias per channel,
    axis 1), when the sum needs more than float32's 24 bits: a requantizer consumes it in float32 exactly
    (:meth:`requant`) instead of summing it in float64 first; any other reader takes :meth:`dense`.

    ``planes``: (shift, tensor of exact integers, bound on its magnitude), shifts increasing; ``bias``: int64
    NumPy per channel; ``guard`` bounds |acc| (below 2**53)."""

    def __init__(self, planes: list, bias: np.ndarray, guard: int):
        self.planes, self.bias, self.guard = sorted(planes, key=lambda p: p[0]), np.asarray(bias, np.int64), guard

    def _channel(self, v: np.ndarray, like):
        import torch

        return torch.from_numpy(v.astype(np.float64)).to(like.dtype).reshape((1, -1) + (1,) * (like.dim() - 2))

    def dense(self):
        """The accumulator as one tensor: float32 when ``guard`` < 2**24, else float64 (exact either way)."""
        import torch

        dt = torch.float32 if self.guard < EXACT_F32 else torch.float64
        acc = None
        for shift, q, _ in self.planes:
            part = q.to(dt)
            acc = part.mul(float(2 ** shift)) if acc is None else acc.add_(part, alpha=float(2 ** shift))
        return acc.add_(self._channel(self.bias, acc))

    def requant(self, s: int, clamp: tuple[int, int]):
        """clamp(floor((acc + 2**(s-1)) / 2**s)), s > 0, in float32; None when a bound does not prove every step
        exact (the caller then uses :meth:`dense`).

        With c = bias + 2**(s-1) = c_top 2**s + c_rem (0 <= c_rem < 2**s): floor((acc + 2**(s-1)) / 2**s) = c_top +
        floor((sum_j Q_j 2**s_j + c_rem) / 2**s). From the lowest plane s_0 <= s up: that floor is
        floor((W_0 + sum_{j>0} Q_j 2**(s_j-s_0)) / 2**(s-s_0)) with W_0 = Q_0 + floor(c_rem / 2**s_0) (the low
        bits of c_rem are a fraction below one unit of the lowest plane); each plane at or below s folds in as
        W_j = Q_j + floor(W_{j-1} / 2**(s_j - s_{j-1})); then floor(W / 2**(s - s_last)), and planes above s add
        Q_j 2**(s_j - s), as does c_top. Every intermediate is an integer whose bound, tracked here, stays below
        2**24: float32 adds, power-of-two multiplies and floors are then exact."""
        import torch

        if s <= 0 or self.planes[0][0] > s:
            return None
        s0 = self.planes[0][0]
        c = self.bias + (1 << (s - 1))
        c_top = c >> s                         # floor division
        c_low = (c - (c_top << s)) >> s0       # in [0, 2**(s - s0))
        lower = [p for p in self.planes[1:] if p[0] <= s]
        upper = [p for p in self.planes[1:] if p[0] > s]
        # bounds first (Python ints): |every intermediate| < 2**24, or no float32 path
        bnd = self.planes[0][2] + int(c_low.max(initial=0))
        ok, base = bnd < EXACT_F32, s0
        for shift, _, b in lower:
            bnd = b + (bnd >> (shift - base)) + 1  # |floor(w / 2**k)| <= (bound >> k) + 1
            ok, base = ok and bnd < EXACT_F32, shift
        bnd = (bnd >> (s - base)) + 1 + int(np.abs(c_top).max(initial=0))
        ok = ok and bnd < EXACT_F32
        for shift, _, b in upper:
            bnd += b << (shift - s)
            ok = ok and bnd < EXACT_F32
        if not ok:
            return None
        q0 = self.planes[0][1]
        w = torch.add(q0, self._channel(c_low, q0))
        base = s0
        for shift, q, _ in lower:
            w = w.mul_(float(2.0 ** (base - shift))).floor_().add_(q)
            base = shift
        w = w.mul_(float(2.0 ** (base - s))).floor_().add_(self._channel(c_top, w))
        for shift, q, _ in upper:
            w = w.add_(q, alpha=float(2 ** (shift - s)))
        return w.clamp_(float(clamp[0]), float(clamp[1]))


def requant_value(layer, x):
    """Requantize a value-domain torch tensor to ``layer.out`` (round half up, clamp), straight-through."""
    import torch

    if layer.out is None:
        raise IRError(f"layer {layer.name!r}: field 'out': calibrate before quantized forward")
    lo, hi = layer.clamp()
    scale = 2.0 ** layer.out.exp
    return torch.clamp(round_half_up_ste(x / scale), lo, hi) * scale


def calibrated_output(layer, x, exp: int, net):
    """The fake-quant output of a calibrated layer from its float value ``x`` (exponent ``exp``): requantized to
    ``layer.out`` when ``net`` quantizes, recorded for calibration when it records."""
    if net.quantize:
        x, exp = requant_value(layer, x), layer.out.exp
    if net.record:
        net.recorded[layer.name] = x.detach()
    return x, exp


def round_half_up_ste(x):
    import torch

    q = torch.floor(x + 0.5)
    return x + (q - x).detach()
