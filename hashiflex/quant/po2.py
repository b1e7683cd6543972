"""Po2 weight quantizer: w -> sign * 2**e, e in [e_min, e_max] per layer, or zero.

Rule (NumPy and torch implement the same one): e_hat = floor(log2|w| + 1/2) per weight; e_max = e_hat of
max|w|; e_min = max(e_max - (2**(b-1) - 2), smallest e_hat of a nonzero weight), so the range covers the
layer's weights and no more (wide codes do not buy exponents no weight uses), and never more than MAX_SPAN
exponents (a weight 2**-32 of the layer's largest changes nothing but the adder widths); weights with
e_hat < e_min become zero; the rest clip to [e_min, e_max].
"""
from __future__ import annotations

from functools import lru_cache

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


def quantize_po2_at(w: np.ndarray, bits: int, e_min: int) -> np.ndarray:
    """Codes of ``w`` on a given exponent range [e_min, e_min + max_code - 1] (the rule of
    :func:`po2_fake_quant_torch` with a fixed ``e_min``): e = floor(log2|w| + 1/2), zero below e_min, clipped above."""
    w = np.asarray(w, dtype=np.float64)
    a = np.abs(w)
    with np.errstate(divide="ignore"):
        e_hat = np.floor(np.log2(np.where(a > 0, a, 1.0)) + 0.5)
    e = np.clip(e_hat, e_min, e_min + max_code(bits) - 1)
    mag = (e - e_min + 1).astype(np.int64)
    return np.where((a > 0) & (e_hat >= e_min), np.sign(w).astype(np.int64) * mag, 0).astype(np.int64)


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


# --------------------------------------------------------------------------------------- multi-term weights
_TABLE_LIMIT = 1 << 25  # entries of the largest sum table built on the way (span * terms grows it)


@lru_cache(maxsize=64)
def term_values(span_: int, terms: int) -> tuple[np.ndarray, ...]:
    """``S[t]``: the sorted integers (units of 2**e_min) that t signed powers of two 2**j, j in [0, span), sum to,
    zero terms allowed (so S[t-1] is a subset of S[t]); t = 0 .. terms. Cached (every fake-quant forward of a
    multi-term layer asks for it), so read-only."""
    step = np.concatenate([[0], 1 << np.arange(span_, dtype=np.int64), -(1 << np.arange(span_, dtype=np.int64))])
    levels = [np.zeros(1, dtype=np.int64)]
    for t in range(1, terms + 1):
        if levels[-1].size * step.size > _TABLE_LIMIT:
            raise ValueError(f"weights.terms: {terms} terms over {span_} exponents make a table of more than "
                             f"{_TABLE_LIMIT} sums; use fewer terms or fewer weight bits")
        levels.append(np.unique((levels[-1][:, None] + step[None, :]).ravel()))
    for lv in levels:
        lv.setflags(write=False)
    return tuple(levels)


def _nearest(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The element of sorted ``v`` nearest to each ``a`` (a tie goes to the smaller one)."""
    i = np.clip(np.searchsorted(v, a), 1, v.size - 1)
    lo, hi = v[i - 1], v[i]
    return np.where(hi - a < a - lo, hi, lo)


def decompose(n: np.ndarray, levels: tuple[np.ndarray, ...], span_: int) -> np.ndarray:
    """Terms of each integer ``n`` (in S[len(levels)-1]) with the fewest nonzero terms: int array (terms, *n.shape)
    of codes (sign * (j + 1) for a term sign * 2**j, 0 for an unused term), larger magnitudes first."""
    terms = len(levels) - 1
    n = np.asarray(n, dtype=np.int64)
    uniq, inv = np.unique(n, return_inverse=True)

    def need(x):  # fewest terms that sum to x (terms + 1: not representable)
        k = np.full(x.shape, terms + 1, dtype=np.int64)
        for t in range(terms, -1, -1):
            pos = np.clip(np.searchsorted(levels[t], x), 0, levels[t].size - 1)
            k = np.where(levels[t][pos] == x, t, k)
        return k

    out = np.zeros((terms, uniq.size), dtype=np.int64)
    rest, k = uniq.copy(), need(uniq)
    if (k > terms).any():
        raise ValueError(f"decompose: {int(uniq[np.argmax(k > terms)])} is not a sum of {terms} terms")
    for t in range(terms):
        done = k == 0
        for j in range(span_ - 1, -1, -1):  # the largest term that leaves a remainder of one term less
            for s in (1, -1):
                cand = rest - s * (np.int64(1) << j)
                pick = ~done & (need(cand) == k - 1)
                out[t] = np.where(pick, s * (j + 1), out[t])
                rest = np.where(pick, cand, rest)
                k = np.where(pick, k - 1, k)
                done |= pick
    return out[:, inv].reshape((terms,) + n.shape)


def _round_terms(a: np.ndarray, e_min: int, levels: tuple[np.ndarray, ...]) -> np.ndarray:
    """Nearest representable magnitude (integer units of 2**e_min) to |w| = ``a``."""
    v = levels[-1]
    return _nearest(v[v >= 0], a / 2.0 ** e_min)


_E_MIN_NORMAL = -1022  # 2**e_min must be a normal float64: the rounding divides by it, torch's levels scale by it


def terms_range(w: np.ndarray, bits: int, terms: int, levels: tuple[np.ndarray, ...] | None = None) -> int:
    """e_min of a ``terms``-term layer: e_max is the Po2 rounding of max|w| or one either side, whichever gives the
    smallest squared error once every weight is rounded to its nearest sum of terms; e_min = e_max - span + 1,
    but never below 2**-1022 (weights that small, below float64's normal range, round to zero)."""
    a = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    sp = span(bits)
    levels = levels or term_values(sp, terms)
    if not (a > 0).any():
        return -(sp - 1)
    e0 = int(np.floor(np.log2(a.max()) + 0.5))
    best = None
    for e_max in (e0, e0 - 1, e0 + 1):
        e_min = max(e_max - (sp - 1), _E_MIN_NORMAL)
        err = float(((_round_terms(a, e_min, levels) * 2.0 ** e_min - a) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, e_min)
    return best[1]


def quantize_po2_terms(w: np.ndarray, bits: int, terms: int, e_min: int | None = None) -> tuple[np.ndarray, int]:
    """Multi-term Po2: each weight the nearest sum of up to ``terms`` signed powers of two 2**e, e in
    [e_min, e_min + span - 1] (a tie goes to the smaller magnitude), written with the fewest nonzero terms.
    Returns (codes of shape (terms, *w.shape), e_min); ``terms == 1`` is plain nearest-value Po2 rounding."""
    w = np.asarray(w, dtype=np.float64)
    sp = span(bits)
    levels = term_values(sp, terms)
    if e_min is None:
        e_min = terms_range(w, bits, terms, levels)
    mag = _round_terms(np.abs(w), e_min, levels)
    codes = decompose(mag, levels, sp) * np.sign(w).astype(np.int64)[None]
    return codes.astype(np.int64), int(e_min)


def po2_terms_fake_quant_torch(w, bits: int, terms: int, e_min: int | None = None):
    """Straight-through fake quantization to ``terms``-term Po2 (the rule of :func:`quantize_po2_terms`)."""
    import torch

    sp = span(bits)
    levels = term_values(sp, terms)
    if e_min is None:
        e_min = terms_range(w.detach().cpu().double().numpy(), bits, terms, levels)
    v = levels[-1]
    v = torch.as_tensor(v[v >= 0].astype(np.float64) * 2.0 ** e_min, dtype=w.dtype, device=w.device)
    a = w.detach().abs()
    i = torch.clamp(torch.bucketize(a, v), 1, v.numel() - 1)
    lo, hi = v[i - 1], v[i]
    q = torch.where(hi - a < a - lo, hi, lo) * torch.sign(w.detach())
    return w + (q - w).detach(), torch.tensor(float(e_min), dtype=w.dtype)
