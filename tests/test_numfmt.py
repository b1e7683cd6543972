import numpy as np
import pytest
from hypothesis import given, strategies as st

from hashiflex.numfmt import codes_to_int_weights, int_range, requant, width_for


def _requant_ref(x: int, s: int, lo: int, hi: int) -> int:
    """Python big-int reference: round half up of x / 2**s, then clamp."""
    if s > 0:
        num, den = 2 * x + (1 << s), 1 << (s + 1)  # floor((x + 2**(s-1)) / 2**s) without shifts
        y = num // den
    else:
        y = x * (1 << -s)
    return max(lo, min(hi, y))


@given(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=20), st.integers(-8, 30),
       st.integers(1, 16), st.booleans())
def test_requant_matches_bigint_reference(xs, s, bits, signed):
    lo, hi = int_range(bits, signed)
    got = requant(np.array(xs), s, lo, hi)
    assert got.tolist() == [_requant_ref(x, s, lo, hi) for x in xs]


def test_requant_rounds_half_up_at_the_extremes():
    # -2.5 -> -2, -1.5 -> -1, 1.5 -> 2, 2.5 -> 3 (half up, not to even, not away from zero)
    assert requant(np.array([-5, -3, 3, 5]), 1, -100, 100).tolist() == [-2, -1, 2, 3]
    assert requant(np.array([-(1 << 62), (1 << 62) - 1]), 62, -10, 10).tolist() == [-1, 1]


@given(st.integers(-(1 << 50), 1 << 50), st.integers(0, 1 << 50))
def test_width_holds_interval_and_is_minimal(a, span):
    lo, hi = a, a + span
    w, signed = width_for(lo, hi)
    rlo, rhi = int_range(w, signed)
    assert rlo <= lo and hi <= rhi
    if w > 1:
        slo, shi = int_range(w - 1, signed)
        assert lo < slo or hi > shi


def test_width_rejects_empty_interval():
    with pytest.raises(ValueError, match="empty interval"):
        width_for(3, 2)


def test_codes_decode_to_signed_powers_of_two():
    assert codes_to_int_weights(np.array([0, 1, -1, 3, -4])).tolist() == [0, 1, -1, 4, -8]
