"""Batch-norm folding: conv -> BN (eval) becomes one conv with scaled weights and a shifted bias."""
from __future__ import annotations

import numpy as np


def fold_bn(weight: np.ndarray, bias: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
            var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (w', b') with conv(x, w') + b' == BN(conv(x, w) + b) for BN in eval mode (per output channel:
    s = gamma / sqrt(var + eps); w' = w * s; b' = (b - mean) * s + beta)."""
    s = np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    w = np.asarray(weight, dtype=np.float64) * s.reshape(-1, *([1] * (weight.ndim - 1)))
    b = (np.asarray(bias, dtype=np.float64) - mean) * s + beta
    return w, b
