"""Po2 rounding against calibration data (quant.reconstruct): the patches are the layer's receptive fields, the
weights end on the layer's grid in the quantizer's format, the output error falls, pruned weights stay zero,
and a trained MobileNetV2-structured network keeps more of its float agreement than with nearest rounding."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hashiflex import ref
from hashiflex.ir import Conv2d, Input, IRError, Linear, TensorType
from hashiflex.models import DigitsCNN
from hashiflex.passes import calibrate_activations, import_torch, quantize_weights
from hashiflex.ops.conv2d import conv2d_torch
from hashiflex.quant.fakequant import activation_ranges, fake_quant_int_outputs
from hashiflex.quant.po2 import po2_fake_quant_torch, po2_terms_fake_quant_torch, quantize_po2, terms_range
from hashiflex.quant.reconstruct import (_patches, _rounder, codes_of, hessians, reconstruct, reconstruct_layer,
                                         round_columns)
from tests.helpers import float_agreement


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.sampled_from([1, 3]), st.integers(1, 2),
       st.sampled_from([0, 1, (0, 1, 0, 1), (1, 0, 2, 1)]), st.booleans(), st.integers(0, 2 ** 31 - 1))
def test_patches_times_weights_is_the_convolution(c_in, c_out, k, stride, padding, depthwise, seed):
    rng = np.random.default_rng(seed)
    if depthwise:
        c_out = c_in
    w = rng.normal(size=(c_out, 1 if depthwise else c_in, k, k))
    layer = Conv2d("c", w, np.zeros(c_out), stride, padding, groups=c_in if depthwise else 1)
    x = torch.as_tensor(rng.normal(size=(2, c_in, 7, 6)))
    y = conv2d_torch(x, torch.as_tensor(w), None, layer)  # N, O, H, W
    p = _patches(x, layer)
    if layer.depthwise:  # one channel is a dense conv  # (channels, rows, k*k): row r of channel c is output pixel r of channel c
        got = torch.einsum("crj,cj->cr", p, torch.as_tensor(w.reshape(c_out, -1)))
        want = y.permute(1, 0, 2, 3).reshape(c_out, -1)
    else:
        got = p @ torch.as_tensor(w.reshape(c_out, -1)).T
        want = y.permute(0, 2, 3, 1).reshape(-1, c_out)
    assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("terms", [1, 2, 3])
def test_uncorrelated_inputs_round_to_nearest(terms):
    """With H diagonal no error feeds forward: the rounding is the quantizer's own, weight by weight."""
    rng = np.random.default_rng(terms)
    w = torch.as_tensor(rng.normal(size=(6, 10)) * 0.3)
    h = torch.diag(torch.as_tensor(rng.uniform(0.5, 2.0, size=10)))
    rnd = _rounder(5, terms, -8)
    assert torch.equal(round_columns(w, h, rnd), rnd(w))


def _correlated(rng, n_in, rows=400):
    base = rng.normal(size=(rows, 3))
    return base @ rng.normal(size=(3, n_in)) + 0.3 * rng.normal(size=(rows, n_in))


@pytest.mark.parametrize("terms", [1, 2])
def test_the_output_error_falls_and_every_weight_is_on_the_grid(terms):
    rng = np.random.default_rng(7)
    x = _correlated(rng, 24)
    w = rng.normal(size=(8, 24)) * 0.2
    layer = Linear("fc", w, np.zeros(8))
    h = torch.as_tensor(x.T @ x)
    e_min = quantize_po2(w, 5)[1] if terms == 1 else terms_range(w, 5, terms)
    near = _rounder(5, terms, e_min)(torch.as_tensor(w)).numpy()
    rec = reconstruct_layer(layer, w, h, 5, terms, e_min)
    err = lambda v: float(np.sum(((v - w) @ x.T) ** 2))
    assert err(rec) < 0.8 * err(near), (err(rec), err(near))
    # on the grid, in the quantizer's format: decoding the codes gives the values back exactly
    c = codes_of(rec, 5, terms, e_min)
    from hashiflex.ir import Po2Weights

    assert np.array_equal(Po2Weights(c, e_min, 5, terms).float_weights(), rec)
    again = (po2_fake_quant_torch(torch.as_tensor(rec), 5, e_min)[0] if terms == 1 else
             po2_terms_fake_quant_torch(torch.as_tensor(rec), 5, terms, e_min)[0]).numpy()
    assert np.array_equal(again, rec)  # the fake-quant model rounds them to themselves


def test_pruned_weights_stay_zero():
    rng = np.random.default_rng(3)
    x = _correlated(rng, 16)
    w = rng.normal(size=(5, 16)) * 0.2
    w[rng.random(w.shape) < 0.5] = 0.0
    rec = reconstruct_layer(Linear("fc", w, np.zeros(5)), w, torch.as_tensor(x.T @ x), 5, 2, -10)
    assert np.all(rec[w == 0] == 0)


def test_the_survivors_compensate_for_the_pruned_weights():
    rng = np.random.default_rng(5)
    x = _correlated(rng, 16)
    dense = rng.normal(size=(5, 16)) * 0.2
    keep = np.abs(dense) > np.median(np.abs(dense))
    layer, h = Linear("fc", dense, np.zeros(5)), torch.as_tensor(x.T @ x)
    pruned = np.where(keep, dense, 0.0)
    alone = reconstruct_layer(layer, pruned, h, 5, 2, -10)          # the pruned weights are just gone
    comp = reconstruct_layer(layer, dense, h, 5, 2, -10, keep=keep)  # their error is fed onto the survivors
    assert np.all(comp[~keep] == 0) and np.all(alone[~keep] == 0)
    err = lambda v: float(np.sum(((v - dense) @ x.T) ** 2))
    assert err(comp) < 0.8 * err(alone), (err(comp), err(alone))


def _small_net():
    torch.manual_seed(1)
    g = import_torch(DigitsCNN(6, 8, 10), Input(1, 8, 8, TensorType(5, False, -4)))
    x = np.round(np.random.default_rng(4).random((64, 1, 8, 8)) * 16) / 16
    return calibrate_activations(g, activation_ranges(g, x)), x


def test_hessians_are_the_layer_inputs_second_moments():
    g, x = _small_net()
    h = hessians(g, x, batch=16)
    first = g.layers[0]
    p = _patches(torch.as_tensor(x), first)
    assert torch.allclose(h[first.name], p.T @ p)
    assert set(h) == {l.name for l in g.layers if isinstance(l, (Conv2d, Linear))}


def test_reconstruct_changes_only_codes_and_keeps_the_ladder_exact():
    g, x = _small_net()
    q = quantize_weights(g, 3)
    r = reconstruct(g, q, x)
    for a, b in zip(q.layers, r.layers):
        if isinstance(a, (Conv2d, Linear)):
            assert a.q.e_min == b.q.e_min and a.q.bits == b.q.bits and np.array_equal(a.bias_int, b.bias_int)
    assert any(not np.array_equal(a.q.codes, b.q.codes) for a, b in zip(q.layers, r.layers)
               if isinstance(a, (Conv2d, Linear)))
    xi = np.round(x * 16).astype(np.int64)
    assert np.array_equal(ref.run(r, xi), fake_quant_int_outputs(r, xi, ref.output_exp(r)))


def test_reconstruct_refuses_a_mismatched_pair_and_missing_data():
    g, x = _small_net()
    with pytest.raises(IRError, match="reconstruct: expects the float graph and its quantized version"):
        reconstruct(g, g, x)
    q = quantize_weights(g, 3)
    with pytest.raises(IRError, match=r"reconstruct: needs calibration images \(x_value\) or their Hessians"):
        reconstruct(g, q)
    h = hessians(g, x)
    del h[g.layers[0].name]
    with pytest.raises(IRError, match=rf"layer '{g.layers[0].name}': reconstruct: no Hessian for this layer"):
        reconstruct(g, q, h=h)


@pytest.mark.slow
def test_a_trained_network_keeps_more_of_its_float_agreement_than_with_nearest_rounding(trained_mini):
    """The figure this guards: on a trained MobileNetV2-structured network, Po2 weights rounded against
    calibration data give logits closer to the float model's than nearest rounding on held-out images (1 and 2
    terms), and, where one-term rounding loses agreement, agree with the float model more often."""
    from hashiflex.flow import Config, layer_bits
    from hashiflex.quant.fakequant import FakeQuantNet

    g, ds = trained_mini
    bits = layer_bits(g, Config(weight_bits=4, edge_bits=8))
    agreement = float_agreement(g, ds)
    with torch.no_grad():
        f = FakeQuantNet(g, quantize=False).double().eval()(torch.as_tensor(ds.value(ds.x_test))).numpy()
    for terms in (1, 2):
        near = quantize_weights(g, bits, terms)
        rec = reconstruct(g, near, ds.value(ds.x_train[:256]))
        out_exp = ref.output_exp(near)
        mse = lambda q: float(np.mean((ref.run(q, ds.x_test) * 2.0 ** out_exp - f) ** 2))
        assert mse(rec) < mse(near), (terms, mse(near), mse(rec))
        if terms == 1:
            a_near, a_rec = agreement(near), agreement(rec)
            assert a_rec > a_near, (a_near, a_rec)
