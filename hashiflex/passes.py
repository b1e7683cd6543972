"""Plain-function passes over the IR: import from torch, calibrate activations, quantize, annotate, model HW.

Each pass takes a :class:`~hashiflex.ir.Graph` and returns a new one (or a derived table); none mutates its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import adders
from .ir import MAX_TERMS, Add, Conv2d, Graph, Input, IRError, Linear, Po2Weights, Requant, SumPool, TensorType
from .numfmt import width_for
from .quant.po2 import quantize_po2, quantize_po2_terms


# --------------------------------------------------------------------------------------------- import
def import_torch(model, input: Input, name: str = "net") -> Graph:
    """Trace ``model`` with torch.fx and map it onto the IR.

    Supported: Conv2d (square kernel; groups=1 or depthwise), BatchNorm2d right after a conv (folded into it),
    ReLU/ReLU6 (requantize points), residual ``+``, AdaptiveAvgPool2d(1) / adaptive_avg_pool2d(x, 1) (an exact
    sum pool whose 1/N is folded into the following Linear), Flatten, Dropout, Identity, Linear. A conv or
    linear layer not followed by an activation gets a signed requantize point, except the network's output.
    Anything else raises :class:`IRError` naming the module and the op.
    """
    import operator

    import torch
    import torch.fx as fx
    import torch.nn as nn
    import torch.nn.functional as F

    from .quant.fold import fold_bn

    model = model.eval()
    for mname, m in model.named_modules():  # fx traces forward() only: a hook would silently drop out of the IR
        hooks = [kind for kind, d in (("forward pre-hook", m._forward_pre_hooks), ("forward hook", m._forward_hooks))
                 if d]
        if hooks:
            raise IRError(f"module {mname or '<root>'!r} ({type(m).__name__}): has a {' and a '.join(hooks)}, which "
                          "torch.fx does not trace (the imported network would differ); remove it and express its "
                          "effect as a module (e.g. nn.ZeroPad2d for TF-style padding)")
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    layers: list = []
    by_name: dict = {}
    produced: dict = {}          # fx node -> IR layer name producing its value
    shape = {"input": (input.channels, input.height, input.width)}
    pool_n: dict[str, int] = {}  # sum-pool layer -> pixels whose 1/N the next Linear absorbs

    pads: dict = {}              # fx node of a zero pad -> (IR name it pads, (top, bottom, left, right))

    def produced_by(arg, where):
        if isinstance(arg, fx.Node) and arg in pads:
            raise IRError(f"{where}: reads the zero padding {arg.name!r}; a ZeroPad2d / F.pad is supported only "
                          "directly before a Conv2d (it becomes the conv's padding)")
        if not isinstance(arg, fx.Node) or arg not in produced:
            raise IRError(f"{where}: input {arg} is not a tensor the IR produced")
        return produced[arg]

    def src_of(node, where):
        return produced_by(node.args[0], where)

    def add_pad(node, arg, lrtb, where):
        """A zero pad (F.pad order: left, right, top, bottom) waits for the Conv2d it feeds."""
        lrtb = tuple(lrtb)
        if len(lrtb) != 4 or not all(isinstance(v, int) and v >= 0 for v in lrtb):
            raise IRError(f"{where}: expected 4 non-negative pads (left, right, top, bottom) of H and W, found "
                          f"{list(lrtb)}")
        l, r, t, b = lrtb
        if isinstance(arg, fx.Node) and arg in pads:  # a pad of a pad: the sum
            src, (t0, b0, l0, r0) = pads[arg]
            t, b, l, r = t + t0, b + b0, l + l0, r + r0
        else:
            src = produced_by(arg, where)
        pads[node] = (src, (t, b, l, r))

    def conv_padding(m, where):
        """nn.Conv2d's padding as (top, bottom, left, right); 'same' pads k-1 in all, the extra one after."""
        k = m.kernel_size[0]
        if m.padding == "valid":
            return (0, 0, 0, 0)
        if m.padding == "same":
            return ((k - 1) // 2, k - 1 - (k - 1) // 2) * 2
        if not isinstance(m.padding, tuple) or len(m.padding) != 2:
            raise IRError(f"{where}: expected numeric zero padding, found {m.padding!r}")
        ph, pw = m.padding
        return (ph, ph, pw, pw)

    def add(layer, out_shape, node):
        layers.append(layer)
        by_name[layer.name] = layer
        shape[layer.name] = out_shape
        produced[node] = layer.name

    def users(node):
        return list(node.users)

    calls: dict[str, int] = {}   # module target -> call sites seen so far

    def layer_name(target: str) -> str:
        """A module called more than once (a stateless ReLU reused in a block, say) gets one IR layer per call
        site: the first keeps the module's name, later ones ``<name>_1``, ``<name>_2``, ... (never a name in use)."""
        k = calls.get(target, 0)
        name = target if k == 0 else f"{target}_{k}"
        while name in by_name or (k and name in modules):
            k += 1
            name = f"{target}_{k}"
        calls[target] = k + 1
        return name

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            produced[node] = "input"
            continue
        if node.op == "output":
            continue
        if node.op == "call_module":
            m = modules[node.target]
            where = f"module {node.target!r} ({type(m).__name__})"
            if isinstance(m, nn.ConstantPad2d):  # nn.ZeroPad2d too
                if m.value != 0:
                    raise IRError(f"{where}: expected zero padding, found value {m.value}")
                add_pad(node, node.args[0], m.padding, where)
                continue
            if isinstance(m, nn.Conv2d) and node.args and node.args[0] in pads:
                src = pads[node.args[0]][0]
            else:
                src = src_of(node, where)
            c, h, w = shape[src]
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size
                if k[0] != k[1] or m.stride[0] != m.stride[1]:
                    raise IRError(f"{where}: expected square kernel and stride, found {k}/{m.stride}")
                if m.dilation != (1, 1) or m.padding_mode != "zeros":
                    raise IRError(f"{where}: expected dilation=1 and zero padding, found dilation={m.dilation}, "
                                  f"padding_mode={m.padding_mode!r}")
                if m.groups != 1 and not (m.groups == m.in_channels == m.out_channels):
                    raise IRError(f"{where}: expected groups=1 or depthwise (groups=in=out), found groups={m.groups}")
                padding = conv_padding(m, where)
                if node.args[0] in pads:  # fold a preceding zero pad into the conv's own padding
                    padding = tuple(a + b for a, b in zip(padding, pads[node.args[0]][1]))
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
                conv = Conv2d(layer_name(node.target), m.weight.detach().double().numpy().copy(), bias.copy(),
                              stride=m.stride[0], padding=padding, groups=m.groups, src=src)
                if not conv.fits(h, w):
                    raise IRError(f"{where}: kernel {conv.kernel}, stride {conv.stride}, padding {conv.padding} do "
                                  f"not fit {h}x{w}")
                add(conv, (conv.out_channels, *conv.out_hw(h, w)), node)
            elif isinstance(m, nn.BatchNorm2d):
                conv = by_name.get(src)
                if not isinstance(conv, Conv2d) or len(users(node.args[0])) != 1:
                    raise IRError(f"{where}: BatchNorm2d must directly follow a Conv2d it alone reads (to be folded)")
                conv.weight, conv.bias = fold_bn(conv.weight, conv.bias, m.weight.detach().double().numpy(),
                                                 m.bias.detach().double().numpy(),
                                                 m.running_mean.double().numpy(), m.running_var.double().numpy(),
                                                 m.eps)
                produced[node] = src
            elif isinstance(m, (nn.ReLU, nn.ReLU6)) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0, 6)):
                add(Requant(layer_name(node.target), "relu" if isinstance(m, nn.ReLU) else "relu6", src=src), (c, h, w),
                    node)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                if m.output_size not in (1, (1, 1)):
                    raise IRError(f"{where}: expected output_size 1 (global pool), found {m.output_size}")
                pool = SumPool(layer_name(node.target), src=src)
                add(pool, (c, 1, 1), node)
                pool_n[pool.name] = h * w
            elif isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity)):
                produced[node] = src
            elif isinstance(m, nn.Linear):
                weight = m.weight.detach().double().numpy().copy()
                if src in pool_n:  # fold the average's 1/N: sum pool then (W / N)
                    weight = weight / pool_n.pop(src)
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
                add(Linear(layer_name(node.target), weight, bias.copy(), src=src), (m.out_features, 1, 1), node)
            else:
                raise IRError(f"{where}: op {type(m).__name__} is not supported by the hardware")
        elif node.op == "call_function":
            fname = getattr(node.target, "__name__", str(node.target))
            where = f"node {node.name!r} (function {fname})"
            if node.target in (operator.add, torch.add):
                a, b = node.args[:2]
                if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or len(node.args) > 2 or node.kwargs:
                    raise IRError(f"{where}: only the sum of two tensors is supported")
                sa, sb = produced[a], produced[b]
                add(Add(node.name, skip=sb, src=sa), shape[sa], node)
            elif node.target in (torch.flatten,):
                produced[node] = src_of(node, where)
            elif node.target in (F.relu, torch.relu, F.relu6):
                src = src_of(node, where)
                add(Requant(node.name, "relu6" if node.target is F.relu6 else "relu", src=src), shape[src], node)
            elif node.target is F.adaptive_avg_pool2d:
                src = src_of(node, where)
                size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
                if size not in (1, (1, 1), [1, 1]):
                    raise IRError(f"{where}: expected output_size 1 (global pool), found {size}")
                c, h, w = shape[src]
                add(SumPool(node.name, src=src), (c, 1, 1), node)
                pool_n[node.name] = h * w
            elif node.target in (F.pad, getattr(torch._C._nn, "pad", F.pad)):
                args = dict(zip(("input", "pad", "mode", "value"), node.args), **node.kwargs)
                mode, value = args.get("mode", "constant"), args.get("value", None)
                if mode != "constant" or value not in (None, 0, 0.0):
                    raise IRError(f"{where}: expected zero padding (mode 'constant', value 0), found mode {mode!r}, "
                                  f"value {value}")
                pad = tuple(args.get("pad", ()))
                if len(pad) == 2:
                    pad = pad + (0, 0)
                add_pad(node, args.get("input"), pad, where)
            elif node.target is F.dropout:
                produced[node] = src_of(node, where)
            else:
                raise IRError(f"{where}: op {fname} is not supported by the hardware")
        else:
            raise IRError(f"node {node.name!r}: op {node.op} {getattr(node.target, '__name__', node.target)} "
                          f"is not supported by the hardware")
    if pool_n:
        raise IRError(f"global average pool {next(iter(pool_n))!r} must be followed by a Linear layer "
                      "(its 1/N is folded into it)")
    for layer in layers:  # after BN folding: a NaN/Inf must not reach the quantizer as a silent zero
        if isinstance(layer, (Conv2d, Linear)):
            check_finite(layer.weight, f"layer {layer.name!r}: field 'weight'")
            check_finite(layer.bias, f"layer {layer.name!r}: field 'bias'")
    g = insert_requant_points(Graph(name, input, layers))
    annotate(g, require_quantized=False)  # shape check
    return g


def check_finite(a, what: str) -> None:
    """Raise :class:`IRError` naming ``what``, the count and the first index when ``a`` holds a NaN or an Inf."""
    a = np.asarray(a, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[first]) else ("+Inf" if a[first] > 0 else "-Inf")
        raise IRError(f"{what}: expected finite values, found {int(bad.sum())} of {a.size} not finite "
                      f"({kind} at index {list(first)})")


PADDING_STYLES = ("torch", "tf")


def same_padding(g: Graph, style: str) -> Graph:
    """Re-pad every conv as a framework does: "torch" keeps the imported padding; "tf" gives TensorFlow's 'SAME'
    padding (out = ceil(in / stride); the odd pixel of the total padding goes below and right), the padding a
    network trained in TensorFlow (a Coral or TF-Hub MobileNet, say) needs to keep its accuracy. Every layer's
    output shape must stay as it is, otherwise the layers after it would no longer fit: that raises."""
    if style not in PADDING_STYLES:
        raise IRError(f"padding style {style!r}: expected one of {', '.join(PADDING_STYLES)}")
    if style == "torch":
        return g
    infos = {i.name: i for i in annotate(g, require_quantized=False)}
    out = g.copy()
    for i, layer in enumerate(out.layers):
        if not isinstance(layer, Conv2d):
            continue
        _, h, w = infos[layer.name].in_shape
        pads = []
        for n in (h, w):
            total = max((-(-n // layer.stride) - 1) * layer.stride + layer.kernel - n, 0)
            pads += [total // 2, total - total // 2]
        tf = out.layers[i] = replace(layer, padding=tuple(pads))  # symmetric padding stays one integer
        if tf.out_hw(h, w) != layer.out_hw(h, w):
            raise IRError(f"layer {layer.name!r}: TF 'SAME' padding {tf.padding} gives a "
                          f"{'x'.join(map(str, tf.out_hw(h, w)))} output, but the network was built with "
                          f"{'x'.join(map(str, layer.out_hw(h, w)))}; import it with its own padding "
                          "(--padding torch)")
    return out


def insert_requant_points(g: Graph) -> Graph:
    """Give every conv/linear whose output feeds anything but an activation a signed requantize point
    (a linear bottleneck in MobileNetV2, for example), so activations stay narrow fixed point.
    The network's output (logits) stays an exact accumulator."""
    sources = g.sources()
    readers: dict[str, list] = {}
    for layer, srcs in zip(g.layers, sources):
        for s in srcs:
            readers.setdefault(s, []).append(layer)
    out = Graph(g.name, g.input, [])
    rename: dict[str, str] = {}
    last = g.layers[-1].name
    for layer, srcs in zip(g.layers, sources):
        layer = replace(layer)
        # re-point reads of layers that got a requant point
        if layer.src is not None or srcs[0] in rename:
            layer.src = rename.get(srcs[0], srcs[0])
        if isinstance(layer, Add):
            layer.skip = rename.get(layer.skip, layer.skip)
            layer.src = rename.get(srcs[0], srcs[0])
        out.layers.append(layer)
        if isinstance(layer, (Conv2d, Linear)) and layer.name != last:
            rs = readers.get(layer.name, [])
            if not rs or not all(isinstance(r, Requant) for r in rs):
                q = Requant(f"{layer.name}.q", "none", src=layer.name)
                out.layers.append(q)
                rename[layer.name] = q.name
    return out


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


MAX_SHIFT = 62  # the largest requantizing shift (either way) the integer model and the generator take


def _shift_in_range(layer, shift: int) -> int:
    if not -MAX_SHIFT <= shift <= MAX_SHIFT:
        raise IRError(f"layer {layer.name!r}: field 'shift': expected a requantizing shift in [-{MAX_SHIFT}, "
                      f"{MAX_SHIFT}] (out exponent - accumulator exponent), found {shift}: the exponents of this "
                      f"layer and its input (weights.e_min, out_exp) are inconsistent")
    return shift


def _requant_bounds(bounds: tuple[int, int], shift: int, clamp: tuple[int, int]) -> tuple[int, int]:
    """Requantization is monotone: it maps the interval's ends to the output interval's ends (exact, Python ints)."""
    def rq(v: int) -> int:
        y = (v + (1 << (shift - 1))) >> shift if shift > 0 else v << -shift
        return min(max(y, clamp[0]), clamp[1])
    return rq(int(bounds[0])), rq(int(bounds[1]))


def annotate(g: Graph, require_quantized: bool = True) -> list[LayerInfo]:
    """Propagate shapes, exponents and exact integer bounds through the graph; check consistency."""
    state = {"input": ((g.input.channels, g.input.height, g.input.width), g.input.type.exp, g.input.type.range,
                       False)}
    infos: list[LayerInfo] = []
    for layer, srcs in zip(g.layers, g.sources()):
        for s in srcs:
            if s not in state:
                raise IRError(f"layer {layer.name!r}: field 'src': {s!r} is not an earlier layer")
        if layer.name in state:
            raise IRError(f"layer {layer.name!r}: the name is used twice")
        (c, h, w), exp, bounds, is_vector = state[srcs[0]]
        in_shape, in_exp, in_bounds = (c, h, w), exp, bounds
        acc_exp = shift = None
        if isinstance(layer, (Conv2d, Linear)):
            want = layer.in_channels if isinstance(layer, Conv2d) else layer.in_features
            have = c if isinstance(layer, Conv2d) else c * h * w
            if isinstance(layer, Conv2d) and is_vector:
                raise IRError(f"layer {layer.name!r}: conv2d after a global pool is not supported")
            if isinstance(layer, Linear) and h * w != 1:  # the generator's rule too (Design.scala)
                raise IRError(f"layer {layer.name!r}: field 'src': a linear layer reads a vector (one pixel), found "
                              f"the {h}x{w} map of {srcs[0]!r} (pool it first: AdaptiveAvgPool2d(1))")
            if want != have:
                raise IRError(f"layer {layer.name!r}: field 'in_channels': expected {have}, found {want}")
            if isinstance(layer, Conv2d):
                if not layer.fits(h, w):
                    raise IRError(f"layer {layer.name!r}: kernel {layer.kernel}, stride {layer.stride}, padding "
                                  f"{layer.padding} do not fit {h}x{w}")
                if layer.groups != 1 and not layer.groups == c == layer.out_channels:
                    raise IRError(f"layer {layer.name!r}: field 'groups': expected 1 or {c} (depthwise: groups = in = "
                                  f"out channels), found {layer.groups}")
                h, w = layer.out_hw(h, w)
                c = layer.out_channels
            else:
                c, h, w = layer.out_features, 1, 1
                is_vector = True
            if layer.q is not None and exp is not None and bounds is not None:
                acc_exp = exp + layer.q.e_min
                bias_int = layer.bias_int if layer.bias_int is not None else np.zeros(c, dtype=np.int64)
                lo, hi = bounds
                if isinstance(layer, Conv2d) and layer.padded:  # padding feeds zeros into the windows
                    lo, hi = min(lo, 0), max(hi, 0)
                bounds = _dot_bounds(layer.q.int_weights(), bias_int, lo, hi)
                exp = acc_exp
            elif require_quantized:
                raise IRError(f"layer {layer.name!r}: field 'weights': expected Po2 codes, found float weights")
            else:
                exp = bounds = None
        elif isinstance(layer, Requant):
            if layer.out is not None and exp is not None:
                shift = _shift_in_range(layer, layer.out.exp - exp)
                bounds = _requant_bounds(bounds, shift, layer.clamp())
                exp = layer.out.exp
            elif require_quantized:
                raise IRError(f"layer {layer.name!r}: field 'out': expected a calibrated output type, found none")
            else:
                exp = bounds = None
        elif isinstance(layer, Add):
            (c2, h2, w2), exp2, bounds2, vec2 = state[srcs[1]]
            if (c2, h2, w2) != (c, h, w):
                raise IRError(f"layer {layer.name!r}: field 'skip': expected shape {(c, h, w)} from {srcs[0]!r}, "
                              f"found {(c2, h2, w2)} from {srcs[1]!r}")
            if layer.out is not None and exp is not None and exp2 is not None:
                e = min(exp, exp2)
                lo = (bounds[0] << (exp - e)) + (bounds2[0] << (exp2 - e))
                hi = (bounds[1] << (exp - e)) + (bounds2[1] << (exp2 - e))
                acc_exp, shift = e, _shift_in_range(layer, layer.out.exp - e)
                bounds = _requant_bounds((lo, hi), shift, layer.clamp())
                exp = layer.out.exp
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
        state[layer.name] = ((c, h, w), exp, bounds, is_vector)
    return infos


# --------------------------------------------------------------------------------------------- quantize
def _round_half_up(x: np.ndarray, what: str = "value") -> np.ndarray:
    y = np.floor(np.asarray(x, dtype=np.float64) + 0.5)
    if y.size and np.abs(y).max() >= 2.0 ** 62:
        raise IRError(f"{what}: {np.abs(y).max():.3g} does not fit the integer model (|v| < 2**62)")
    return y.astype(np.int64)


def calibrate_activations(g: Graph, activations: dict[str, np.ndarray], bits: int = 8) -> Graph:
    """Give each requant point (and residual add) a ``bits``-wide type whose Po2 scale covers the observed range.

    ``activations`` maps a Requant/Add layer name to float activations observed on calibration data.
    After ReLU/ReLU6 the type is unsigned, exp = ceil(log2(max / (2**bits - 1))); elsewhere it is signed,
    exp = ceil(log2(max|x| / (2**(bits-1) - 1))).
    """
    out = g.copy()
    for i, layer in enumerate(out.layers):
        if isinstance(layer, (Requant, Add)):
            if layer.name not in activations:
                raise IRError(f"layer {layer.name!r}: no calibration activations recorded")
            a = activations[layer.name]
            check_finite(a, f"layer {layer.name!r}: calibration activations")
            signed = not (isinstance(layer, Requant) and layer.act in ("relu", "relu6"))
            m = float(np.max(np.abs(a))) if signed else float(np.max(a))
            if isinstance(layer, Requant) and layer.act == "relu6":
                m = min(m, 6.0)
            m = max(m, 2.0 ** -30)
            top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
            exp = int(math.ceil(math.log2(m / top)))
            out.layers[i] = replace(layer, out=TensorType(bits, signed, exp))
    return out


def _per_layer(v, layer, what: str):
    if not isinstance(v, dict):
        return v
    if layer.name not in v:
        raise IRError(f"layer {layer.name!r}: field {what!r}: no value given for this layer (have {sorted(v)[:4]}...)")
    return v[layer.name]


def quantize_weights(g: Graph, bits: int | dict[str, int], terms: int | dict[str, int] = 1) -> Graph:
    """Po2-quantize conv/linear weights (per-layer exponent range) and quantize biases to the accumulator.

    ``bits``: one width for every layer, or a dict layer name -> width (first/last layer precision).
    ``terms``: signed powers of two per weight, one count or a dict layer name -> count. One term is the
    paper's Po2 rule (:func:`~hashiflex.quant.po2.quantize_po2`); more terms round each weight to the nearest
    sum of that many (:func:`~hashiflex.quant.po2.quantize_po2_terms`).
    """
    out = g.copy()
    exps = {"input": out.input.type.exp}
    for i, (layer, srcs) in enumerate(zip(out.layers, out.sources())):
        exp = exps[srcs[0]]
        if isinstance(layer, (Conv2d, Linear)):
            b = _per_layer(bits, layer, "bits")
            k = _per_layer(terms, layer, "terms")
            if not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_TERMS:
                raise IRError(f"layer {layer.name!r}: field 'terms': expected 1 to {MAX_TERMS} terms per weight, "
                              f"found {k!r}")
            check_finite(layer.weight, f"layer {layer.name!r}: field 'weight'")
            check_finite(layer.bias, f"layer {layer.name!r}: field 'bias'")
            if k == 1:
                codes, e_min = quantize_po2(layer.weight, b)
            else:
                codes, e_min = quantize_po2_terms(layer.weight, b, int(k))
            acc_exp = exp + e_min
            out.layers[i] = replace(layer, q=Po2Weights(codes, e_min, b, int(k)),
                                    bias_int=_round_half_up(layer.bias / 2.0 ** acc_exp, f"layer {layer.name!r}: bias"))
            exp = acc_exp
        elif isinstance(layer, (Requant, Add)):
            if layer.out is None:
                raise IRError(f"layer {layer.name!r}: calibrate activations before quantizing weights")
            exp = layer.out.exp
        exps[layer.name] = exp
    return out


# --------------------------------------------------------------------------------------------- hw model
def pixel_parallelism(height: int, width: int, target_ii: int | None) -> int:
    """Pixels per stream beat for an ``height`` x ``width`` tensor to stream in at most ``target_ii`` beats.

    The smallest divisor of the width that is >= ceil(pixels / target_ii), so a beat never straddles rows
    (line buffers and column selection stay static); the whole row when even that is not enough (the tensor then
    needs ``height`` beats, above the target). ``None``: one pixel per beat.
    """
    if target_ii is None:
        return 1
    if target_ii < 1:
        raise IRError(f"target_ii: expected a positive number of cycles per image, found {target_ii}")
    need = -(-height * width // target_ii)
    return next((d for d in range(max(1, need), width + 1) if width % d == 0), width)


def choose_parallelism(g: Graph, target_ii: int | None) -> dict[str, int]:
    """The unroll pass: pixels per beat of every tensor ("input" and each layer's output) for ``target_ii``."""
    par = {"input": pixel_parallelism(g.input.height, g.input.width, target_ii)}
    for info in annotate(g, require_quantized=False):
        par[info.name] = pixel_parallelism(info.out_shape[1], info.out_shape[2], target_ii)
    return par


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


@dataclass(frozen=True)
class AdderGraph:
    """Counts of one pixel lane's adder graph (see :func:`shared_adder_graph`)."""
    adders: int            # with shared subtrees built once
    unshared: int          # every channel's tree on its own
    depth: int             # adder levels, the final bias/negation level included
    adder_bits: int | None = None  # sum of the adders' exact result widths (given the input bounds)
    plan: "adders.AdderPlan | None" = None  # the plan counted (share=True)


def _sint_width(lo: int, hi: int) -> int:
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
    roots = plan.roots
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
        bits = sum(_sint_width(lo, hi) for lo, hi in vals[plan.n_in:])
        for (node, s, ng), b, f in zip(roots.tolist(), bias.tolist(), finals.tolist()):
            if f:
                lo, hi = vals[node]
                lo, hi = (-(hi << s), -(lo << s)) if ng else (lo << s, hi << s)
                bits += _sint_width(lo + b, hi + b)
    return AdderGraph(n_add if share else naive, naive, depth, bits, plan if share else None)


def hw_model(g: Graph, levels_per_stage: int, target_ii: int | None = None) -> list[LayerHw]:
    """Per layer: adders (all pixel lanes), register stages, beats per image, parallelism."""
    infos = annotate(g)
    par = choose_parallelism(g, target_ii)
    hw = []
    for layer, info, srcs in zip(g.layers, infos, g.sources()):
        c, h, w = info.in_shape
        p_in, p_out = par[srcs[0]], par[layer.name]
        oc, oh, ow = info.out_shape
        beats = dict(beats_in=h * w // p_in, beats_out=oh * ow // p_out, parallelism=p_out)
        if isinstance(layer, (Conv2d, Linear)):
            lo, hi = info.in_bounds
            if isinstance(layer, Conv2d) and layer.padded:  # padding feeds zeros into the windows
                lo, hi = min(lo, 0), max(hi, 0)
            ag = shared_adder_graph(layer.q.codes, layer.bias_int, isinstance(layer, Conv2d) and layer.depthwise,
                                    in_bounds=(lo, hi), terms=layer.q.terms)
            stages = max(1, math.ceil(ag.depth / levels_per_stage))
            hw.append(LayerHw(layer.name, "conv2d" if isinstance(layer, Conv2d) else "linear",
                              width_for(*info.out_bounds)[0], ag.adders * p_out, stages, **beats,
                              adders_unshared=ag.unshared * p_out, adder_bits=ag.adder_bits * p_out))
        elif isinstance(layer, Requant):
            # the rounding constant 2**(s-1) costs one adder per lane when shifting right
            hw.append(LayerHw(layer.name, "requant", None, c * p_in if info.shift > 0 else 0, 0, **beats))
        elif isinstance(layer, SumPool):  # per channel: the beat's pixels plus the accumulator
            hw.append(LayerHw(layer.name, "sum_pool", width_for(*info.out_bounds)[0], c * p_in, 1, **beats))
        elif isinstance(layer, Add):  # the sum, plus the rounding constant when shifting right
            hw.append(LayerHw(layer.name, "add", None, c * p_in * (2 if info.shift > 0 else 1), 0, **beats))
    return hw


def latency_stages(g: Graph, model: list[LayerHw]) -> int:
    """Register stages on the longest path from the input to the output."""
    depth = {"input": 0}
    for layer, srcs, m in zip(g.layers, g.sources(), model):
        depth[layer.name] = max(depth[s] for s in srcs) + m.stages
    return depth[g.layers[-1].name]


def initiation_interval(g: Graph, target_ii: int | None = None) -> int:
    """Cycles per image: the most stream beats per image of any tensor (each stream moves one beat a cycle)."""
    par = choose_parallelism(g, target_ii)
    shapes = [("input", (g.input.channels, g.input.height, g.input.width))]
    shapes += [(i.name, i.out_shape) for i in annotate(g, require_quantized=False)]
    return max(h * w // par[n] for n, (_, h, w) in shapes)
