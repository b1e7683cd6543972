"""The adder-graph planner (hashiflex.adders): every plan computes exactly W x, within its depth bound."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hashiflex import adders
from hashiflex.adders import PlanError, plan_codes, plan_matrix


def _levels_ok(plan, row_terms, slack):
    lv = plan.levels
    for (node, _, _), t in zip(plan.roots.tolist(), row_terms):
        if node >= 0:
            assert lv[node] <= adders.min_depth(t) + slack


def _digits(w):
    """Signed digits (CSD) of each row of an integer matrix."""
    def csd(v):
        n = 0
        v = abs(int(v))
        while v:
            if v & 1:
                v -= 2 - (v & 3)
                n += 1
            v >>= 1
        return n
    return [sum(csd(v) for v in row) for row in w]


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 14)), elements=st.integers(-40, 40)),
       st.integers(0, 2))
def test_a_plan_computes_exactly_its_matrix_within_the_depth_bound(w, slack):
    plan = plan_matrix(w, slack)
    assert np.array_equal(plan.weights().astype(np.int64), w)
    digits = _digits(w)
    # never more adders than summing each row's digits on its own, each output within its depth bound
    assert len(plan.sums) <= sum(max(d - 1, 0) for d in digits)
    _levels_ok(plan, digits, slack)
    # operands are earlier nodes, the first never negated (the generator's canonical sum)
    ids = plan.n_in + np.arange(len(plan.sums))
    assert (plan.sums[:, 0] < ids).all() and (plan.sums[:, 2] < ids).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.integers(0, 2**31 - 1))
def test_po2_codes_plan_to_their_weights(terms, out_ch, in_ch, depthwise, seed):
    rng = np.random.default_rng(seed)
    shape = (out_ch, 1 if depthwise else in_ch, 3, 3)
    codes = rng.integers(-7, 8, size=(terms,) + shape if terms > 1 else shape)
    codes[rng.random(codes.shape) < 0.3] = 0
    plan = plan_codes(codes, terms, depthwise)
    tc = codes if terms > 1 else codes[None]
    w = (np.sign(tc) * (1 << np.maximum(np.abs(tc) - 1, 0)) * (tc != 0)).sum(axis=0).reshape(out_ch, -1)
    if depthwise:  # channel o reads inputs o * 9 ...: a block-diagonal matrix
        full = np.zeros((out_ch, out_ch * 9), dtype=np.int64)
        for o in range(out_ch):
            full[o, o * 9:(o + 1) * 9] = w[o]
        w = full
    assert np.array_equal(plan.weights(out_ch).astype(np.int64), w)


def test_repeated_patterns_are_built_once():
    # x0 + 2 x1 in every row (shifted, negated): one adder, then each row adds its own remainder
    w = np.array([[1, 2, 1, 0], [4, 8, 0, 0], [-2, -4, 0, 1], [8, 16, 0, 4]])
    plan = plan_matrix(w)
    assert np.array_equal(plan.weights().astype(np.int64), w)
    assert len(plan.sums) == 1 + 1 + 0 + 1 + 1
    # depthwise channels read disjoint inputs: nothing repeats, every row a tree of its own
    dw = np.array([[[[1, 2]]], [[[1, 2]]]])
    assert len(plan_codes(dw, 1, depthwise=True).sums) == 2


def test_depth_follows_the_terms_of_a_sparse_layer():
    # 64 inputs, but every output has 4 terms: 2 levels (+ slack), not log2(64) = 6
    rng = np.random.default_rng(0)
    w = np.zeros((16, 64), dtype=np.int64)
    for o in range(16):
        w[o, rng.choice(64, 4, replace=False)] = rng.choice([-4, -2, -1, 1, 2, 4], 4)
    plan = plan_matrix(w, slack=0)
    assert plan.depth() == 2
    assert np.array_equal(plan.weights().astype(np.int64), w)


def test_a_root_is_negative_only_when_all_its_terms_are():
    w = np.array([[-1, -2, 0], [1, -2, -4], [-1, 0, 0]])
    plan = plan_matrix(w)
    assert plan.roots[:, 2].tolist() == [1, 0, 1]
    # bias - root and root + bias are one adder; 0 - root is one too, and an empty output none
    assert plan.final_adders(np.array([0, 0, 0])).tolist() == [True, False, True]
    assert plan.final_adders(np.array([3, 3, 0])).tolist() == [True, True, True]


def test_node_bounds_are_the_exact_ranges_for_one_term_weights():
    rng = np.random.default_rng(1)
    w = rng.choice([-4, -2, -1, 0, 1, 2, 4], size=(6, 8))
    plan = plan_matrix(w)
    vals = adders.node_bounds(plan, (-3, 5))
    # an output's root interval = sum over its weights of w * [-3, 5]
    for o, (node, s, ng) in enumerate(plan.roots.tolist()):
        if node < 0:
            continue
        lo, hi = vals[node]
        lo, hi = (-(hi << s), -(lo << s)) if ng else (lo << s, hi << s)
        assert (lo, hi) == (sum(min(-3 * v, 5 * v) for v in w[o]), sum(max(-3 * v, 5 * v) for v in w[o]))


def test_plans_are_deterministic_and_cached_by_content():
    codes = np.array([[1, 2, -3], [2, 3, -4]])
    p1 = plan_codes(codes)
    assert plan_codes(codes.copy()) is p1
    adders._cache.clear()
    p2 = plan_codes(codes)
    assert p2 is not p1 and np.array_equal(p2.sums, p1.sums) and np.array_equal(p2.roots, p1.roots)


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(PlanError, match="integer matrix, found dtype float64"):
        plan_matrix(np.array([[0.5, 1.0]]))
    with pytest.raises(PlanError, match=r"depth slack must be >= 0, found -1"):
        plan_matrix(np.array([[1, 2]]), slack=-1)
    with pytest.raises(PlanError, match=r"tries must be >= 1, found 0"):
        plan_matrix(np.array([[1, 2]]), tries=0)
    with pytest.raises(PlanError, match=r"term shifts must lie in \[0, 119\), found \[0, 130\]"):
        adders.plan_terms(np.array([0, 2]), np.array([0, 1]), np.array([0, 130]), np.array([False, False]), 2)


def test_a_layer_beyond_the_pair_limit_is_planned_in_blocks_of_inputs_and_still_exact():
    rng = np.random.default_rng(3)
    w = rng.choice([-8, -2, -1, 0, 1, 4, 16], size=(12, 40))
    one = plan_matrix(w)
    row_ptr, var, shift, neg = adders.matrix_terms(w)
    blocked = adders.plan_terms(row_ptr, var, shift, neg, 40, max_pairs=500)
    assert np.array_equal(blocked.weights().astype(np.int64), w)
    # sharing within blocks only: more adders than one block, fewer than none at all
    assert len(one.sums) <= len(blocked.sums) < sum(max(d - 1, 0) for d in _digits(w))
    ids = blocked.n_in + np.arange(len(blocked.sums))
    assert (blocked.sums[:, 0] < ids).all() and (blocked.sums[:, 2] < ids).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2 ** 62) + 1, 2 ** 62 - 1), min_size=1, max_size=40))
def test_signed_digits_vectorized_equal_the_integer_path_and_are_nonadjacent(values):
    idx = np.arange(len(values), dtype=np.int64)
    fast = adders._csd(idx, idx * 3, np.array(values, np.int64))
    slow = adders._csd(idx, idx * 3, [int(v) for v in values])

    def digits(t):
        return sorted(zip(t[0].tolist(), t[1].tolist(), t[2].tolist(), t[3].tolist()))

    assert digits(fast) == digits(slow)
    for j, v in enumerate(values):  # each value is its digits' sum, no two digits adjacent (the fewest digits)
        mine = [(s, g) for r, _, s, g in digits(fast) if r == j]
        assert sum(-(1 << s) if g else 1 << s for s, g in mine) == v
        pos = sorted(s for s, _ in mine)
        assert all(b - a >= 2 for a, b in zip(pos, pos[1:]))


def _cost(plan):
    return len(plan.sums) + int(((plan.roots[:, 0] >= 0) & (plan.roots[:, 2] == 1)).sum())


@settings(max_examples=30, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(2, 10), st.integers(2, 16)), elements=st.integers(-64, 64)),
       st.integers(2, 6))
def test_more_tries_never_cost_more_adders_and_each_is_exact(w, tries):
    one, more = plan_matrix(w, tries=1), plan_matrix(w, tries=tries)
    assert np.array_equal(more.weights().astype(np.int64), w)
    assert _cost(more) <= _cost(one)
    # the first try is the untied run: its plan is kept where no later try is strictly better
    again = plan_matrix(w, tries=tries)
    assert np.array_equal(again.sums, more.sums) and np.array_equal(again.roots, more.roots)


def test_tries_differ_in_their_tie_breaks_and_the_default_follows_the_layer_size():
    rng = np.random.default_rng(11)
    w = rng.choice([-1, 1], size=(48, 96)) << rng.integers(0, 7, size=(48, 96))
    costs = {_cost(plan_matrix(w, tries=k)) for k in (1, 2, 4, 8)}
    assert len(costs) > 1  # the salted tie-breaks explore different plans (and the best is kept)
    assert adders.default_tries(10) == adders.TRIES
    assert adders.default_tries(adders.TRY_PAIRS) == 1 and adders.default_tries(10 * adders.TRY_PAIRS) == 1
    assert adders.default_tries(adders.TRY_PAIRS // 2) == min(adders.TRIES, 2)
