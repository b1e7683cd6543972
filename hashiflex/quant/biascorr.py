"""Bias correction (Nagel et al., "Data-Free Quantization", 2019, the empirical variant): rounding weights to
powers of two shifts each output channel's mean; measure that shift on calibration images and take it out of the
bias, which the hardware adds anyway (no cost).

For every conv/linear layer, on the float network's own input to that layer, the per-channel mean of
``layer(x; W_po2) - layer(x; W_float)`` over images and pixels is subtracted from the float bias, which is then
quantized to the accumulator scale as :func:`hashiflex.passes.quantize_weights` does. Weights, exponents and
activation types are unchanged, so the design's format is the same.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Conv2d, Graph, IRError, Linear
from ..ops.conv2d import conv2d_torch
from .fakequant import FakeQuantNet


@torch.no_grad()
def bias_correction(float_g: Graph, quant_g: Graph, x_value: np.ndarray, batch: int = 64) -> Graph:
    """``quant_g`` with every conv/linear bias corrected for the mean error its Po2 weights cause (see module)."""
    from ..analysis import annotate
    from .ptq import _round_half_up

    if [l.name for l in float_g.layers] != [l.name for l in quant_g.layers] or not quant_g.quantized:
        raise IRError("bias_correction: expects the float graph and its quantized version (same layers)")
    net = FakeQuantNet(float_g, quantize=False).double().eval()
    inputs: dict[str, str] = {l.name: s[0] for l, s in zip(float_g.layers, float_g.sources())}
    weight_layers = [(i, l) for i, l in enumerate(quant_g.layers) if isinstance(l, (Conv2d, Linear))]
    delta = {l.name: np.zeros(l.q.shape[0]) for _, l in weight_layers}
    dws = {l.name: torch.as_tensor(l.q.float_weights() - float_g.layers[i].weight)
           for i, l in weight_layers}  # the weights' rounding error, once
    count = 0
    vals: dict[str, torch.Tensor] = {}
    net.keep = vals  # every tensor of the forward pass, by layer name
    for i in range(0, len(x_value), batch):
        x = torch.as_tensor(x_value[i:i + batch], dtype=torch.float64)
        net(x)
        for _, l in weight_layers:
            xin = vals[inputs[l.name]]
            dw = dws[l.name]
            if isinstance(l, Conv2d):
                err = conv2d_torch(xin, dw, None, l)
                delta[l.name] += err.sum(dim=(0, 2, 3)).numpy() / (err.shape[2] * err.shape[3])
            else:
                delta[l.name] += F.linear(xin.flatten(1), dw).sum(dim=0).numpy()
        count += len(x)
    out = quant_g.copy()
    for k, info in enumerate(annotate(quant_g)):
        layer = out.layers[k]
        if isinstance(layer, (Conv2d, Linear)):
            bias = float_g.layer(layer.name).bias - delta[layer.name] / max(count, 1)
            out.layers[k] = replace(layer, bias=bias, bias_int=_round_half_up(
                bias / 2.0 ** info.acc_exp, f"layer {layer.name!r}: corrected bias"))
    return out
