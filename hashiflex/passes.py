"""Plain-function passes over the IR: import from torch, calibrate activations, quantize, annotate, model HW.

Each pass takes a :class:`~hashiflex.ir.Graph` and returns a new one (or a derived table); none mutates its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .ir import Conv2d, Graph, Input, IRError, Linear, Po2Weights, Requant, SumPool, TensorType
from .numfmt import codes_to_int_weights, requant as _rq, width_for
from .quant.po2 import quantize_po2


# --------------------------------------------------------------------------------------------- import
def import_torch(model, input: Input, name: str = "net") -> Graph:
    """Trace ``model`` with torch.fx and map it onto the IR.

    Supported: Conv2d (square kernel, groups=1), ReLU/ReLU6 (become requantize points), AdaptiveAvgPool2d(1)
    (becomes an exact sum pool whose 1/N is folded into the following Linear), Flatten, Dropout, Linear.
    Anything else raises :class:`IRError` naming the module and the op.
    """
    import torch
    import torch.fx as fx
    import torch.nn as nn
    import torch.nn.functional as F

    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    layers: list = []
    h, w = input.height, input.width
    pool_n: int | None = None
    for node in traced.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "call_module":
            m = modules[node.target]
            where = f"module {node.target!r} ({type(m).__name__})"
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size
                if k[0] != k[1] or m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1]:
                    raise IRError(f"{where}: expected square kernel/stride/padding, found {k}/{m.stride}/{m.padding}")
                if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                    raise IRError(f"{where}: expected groups=1, dilation=1, zero padding")
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
                conv = Conv2d(node.target, m.weight.detach().double().numpy().copy(), bias.copy(),
                              stride=m.stride[0], padding=m.padding[0])
                layers.append(conv)
                h = (h + 2 * conv.padding - conv.kernel) // conv.stride + 1
                w = (w + 2 * conv.padding - conv.kernel) // conv.stride + 1
            elif isinstance(m, (nn.ReLU, nn.ReLU6)):
                layers.append(Requant(node.target, "relu6" if isinstance(m, nn.ReLU6) else "relu"))
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                if m.output_size not in (1, (1, 1)):
                    raise IRError(f"{where}: expected output_size 1 (global pool), found {m.output_size}")
                layers.append(SumPool(node.target))
                pool_n = h * w
            elif isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity)):
                continue
            elif isinstance(m, nn.Linear):
                weight = m.weight.detach().double().numpy().copy()
                if pool_n is not None:  # fold the average's 1/N: sum pool then (W / N)
                    weight = weight / pool_n
                    pool_n = None
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
                layers.append(Linear(node.target, weight, bias.copy()))
            else:
                raise IRError(f"{where}: op {type(m).__name__} is not supported by the hardware")
        elif node.op == "call_function" and node.target in (torch.flatten,):
            continue
        elif node.op == "call_function" and node.target in (F.relu, torch.relu):
            layers.append(Requant(node.name, "relu"))
        else:
            raise IRError(f"node {node.name!r}: op {node.op} {getattr(node.target, '__name__', node.target)} "
                          f"is not supported by the hardware")
    if pool_n is not None:
        raise IRError("global average pool must be followed by a Linear layer (its 1/N is folded into it)")
    g = Graph(name, input, layers)
    annotate(g, require_quantized=False)  # shape check
    return g


# --------------------------------------------------------------------------------------------- annotate
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


def _dot_bounds(wint: np.ndarray, bias: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Exact bounds of sum_j wint[o, j] * x_j + bias[o] over x_j in [lo, hi], min/max over o."""
    wint = wint.reshape(wint.shape[0], -1).astype(object)
    pos = np.where(wint > 0, wint, 0).sum(axis=1)
    neg = np.where(wint < 0, wint, 0).sum(axis=1)
    b = np.asarray(bias, dtype=object)
    los = pos * lo + neg * hi + b
    his = pos * hi + neg * lo + b
    return int(min(los)), int(max(his))


def annotate(g: Graph, require_quantized: bool = True) -> list[LayerInfo]:
    """Propagate shapes, exponents and exact integer bounds through the chain; check consistency."""
    c, h, w = g.input.channels, g.input.height, g.input.width
    exp: int | None = g.input.type.exp
    bounds: tuple[int, int] | None = g.input.type.range
    infos: list[LayerInfo] = []
    is_vector = False
    for layer in g.layers:
        in_shape, in_exp, in_bounds = (c, h, w), exp, bounds
        acc_exp = shift = None
        if isinstance(layer, (Conv2d, Linear)):
            want = layer.in_channels if isinstance(layer, Conv2d) else layer.in_features
            have = c if isinstance(layer, Conv2d) else c * h * w
            if isinstance(layer, Conv2d) and is_vector:
                raise IRError(f"layer {layer.name!r}: conv2d after a global pool is not supported")
            if want != have:
                raise IRError(f"layer {layer.name!r}: field 'in_channels': expected {have}, found {want}")
            if isinstance(layer, Conv2d):
                k, s, p = layer.kernel, layer.stride, layer.padding
                if s < 1 or p < 0 or k < 1 or h + 2 * p < k or w + 2 * p < k:
                    raise IRError(f"layer {layer.name!r}: kernel {k}, stride {s}, padding {p} do not fit {h}x{w}")
                h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
                c = layer.out_channels
            else:
                c, h, w = layer.out_features, 1, 1
                is_vector = True
            if layer.q is not None and exp is not None and bounds is not None:
                acc_exp = exp + layer.q.e_min
                bias_int = layer.bias_int if layer.bias_int is not None else np.zeros(c, dtype=np.int64)
                lo, hi = bounds
                if isinstance(layer, Conv2d) and layer.padding > 0:  # padding feeds zeros into the windows
                    lo, hi = min(lo, 0), max(hi, 0)
                bounds = _dot_bounds(codes_to_int_weights(layer.q.codes), bias_int, lo, hi)
                exp = acc_exp
            elif require_quantized:
                raise IRError(f"layer {layer.name!r}: field 'weights': expected Po2 codes, found float weights")
            else:
                exp = bounds = None
        elif isinstance(layer, Requant):
            if layer.out is not None and exp is not None:
                shift = layer.out.exp - exp
                lo, hi = layer.clamp()
                blo, bhi = bounds
                # the clamp bounds the output; the shift (monotone) maps the input interval inside it
                rlo, rhi = int(_rq(np.array([blo]), shift, lo, hi)[0]), int(_rq(np.array([bhi]), shift, lo, hi)[0])
                bounds, exp = (rlo, rhi), layer.out.exp
            elif require_quantized:
                raise IRError(f"layer {layer.name!r}: field 'out': expected a calibrated output type, found none")
            else:
                exp = bounds = None
        elif isinstance(layer, SumPool):
            if is_vector:
                raise IRError(f"layer {layer.name!r}: global pool needs a feature map, found a vector")
            n = h * w
            if bounds is not None:
                bounds = (bounds[0] * n, bounds[1] * n)
            h = w = 1
            is_vector = True
        else:
            raise IRError(f"layer {getattr(layer, 'name', layer)!r}: unknown layer type {type(layer).__name__}")
        infos.append(LayerInfo(layer.name, in_shape, (c, h, w), in_exp, exp, in_bounds, bounds, acc_exp, shift))
    return infos


# --------------------------------------------------------------------------------------------- quantize
def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def calibrate_activations(g: Graph, activations: dict[str, np.ndarray], bits: int = 8) -> Graph:
    """Give each requant point an unsigned ``bits``-wide type whose Po2 scale covers the observed maximum.

    ``activations`` maps a Requant layer name to float activations observed on calibration data (after the
    ReLU). exp = ceil(log2(max / (2**bits - 1))).
    """
    out = g.copy()
    for i, layer in enumerate(out.layers):
        if isinstance(layer, Requant):
            if layer.name not in activations:
                raise IRError(f"layer {layer.name!r}: no calibration activations recorded")
            m = float(np.max(activations[layer.name]))
            if layer.act == "relu6":
                m = min(m, 6.0)
            m = max(m, 2.0 ** -30)
            exp = int(math.ceil(math.log2(m / ((1 << bits) - 1))))
            out.layers[i] = replace(layer, out=TensorType(bits, False, exp))
    return out


def quantize_weights(g: Graph, bits: int) -> Graph:
    """Po2-quantize conv/linear weights (per-layer exponent range) and quantize biases to the accumulator."""
    out = g.copy()
    exp = out.input.type.exp
    for i, layer in enumerate(out.layers):
        if isinstance(layer, (Conv2d, Linear)):
            codes, e_min = quantize_po2(layer.weight, bits)
            acc_exp = exp + e_min
            out.layers[i] = replace(layer, q=Po2Weights(codes, e_min, bits),
                                    bias_int=_round_half_up(layer.bias / 2.0 ** acc_exp))
            exp = acc_exp
        elif isinstance(layer, Requant):
            if layer.out is None:
                raise IRError(f"layer {layer.name!r}: calibrate activations before quantizing weights")
            exp = layer.out.exp
    return out


# --------------------------------------------------------------------------------------------- hw model
@dataclass(frozen=True)
class LayerHw:
    """What the generator must build for a layer, as Python predicts it (compared with hw_params.json)."""
    name: str
    op: str
    acc_width: int | None
    adders: int
    stages: int
    beats_in: int        # stream beats consumed per image


def tree_terms(codes: np.ndarray, bias_int: np.ndarray) -> list[tuple[int, bool]]:
    """Per output channel: (number of terms, every term negative). Zero weights and zero bias add nothing."""
    out = []
    flat = codes.reshape(codes.shape[0], -1)
    for o in range(flat.shape[0]):
        signs = [int(np.sign(v)) for v in flat[o] if v != 0]
        if bias_int[o] != 0:
            signs.append(int(np.sign(bias_int[o])))
        out.append((len(signs), len(signs) > 0 and all(s < 0 for s in signs)))
    return out


def tree_adders_and_depth(codes: np.ndarray, bias_int: np.ndarray) -> tuple[int, int]:
    """Adders and depth of the shift-add trees: n-1 per channel, +1 to negate an all-negative sum."""
    adders = depth = 0
    for n, all_neg in tree_terms(codes, bias_int):
        if n == 0:
            continue
        adders += n - 1 + int(all_neg)
        depth = max(depth, math.ceil(math.log2(n)) + int(all_neg))
    return adders, depth


def hw_model(g: Graph, levels_per_stage: int) -> list[LayerHw]:
    infos = annotate(g)
    hw = []
    for layer, info in zip(g.layers, infos):
        c, h, w = info.in_shape
        beats = h * w
        if isinstance(layer, (Conv2d, Linear)):
            adders, depth = tree_adders_and_depth(layer.q.codes, layer.bias_int)
            stages = max(1, math.ceil(depth / levels_per_stage))
            hw.append(LayerHw(layer.name, "conv2d" if isinstance(layer, Conv2d) else "linear",
                              width_for(*info.out_bounds)[0], adders, stages, beats))
        elif isinstance(layer, Requant):
            # the rounding constant 2**(s-1) costs one adder per channel when shifting right
            hw.append(LayerHw(layer.name, "requant", None, c if info.shift > 0 else 0, 0, beats))
        elif isinstance(layer, SumPool):
            hw.append(LayerHw(layer.name, "sum_pool", width_for(*info.out_bounds)[0], c, 1, beats))
    return hw


def initiation_interval(g: Graph) -> int:
    """Cycles per image: every layer consumes one beat (one pixel, all channels) per cycle."""
    return max(h * w for (_, h, w) in (i.in_shape for i in annotate(g)))
