"""Exact integer arithmetic of the golden model: matmuls and convolutions of int64 tensors, fast where a bound
proves float arithmetic exact."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_INT64_SAFE = 1 << 62


_EXACT_F64 = 1 << 53


def exact_matmul(a: np.ndarray, w: np.ndarray, guard: int) -> np.ndarray:
    """Integer a (M, K) @ w (K, O), exactly. ``guard`` bounds sum_k |a_mk w_ko| for every output: below 2**53
    every partial sum is an exactly representable float64, so BLAS's float64 product is exact in any
    summation order (fast); otherwise int64 arithmetic is used."""
    if guard < _EXACT_F64:
        return np.rint(a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ w.astype(np.int64)


def guard_of(x: np.ndarray, wint: np.ndarray) -> int:
    xmax = int(np.abs(x).max(initial=0))
    return xmax * int(np.abs(wint.reshape(wint.shape[0], -1)).sum(axis=1).max(initial=0))


_EXACT_F32 = 1 << 24
_MAX_PARTS = 4


def weight_parts(x_max: int, wint: np.ndarray) -> tuple[int, list[np.ndarray]] | None:
    """Split integer weights into digit planes w = sum_j p_j * 2**(b*j) (|p_j| < 2**b, the sign of w) so that
    every plane's convolution with inputs of magnitude <= ``x_max`` is exact in float32: x_max * sum_k |p_jk| <
    2**24 bounds every product and partial sum of every output, in any summation order. Returns (b, planes),
    the fewest planes (up to 4) that are exact, or None when even 4 are not."""
    mag = np.abs(wint.astype(np.int64))
    sign = np.sign(wint).astype(np.int64)
    rows = mag.reshape(mag.shape[0], -1)
    top = int(mag.max(initial=0)).bit_length()
    for parts in range(1, _MAX_PARTS + 1):
        b = max(1, -(-top // parts))
        planes = [(rows >> (b * j)) & ((1 << b) - 1) for j in range(parts)]
        if all(x_max * int(p.sum(axis=1).max(initial=0)) < _EXACT_F32 for p in planes):
            return b, [(p.reshape(mag.shape) * sign) for p in planes]
    return None


def conv2d_int(x: np.ndarray, wint: np.ndarray, bias: np.ndarray, stride: int,
               padding: int | tuple[int, int, int, int], groups: int = 1) -> np.ndarray:
    """x (N, C, H, W) int64, wint (O, C/groups, k, k) int64 -> (N, O, OH, OW) exact integer accumulators.
    ``padding``: zeros on every side, or (top, bottom, left, right)."""
    k = wint.shape[-1]
    n, c = x.shape[:2]
    o = wint.shape[0]
    t, b, l, r = (padding,) * 4 if isinstance(padding, (int, np.integer)) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N C OH OW k k
    oh, ow = win.shape[2:4]
    guard = guard_of(x, wint)
    if groups == 1 and k == 1:  # pointwise: one batched matmul over channels, no im2col copy
        xs = xp[:, :, ::stride, ::stride][:, :, :oh, :ow].reshape(n, c, oh * ow)
        w2 = wint.reshape(o, c)
        if guard < _EXACT_F64:
            acc = np.rint(np.matmul(w2.astype(np.float64), xs.astype(np.float64))).astype(np.int64)
        else:
            acc = np.matmul(w2, xs)
        acc = acc.reshape(n, o, oh, ow)
    elif groups == 1:  # im2col + one exact matmul
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
        acc = exact_matmul(cols, wint.reshape(o, -1).T, guard)
        acc = acc.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    elif groups == c == o:  # depthwise: k*k shifted multiply-adds
        acc = np.zeros((n, c, oh, ow), dtype=np.int64)
        for i in range(k):
            for j in range(k):
                tap = xp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
                acc += tap * wint[:, 0, i, j].reshape(1, c, 1, 1)
    else:
        wg = win.reshape(n, groups, c // groups, oh, ow, k, k)
        acc = np.einsum("ngcyxij,gocij->ngoyx", wg, wint.reshape(groups, o // groups, c // groups, k, k),
                        optimize=True).reshape(n, o, oh, ow)
    return acc + bias.reshape(1, -1, 1, 1)
