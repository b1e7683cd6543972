"""Number formats shared by the golden model, the fake-quant torch model and the hardware model.

Decided once, here; the JSON schema and the Chisel generator document the same rules.

* Weight code (``bits`` b, per-layer ``e_min``): an integer c with |c| <= 2**(b-1) - 1.
  c == 0 means w == 0; otherwise w = sign(c) * 2**(e_min + |c| - 1).
* Tensor: integer q with value q * 2**exp; ``bits``/``signed`` give its range.
* Requantize by s (acc exponent -> output exponent, s = exp_out - exp_acc):
  s > 0: y = floor((acc + 2**(s-1)) / 2**s)  (round half up, via an arithmetic shift);
  s == 0: y = acc;  s < 0: y = acc * 2**(-s) (left shift). Then y = clamp(y, lo, hi).
"""
from __future__ import annotations

import numpy as np


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Range [lo, hi] of a ``bits``-wide integer."""
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def width_for(lo: int, hi: int) -> tuple[int, bool]:
    """Smallest (width, signed) holding every integer in [lo, hi]; unsigned when lo >= 0."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"empty interval [{lo}, {hi}]")
    if lo >= 0:
        return max(1, hi.bit_length()), False
    # signed: need -2**(w-1) <= lo and hi <= 2**(w-1) - 1
    w = max((-lo - 1).bit_length(), max(hi, 0).bit_length()) + 1
    return w, True


def max_code(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def decode_codes(codes: np.ndarray, e_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Split weight codes into (sign in {-1,0,1}, shift = e - e_min >= 0; 0 where the code is 0)."""
    codes = np.asarray(codes, dtype=np.int64)
    sign = np.sign(codes)
    shift = np.where(codes == 0, 0, np.abs(codes) - 1)
    return sign, shift


def codes_to_int_weights(codes: np.ndarray) -> np.ndarray:
    """Integer weight in units of 2**e_min: sign * 2**(|c|-1), 0 for code 0 (int64: |c| <= 62)."""
    sign, shift = decode_codes(codes, 0)
    if shift.size and shift.max() > 61:
        raise OverflowError(f"weight code {int(shift.max()) + 1} spans more than 62 exponents; "
                            "the integer model holds at most 2**61 per weight")
    return sign * (np.int64(1) << shift)


def codes_to_float(codes: np.ndarray, e_min: int) -> np.ndarray:
    sign, shift = decode_codes(codes, 0)
    return sign * np.exp2(shift + float(e_min))


def requant(acc: np.ndarray, shift: int, lo: int, hi: int) -> np.ndarray:
    """Requantizing shift with round-half-up and clamp (see module doc). Exact on int64."""
    acc = np.asarray(acc, dtype=np.int64)
    if shift > 0:
        y = (acc + (np.int64(1) << (shift - 1))) >> shift  # numpy >> is arithmetic (floor)
    elif shift < 0:
        y = acc << (-shift)
    else:
        y = acc
    return np.clip(y, lo, hi)
