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
    staged = False      # an adder or comparator tree pipelined every ``levels_per_stage`` levels (its own in
                        # design.json when given, else the design's ``hardware.adder_levels_per_stage``)

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
    (float32 when the value plus its rounding offset stays below 2**24, else float64)."""
    import torch

    dt = torch.float32 if guard + (1 << max(s - 1, 0)) < EXACT_F32 else torch.float64
    y = y.to(dt, copy=True)
    if s > 0:
        y = y.add_(float(2 ** (s - 1))).mul_(float(2.0 ** -s)).floor_()
    elif s < 0:
        y = y.mul_(float(2 ** -s))
    return y.clamp_(float(clamp[0]), float(clamp[1]))


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
