"""The stream contract: images <-> ready/valid beats (P pixels of a row per beat, lane p*C + c)."""
import numpy as np
from hypothesis import given, strategies as st

from hashiflex.sim.stream import from_beats, to_beats


@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 2, 3, 6]), st.integers(1, 9), st.booleans(),
       st.integers(0, 2 ** 31))
def test_beats_round_trip(n, c, w, h, signed, seed):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(1, 12))
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    x = rng.integers(lo, hi + 1, size=(n, c, h, w))
    for par in [d for d in range(1, w + 1) if w % d == 0]:
        beats = to_beats(x, par, width)
        assert beats.shape == (n * h * w // par, par * c)
        assert beats.min() >= 0 and beats.max() < (1 << width)
        assert np.array_equal(from_beats(beats, (c, h, w), par, width, signed), x)


def test_a_beat_holds_consecutive_pixels_of_a_row():
    x = np.arange(2 * 2 * 4).reshape(1, 2, 2, 4)  # C=2, H=2, W=4
    beats = to_beats(x, 2, 8)
    # first beat: pixels (0,0) and (0,1), each with both channels
    assert beats[0].tolist() == [x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 0, 0, 1], x[0, 1, 0, 1]]
