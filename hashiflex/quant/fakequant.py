"""The fake-quant torch model: the IR run in torch with Po2 weights and fixed-point activations.

Rung two of the golden-model ladder (float -> fake-quant torch -> integer NumPy -> RTL). In float64 and
eval mode its outputs divided by 2**exp equal the integer golden model exactly; in float32 with the
straight-through estimator it is what quantization-aware training (QAT) optimises.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn

from ..ir import Graph, IRError
from ..ops import op_of
from ..ops.base import round_half_up_ste
from .po2 import po2_fake_quant_torch, po2_terms_fake_quant_torch


class FakeQuantNet(nn.Module):
    """Torch module over a :class:`Graph`.

    ``quantize=False`` runs the float network (used to calibrate activations); ``quantize=True`` quantizes
    weights to Po2 (``wbits``), biases to the accumulator scale and activations at every Requant point.
    """

    def __init__(self, g: Graph, wbits: int | dict[str, int] | None = None, quantize: bool = True,
                 terms: int | dict[str, int] | None = None):
        super().__init__()
        self.graph = g
        self.quantize = quantize
        self.wbits: dict[str, int] = {}   # per layer: a quantized graph may mix weight widths
        self.e_min: dict[str, int] = {}   # per layer, fixed when built from a quantized graph
        self.terms: dict[str, int] = {}   # per layer: signed powers of two per weight (1 unless given)
        self.params = nn.ParameterDict()
        exps = {"input": g.input.type.exp}
        for layer, srcs in zip(g.layers, g.sources()):
            exp = op_of(layer).value_exp(layer, [exps[s] for s in srcs])
            if op_of(layer).weighted:
                if layer.q is not None:
                    self.wbits[layer.name] = layer.q.bits
                    self.e_min[layer.name] = layer.q.e_min
                    self.terms[layer.name] = layer.q.terms
                    acc_exp = exp + layer.q.e_min
                    w = layer.q.float_weights()
                    b = layer.bias_int.astype(np.float64) * 2.0 ** acc_exp
                    exp = acc_exp
                else:
                    if quantize and wbits is None:
                        raise IRError(f"layer {layer.name!r}: FakeQuantNet needs wbits for float weights")
                    self.wbits[layer.name] = wbits[layer.name] if isinstance(wbits, dict) else wbits
                    if terms is not None:
                        self.terms[layer.name] = terms[layer.name] if isinstance(terms, dict) else terms
                    w, b = layer.weight, layer.bias
                self.params[f"{layer.name}__w".replace(".", "_")] = nn.Parameter(torch.tensor(w, dtype=torch.float64))
                self.params[f"{layer.name}__b".replace(".", "_")] = nn.Parameter(torch.tensor(b, dtype=torch.float64))
            elif op_of(layer).calibrated and layer.out is not None:
                exp = layer.out.exp
            exps[layer.name] = exp
        self.masks: dict[str, torch.Tensor] = {}  # pruning masks (1 keeps a weight), set by the trainer
        self.recorded: dict[str, torch.Tensor] = {}
        self.record = False

    def _wb(self, layer):
        key = layer.name.replace(".", "_")
        return self.params[f"{key}__w"], self.params[f"{key}__b"]

    def layer_weights(self, layer, exp: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A weighted layer's weights and bias as this pass uses them (masked; Po2-quantized with the bias on the
        accumulator scale when quantizing), and the accumulator's exponent given the input's ``exp``."""
        w, b = self._wb(layer)
        if layer.name in self.masks:
            w = w * self.masks[layer.name]
        if self.quantize:
            k = self.terms.get(layer.name, 1)
            if k == 1:
                w, e_min = po2_fake_quant_torch(w, self.wbits[layer.name], self.e_min.get(layer.name))
            else:
                w, e_min = po2_terms_fake_quant_torch(w, self.wbits[layer.name], k, self.e_min.get(layer.name))
            exp = exp + int(e_min.item())
            scale = 2.0 ** exp
            b = round_half_up_ste(b / scale) * scale
        return w, b, exp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the value domain (integer input times 2**input.exp). Returns logits (value domain)."""
        vals = {"input": x}
        exps = {"input": self.graph.input.type.exp}
        for layer, srcs in zip(self.graph.layers, self.graph.sources()):
            x, exp = op_of(layer).fake(layer, [vals[s] for s in srcs], [exps[s] for s in srcs], self)
            vals[layer.name], exps[layer.name] = x, exp
        keep = getattr(self, "keep", None)
        if keep is not None:  # every tensor of this pass by layer name (bias correction reads layer inputs)
            keep.clear()
            keep.update({k: v.detach() for k, v in vals.items()})
        return vals[self.graph.layers[-1].name].flatten(1)

    def to_graph(self) -> Graph:
        """The float graph with this module's current (latent float) weights, for re-quantization."""
        g = self.graph.copy()
        for i, layer in enumerate(g.layers):
            if op_of(layer).weighted:
                w, b = self._wb(layer)
                g.layers[i] = replace(layer, weight=w.detach().double().cpu().numpy().copy(),
                                      bias=b.detach().double().cpu().numpy().copy(), q=None, bias_int=None)
        return g


@torch.no_grad()
def record_activations(g: Graph, x_value: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    """Float activations after every Requant point (ReLU outputs), for calibration."""
    net = FakeQuantNet(g, quantize=False).double().eval()
    net.record = True
    out: dict[str, list] = {}
    for i in range(0, len(x_value), batch):
        net(torch.as_tensor(x_value[i:i + batch], dtype=torch.float64))
        for k, v in net.recorded.items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def batches_of(x_value, batch: int):
    """``x_value`` in batches of ``batch``: an array sliced, any other iterable (a DataLoader) as it is."""
    if isinstance(x_value, np.ndarray):
        return (x_value[i:i + batch] for i in range(0, len(x_value), batch))
    return x_value


@torch.no_grad()
def activation_ranges(g: Graph, x_value, batch: int = 256, progress: bool = False) -> dict[str, np.ndarray]:
    """[min, max] of the float activations after every Requant point and residual add, as running statistics
    over ``x_value`` (an array, or an iterable of batches: a DataLoader), so calibration keeps two numbers per
    layer instead of every activation (MobileNetV2-224 records ~50 MiB per image). A drop-in for
    :func:`record_activations` in :func:`hashiflex.passes.calibrate_activations`, with the same result."""
    from tqdm.auto import tqdm

    net = FakeQuantNet(g, quantize=False).double().eval()
    net.record = True
    batches = batches_of(x_value, batch)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for xb in tqdm(batches, desc="calibrate", disable=not progress, leave=False):
        net(torch.as_tensor(np.asarray(xb), dtype=torch.float64))
        for k, v in net.recorded.items():
            a, b = float(v.min()), float(v.max())  # a NaN stays a NaN (min/max propagate it): calibration names it
            lo[k] = a if k not in lo or a < lo[k] or a != a else lo[k]
            hi[k] = b if k not in hi or b > hi[k] or b != b else hi[k]
    return {k: np.array([lo[k], hi[k]]) for k in lo}


@torch.no_grad()
def activation_errors(g: Graph, x_value, candidates: int = 4, batch: int = 256,
                      progress: bool = False) -> dict[str, np.ndarray]:
    """Squared quantization error of the float activations at every calibrated layer of ``g`` (calibrated: each
    has ``out``), summed over ``x_value`` (an array or an iterable of batches) for each of ``candidates`` output
    exponents ``out.exp - j`` (j = 0 covers the observed maximum; each step halves the scale and clips more):
    the activation rounded half up and clamped to that type's range (``layer.clamp()``), against its float
    value. Running sums only, like :func:`activation_ranges`. Returns name -> array of ``candidates`` sums."""
    from tqdm.auto import tqdm

    if candidates < 1:
        raise ValueError(f"activation_errors: expected candidates >= 1, found {candidates}")
    net = FakeQuantNet(g, quantize=False).double().eval()
    net.record = True
    layers = {layer.name: layer for layer in g.layers if op_of(layer).calibrated}
    for name, layer in layers.items():
        if layer.out is None:
            raise IRError(f"layer {name!r}: field 'out': calibrate before measuring activation errors")
    grids = {name: [(layer.out.exp - j, replace(layer, out=replace(layer.out, exp=layer.out.exp - j)).clamp())
                    for j in range(candidates)] for name, layer in layers.items()}
    batches = batches_of(x_value, batch)
    err = {name: np.zeros(candidates) for name in layers}
    for xb in tqdm(batches, desc="activation errors", disable=not progress, leave=False):
        net(torch.as_tensor(np.asarray(xb), dtype=torch.float64))
        for name, v in net.recorded.items():
            for j, (e, (lo, hi)) in enumerate(grids[name]):
                q = torch.clamp(torch.floor(v * 2.0 ** -e + 0.5), lo, hi) * 2.0 ** e
                err[name][j] += float(((q - v) ** 2).sum())
    return err


@torch.no_grad()
def fake_quant_int_outputs(g: Graph, x_int: np.ndarray, out_exp: int) -> np.ndarray:
    """Run the fake-quant model in float64 on integer inputs and return its integer outputs (exact)."""
    net = FakeQuantNet(g).double().eval()
    x = torch.as_tensor(x_int, dtype=torch.float64) * 2.0 ** g.input.type.exp
    y = net(x).numpy() / 2.0 ** out_exp
    yi = np.rint(y).astype(np.int64)
    if not np.array_equal(yi.astype(np.float64), y):
        raise AssertionError("fake-quant outputs are not integers at the output scale: the ladder is broken")
    return yi
