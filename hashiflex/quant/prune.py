"""Unstructured magnitude pruning (global or per layer) with a gradual schedule for training."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir import Conv2d, Graph, IRError, Linear


def _prunable(g: Graph, exclude: tuple[str, ...]) -> list:
    return [l for l in g.layers if isinstance(l, (Conv2d, Linear)) and l.name not in exclude]


def magnitude_masks(g: Graph, sparsity: float, scope: str = "global",
                    exclude: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Masks (1 keeps) zeroing the ``sparsity`` fraction of smallest-magnitude weights, over all prunable layers
    together (``scope="global"``) or in each layer (``"layer"``). Ties at the threshold are broken by index so
    the count is exact."""
    if not 0.0 <= sparsity < 1.0:
        raise IRError(f"sparsity: expected a fraction in [0, 1), found {sparsity}")
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
