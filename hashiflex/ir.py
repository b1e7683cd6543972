"""A small IR of a quantizable CNN: layers in topological order, each reading the previous layer's output
(or the layer named by ``src``; ``"input"`` is the graph input). Residual adds read a second, earlier
layer (``skip``).

What each layer type means (shape rule, golden and fake-quant functions, design.json fields, hardware cost)
is defined once in :mod:`hashiflex.ops`; layer types added later define their dataclass there too.

Layers hold float parameters (as imported from torch) and, once :func:`hashiflex.passes.quantize_weights`
has run, their Po2 weight codes and integer biases. Everything derived (shapes, exponents, value bounds,
widths) is computed by :func:`hashiflex.passes.annotate`, never stored twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np

from .numfmt import codes_to_int_weights, int_range


class IRError(ValueError):
    """A network the IR or the hardware cannot represent; the message names the layer and the field."""


@dataclass(frozen=True)
class TensorType:
    """Fixed point: integer q with value q * 2**exp, ``bits`` wide, signed or not."""
    bits: int
    signed: bool
    exp: int

    @property
    def range(self) -> tuple[int, int]:
        return int_range(self.bits, self.signed)


@dataclass(frozen=True)
class Input:
    channels: int
    height: int
    width: int
    type: TensorType
    bounds: tuple[int, int] | None = None  # the values it takes when narrower than its type's (e.g. a ReLU6 output)

    def __post_init__(self):
        if self.bounds is not None:
            lo, hi = self.type.range
            if not (isinstance(self.bounds, tuple) and len(self.bounds) == 2 and lo <= self.bounds[0] <= self.bounds[1] <= hi):
                raise IRError(f"input.bounds: expected [lo, hi] with {lo} <= lo <= hi <= {hi} (the range of "
                              f"{self.type}), found {self.bounds!r}")

    @property
    def range(self) -> tuple[int, int]:
        """The integer values the input takes: its bounds, else its type's whole range."""
        return self.bounds if self.bounds is not None else self.type.range


MAX_TERMS = 4  # signed powers of two per weight at most (the term table of quant.po2 grows as span**terms)


@dataclass(frozen=True)
class Po2Weights:
    """Po2 weight codes (see :mod:`hashiflex.numfmt`).

    One term (``terms == 1``): ``codes`` has the layer's weight shape and each weight is one code.
    Multi-term (``terms == k > 1``): ``codes`` has shape ``(k, *weight shape)`` and weight i is the sum of the k
    codes ``codes[:, i]`` (each a signed power of two or zero, all with the layer's ``e_min``); in hardware each
    nonzero term is one operand of the adder tree.
    """
    codes: np.ndarray
    e_min: int
    bits: int
    terms: int = 1

    def __post_init__(self):
        if not 1 <= self.terms <= MAX_TERMS:
            raise IRError(f"field 'weights.terms': expected 1 to {MAX_TERMS} terms per weight, found {self.terms}")
        if self.terms > 1 and (np.ndim(self.codes) < 2 or np.shape(self.codes)[0] != self.terms):
            raise IRError(f"field 'weights.codes': expected shape ({self.terms}, *weight shape) for {self.terms} "
                          f"terms, found {tuple(np.shape(self.codes))}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight shape (out, in, k, k) or (out, in)."""
        s = tuple(np.shape(self.codes))
        return s[1:] if self.terms > 1 else s

    @property
    def term_codes(self) -> np.ndarray:
        """Codes of shape (terms, *weight shape), also for one term."""
        return np.asarray(self.codes) if self.terms > 1 else np.asarray(self.codes)[None]

    def int_weights(self) -> np.ndarray:
        """Integer weights in units of 2**e_min (the sum of the terms), of the weight shape."""
        tc = self.term_codes
        if self.terms > 1 and tc.size and np.abs(tc).max() > 60:  # k <= 4 terms of 2**59 sum below 2**63
            raise OverflowError(f"weight code {int(np.abs(tc).max())}: {self.terms} terms of more than 2**59 do not "
                                "fit the integer model (int64)")
        return codes_to_int_weights(tc).sum(axis=0)

    def float_weights(self) -> np.ndarray:
        return self.int_weights().astype(np.float64) * 2.0 ** self.e_min

    def nonzero_terms(self) -> int:
        """Operands the adder trees sum (nonzero terms over all weights)."""
        return int(np.count_nonzero(self.term_codes))


def normalized_padding(name: str, p) -> int | tuple[int, int, int, int]:
    """A padding field: one integer, or (top, bottom, left, right) of integers >= 0 (symmetric stays one)."""
    if isinstance(p, (tuple, list, np.ndarray)):
        if len(p) != 4 or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in p):
            raise IRError(f"layer {name!r}: field 'padding': expected an integer or [top, bottom, left, right] of 4 "
                          f"integers >= 0, found {list(p)}")
        p = tuple(int(v) for v in p)
        return p[0] if len(set(p)) == 1 else p
    if not isinstance(p, (int, np.integer)) or p < 0:
        raise IRError(f"layer {name!r}: field 'padding': expected an integer >= 0, found {p!r}")
    return int(p)


class Windowed:
    """What a layer over k x k windows (a conv, a pool) shares: padding per side, output size, fit. Needs
    ``kernel``, ``stride`` and ``padding``."""

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """Padding (top, bottom, left, right); TF 'SAME' padding pads more below and right than above."""
        p = self.padding
        return (p, p, p, p) if isinstance(p, int) else p

    @property
    def padded(self) -> bool:
        return any(self.pads)

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, unpadded: pixels map one to one (no line buffer)."""
        return self.kernel == 1 and self.stride == 1 and not self.padded

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output height and width on an h x w input."""
        t, b, l, r = self.pads
        k, s = self.kernel, self.stride
        return (h + t + b - k) // s + 1, (w + l + r - k) // s + 1

    def fits(self, h: int, w: int) -> bool:
        t, b, l, r = self.pads
        return self.stride >= 1 and self.kernel >= 1 and h + t + b >= self.kernel and w + l + r >= self.kernel


@dataclass
class Conv2d(Windowed):
    name: str
    weight: np.ndarray            # float (out, in, k, k)
    bias: np.ndarray              # float (out,)
    stride: int = 1
    padding: int | tuple[int, int, int, int] = 0  # one integer, or (top, bottom, left, right)
    q: Po2Weights | None = None   # set by quantize_weights
    bias_int: np.ndarray | None = None  # bias in units of the accumulator's 2**exp
    groups: int = 1               # == in_channels == out_channels for a depthwise conv
    src: str | None = None

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])

    def __post_init__(self):
        self.padding = normalized_padding(self.name, self.padding)


@dataclass
class Linear:
    name: str
    weight: np.ndarray            # float (out, in)
    bias: np.ndarray              # float (out,)
    q: Po2Weights | None = None
    bias_int: np.ndarray | None = None
    src: str | None = None

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])


@dataclass
class Requant:
    """Requantizing shift to ``out`` with round-half-up and a clamp; the clamp implements ReLU/ReLU6."""
    name: str
    act: str                      # "relu" | "relu6" | "none"
    out: TensorType | None = None  # set by calibrate_activations
    src: str | None = None

    def clamp(self) -> tuple[int, int]:
        if self.out is None:
            raise IRError(f"layer {self.name!r}: field 'out': expected a calibrated output type, found none")
        lo, hi = self.out.range
        if self.act in ("relu", "relu6"):
            lo = max(lo, 0)
        if self.act == "relu6":
            hi = min(hi, int(np.floor(6.0 / 2.0 ** self.out.exp)))
        return lo, hi


@dataclass
class SumPool:
    """Global pool as an exact sum over all pixels; an average's 1/N is folded into the next linear layer."""
    name: str
    src: str | None = None


@dataclass
class Add:
    """Residual add: both operands are aligned to the finer exponent by left shifts, summed exactly, then
    requantized to ``out`` (shift with round half up, clamp)."""
    name: str
    skip: str                     # the second operand (an earlier layer, or "input")
    out: TensorType | None = None  # set by calibrate_activations
    src: str | None = None

    @property
    def extra(self) -> tuple[str, ...]:
        return (self.skip,)

    def clamp(self) -> tuple[int, int]:
        if self.out is None:
            raise IRError(f"layer {self.name!r}: field 'out': expected a calibrated output type, found none")
        return self.out.range


Layer = Union[Conv2d, Linear, Requant, SumPool, Add]  # and the types defined in hashiflex.ops (max_pool2d, ...)


@dataclass
class Graph:
    name: str
    input: Input
    layers: list = field(default_factory=list)

    def copy(self) -> "Graph":
        return Graph(self.name, self.input, [replace(layer) for layer in self.layers])

    @property
    def quantized(self) -> bool:
        """Every weighted layer has Po2 codes and every calibrated one an output type (fields ``q``, ``out``)."""
        return all(getattr(l, "q", True) is not None and getattr(l, "out", True) is not None for l in self.layers)

    def sources(self) -> list[tuple[str, ...]]:
        """For each layer, the names it reads ("input" is the graph input): ``src`` (the previous layer when unset),
        then the layer's ``extra`` inputs (a residual add's skip operand, a concatenation's other operands)."""
        out, prev = [], "input"
        for layer in self.layers:
            src = layer.src or prev
            out.append((src, *layer.extra) if hasattr(layer, "extra") else (src,))
            prev = layer.name
        return out

    def layer(self, name: str):
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)
