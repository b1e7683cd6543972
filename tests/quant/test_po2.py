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
