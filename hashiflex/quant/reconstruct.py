"""Po2 rounding optimised on calibration data: each layer's weights rounded to its Po2 grid so that the layer's
*output* on real inputs stays close to the float layer's, not each weight to its nearest grid value.

Rounding every weight to its nearest power of two (or nearest sum of k) minimises the error of each weight alone;
what the network needs is a small error of each layer's output ``W x``. On calibration inputs X of a layer the
output error of weights Ŵ is ``tr((Ŵ - W) H (Ŵ - W)^T)`` with ``H = Σ x x^T`` over every input patch (pixel and
image), a quadratic form in the weights. This pass rounds the weights of a layer one input column at a time and
spreads each column's rounding error onto the columns not yet rounded, weighted by the inverse of H: optimal
brain quantization as GPTQ (Frantar et al., 2023) computes it, on the layer's own Po2 grid. Each weight still
ends on the lower or the upper neighbour of the grid (the choice AdaRound, Nagel et al. 2020, learns), but the
choice is made from the data, and it is closed-form (one Cholesky factor per layer, no training loop).

* Grid: the layer's own (bits, terms, e_min) as :func:`hashiflex.passes.quantize_weights` chose them; each
  column is rounded with the quantizer's rule (:func:`~hashiflex.quant.po2.po2_fake_quant_torch` or
  :func:`~hashiflex.quant.po2.po2_terms_fake_quant_torch` at that e_min), so the codes are in the same format and
  the design, golden model and generator are unchanged: only which codes.
* H: from the *float* network's input to each layer, every output pixel's receptive field (zero padding and
  stride as the layer has them) on the calibration images; a depthwise conv has one k*k H per channel.
  ``damp`` (a fraction of H's mean diagonal) keeps the inverse stable; inputs that never see a nonzero value have
  no effect on the output and are rounded to nearest.
* Columns in order of decreasing H diagonal (the most active inputs first, GPTQ's "act order").
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Conv2d, Graph, IRError, Linear
from ..ops.conv2d import pad_torch
from .fakequant import FakeQuantNet
from .po2 import po2_fake_quant_torch, po2_terms_fake_quant_torch, quantize_po2_at, quantize_po2_terms

DAMP = 0.01


def _patches(x: torch.Tensor, layer) -> torch.Tensor:
    """The layer's input patches: (rows, inputs) for a dense conv or linear, (channels, rows, k*k) depthwise."""
    if isinstance(layer, Linear):
        return x.flatten(1)
    k = layer.kernel
    x = pad_torch(x, layer)
    if k == 1:
        x = x[:, :, ::layer.stride, ::layer.stride]
        p = x.reshape(x.shape[0], x.shape[1], 1, -1)              # N, C, 1, L
    else:
        p = F.unfold(x, k, stride=layer.stride)                   # N, C*k*k, L (channel-major, as OIHW)
        p = p.reshape(x.shape[0], x.shape[1], k * k, -1)          # N, C, k*k, L
    if layer.depthwise:
        return p.permute(1, 0, 3, 2).reshape(x.shape[1], -1, k * k)
    return p.permute(0, 3, 1, 2).reshape(-1, x.shape[1] * k * k)


@torch.no_grad()
def hessians(float_g: Graph, x_value, batch: int = 8, progress: bool = False) -> dict[str, torch.Tensor]:
    """Layer name -> H = Σ x x^T over the float network's input patches of that conv/linear layer on the images
    ``x_value`` (value domain, an array or an iterable of batches): (inputs, inputs), or (channels, k*k, k*k) for
    a depthwise conv. float64."""
    from tqdm.auto import tqdm

    net = FakeQuantNet(float_g, quantize=False).double().eval()
    src = {l.name: s[0] for l, s in zip(float_g.layers, float_g.sources())}
    layers = [l for l in float_g.layers if isinstance(l, (Conv2d, Linear))]
    out: dict[str, torch.Tensor] = {}
    vals: dict[str, torch.Tensor] = {}
    net.keep = vals
    batches = ([x_value[i:i + batch] for i in range(0, len(x_value), batch)] if isinstance(x_value, np.ndarray)
               else x_value)
    seen = 0
    for x in tqdm(batches, desc="reconstruct: layer inputs", disable=not progress, leave=False):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        net(x)
        seen += len(x)
        for layer in layers:
            p = _patches(vals[src[layer.name]], layer)
            h = torch.bmm(p.transpose(1, 2), p) if p.dim() == 3 else p.T @ p
            out[layer.name] = out[layer.name] + h if layer.name in out else h
    if not seen:
        raise IRError("reconstruct: no calibration images")
    return out


def _rounder(bits: int, terms: int, e_min: int):
    if terms == 1:
        return lambda w: po2_fake_quant_torch(w, bits, e_min)[0]
    return lambda w: po2_terms_fake_quant_torch(w, bits, terms, e_min)[0]


def damped(h: torch.Tensor, damp: float = DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """``h`` (inputs, inputs) made safely invertible, and which inputs are dead (never nonzero on the calibration
    images: no effect on the output): their diagonal set to 1, then ``damp`` times the mean diagonal added."""
    h = h.to(torch.float64).clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    h += damp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    return h, dead


def round_columns(w: torch.Tensor, h: torch.Tensor, rnd, damp: float = DAMP,
                  keep: torch.Tensor | None = None, prune: float = 0.0, block: int = 128) -> torch.Tensor:
    """Round the columns of ``w`` (outputs, inputs) with ``rnd``, each column's error spread onto the columns
    still to be rounded by the inverse of ``h`` (inputs, inputs): the rounded weights (on rnd's grid). ``keep``
    (bool, like ``w``): where False the weight is zero (pruned) whatever the error feedback brings.

    ``prune`` > 0: also choose which weights to prune, as SparseGPT does (Frantar & Alistarh, 2023): before each
    ``block`` of columns is rounded, the ``prune`` fraction of that block's weights (those already zero counted)
    with the least output error if removed, ``w_ij^2 / U_jj^2`` (``U`` the inverse's Cholesky factor, the error
    of the weights rounded so far already fed in), is pruned; dead inputs go first."""
    w = w.detach().to(torch.float64).clone()
    keep = torch.ones_like(w, dtype=torch.bool) if keep is None else keep.clone()
    n = w.shape[1]
    h, dead = damped(h, damp)  # the damping adds one constant to the diagonal: the order is the undamped one
    order = torch.argsort(torch.diagonal(h), descending=True, stable=True)
    w, h, keep, dead = w[:, order], h[order][:, order], keep[:, order], dead[order]
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.empty_like(w)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        if prune:
            sal = (w[:, b0:b1] / torch.diagonal(u)[None, b0:b1]) ** 2
            sal = torch.where(dead[None, b0:b1], -0.5, sal)
            sal = torch.where(keep[:, b0:b1], sal, -1.0)
            k = int(round(prune * sal.numel()))
            if k:
                kb = keep[:, b0:b1].flatten()
                kb[torch.argsort(sal.flatten(), stable=True)[:k]] = False
                keep[:, b0:b1] = kb.reshape(w.shape[0], b1 - b0)
        for i in range(b0, b1):
            q[:, i] = torch.where(keep[:, i], rnd(w[:, i]), 0.0)
            if i + 1 < n:
                err = (w[:, i] - q[:, i]) / u[i, i]
                w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    out = torch.empty_like(q)
    out[:, order] = q
    return out


def reconstruct_layer(layer, weight: np.ndarray, h: torch.Tensor, bits: int, terms: int, e_min: int,
                      damp: float = DAMP, keep: np.ndarray | None = None) -> np.ndarray:
    """Float weights ``weight`` of ``layer`` rounded onto the (bits, terms, e_min) Po2 grid against ``h``
    (:func:`hessians`): the rounded float weights, every one a grid value. ``keep`` (bool, like ``weight``;
    default: its nonzero weights): where False the result is zero, and ``weight`` there is error the others
    compensate (pass the unpruned weights and the pruning mask)."""
    rnd = _rounder(bits, terms, e_min)
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    keep = (w != 0) if keep is None else torch.as_tensor(np.asarray(keep, dtype=bool))
    keep = keep.reshape(w.shape[0], -1)
    w2 = w.reshape(w.shape[0], -1)
    if isinstance(layer, Conv2d) and layer.depthwise:
        if h.shape != (w2.shape[0], w2.shape[1], w2.shape[1]):
            raise IRError(f"layer {layer.name!r}: reconstruct: expected H of shape {tuple(w2.shape) + (w2.shape[1],)}"
                          f", found {tuple(h.shape)}")
        q = torch.stack([round_columns(w2[c:c + 1], h[c], rnd, damp, keep[c:c + 1])[0] for c in range(w2.shape[0])])
    else:
        if h.shape != (w2.shape[1], w2.shape[1]):
            raise IRError(f"layer {layer.name!r}: reconstruct: expected H of shape {(w2.shape[1],) * 2}, "
                          f"found {tuple(h.shape)}")
        q = round_columns(w2, h, rnd, damp, keep)
    return q.reshape(w.shape).numpy()


def codes_of(values: np.ndarray, bits: int, terms: int, e_min: int) -> np.ndarray:
    """Codes (the quantizer's format) of weights that are already values of the (bits, terms, e_min) grid."""
    if terms == 1:
        return quantize_po2_at(values, bits, e_min)
    return quantize_po2_terms(values, bits, terms, e_min)[0]


def reconstruct(float_g: Graph, quant_g: Graph, x_value=None, *, h: dict[str, torch.Tensor] | None = None,
                batch: int = 8, damp: float = DAMP, progress: bool = False, dense: Graph | None = None) -> Graph:
    """``quant_g`` with the weights of every conv/linear layer re-rounded against its inputs on the calibration
    images ``x_value`` (or given Hessians ``h``, see :func:`hessians`); same grids (bits, terms, e_min), biases
    and activations, so only codes change. ``float_g`` is the float graph ``quant_g`` was quantized from (its
    zero weights, e.g. pruned ones, stay zero); ``h`` may come from another float network (the unpruned
    teacher). ``dense``: the unpruned float graph ``float_g`` was pruned from: its weights are the target and
    ``float_g``'s zeros the mask, so the surviving weights also compensate for the pruned ones (OBS-style)."""
    from tqdm.auto import tqdm

    if [l.name for l in float_g.layers] != [l.name for l in quant_g.layers] or not quant_g.quantized:
        raise IRError("reconstruct: expects the float graph and its quantized version (same layers)")
    if h is None:
        if x_value is None:
            raise IRError("reconstruct: needs calibration images (x_value) or their Hessians (h)")
        h = hessians(float_g, x_value, batch, progress)
    out = quant_g.copy()
    idx = [i for i, l in enumerate(quant_g.layers) if isinstance(l, (Conv2d, Linear))]
    for i in tqdm(idx, desc="reconstruct: rounding", disable=not progress, leave=False):
        layer = quant_g.layers[i]
        if layer.name not in h:
            raise IRError(f"layer {layer.name!r}: reconstruct: no Hessian for this layer")
        q = layer.q
        w = float_g.layers[i].weight
        if np.shape(w) != tuple(q.shape):
            raise IRError(f"layer {layer.name!r}: reconstruct: float weight shape {np.shape(w)} differs from the "
                          f"quantized {tuple(q.shape)}")
        keep = None
        if dense is not None:
            keep, w = np.asarray(w) != 0, dense.layers[i].weight
            if np.shape(w) != tuple(q.shape):
                raise IRError(f"layer {layer.name!r}: reconstruct: dense weight shape {np.shape(w)} differs from "
                              f"the quantized {tuple(q.shape)}")
        vals = reconstruct_layer(layer, w, h[layer.name], q.bits, q.terms, q.e_min, damp, keep)
        out.layers[i] = replace(layer, q=replace(q, codes=codes_of(vals, q.bits, q.terms, q.e_min)))
    return out
