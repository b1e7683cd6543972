"""Unstructured pruning: by magnitude (global or per layer, with a gradual schedule for training), or one-shot by
the output error on calibration data with the survivors compensating (optimal brain surgery, as SparseGPT)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir import Conv2d, Graph, IRError, Linear


def _prunable(g: Graph, exclude: tuple[str, ...]) -> list:
    return [l for l in g.layers if isinstance(l, (Conv2d, Linear)) and l.name not in exclude]


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise IRError(f"sparsity: expected a fraction in [0, 1), found {sparsity}")


def dense_layers(g: Graph, keep_depthwise: bool = False) -> tuple[str, ...]:
    """The layers a one-shot pruning leaves dense: the first and last conv/linear layer (the image's and the
    classes' precision) and, with ``keep_depthwise``, every depthwise conv (a k*k tap sum per channel: few weights
    and adders, and on a pretrained MobileNetV2 the layers pruning hurts most)."""
    layers = _prunable(g, ())
    names = (layers[0].name, layers[-1].name) if layers else ()
    if keep_depthwise:
        names += tuple(l.name for l in layers[1:-1] if isinstance(l, Conv2d) and l.depthwise)
    return names


def magnitude_masks(g: Graph, sparsity: float, scope: str = "global",
                    exclude: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Masks (1 keeps) zeroing the ``sparsity`` fraction of smallest-magnitude weights, over all prunable layers
    together (``scope="global"``) or in each layer (``"layer"``). Ties at the threshold are broken by index so
    the count is exact."""
    _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise IRError(f"scope: expected 'global' or 'layer', found {scope!r}")
    layers = _prunable(g, exclude)
    masks = {}
    if scope == "layer":
        for l in layers:
            masks[l.name] = _mask(np.abs(l.weight).ravel(), sparsity).reshape(l.weight.shape)
        return masks
    flat = np.concatenate([np.abs(l.weight).ravel() for l in layers]) if layers else np.zeros(0)
    m = _mask(flat, sparsity)
    i = 0
    for l in layers:
        n = l.weight.size
        masks[l.name] = m[i:i + n].reshape(l.weight.shape)
        i += n
    return masks


def _mask(a: np.ndarray, sparsity: float) -> np.ndarray:
    k = int(round(sparsity * a.size))
    mask = np.ones(a.size, dtype=np.float64)
    if k:
        mask[np.argsort(a, kind="stable")[:k]] = 0.0
    return mask


def apply_masks(g: Graph, masks: dict[str, np.ndarray]) -> Graph:
    out = g.copy()
    for i, l in enumerate(out.layers):
        if l.name in masks:
            out.layers[i] = replace(l, weight=l.weight * masks[l.name])
    return out


def prune(g: Graph, sparsity: float, scope: str = "global", exclude: tuple[str, ...] = ()) -> Graph:
    """One-shot magnitude pruning of a float graph."""
    return apply_masks(g, magnitude_masks(g, sparsity, scope, exclude))


def obs_prune(g: Graph, h: dict, sparsity: float, exclude: tuple[str, ...] = (), block: int = 128,
              damp: float | None = None, progress: bool = False) -> Graph:
    """One-shot pruning of a float graph by each weight's effect on its layer's output on calibration data, the
    surviving weights updated to compensate (optimal brain surgery; SparseGPT, Frantar & Alistarh 2023, without
    the quantization). ``h``: the layers' input second moments (:func:`hashiflex.quant.reconstruct.hessians`, of
    the unpruned network). Each prunable layer not in ``exclude`` loses the ``sparsity`` fraction of its weights
    (zeros already there counted): a dense conv or linear layer the fraction of each block of ``block`` input
    columns with the least ``w^2 / U_jj^2``, chosen as the columns are processed
    (:func:`~hashiflex.quant.reconstruct.round_columns` with ``prune``); a depthwise conv, whose channels have a
    k*k H each, the weights with the least ``w^2 / [H^-1]_jj`` (the single-weight OBS error), as many in every
    channel (the remainder from the channels whose next weight costs least: chosen over the whole layer, whole
    channels go, and on a pretrained MobileNetV2 the network with them), then each channel's survivors compensate. Magnitude pruning ignores which inputs are active and correlated, and nobody
    compensates: on a pretrained MobileNetV2 it is at chance at 50 % before any fine-tuning."""
    import torch
    from tqdm.auto import tqdm

    from .reconstruct import DAMP, damped, round_columns

    _check_sparsity(sparsity)
    damp = DAMP if damp is None else damp
    out = g.copy()
    same = lambda w: w  # noqa: E731  (no rounding: float weights)
    idx = {l.name: i for i, l in enumerate(g.layers)}
    for l in tqdm(_prunable(g, exclude), desc="obs pruning", disable=not progress, leave=False):
        if l.name not in h:
            raise IRError(f"layer {l.name!r}: obs pruning: no Hessian for this layer (calibration statistics of "
                          f"the network being pruned expected)")
        w = torch.as_tensor(np.asarray(l.weight, dtype=np.float64)).reshape(l.weight.shape[0], -1)
        hl = torch.as_tensor(h[l.name])
        want = (w.shape[0], w.shape[1], w.shape[1]) if isinstance(l, Conv2d) and l.depthwise else (w.shape[1],) * 2
        if tuple(hl.shape) != want:
            raise IRError(f"layer {l.name!r}: obs pruning: expected H of shape {want}, found {tuple(hl.shape)}")
        keep = w != 0
        if isinstance(l, Conv2d) and l.depthwise:
            hd = [damped(hl[c], damp) for c in range(w.shape[0])]
            inv = torch.stack([torch.diagonal(torch.cholesky_inverse(torch.linalg.cholesky(m))) for m, _ in hd])
            dead = torch.stack([d for _, d in hd])
            sal = torch.where(dead, -0.5, w ** 2 / inv)
            sal = torch.where(keep, sal, -1.0)
            keep = _per_channel(sal, int(round(sparsity * sal.numel())))
            q = torch.stack([round_columns(w[c:c + 1], hl[c], same, damp, keep[c:c + 1])[0]
                             for c in range(w.shape[0])])
        else:
            q = round_columns(w, hl, same, damp, keep, prune=sparsity, block=block)
        out.layers[idx[l.name]] = replace(l, weight=q.reshape(l.weight.shape).numpy())
    return out


def _per_channel(sal, k: int):
    """Keep mask (channels, taps) pruning ``k`` weights of least saliency ``sal``, the same number in every
    channel (``k // channels``), the remainder from the channels whose next weight costs least."""
    import torch

    c = sal.shape[0]
    srt, idx = torch.sort(sal, dim=1, stable=True)
    base, rem = divmod(k, c)
    keep = torch.ones_like(sal, dtype=torch.bool)
    rows = torch.arange(c)[:, None]
    keep[rows, idx[:, :base]] = False
    if rem:
        extra = torch.argsort(srt[:, base], stable=True)[:rem]
        keep[extra, idx[extra, base]] = False
    return keep


def sparsity_schedule(final: float, step: int, steps: int, start: float = 0.0) -> float:
    """Gradual pruning (Zhu & Gupta 2017): s_t = final + (start - final) * (1 - t/T)**3, reaching ``final``."""
    if steps <= 0:
        return final
    t = min(max(step, 0), steps) / steps
    return final + (start - final) * (1.0 - t) ** 3


def weight_sparsity(g: Graph) -> float:
    """Fraction of zero weights (Po2 codes when quantized) over conv/linear layers."""
    total = zeros = 0
    for l in g.layers:
        if isinstance(l, (Conv2d, Linear)):
            w = l.q.int_weights() if l.q is not None else l.weight
            total += w.size
            zeros += int((w == 0).sum())
    return zeros / max(total, 1)
