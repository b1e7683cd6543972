"""Po2 weight quantizer: w -> sign * 2**e, e in [e_min, e_max] per layer, or zero.

Rule (NumPy and torch implement the same one): e_hat = floor(log2|w| + 1/2) per weight; e_max = e_hat of
max|w|; e_min = max(e_max - (2**(b-1) - 2), smallest e_hat of a nonzero weight), so the range covers the
layer's weights and no more (wide codes do not buy exponents no weight uses), and never more than MAX_SPAN
exponents (a weight 2**-32 of the layer's largest changes nothing but the adder widths); weights with
e_hat < e_min become zero; the rest clip to [e_min, e_max].
"""
from __future__ import annotations

import numpy as np

from ..numfmt import max_code


MAX_SPAN = 32


def span(bits: int) -> int:
    """Exponents a layer may use: what the code holds (2**(b-1) - 1), at most MAX_SPAN."""
    if bits < 2:
        raise ValueError(f"Po2 weights need >= 2 bits (sign + exponent), got {bits}")
    return min(max_code(bits), MAX_SPAN)


def exponent_range(e_hat_max: float, e_hat_min: float, bits: int) -> tuple[int, int]:
    e_max = int(e_hat_max)
    return max(e_max - (span(bits) - 1), int(e_hat_min)), e_max


def quantize_po2(w: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Return (codes, e_min) for float weights ``w``."""
    w = np.asarray(w, dtype=np.float64)
    a = np.abs(w)
    with np.errstate(divide="ignore"):
        e_hat = np.floor(np.log2(np.where(a > 0, a, 1.0)) + 0.5)
    nz = a > 0
    if nz.any():
        e_min, e_max = exponent_range(e_hat[nz].max(), e_hat[nz].min(), bits)
    else:  # all zero: any range will do; the same as the torch rule
        e_min, e_max = -(span(bits) - 1), 0
    e = np.clip(e_hat, e_min, e_max)
    mag = (e - e_min + 1).astype(np.int64)
    codes = np.where((a > 0) & (e_hat >= e_min), np.sign(w).astype(np.int64) * mag, 0)
    return codes.astype(np.int64), e_min


def po2_fake_quant_torch(w, bits: int, e_min: int | None = None):
    """Differentiable (straight-through) Po2 fake quantization of a torch tensor, same rule as NumPy.

    ``e_min`` fixes the exponent range (as exported) instead of deriving it from the weights.
    """
    import torch

    a = w.detach().abs()
    e_hat = torch.floor(torch.log2(torch.where(a > 0, a, torch.ones_like(a))) + 0.5)
    if e_min is None:
        nz = a > 0
        if nz.any():
            e_max = e_hat[nz].max()
            e_min = torch.maximum(e_max - (span(bits) - 1), e_hat[nz].min())
        else:
            e_max = torch.zeros((), dtype=w.dtype)
            e_min = e_max - (span(bits) - 1)
    else:
        e_min = torch.tensor(float(e_min), dtype=w.dtype)
        e_max = e_min + (max_code(bits) - 1)
    e = torch.clamp(e_hat, e_min, e_max)
    q = torch.where((a > 0) & (e_hat >= e_min), torch.sign(w.detach()) * torch.pow(2.0, e), torch.zeros_like(w))
    return w + (q - w).detach(), e_min
