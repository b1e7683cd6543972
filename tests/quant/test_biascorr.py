"""Bias correction: the mean output error each layer's Po2 rounding causes is taken out of its bias."""
import numpy as np
import pytest
import torch

from hashiflex import ref
from hashiflex.ir import Input, IRError, TensorType
from hashiflex.models import DigitsCNN
from hashiflex.passes import annotate, calibrate_activations, import_torch, quantize_weights
from hashiflex.quant.biascorr import bias_correction
from hashiflex.quant.fakequant import FakeQuantNet, activation_ranges, fake_quant_int_outputs


def _mean_error(g, q, x):
    """Per output channel of the first layer: the mean of (Po2 weights - float weights) applied to x."""
    import torch.nn.functional as F

    from hashiflex.numfmt import codes_to_float

    f, l = g.layers[0], q.layers[0]
    xt = torch.as_tensor(x)
    y = F.conv2d(xt, torch.as_tensor(codes_to_float(l.q.codes, l.q.e_min)), torch.as_tensor(l.bias_int * 2.0 ** (
        q.input.type.exp + l.q.e_min)), padding=f.padding)
    yf = F.conv2d(xt, torch.as_tensor(f.weight), torch.as_tensor(f.bias), padding=f.padding)
    return (y - yf).mean(dim=(0, 2, 3)).numpy()


def test_bias_correction_removes_the_mean_error_and_keeps_the_ladder_exact():
    torch.manual_seed(1)
    g = import_torch(DigitsCNN(6, 8, 10), Input(1, 8, 8, TensorType(5, False, -4)))
    x = np.round(np.random.default_rng(4).random((96, 1, 8, 8)) * 16) / 16
    g = calibrate_activations(g, activation_ranges(g, x))
    q = quantize_weights(g, 3)  # coarse weights: a visible mean shift
    c = bias_correction(g, q, x, batch=32)
    before, after = np.abs(_mean_error(g, q, x)), np.abs(_mean_error(g, c, x))
    step = 2.0 ** (q.input.type.exp + q.layers[0].q.e_min)  # the bias is quantized: residue < half a step
    assert (after <= step / 2 + 1e-9).all() and after.sum() < before.sum()
    assert all((a.q.codes == b.q.codes).all() for a, b in zip(q.layers, c.layers) if hasattr(a, "q") and a.q)
    annotate(c)
    xi = np.round(x * 16).astype(np.int64)
    assert np.array_equal(ref.run(c, xi), fake_quant_int_outputs(c, xi, ref.output_exp(c)))
    # the output moves towards the float network's
    fy = FakeQuantNet(g, quantize=False).double()(torch.as_tensor(x)).detach().numpy()
    err = lambda h: np.abs(FakeQuantNet(h).double()(torch.as_tensor(x)).detach().numpy().mean(0) - fy.mean(0)).sum()
    assert err(c) < err(q)


def test_bias_correction_needs_the_matching_pair():
    torch.manual_seed(1)
    g = import_torch(DigitsCNN(2, 2, 3), Input(1, 8, 8, TensorType(5, False, -4)))
    with pytest.raises(IRError, match="bias_correction: expects the float graph and its quantized version"):
        bias_correction(g, g, np.zeros((1, 1, 8, 8)))
