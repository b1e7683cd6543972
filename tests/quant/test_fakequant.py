"""Rung two of the ladder: the fake-quant torch model equals the integer golden model exactly."""
import numpy as np
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.quant.fakequant import fake_quant_int_outputs
from tests.helpers import random_graph, random_inputs


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1))
def test_fake_quant_equals_golden_on_random_graphs(gseed, xseed):
    g = random_graph(gseed)
    x = random_inputs(g, 6, xseed)
    assert np.array_equal(fake_quant_int_outputs(g, x, ref.output_exp(g)), ref.run(g, x))


def test_fake_quant_equals_golden_on_the_default(default_flow):
    from hashiflex.flow import load_quantized
    from hashiflex.data import digits

    work, _ = default_flow
    g, _ = load_quantized(work)
    ds = digits()
    assert np.array_equal(fake_quant_int_outputs(g, ds.x_test, ref.output_exp(g)), ref.run(g, ds.x_test))
