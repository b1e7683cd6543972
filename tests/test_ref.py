"""The golden model against a direct loop-nest reference, and its input checks."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.ir import Conv2d
from hashiflex.numfmt import codes_to_int_weights
from tests.helpers import random_graph, random_inputs


def _conv_loops(x, wint, bias, s, pads):
    """pads: (top, bottom, left, right)."""
    n, c, h, w = x.shape
    o, _, k, _ = wint.shape
    top, bottom, left, right = pads
    oh, ow = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
    y = np.zeros((n, o, oh, ow), dtype=object)
    for b in range(n):
        for oc in range(o):
            for i in range(oh):
                for j in range(ow):
                    acc = int(bias[oc])
                    for ic in range(c):
                        for di in range(k):
                            for dj in range(k):
                                r, q = i * s - top + di, j * s - left + dj
                                if 0 <= r < h and 0 <= q < w:
                                    acc += int(x[b, ic, r, q]) * int(wint[oc, ic, di, dj])
                    y[b, oc, i, j] = acc
    return y


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.booleans())
def test_conv_matches_loop_nest(seed, asym_pad):
    """Symmetric and per-side (TF 'SAME', ZeroPad2d) padding."""
    g = random_graph(seed, convs=1, head=False, asym_pad=asym_pad)
    conv = g.layers[0]
    assert isinstance(conv, Conv2d)
    x = random_inputs(g, 3, seed)
    got = ref.conv2d_int(x, codes_to_int_weights(conv.q.codes), conv.bias_int, conv.stride, conv.padding)
    assert np.array_equal(got, _conv_loops(x, codes_to_int_weights(conv.q.codes), conv.bias_int, conv.stride,
                                           conv.pads).astype(np.int64))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3))
def test_activations_stay_inside_annotated_bounds(seed, max_terms):
    from hashiflex.passes import annotate

    g = random_graph(seed, max_terms=max_terms)
    x = random_inputs(g, 8, seed)
    _, acts = ref.run(g, x, trace=True)
    for info in annotate(g):
        a = acts[info.name]
        assert info.out_bounds[0] <= a.min() and a.max() <= info.out_bounds[1], info.name


def test_input_out_of_range_is_refused():
    g = random_graph(1)
    lo, hi = g.input.type.range
    x = random_inputs(g, 2, 0)
    x[0, 0, 0, 0] = hi + 1
    with pytest.raises(ValueError, match=r"input: values must lie in"):
        ref.run(g, x)
    with pytest.raises(ValueError, match=r"input: expected shape"):
        ref.run(g, x[:, :, :1])
