"""The adder-graph planner: y = W·x with two-input adders only (shifts are wiring), shared across outputs.

Each output channel o is a set of signed, shifted input terms ±(x_i << s): the Po2 digits of its weights
(a multi-term weight gives one term per digit). The planner

1. counts every pattern ``x_a ± (x_b << d)`` over all pairs of terms within each output, across all outputs
   (common-subexpression elimination in the style of Hartley's and da4ml's most-frequent-pair CSE);
2. builds the most frequent pattern once as a new variable (among equally frequent ones: the deeper operands,
   then the larger shift between them), substitutes it into every output that holds it, updates the counts
   incrementally (only the touched outputs), and repeats while a pattern occurs twice; this runs a few times
   (:func:`default_tries`), each run breaking the remaining ties by its own salted hash, and the plan with the
   fewest adders is kept;
3. sums what is left of each output with a tree ordered by arrival level (Huffman on levels, so the output is
   as shallow as its terms allow), choosing operand order so that a root is negative only when all its terms are.

Depth is bounded: an output with T terms may use at most ``ceil(log2 T) + slack`` adder levels; a substitution
that would push an output past its bound is not made there (a pattern pairing two terms of equal level never
does). The plan is the design contract's statement of each layer's adder graph (design.json ``adders``): the
generator checks that it computes exactly the weights (every output expands to its terms), sizes every wire
from exact intervals and builds it as planned.

A plan is a list of sums, node ids ``n_in, n_in + 1, ...`` in topological order, each
``(a, a_shift, b, b_shift, b_neg)`` = ``(a << a_shift) ± (b << b_shift)`` (``a`` is never negated; one of the
shifts is 0), and per output a root reference ``(node, shift, neg)`` (node -1 for an empty output): the
output is ``±(node << shift) + bias``.
"""
from __future__ import annotations

import hashlib
import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

import numba

_njit = numba.njit(cache=True)  # compiled once per machine (cached beside this file)

# key layout of a pattern (a, a_shift, b, b_shift, b_neg): one shift is 0, so d = b_shift - a_shift carries both
_VAR_BITS = 26
_D_OFF = 128        # d in [-127, 127]
_ROW_BITS = 20
_SHIFT_LIMIT = 127  # shifts of terms and sums stay below this (also the key's range)


class PlanError(ValueError):
    """The planner's input (terms) is out of its supported range."""


@_njit
def _key(v1, s1, g1, v2, s2, g2):
    # canonical pattern of two terms: ordered by (var, shift); the smaller shift becomes 0
    if v1 > v2 or (v1 == v2 and s1 > s2):
        v1, s1, g1, v2, s2, g2 = v2, s2, g2, v1, s1, g1
    d = s2 - s1
    return ((((v1 << _VAR_BITS) | v2) << 8) | (d + _D_OFF)) << 1 | (1 if g1 != g2 else 0)


@_njit
def _rv(r, v, s):
    return (((r << _VAR_BITS) | v) << 7) | s


@_njit
def _find(tab, k):
    # open addressing, linear probing over rows (key, value): the row holding k, or the empty row (key -1)
    mask = tab.shape[0] - 1
    h = k * -7046029254386353131
    i = (h ^ (h >> 31)) & mask
    while tab[i, 0] != k and tab[i, 0] != -1:
        i = (i + 1) & mask
    return i


@_njit
def _get(tab, k, default):
    i = _find(tab, k)
    return tab[i, 1] if tab[i, 0] == k else default


@_njit
def _inc(tab, k, delta):
    # tab[k] += delta (0 when absent); returns the new value and whether k was inserted
    i = _find(tab, k)
    new = tab[i, 0] != k
    if new:
        tab[i, 0] = k
        tab[i, 1] = 0
    tab[i, 1] += delta
    return tab[i, 1], new


@_njit
def _dec(tab, k):
    # tab[k] -= 1 where k is held (a pattern that never occurred twice is not)
    i = _find(tab, k)
    if tab[i, 0] == k:
        tab[i, 1] -= 1


@_njit
def _grown(tab):
    # the table at twice the size (callers grow it when half full)
    nt = np.full((2 * tab.shape[0], 2), -1, np.int64)
    for j in range(tab.shape[0]):
        if tab[j, 0] != -1:
            m = _find(nt, tab[j, 0])
            nt[m, 0] = tab[j, 0]
            nt[m, 1] = tab[j, 1]
    return nt


@_njit
def _decode(k):
    d = ((k >> 1) & 255) - _D_OFF
    return k >> (9 + _VAR_BITS), (-d if d < 0 else 0), (k >> 9) & ((1 << _VAR_BITS) - 1), (d if d > 0 else 0), k & 1


_BLOCKED = -(1 << 50)  # a pattern's count once the depth bound refuses it: never selected again
_LEVELS = 64  # priority levels per count (the operands' summed depth, capped)


_SHIFT_BITS = 4  # the shift between a pattern's operands, capped, in the priority
_SHIFT_CAP = (1 << _SHIFT_BITS) - 1
_TIE_BITS = 4  # a salted hash of the key breaks ties between equally frequent, equally deep patterns


@_njit
def _prio(k, count, depth, salt):
    # most frequent first, then the deeper operands (a larger subexpression built on), then the larger shift
    # between them, then the salted tie-break (salt 0: none, ties fall in the table's order). Measured over
    # random and real matrices (benchmarks/adders_vs_da4ml.py): depth before shift, and a larger shift first,
    # each save 0.5-2 % of the adders against the other choices.
    a, da, b, db, _ = _decode(k)
    tie = 0
    if salt != 0:
        h = (k ^ salt) * -4658895280553007687
        tie = (h ^ (h >> 29)) & ((1 << _TIE_BITS) - 1)
    key = ((count * _LEVELS + min(depth[a] + depth[b], _LEVELS - 1)) << _SHIFT_BITS) | min(da + db, _SHIFT_CAP)
    return (key << _TIE_BITS) | tie


@_njit
def _push(hp, hk, n, prio, k):
    # a binary max-heap of (priority, key) in two arrays, grown by doubling; returns the arrays and the size
    if n >= hp.shape[0]:
        hp = np.concatenate((hp, np.empty(hp.shape[0], np.int64)))
        hk = np.concatenate((hk, np.empty(hk.shape[0], np.int64)))
    i = n
    while i > 0:
        up = (i - 1) >> 1
        if hp[up] >= prio:
            break
        hp[i] = hp[up]
        hk[i] = hk[up]
        i = up
    hp[i] = prio
    hk[i] = k
    return hp, hk, n + 1


@_njit
def _pop(hp, hk, n):
    # the top (priority, key) out of the heap (n > 0); returns them and the new size
    prio, k = hp[0], hk[0]
    n -= 1
    hp[0], hk[0] = hp[n], hk[n]
    _sift_down(hp, hk, n, 0)
    return prio, k, n


@_njit
def _sift_down(hp, hk, n, i):
    lp, lk = hp[i], hk[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and hp[c + 1] > hp[c]:
            c += 1
        if hp[c] <= lp:
            break
        hp[i] = hp[c]
        hk[i] = hk[c]
        i = c
    hp[i] = lp
    hk[i] = lk


@_njit
def _pair_counts(row_ptr, var, shift, neg, n_in):
    # pattern -> occurrences over the input terms, holding only patterns that occur at least twice: a pattern's
    # count is largest when the newer of its two variables is created (then all terms of both exist) and only
    # falls after. Input pairs are counted per first input a in a dense scratch over (b, shift difference, sign).
    n_out = row_ptr.shape[0] - 1
    cap = var.shape[0]
    t_row = np.empty(cap, np.int64)
    for r in range(n_out):
        for j in range(row_ptr[r], row_ptr[r + 1]):
            t_row[j] = r
    slots = np.argsort(var, kind="mergesort")  # each input's terms, in slot order
    first = np.searchsorted(var[slots], np.arange(n_in + 1))
    ct = np.full((1024, 2), -1, np.int64)
    c_used = 0
    smax = 0
    for j in range(cap):
        smax = max(smax, shift[j])
    nbins = 2 * (2 * smax + 1)
    loc = np.zeros(max(1, n_in) * nbins, np.int64)
    touched = np.empty(cap * 2 + 16, np.int64)
    for a in range(n_in):
        n_t = 0
        for c in range(first[a], first[a + 1]):
            ta = slots[c]
            r = t_row[ta]
            for u in range(row_ptr[r], row_ptr[r + 1]):
                b = var[u]
                if b < a or (b == a and shift[u] <= shift[ta]):
                    continue
                idx = b * nbins + (shift[u] - shift[ta] + smax) * 2 + (1 if neg[u] != neg[ta] else 0)
                if loc[idx] == 0:
                    if n_t >= touched.shape[0]:
                        touched = np.concatenate((touched, np.empty(touched.shape[0], np.int64)))
                    touched[n_t] = idx
                    n_t += 1
                loc[idx] += 1
        for q in range(n_t):
            idx = touched[q]
            cnt = loc[idx]
            loc[idx] = 0
            if cnt >= 2:
                b = idx // nbins
                rem = idx % nbins
                k = ((((a << _VAR_BITS) | b) << 8) | (rem // 2 - smax + _D_OFF)) << 1 | (rem % 2)
                _inc(ct, k, cnt)
                c_used += 1
                if 2 * c_used > ct.shape[0]:
                    ct = _grown(ct)
    return ct, c_used


@_njit
def _cse(row_ptr, t_var, t_shift, t_neg, n_in, slack, ct0, c_used0, salt):
    n_out = row_ptr.shape[0] - 1
    cap = t_var.shape[0]
    nv_max = n_in + cap + 1
    depth = np.zeros(nv_max, np.int64)
    t_row = np.empty(cap, np.int64)
    t_alive = np.ones(cap, np.bool_)
    var = t_var.copy()
    shift = t_shift.copy()
    neg = t_neg.copy()
    # alive terms of each row (swap-remove), positions of the slots
    row_items = np.empty(cap, np.int64)
    row_len = np.zeros(n_out, np.int64)
    pos = np.empty(cap, np.int64)
    load = np.zeros(n_out, np.int64)
    limit = np.zeros(n_out, np.int64)
    for r in range(n_out):
        n = row_ptr[r + 1] - row_ptr[r]
        for j in range(row_ptr[r], row_ptr[r + 1]):
            t_row[j] = r
            row_items[j] = j
            pos[j] = j
        row_len[r] = n
        load[r] = n
        lv = 0
        while (1 << lv) < n:
            lv += 1
        limit[r] = 1 << (lv + slack)
    # chains of each variable's term slots (a pool of (slot, next))
    pool_slot = np.empty(2 * cap + 1, np.int64)
    pool_next = np.empty(2 * cap + 1, np.int64)
    head = -np.ones(nv_max, np.int64)
    n_pool = 0
    for j in range(cap):
        pool_slot[n_pool] = j
        pool_next[n_pool] = head[var[j]]
        head[var[j]] = n_pool
        n_pool += 1
    size = 16
    while size < 4 * cap + 2:
        size *= 2
    wt = np.full((size, 2), -1, np.int64)    # (row, var, shift) -> slot of that term (< 0: gone)
    w_used = 0
    for j in range(cap):
        _, new = _inc(wt, _rv(t_row[j], var[j], shift[j]), j + 1)
        w_used += new
    ct = ct0.copy()  # the input pairs' counts (shared by all tries)
    c_used = c_used0
    # a heap of keys by priority (lazy: an entry is checked against the key's count when popped)
    hp = np.empty(max(1024, 2 * c_used + 16), np.int64)
    hk = np.empty(hp.shape[0], np.int64)
    n_h = 0
    for j in range(ct.shape[0]):
        if ct[j, 0] != -1:
            hp[n_h] = _prio(ct[j, 0], ct[j, 1], depth, salt)
            hk[n_h] = ct[j, 0]
            n_h += 1
    for i in range(n_h // 2 - 1, -1, -1):  # heapify
        _sift_down(hp, hk, n_h, i)
    new_slots = np.empty(cap, np.int64)
    sums = np.empty((cap + n_out + 1, 5), np.int64)
    n_sums = 0
    occ_t = np.empty(cap, np.int64)
    lt = np.full((1024, 2), -1, np.int64)  # the new variable's pairs in its rows, counted locally
    lt_at = np.empty(1024, np.int64)
    occ_p = np.empty(cap, np.int64)
    while n_h > 0:
        top, k, n_h = _pop(hp, hk, n_h)
        cur = _get(ct, k, 0)
        if cur < 2:
            continue
        pr = _prio(k, cur, depth, salt)
        if pr != top:  # stale (its count fell since it was queued): requeue at its priority now
            if pr < top:
                hp, hk, n_h = _push(hp, hk, n_h, pr, k)
            continue
        a, da, b, db, gneg = _decode(k)
        dnew = max(depth[a], depth[b]) + 1
        grow = (1 << dnew) - (1 << depth[a]) - (1 << depth[b])
        # occurrences: a term of a, its partner of b in the same row, within the row's depth bound
        n_occ = 0
        c = head[a]
        while c >= 0:
            t = pool_slot[c]
            c = pool_next[c]
            if not t_alive[t] or var[t] != a or shift[t] < da:
                continue
            base = shift[t] - da
            r = t_row[t]
            p = _get(wt, _rv(r, b, base + db), 0) - 1
            if p < 0 or p == t or not t_alive[p] or ((neg[t] != neg[p]) != (gneg == 1)):
                continue
            if load[r] + grow > limit[r]:
                continue
            occ_t[n_occ] = t
            occ_p[n_occ] = p
            n_occ += 1
        if n_occ < 2:  # the depth bound refuses it (occurrences only go away): refused for good
            _inc(ct, k, _BLOCKED)
            continue
        v = n_in + n_sums
        sums[n_sums, 0] = a
        sums[n_sums, 1] = da
        sums[n_sums, 2] = b
        sums[n_sums, 3] = db
        sums[n_sums, 4] = gneg
        n_sums += 1
        depth[v] = dnew
        n_new = 0
        for q in range(n_occ):
            t = occ_t[q]
            p = occ_p[q]
            r = t_row[t]
            if not (t_alive[t] and t_alive[p]) or var[t] != a or var[p] != b or shift[p] - shift[t] != db - da \
                    or load[r] + grow > limit[r]:
                continue  # an overlapping occurrence (multi-term rows) was used already: its slot moved on
            base = shift[t] - da
            o = row_ptr[r]
            for x in range(row_len[r]):  # the pairs the two terms formed with the rest of the row go away
                u = row_items[o + x]
                if u == t or u == p:
                    continue
                _dec(ct, _key(var[t], shift[t], neg[t], var[u], shift[u], neg[u]))
                _dec(ct, _key(var[p], shift[p], neg[p], var[u], shift[u], neg[u]))
            _dec(ct, k)
            # remove p, reuse t's slot for the new term
            _inc(wt, _rv(r, var[t], shift[t]), -1 - t)  # gone: the value drops to 0
            _inc(wt, _rv(r, var[p], shift[p]), -1 - p)
            t_alive[p] = False
            last = row_items[o + row_len[r] - 1]
            row_items[pos[p]] = last
            pos[last] = pos[p]
            row_len[r] -= 1
            var[t] = v
            shift[t] = base
            _, new = _inc(wt, _rv(r, v, base), t + 1)
            w_used += new
            if 2 * w_used > wt.shape[0]:
                wt = _grown(wt)
            pool_slot[n_pool] = t
            pool_next[n_pool] = head[v]
            head[v] = n_pool
            n_pool += 1
            load[r] += grow
            new_slots[n_new] = t
            n_new += 1
        # the new variable's pairs with the rest of its rows, counted locally; those occurring twice are kept
        work = 0
        for q in range(n_new):
            work += row_len[t_row[new_slots[q]]]
        if lt.shape[0] < 2 * work + 2:  # one table for all substitutions, emptied entry by entry after each
            size = lt.shape[0]
            while size < 2 * work + 2:
                size *= 2
            lt = np.full((size, 2), -1, np.int64)
            lt_at = np.empty(size, np.int64)
        n_lt = 0
        for q in range(n_new):
            t = new_slots[q]
            r = t_row[t]
            o = row_ptr[r]
            for x in range(row_len[r]):
                u = row_items[o + x]
                if u != t and t_alive[t]:
                    kk = _key(var[t], shift[t], neg[t], var[u], shift[u], neg[u])
                    i = _find(lt, kk)
                    if lt[i, 0] != kk:
                        lt[i, 0] = kk
                        lt[i, 1] = 0
                        lt_at[n_lt] = i
                        n_lt += 1
                    lt[i, 1] += 1
        for j in range(n_lt):
            i = lt_at[j]
            kk = lt[i, 0]
            nc = lt[i, 1]
            lt[i, 0] = -1
            if nc >= 2:
                _inc(ct, kk, nc)
                c_used += 1
                if 2 * c_used > ct.shape[0]:
                    ct = _grown(ct)
                hp, hk, n_h = _push(hp, hk, n_h, _prio(kk, nc, depth, salt), kk)
    # what is left of each output: a tree by arrival level (two-queue Huffman on levels)
    roots = np.zeros((n_out, 3), np.int64)
    roots[:, 0] = -1  # an empty output: the bias alone
    qa_v = np.empty(cap + 1, np.int64)
    qa_s = np.empty(cap + 1, np.int64)
    qa_g = np.empty(cap + 1, np.int64)
    qb_v = np.empty(cap + 1, np.int64)
    qb_s = np.empty(cap + 1, np.int64)
    qb_g = np.empty(cap + 1, np.int64)
    for r in range(n_out):
        n = row_len[r]
        if n == 0:
            continue
        o = row_ptr[r]
        dep = np.empty(n, np.int64)
        for x in range(n):
            dep[x] = depth[var[row_items[o + x]]] * (cap + 1) + x
        order = np.argsort(dep)
        for x in range(n):
            t = row_items[o + order[x]]
            qa_v[x] = var[t]
            qa_s[x] = shift[t]
            qa_g[x] = 1 if neg[t] else 0
        ia, na, ib, nb = 0, n, 0, 0
        for _ in range(n - 1):
            ops_v = np.empty(2, np.int64)
            ops_s = np.empty(2, np.int64)
            ops_g = np.empty(2, np.int64)
            for z in range(2):
                take_a = ib >= nb or (ia < na and depth[qa_v[ia]] <= depth[qb_v[ib]])
                if take_a:
                    ops_v[z], ops_s[z], ops_g[z] = qa_v[ia], qa_s[ia], qa_g[ia]
                    ia += 1
                else:
                    ops_v[z], ops_s[z], ops_g[z] = qb_v[ib], qb_s[ib], qb_g[ib]
                    ib += 1
            if ops_g[0] == 1 and ops_g[1] == 0:  # a positive operand first
                ops_v[0], ops_v[1] = ops_v[1], ops_v[0]
                ops_s[0], ops_s[1] = ops_s[1], ops_s[0]
                ops_g[0], ops_g[1] = ops_g[1], ops_g[0]
            base = min(ops_s[0], ops_s[1])
            v = n_in + n_sums
            sums[n_sums, 0] = ops_v[0]
            sums[n_sums, 1] = ops_s[0] - base
            sums[n_sums, 2] = ops_v[1]
            sums[n_sums, 3] = ops_s[1] - base
            sums[n_sums, 4] = 1 if ops_g[0] != ops_g[1] else 0
            n_sums += 1
            depth[v] = max(depth[ops_v[0]], depth[ops_v[1]]) + 1
            qb_v[nb], qb_s[nb], qb_g[nb] = v, base, ops_g[0]
            nb += 1
        if nb > 0:
            roots[r, 0], roots[r, 1], roots[r, 2] = qb_v[nb - 1], qb_s[nb - 1], qb_g[nb - 1]
        else:
            roots[r, 0], roots[r, 1], roots[r, 2] = qa_v[0], qa_s[0], qa_g[0]
    return sums[:n_sums].copy(), roots


@_njit
def _cost(sums, roots):
    # adders of a plan with its negated roots (0 - root where no bias absorbs it)
    c = sums.shape[0]
    for r in range(roots.shape[0]):
        if roots[r, 0] >= 0 and roots[r, 2] == 1:
            c += 1
    return c


@_njit
def _plan_kernel(row_ptr, t_var, t_shift, t_neg, n_in, slack, tries):
    # the input pairs are counted once; each try runs the substitutions with its own tie-break (try 0: none);
    # the plan with the fewest adders wins (the earliest of equals)
    ct0, c_used0 = _pair_counts(row_ptr, t_var, t_shift, t_neg, n_in)
    best_s, best_r = _cse(row_ptr, t_var, t_shift, t_neg, n_in, slack, ct0, c_used0, 0)
    best = _cost(best_s, best_r)
    for i in range(1, tries):
        salt = (i * 0x2545F4914F6CDD1D) & 0x7FFFFFFFFFFFFFFF
        s_i, r_i = _cse(row_ptr, t_var, t_shift, t_neg, n_in, slack, ct0, c_used0, salt)
        c = _cost(s_i, r_i)
        if c < best:
            best_s, best_r, best = s_i, r_i, c
    return best_s, best_r


@dataclass(frozen=True)
class AdderPlan:
    """One pixel lane's adder graph (see the module docstring for the encoding)."""
    n_in: int
    sums: np.ndarray    # (m, 5) int64: a, a_shift, b, b_shift, b_neg
    roots: np.ndarray   # (n_out, 3) int64: node (-1: empty output), shift, neg

    @property
    def levels(self) -> np.ndarray:
        """Adder level of every node (inputs 0; a sum one above its later operand)."""
        lv = np.zeros(self.n_in + len(self.sums), np.int64)
        for j, (a, _, b, _, _) in enumerate(self.sums.tolist()):
            lv[self.n_in + j] = max(lv[a], lv[b]) + 1
        return lv

    def depth(self) -> int:
        """Adder levels of the deepest root (the final bias/negation level not included)."""
        lv = self.levels
        return max((int(lv[r]) for r in self.roots[:, 0] if r >= 0), default=0)

    def final_adders(self, bias: np.ndarray) -> np.ndarray:
        """Whether each output's final level spends an adder: bias + root, bias - root, or 0 - root."""
        bias = np.asarray(bias)
        return (self.roots[:, 0] >= 0) & ((self.roots[:, 2] == 1) | (bias != 0))

    def weights(self, n_out: int | None = None) -> np.ndarray:
        """The integer matrix (n_out, n_in) the plan computes: each output expanded into its input terms."""
        forms: dict[int, dict[int, int]] = {}

        def form(node: int) -> dict[int, int]:
            if node < self.n_in:
                return {node: 1}
            f = forms.get(node)
            if f is None:
                a, sa, b, sb, nb = (int(v) for v in self.sums[node - self.n_in])
                f = {i: c << sa for i, c in form(a).items()}
                for i, c in form(b).items():
                    f[i] = f.get(i, 0) + (-(c << sb) if nb else c << sb)
                forms[node] = f
            return f

        w = np.zeros((len(self.roots), self.n_in), dtype=object)
        for o, (node, s, ng) in enumerate(self.roots.tolist()):
            if node >= 0:
                for i, c in form(node).items():
                    w[o, i] = -(c << s) if ng else c << s
        return w


def terms_of(codes: np.ndarray, terms: int, depthwise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray, int]:
    """A layer's Po2 codes as the planner's terms: per output channel (row_ptr), each nonzero digit's input,
    shift and sign. ``codes``: the weight shape (terms 1), or (terms, *weight shape); an output's inputs are its
    weights in row-major order (a depthwise channel's own window: inputs ``o * taps + t``). Equal digits of one
    input merge (x + x = x << 1) and opposite ones cancel, so every (input, shift) appears once per output.
    Returns row_ptr, var, shift, neg, n_in."""
    tc = np.asarray(codes) if terms > 1 else np.asarray(codes)[None]
    k, o_ch = tc.shape[0], tc.shape[1]
    flat = tc.reshape(k, o_ch, -1)  # (terms, out, taps)
    taps = flat.shape[2]
    n_in = taps * (o_ch if depthwise else 1)
    tt, oo, ii = np.nonzero(flat)
    c = flat[tt, oo, ii].astype(np.int64)
    var = ii + oo * taps * int(depthwise)
    shift = np.abs(c) - 1
    neg = c < 0
    if k > 1:  # merge equal (output, input, shift) digits until unique
        rows, var, shift, neg = _merge_digits(oo, var, shift, neg)
        oo = rows
    order = np.lexsort((shift, var, oo))
    oo, var, shift, neg = oo[order], var[order], shift[order], neg[order]
    row_ptr = np.searchsorted(oo, np.arange(o_ch + 1)).astype(np.int64)
    return row_ptr, var.astype(np.int64), shift.astype(np.int64), neg.astype(np.bool_), n_in


def _merge_digits(rows, var, shift, neg):
    """Sum each (row, input)'s digits exactly and re-express the sum in signed digits (:func:`_csd`)."""
    if len(shift) and int(shift.max()) >= 60:  # beyond int64 sums: exact Python integers
        value: dict[tuple[int, int], int] = {}
        for r, v, s, g in zip(rows.tolist(), var.tolist(), shift.tolist(), neg.tolist()):
            value[r, v] = value.get((r, v), 0) + (-(1 << s) if g else 1 << s)
        keys = list(value)
        return _csd(np.array([k[0] for k in keys], np.int64), np.array([k[1] for k in keys], np.int64),
                    [value[k] for k in keys])
    key = np.stack([rows, var], 1).astype(np.int64)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    val = np.zeros(len(uniq), np.int64)
    np.add.at(val, inv.reshape(-1), np.where(neg, -1, 1).astype(np.int64) << shift.astype(np.int64))
    return _csd(uniq[:, 0], uniq[:, 1], val)


def _csd(rows, var, values):
    """Canonical signed digits (nonadjacent form: the fewest digits) of entries (rows[j], var[j]) = values[j], as
    arrays row, input, shift, neg (in no particular order). ``values``: an int64 array (vectorized, one pass
    per digit position) or a list of Python integers of any size."""
    if not isinstance(values, np.ndarray):
        r_out, v_out, s_out, g_out = [], [], [], []
        for r, v, val in zip(rows.tolist(), var.tolist(), values):
            s = 0
            while val:
                if val & 1:
                    digit = 2 - (val & 3)  # +1 or -1
                    r_out.append(r)
                    v_out.append(v)
                    s_out.append(s)
                    g_out.append(digit < 0)
                    val -= digit
                val >>= 1
                s += 1
        return (np.asarray(r_out, np.int64), np.asarray(v_out, np.int64), np.asarray(s_out, np.int64),
                np.asarray(g_out, np.bool_))
    if len(values) and (values.min() <= -(1 << 62) or values.max() >= 1 << 62):
        return _csd(rows, var, [int(v) for v in values])
    val = values.astype(np.int64).copy()
    out = []
    s = 0
    while True:
        odd = (val & 1) != 0
        if not val.any():
            break
        digit = np.where(odd, 2 - (val & 3), 0)  # +1 or -1 where odd
        if odd.any():
            out.append((rows[odd], var[odd], np.full(int(odd.sum()), s, np.int64), digit[odd] < 0))
        val = (val - digit) >> 1  # exact: val - digit is even
        s += 1
    if not out:
        return (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.bool_),)
    return tuple(np.concatenate([o[i] for o in out]).astype(t) for i, t in
                 enumerate((np.int64, np.int64, np.int64, np.bool_)))


MAX_PAIRS = 1 << 24  # term pairs one kernel call counts; a larger layer is planned in blocks of inputs
TRIES = 3  # substitution runs per (small enough) layer, each with its own tie-break: the fewest adders win
TRY_PAIRS = 1 << 19  # term pairs x tries one layer may spend on extra tries


def default_tries(n_pairs: int) -> int:
    """Tries of a layer with ``n_pairs`` term pairs: :data:`TRIES` while ``tries * n_pairs`` stays within
    :data:`TRY_PAIRS`, at least one. Greedy substitution is sensitive to ties (about 0.2 % of the adders
    between tie orders); a few tries buy that back where they are cheap. The budget is set by the benchmark
    against da4ml (``benchmarks/adders_vs_da4ml.py``): every matrix there at no more adders than da4ml and
    at least 10x less planner time; a larger layer, where a try costs seconds and the spread is relatively
    smaller, gets one."""
    return int(max(1, min(TRIES, TRY_PAIRS // max(1, n_pairs))))


def plan_terms(row_ptr, var, shift, neg, n_in: int, slack: int = 1, max_pairs: int = MAX_PAIRS,
               tries: int | None = None) -> AdderPlan:
    """Plan the adder graph of rows of terms (see :func:`terms_of`); ``tries`` substitution runs (default
    :func:`default_tries`), deterministic.

    Counting patterns costs the pairs of terms within each output (quadratic in a row's terms). Beyond
    ``max_pairs`` the inputs are split into contiguous blocks with about ``max_pairs`` pairs each (for a conv:
    groups of input channels), each block planned with sharing across all outputs, and each output's block
    results summed by a tree by level; patterns that straddle two blocks are not shared.
    """
    row_ptr, var = np.asarray(row_ptr, np.int64), np.asarray(var, np.int64)
    shift, neg = np.asarray(shift, np.int64), np.asarray(neg, np.bool_)
    n_out = len(row_ptr) - 1
    if len(var) and (int(shift.max()) >= _SHIFT_LIMIT - 8 or int(shift.min()) < 0):
        raise PlanError(f"term shifts must lie in [0, {_SHIFT_LIMIT - 8}), found [{int(shift.min())}, "
                        f"{int(shift.max())}]")
    if n_in + len(var) >= 1 << _VAR_BITS or n_out >= 1 << _ROW_BITS:
        raise PlanError(f"a lane of {n_in} inputs, {len(var)} terms and {n_out} outputs is beyond the planner's "
                        f"range (2**{_VAR_BITS} variables, 2**{_ROW_BITS} outputs)")
    if slack < 0:
        raise PlanError(f"depth slack must be >= 0, found {slack}")
    if tries is not None and tries < 1:
        raise PlanError(f"tries must be >= 1, found {tries}")
    t = np.diff(row_ptr)
    n_pairs = int((t * (t - 1) // 2).sum())
    blocks = max(1, min(n_in, -(-n_pairs // max_pairs)))
    if blocks == 1:
        sums, roots = _plan_kernel(row_ptr, var, shift, neg, int(n_in), int(slack),
                                   int(tries or default_tries(n_pairs)))
        return AdderPlan(int(n_in), sums, roots)
    # blocks of inputs: each planned on its own (local input ids), then renumbered into one plan
    edges = np.linspace(0, n_in, blocks + 1).round().astype(np.int64)
    rows = np.repeat(np.arange(n_out), t)
    all_sums, parts = [], []  # parts: per block, the global root ref of each output (or None)
    next_id = n_in
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (var >= lo) & (var < hi)
        b_ptr = np.searchsorted(rows[m], np.arange(n_out + 1)).astype(np.int64)
        bt = np.diff(b_ptr)
        sums, roots = _plan_kernel(b_ptr, var[m] - lo, shift[m], neg[m], int(hi - lo), int(slack),
                                   int(tries or default_tries(int((bt * (bt - 1) // 2).sum()))))
        nb = int(hi - lo)

        def glob(ids, lo=lo, nb=nb, base=next_id):
            return np.where(ids < nb, ids + lo, ids - nb + base)
        if len(sums):
            sums = sums.copy()
            sums[:, 0], sums[:, 2] = glob(sums[:, 0]), glob(sums[:, 2])
            all_sums.append(sums)
        parts.append([(int(glob(np.int64(r))), int(s), int(g)) if r >= 0 else None for r, s, g in roots.tolist()])
        next_id += len(sums)
    sums = np.concatenate(all_sums) if all_sums else np.zeros((0, 5), np.int64)
    plan = AdderPlan(int(n_in), sums, np.zeros((n_out, 3), np.int64))
    lv = list(plan.levels)
    extra, roots = [], np.zeros((n_out, 3), np.int64)
    for o in range(n_out):
        refs = sorted((lv[r[0]], k, r) for k, r in enumerate(p[o] for p in parts) if r is not None)
        heap = [(lev, k, r) for lev, k, r in refs]
        heapq.heapify(heap)
        tie = len(heap)
        while len(heap) > 1:
            la, _, x = heapq.heappop(heap)
            lb, _, y = heapq.heappop(heap)
            if x[2] and not y[2]:  # a positive operand first
                x, y = y, x
            base = min(x[1], y[1])
            node = next_id + len(extra)
            extra.append((x[0], x[1] - base, y[0], y[1] - base, int(x[2] != y[2])))
            lv.append(max(la, lb) + 1)
            heapq.heappush(heap, (max(la, lb) + 1, tie, (node, base, x[2])))
            tie += 1
        roots[o] = heap[0][2] if heap else (-1, 0, 0)
    if extra:
        sums = np.concatenate([sums, np.asarray(extra, np.int64)])
    return AdderPlan(int(n_in), sums, roots)


DEPTH_SLACK = 1  # adder levels an output may take beyond a balanced tree of its terms, for more sharing

_cache: OrderedDict[tuple, AdderPlan] = OrderedDict()
_CACHE_SIZE = 256


def plan_codes(codes: np.ndarray, terms: int = 1, depthwise: bool = False, slack: int = DEPTH_SLACK,
               tries: int | None = None) -> AdderPlan:
    """Plan one pixel lane of a conv/linear layer from its Po2 weight codes (``terms`` 1: the weight shape;
    else (terms, *weight shape)). Deterministic; the last plans are cached by content, since the hardware model,
    the export and its check each ask for the same layers."""
    codes = np.ascontiguousarray(codes)
    key = (hashlib.sha1(codes.astype(np.int64).tobytes()).hexdigest(), codes.shape, terms, depthwise, slack, tries)
    plan = _cache.get(key)
    if plan is None:
        row_ptr, var, shift, neg, n_in = terms_of(codes, terms, depthwise)
        plan = plan_terms(row_ptr, var, shift, neg, n_in, slack, tries=tries)
        _cache[key] = plan
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    return plan


def node_bounds(plan: AdderPlan, in_bounds: tuple[int, int]) -> list[tuple[int, int]]:
    """Interval of every node (inputs in ``in_bounds``) by interval arithmetic over the sums: the generator's
    wire sizing (exact when a sum's operands share no input, as with one-term weights; wider, never narrower,
    when a multi-term weight's digits of one input meet in a sum)."""
    vals = [tuple(map(int, in_bounds))] * plan.n_in
    for a, sa, b, sb, nb in plan.sums.tolist():
        alo, ahi = vals[a]
        blo, bhi = vals[b]
        if nb:
            blo, bhi = -bhi, -blo
        vals.append(((alo << sa) + (blo << sb), (ahi << sa) + (bhi << sb)))
    return vals


def to_json(plan: AdderPlan) -> dict:
    """design.json's ``adders`` field: flat sums (5 per sum) and roots (3 per output)."""
    return {"sums": plan.sums.reshape(-1).tolist(), "roots": plan.roots.reshape(-1).tolist()}


def matrix_terms(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The planner's terms of an integer matrix w (n_out, n_in): each entry in signed digits (CSD), as row_ptr,
    var, shift, neg (see :func:`terms_of`)."""
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.integer):
        raise PlanError(f"plan_matrix takes an integer matrix, found dtype {w.dtype}")
    oo, ii = np.nonzero(w)
    vals = w[oo, ii]
    rows, var, shift, neg = _csd(oo.astype(np.int64), ii.astype(np.int64),
                                 vals.astype(np.int64) if vals.dtype != np.uint64 else [int(v) for v in vals])
    order = np.lexsort((shift, var, rows))
    rows, var, shift, neg = rows[order], var[order], shift[order], neg[order]
    return np.searchsorted(rows, np.arange(w.shape[0] + 1)).astype(np.int64), var, shift, neg


def plan_matrix(w: np.ndarray, slack: int = 1, tries: int | None = None) -> AdderPlan:
    """Plan y = w @ x for an integer matrix w (n_out, n_in), each entry in signed digits (CSD)."""
    return plan_terms(*matrix_terms(w), np.asarray(w).shape[1], slack, tries=tries)


def naive_adders(row_ptr: np.ndarray) -> int:
    """Adders of every output summed on its own (no sharing): terms - 1 per nonempty output."""
    n = np.diff(row_ptr)
    return int(np.maximum(n - 1, 0).sum())


def min_depth(n_terms: int) -> int:
    """Adder levels of a balanced sum of ``n_terms`` terms."""
    return math.ceil(math.log2(n_terms)) if n_terms > 1 else 0
