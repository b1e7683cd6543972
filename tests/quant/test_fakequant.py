"""Rung two of the ladder: the fake-quant torch model equals the integer golden model exactly."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.quant.fakequant import fake_quant_int_outputs
from tests.helpers import random_graph, random_inputs


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1), st.integers(1, 3))
def test_fake_quant_equals_golden_on_random_graphs(gseed, xseed, max_terms):
    g = random_graph(gseed, max_terms=max_terms)
    x = random_inputs(g, 6, xseed)
    assert np.array_equal(fake_quant_int_outputs(g, x, ref.output_exp(g)), ref.run(g, x))


def test_fake_quant_equals_golden_on_the_default(default_flow):
    from hashiflex.flow import load_quantized
    from hashiflex.data import digits

    work, _ = default_flow
    g, _ = load_quantized(work)
    ds = digits()
    assert np.array_equal(fake_quant_int_outputs(g, ds.x_test, ref.output_exp(g)), ref.run(g, ds.x_test))


def test_running_activation_ranges_calibrate_exactly_like_the_recorded_activations():
    import torch

    from hashiflex.ir import Input, IRError, TensorType
    from hashiflex.models import DigitsCNN
    from hashiflex.passes import calibrate_activations, import_torch
    from hashiflex.quant.fakequant import activation_ranges, record_activations

    torch.manual_seed(3)
    g = import_torch(DigitsCNN(4, 8, 10), Input(1, 8, 8, TensorType(5, False, -4)))
    x = np.random.default_rng(2).normal(size=(50, 1, 8, 8))
    full = record_activations(g, x)
    for batch in (7, 50):
        r = activation_ranges(g, x, batch=batch)
        assert set(r) == set(full)
        for k in full:
            assert list(r[k]) == [full[k].min(), full[k].max()]
        assert calibrate_activations(g, r).layers == calibrate_activations(g, full).layers
    # batches from an iterable (a DataLoader) work the same; a NaN anywhere is kept and named by calibration
    bad = x.copy()
    bad[31, 0, 2, 2] = np.nan
    r = activation_ranges(g, iter([bad[:20], bad[20:40], bad[40:]]))
    with pytest.raises(IRError, match="calibration activations: expected finite values"):
        calibrate_activations(g, r)


def test_activation_errors_are_the_squared_requantization_errors_for_each_finer_scale():
    import torch

    from hashiflex.ir import Input, TensorType
    from hashiflex.models import DigitsCNN
    from hashiflex.passes import calibrate_activations, import_torch
    from hashiflex.quant.fakequant import activation_errors, activation_ranges, record_activations

    torch.manual_seed(3)
    g = import_torch(DigitsCNN(4, 8, 10), Input(1, 8, 8, TensorType(5, False, -4)))
    x = np.random.default_rng(2).normal(size=(50, 1, 8, 8))
    g = calibrate_activations(g, activation_ranges(g, x))
    full = record_activations(g, x)
    err = activation_errors(g, x, candidates=3, batch=7)
    assert set(err) == set(full)
    for layer in g.layers:
        if layer.name not in full:
            continue
        a = full[layer.name]
        for j in range(3):
            e = layer.out.exp - j
            lo, hi = (0, (1 << layer.out.bits) - 1) if layer.act in ("relu", "relu6") else layer.out.range
            if layer.act == "relu6":
                hi = min(hi, int(np.floor(6 / 2.0 ** e)))
            want = ((np.clip(np.floor(a / 2.0 ** e + 0.5), lo, hi) * 2.0 ** e - a) ** 2).sum()
            assert np.isclose(err[layer.name][j], want, rtol=1e-12, atol=0)
        assert err[layer.name][0] > 0  # rounding errs at every scale
    again = activation_errors(g, iter([x[:20], x[20:]]), candidates=3)
    assert all(np.allclose(again[k], err[k], rtol=1e-12, atol=0) for k in err)
    with pytest.raises(ValueError, match="activation_errors: expected candidates >= 1, found 0"):
        activation_errors(g, x, candidates=0)
