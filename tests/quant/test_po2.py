import numpy as np
import torch
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from hashiflex.numfmt import codes_to_float, max_code
from hashiflex.quant.po2 import MAX_SPAN, po2_fake_quant_torch, quantize_po2, span

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


@given(arrays(np.float32, st.integers(1, 64), elements=finite), st.integers(2, 8))
def test_every_nonzero_weight_is_a_signed_power_of_two_in_range(w, bits):
    codes, e_min = quantize_po2(w, bits)
    assert np.abs(codes).max(initial=0) <= max_code(bits)
    q = codes_to_float(codes, e_min)
    nz = q != 0
    e = np.log2(np.abs(q[nz]))
    # each kept weight is its own exponent rounded in the log domain (not only some power of two)
    assert np.array_equal(e, np.floor(np.log2(np.abs(w[nz]).astype(np.float64)) + 0.5))
    assert np.all((e >= e_min) & (e <= e_min + span(bits) - 1))
    assert np.all(np.sign(q[nz]) == np.sign(w[nz]))
    # the range covers the layer's weights: the largest weight keeps its (rounded) exponent as the top code
    if np.abs(w).max() > 0:
        e_top = np.floor(np.log2(np.abs(w).max()) + 0.5)
        assert np.abs(q).max() == 2.0 ** e_top
        assert np.abs(codes).max() == min(e_top - e_min + 1, span(bits))


@given(arrays(np.float32, st.integers(1, 64), elements=finite), st.integers(2, 8))
def test_quantizer_is_idempotent(w, bits):
    codes, e_min = quantize_po2(w, bits)
    q = codes_to_float(codes, e_min)
    codes2, e_min2 = quantize_po2(q, bits)
    assert np.array_equal(codes_to_float(codes2, e_min2), q)


@given(arrays(np.float32, st.integers(1, 64), elements=finite), st.integers(2, 8))
def test_torch_and_numpy_quantizers_agree(w, bits):
    codes, e_min = quantize_po2(w.astype(np.float64), bits)
    qt, e_min_t = po2_fake_quant_torch(torch.tensor(w, dtype=torch.float64), bits)
    assert int(e_min_t) == e_min
    assert np.array_equal(qt.detach().numpy(), codes_to_float(codes, e_min))


def test_span_is_capped():
    w = 2.0 ** -np.arange(0, 60)
    codes, e_min = quantize_po2(w, 8)
    assert e_min == -(MAX_SPAN - 1) and np.count_nonzero(codes) == MAX_SPAN


def test_range_is_no_wider_than_the_weights_need():
    codes, e_min = quantize_po2(np.array([1.0, 0.5, -0.25]), 8)
    assert e_min == -2 and codes.tolist() == [3, 2, -1]


def test_nearest_exponent_in_log_domain_and_zero_below_range():
    codes, e_min = quantize_po2(np.array([1.0, 0.75, 0.70, -0.3, 2 ** -20]), 3)  # 3 exponents: 2^-2..2^0
    assert e_min == -2
    assert codes_to_float(codes, e_min).tolist() == [1.0, 1.0, 0.5, -0.25, 0.0]


def test_straight_through_gradient():
    w = torch.tensor([0.3, -0.7, 1.2], requires_grad=True)
    q, _ = po2_fake_quant_torch(w, 4)
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones(3))


# ------------------------------------------------------------------------------------------ multi-term
def _all_sums(span_: int, terms: int) -> dict[int, int]:
    """Brute force: every integer t signed powers of two 2**j (j < span_) sum to -> the fewest terms doing it."""
    import itertools

    steps = [0] + [s << j for j in range(span_) for s in (1, -1)]
    best: dict[int, int] = {}
    for combo in itertools.product(steps, repeat=terms):
        v, k = sum(combo), sum(1 for c in combo if c)
        best[v] = min(best.get(v, terms), k)
    return best


@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-4, 4, allow_nan=False)), st.integers(2, 4),
       st.integers(1, 3))
def test_multi_term_weights_are_the_nearest_sum_with_the_fewest_terms(w, bits, terms):
    from hashiflex.quant.po2 import quantize_po2_terms

    codes, e_min = quantize_po2_terms(w, bits, terms)
    assert codes.shape == (terms,) + w.shape and np.abs(codes).max(initial=0) <= span(bits)
    value = codes_to_float(codes, e_min).sum(axis=0)
    best = _all_sums(span(bits), terms)
    reachable = np.array(sorted(v for v in best if v >= 0), dtype=np.float64) * 2.0 ** e_min
    for wi, qi, ci in zip(w, value, codes.T):
        # nearest (a tie to the smaller magnitude), with the weight's sign
        d = np.abs(reachable - abs(wi))
        assert abs(qi) == reachable[np.flatnonzero(d == d.min())[0]]
        assert qi == 0 or np.sign(qi) == np.sign(wi)
        # written with the fewest nonzero terms, larger ones first
        n = int(np.count_nonzero(ci))
        assert n == best[int(round(abs(qi) / 2.0 ** e_min))]
        assert list(np.abs(ci[:n])) == sorted(np.abs(ci[:n]), reverse=True) and not ci[n:].any()


@given(arrays(np.float64, st.integers(1, 64), elements=st.floats(-4, 4, allow_nan=False)), st.integers(3, 6))
def test_more_terms_never_round_worse_and_torch_rounds_the_same(w, bits):
    from hashiflex.quant.po2 import po2_terms_fake_quant_torch, quantize_po2_terms

    _, e_min = quantize_po2_terms(w, bits, 3)
    errs = []
    for k in (1, 2, 3):
        codes, e = quantize_po2_terms(w, bits, k, e_min=e_min)
        q = codes_to_float(codes, e).sum(axis=0)
        errs.append(float(np.abs(q - w).max()))
        t, te = po2_terms_fake_quant_torch(torch.tensor(w), bits, k, e_min)
        assert np.array_equal(t.numpy(), q) and int(te) == e_min
        # idempotent: a representable weight stays itself (the exported graph's fake-quant is exact)
        assert np.array_equal(po2_terms_fake_quant_torch(t, bits, k, e_min)[0].numpy(), q)
    assert errs[0] >= errs[1] >= errs[2]


def test_multi_term_range_is_the_one_of_least_error():
    from hashiflex.quant.po2 import _round_terms, term_values, terms_range

    w = np.random.default_rng(0).standard_t(3, size=500) * 0.05
    levels = term_values(span(5), 2)
    e_min = terms_range(w, 5, 2, levels)

    def err(e):
        return (((_round_terms(np.abs(w), e, levels) * 2.0 ** e) - np.abs(w)) ** 2).sum()
    assert err(e_min) <= min(err(e_min - 1), err(e_min + 1))


def test_too_many_terms_for_the_table_is_a_clear_error():
    import pytest

    from hashiflex.quant.po2 import quantize_po2_terms

    with pytest.raises(ValueError, match=r"weights.terms: 6 terms over 32 exponents"):
        quantize_po2_terms(np.ones(3), 8, 6)
