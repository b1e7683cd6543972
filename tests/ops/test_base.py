"""The exact-arithmetic rules op definitions share: SplitAcc's float32 requantization == Python integers."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from hashiflex.ops.base import EXACT_F32, SplitAcc, requant_bounds


def _exact(planes, bias, s, clamp):
    """The spec in Python integers: clamp(floor((sum_j q_j 2**shift_j + bias + 2**(s-1)) / 2**s))."""
    acc = sum(q.astype(object) * (1 << shift) for shift, q, _ in planes) + bias.astype(object).reshape(1, -1)
    return np.vectorize(lambda v: requant_bounds((v, v), s, clamp)[0], otypes=[object])(acc)


@st.composite
def split_cases(draw):
    n_planes = draw(st.integers(1, 3))
    shifts = sorted(draw(st.lists(st.integers(0, 20), min_size=n_planes, max_size=n_planes, unique=True)))
    channels = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    planes = []
    for shift in shifts:
        b = draw(st.sampled_from([1, 7, 255, 1 << 12, (1 << 23) - 1, 1 << 23]))
        q = rng.integers(-b, b + 1, size=(6, channels))
        q[0], q[1] = b, -b  # the bounds' ends occur
        planes.append((shift, q, b))
    bias = rng.integers(-(1 << draw(st.integers(0, 40))), 1 << draw(st.integers(0, 40)), size=channels)
    s = draw(st.integers(1, 40))
    lo = draw(st.integers(-300, 0))
    return planes, bias, s, (lo, lo + draw(st.integers(0, 600)))


@settings(max_examples=300, deadline=None)
@given(split_cases())
def test_split_requant_is_exact_whenever_it_answers(case):
    planes, bias, s, clamp = case
    guard = sum(b << shift for shift, _, b in planes) + int(np.abs(bias).max())
    acc = SplitAcc([(shift, torch.from_numpy(q.astype(np.float32)), b) for shift, q, b in planes], bias, guard)
    want = _exact(planes, bias, s, clamp)
    if guard < 1 << 53:
        dense = sum(q.astype(object) * (1 << shift) for shift, q, _ in planes) + bias.astype(object)
        assert np.array_equal(acc.dense().double().numpy().astype(object), dense)
    got = acc.requant(s, clamp)
    if got is not None:
        assert got.dtype == torch.float32
        assert np.array_equal(got.double().numpy().astype(np.int64).astype(object), want)


def test_split_requant_takes_the_float32_path_where_a_mobilenet_layer_needs_it():
    """Two 7-bit planes of a pointwise layer on 8-bit inputs: the sum needs 2**27, the requantized value 8 bits."""
    rng = np.random.default_rng(1)
    planes = [(0, rng.integers(-(1 << 16), 1 << 16, size=(4, 32, 5, 5)), 1 << 16),
              (7, rng.integers(-(1 << 20), 1 << 20, size=(4, 32, 5, 5)), 1 << 20)]
    planes[0][1][0, 0, 0, 0], planes[1][1][0, 0, 0, 0] = 1 << 16, 1 << 20
    bias = rng.integers(-(1 << 25), 1 << 25, size=32)
    guard = (1 << 16) + (1 << 27) + (1 << 25)
    assert guard >= EXACT_F32
    acc = SplitAcc([(sh, torch.from_numpy(q.astype(np.float32)), b) for sh, q, b in planes], bias, guard)
    for s in (5, 7, 12, 20):  # below, at and above the upper plane's shift
        got = acc.requant(s, (0, 255))
        assert got is not None and got.dtype == torch.float32
        want = _exact([(sh, q.reshape(-1, 32 * 25), b) for sh, q, b in planes],
                      np.repeat(bias, 25), s, (0, 255)).reshape(4, 32, 5, 5)
        assert np.array_equal(got.numpy().astype(np.int64).astype(object), want)
    assert acc.requant(0, (0, 255)) is None  # no rounding shift: the caller sums in float64
