"""Per-layer fidelity: SQNR/cosine through the network and one layer's weights at a time."""
from dataclasses import replace

import numpy as np
import pytest

from hashiflex.ir import Input, IRError, Po2Weights, TensorType
from hashiflex.models import DigitsCNN
from hashiflex.passes import calibrate_activations, import_torch, quantize_weights
from hashiflex.quant.fakequant import record_activations
from hashiflex.quant.fidelity import format_fidelity, layer_fidelity, weight_sensitivity

IN = Input(1, 8, 8, TensorType(5, False, -4))


@pytest.fixture(scope="module")
def pair():
    import torch

    torch.manual_seed(0)
    g = import_torch(DigitsCNN(4, 8, 10), IN)
    x = np.round(np.random.default_rng(0).random((64, 1, 8, 8)) * 16) / 16
    g = calibrate_activations(g, record_activations(g, x))
    return g, quantize_weights(g, 6), x


def test_every_requant_point_and_the_output_is_reported(pair):
    g, q, x = pair
    rows = layer_fidelity(g, q, x, batch=16)
    assert [r.layer for r in rows] == ["relu1", "relu2", "output"]
    assert all(np.isfinite(r.sqnr_db) and 0 < r.cosine <= 1 + 1e-12 for r in rows)
    assert 0 <= rows[-1].agreement <= 1
    # batching changes nothing (running sums)
    assert [r.sqnr_db for r in layer_fidelity(g, q, x, batch=64)] == pytest.approx([r.sqnr_db for r in rows])
    text = format_fidelity(rows, "t")
    assert "relu1" in text and "<- lowest" in text


def test_a_layer_whose_weights_are_damaged_is_the_one_that_loses_most(pair):
    g, q, x = pair
    bad = q.copy()
    i = next(k for k, l in enumerate(bad.layers) if l.name == "conv2")
    l = bad.layers[i]
    bad.layers[i] = replace(l, q=Po2Weights(-l.q.codes, l.q.e_min, l.q.bits))  # every sign flipped
    alone = {r.layer: r for r in weight_sensitivity(g, bad, x)}
    assert set(alone) == {"conv1", "conv2", "fc"}
    assert min(alone.values(), key=lambda r: r.sqnr_db).layer == "conv2"
    good = {r.layer: r for r in weight_sensitivity(g, q, x)}
    assert alone["conv2"].sqnr_db < good["conv2"].sqnr_db - 3  # the damaged layer alone costs more
    assert alone["conv1"].sqnr_db == pytest.approx(good["conv1"].sqnr_db)  # the others are measured unchanged
    through = {r.layer: r for r in layer_fidelity(g, bad, x)}
    assert through["relu2"].sqnr_db < through["relu1"].sqnr_db  # the damage starts at conv2
    assert through["relu2"].cosine < 0.5
    assert through["relu1"].sqnr_db == pytest.approx(layer_fidelity(g, q, x)[0].sqnr_db)


def test_graphs_that_do_not_match_are_refused_naming_the_layer(pair):
    g, q, x = pair
    other = q.copy()
    other.layers[1] = replace(other.layers[1], name="renamed")
    with pytest.raises(IRError, match=r"fidelity: the float and quantized graphs differ at layer 1 \('relu1' vs "
                                      r"'renamed'\)"):
        layer_fidelity(g, other, x)
    with pytest.raises(IRError, match="the second graph is not quantized"):
        weight_sensitivity(g, g, x)
