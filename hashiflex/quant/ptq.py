"""Post-training quantization passes on the IR: activation types from calibration (``calibrate_activations``)
and Po2 weights with integer biases (``quantize_weights``)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir import MAX_TERMS, Graph, IRError, Po2Weights
from ..ops import op_of
from ..ops.base import check_finite
from .po2 import quantize_po2, quantize_po2_terms


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
        op = op_of(layer)
        if op.calibrated:
            if layer.name not in activations:
                raise IRError(f"layer {layer.name!r}: no calibration activations recorded")
            out.layers[i] = replace(layer, out=op.out_type(layer, activations[layer.name], bits))
    return out


def choose_activation_exps(g: Graph, errors: dict[str, np.ndarray]) -> Graph:
    """Each calibrated layer's output exponent lowered by the j (``out.exp - j``) whose summed squared error in
    ``errors`` (:func:`hashiflex.quant.fakequant.activation_errors`, j = 0 first) is smallest: the range chosen
    by the error it causes, clipping rare large values for a finer scale, instead of covering the maximum. Ties
    keep the coarser scale (no clipping)."""
    out = g.copy()
    for i, layer in enumerate(out.layers):
        if not op_of(layer).calibrated:
            continue
        if layer.out is None:
            raise IRError(f"layer {layer.name!r}: field 'out': calibrate before choosing exponents by error")
        if layer.name not in errors:
            raise IRError(f"layer {layer.name!r}: no activation errors measured")
        e = np.asarray(errors[layer.name], dtype=np.float64)
        check_finite(e, f"layer {layer.name!r}: activation errors")
        out.layers[i] = replace(layer, out=replace(layer.out, exp=layer.out.exp - int(np.argmin(e))))
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
        op = op_of(layer)
        exp = op.value_exp(layer, [exps[s] for s in srcs])
        if op.weighted:
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
        elif op.calibrated:
            if layer.out is None:
                raise IRError(f"layer {layer.name!r}: calibrate activations before quantizing weights")
            exp = layer.out.exp
        exps[layer.name] = exp
    return out
