import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashiflex.data import digits
from hashiflex.ir import IRError
from hashiflex.models import DigitsCNN
from hashiflex.passes import calibrate_activations, import_torch, quantize_weights
from hashiflex.quant.fakequant import record_activations
from hashiflex.quant.prune import magnitude_masks, prune, sparsity_schedule, weight_sparsity
from hashiflex.train import train_qat


@pytest.fixture(scope="module")
def graph():
    import torch

    torch.manual_seed(0)
    return import_torch(DigitsCNN(8, 16), digits().input)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.0, 0.95), st.sampled_from(["global", "layer"]))
def test_pruning_hits_the_requested_sparsity(graph, s, scope):
    pruned = prune(graph, s, scope)
    layers = [l for l in pruned.layers if hasattr(l, "weight")]
    total = sum(l.weight.size for l in layers)
    zeros = sum(int((l.weight == 0).sum()) for l in layers)
    if scope == "global":
        assert zeros == round(s * total)
    else:
        assert zeros == sum(round(s * l.weight.size) for l in layers)


def test_global_pruning_removes_the_smallest_weights(graph):
    masks = magnitude_masks(graph, 0.5)
    kept = np.concatenate([np.abs(l.weight)[masks[l.name] > 0] for l in graph.layers if l.name in masks])
    gone = np.concatenate([np.abs(l.weight)[masks[l.name] == 0] for l in graph.layers if l.name in masks])
    assert gone.max() <= kept.min()


def test_excluded_layers_keep_their_weights(graph):
    masks = magnitude_masks(graph, 0.9, exclude=("conv1",))
    assert "conv1" not in masks and masks  # the others are pruned, conv1 is not
    assert all((m == 0).mean() > 0.5 for m in masks.values())


def test_bad_sparsity_is_refused(graph):
    with pytest.raises(IRError, match=r"sparsity: expected a fraction in \[0, 1\), found 1.5"):
        magnitude_masks(graph, 1.5)


def test_schedule_ramps_to_the_target():
    vals = [sparsity_schedule(0.8, t, 10) for t in range(12)]
    assert vals[0] == 0.0 and vals[10] == pytest.approx(0.8) and vals[11] == pytest.approx(0.8)
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_qat_with_pruning_exports_the_sparsity(graph):
    ds = digits()
    g = calibrate_activations(graph, record_activations(graph, ds.value(ds.x_train[:200])), 8)
    out = train_qat(g, ds, 5, epochs=2, sparsity=0.5, progress=False)
    q = quantize_weights(out, 5)
    assert weight_sparsity(q) >= 0.5


def test_training_resumes_from_a_checkpoint_to_the_same_result(tmp_path):
    import torch
    from hashiflex.train import _fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 6)).astype(np.float32), rng.integers(0, 3, 256)

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(6, 3)

    full = model()
    _fit(full, x, y, 4, 1e-2, 0, "full", progress=False)

    class Stop(Exception):
        pass

    def crash(epoch):
        if epoch == 2:
            raise Stop

    ck = tmp_path / "fit.ck"
    with pytest.raises(Stop):
        _fit(model(), x, y, 4, 1e-2, 0, "crashing", progress=False, on_epoch=crash, checkpoint=ck)
    resumed = model()
    _fit(resumed, x, y, 4, 1e-2, 0, "resumed", progress=False, checkpoint=ck)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
