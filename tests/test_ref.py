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


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.booleans(), st.booleans())
def test_the_torch_path_computes_the_int64_model_bit_for_bit(seed, max_terms, asym_pad, dag):
    """run's default path (torch float kernels on digit planes, exact by the bounds) == the NumPy int64 spec,
    outputs and every traced activation."""
    g = random_graph(seed, max_terms=max_terms, asym_pad=asym_pad, dag=dag, convs=3 if dag else None)
    x = random_inputs(g, 4, seed)
    assert ref.run_torch(g, x) is not None
    y, acts = ref.run(g, x, trace=True)
    y_np, acts_np = ref.run(g, x, trace=True, fast=False)
    assert y.dtype == y_np.dtype == np.int64 and np.array_equal(y, y_np)
    assert acts.keys() == acts_np.keys() and all(np.array_equal(acts[k], acts_np[k]) for k in acts)


def test_weight_planes_rebuild_the_weights_and_keep_every_sum_below_2_to_24():
    rng = np.random.default_rng(0)
    w = rng.integers(-(1 << 20), 1 << 20, size=(6, 64, 3, 3))
    b, planes = ref.weight_parts(255, w)
    assert len(planes) > 1  # one plane would overflow float32's 24 bits
    assert np.array_equal(sum(p << (b * j) for j, p in enumerate(planes)), w)
    for p in planes:
        assert np.all(np.abs(p) < 1 << b) and 255 * np.abs(p).reshape(6, -1).sum(1).max() < 1 << 24
    assert ref.weight_parts(1 << 23, w) is None  # no split is exact: run falls back to NumPy


def test_a_layer_no_float32_split_proves_exact_runs_in_float64_and_beyond_2_to_53_in_numpy():
    from hashiflex.ir import Graph, Input, Linear, Po2Weights, SumPool, TensorType

    def graph(in_bits):  # weights of 2**30 units (6-bit codes) on inputs summed over 64 pixels
        codes = np.full((2, 3), 31)
        return Graph("big", Input(3, 8, 8, TensorType(in_bits, True, 0)), [
            SumPool("pool"), Linear("fc", np.zeros((2, 3)), np.zeros(2), Po2Weights(codes, 0, 6),
                                    np.zeros(2, np.int64))])

    for in_bits in (16, 24):
        x = np.full((2, 3, 8, 8), -(1 << (in_bits - 1)))
        want = np.full((2, 2), 3 * 64 * -(1 << (in_bits - 1)) * (1 << 30))
        g = graph(in_bits)
        assert np.array_equal(ref.run(g, x, fast=False), want)
        if in_bits == 16:  # 2**21 inputs times 2**30: no 4 float32 planes are exact, the sum stays below 2**53
            assert np.array_equal(ref.run_torch(g, x), want)
        else:  # 2**29 times 2**30: past float64's 53 bits, only int64 is exact
            assert ref.run_torch(g, x) is None and np.array_equal(ref.run(g, x), want)
