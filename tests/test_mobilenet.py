"""MobileNetV2 through the IR: import (fx), BN folding, residual adds, depthwise convs, the golden ladder."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from hashiflex import ref
from hashiflex.ir import Add, Conv2d, Input, Requant, TensorType
from hashiflex.models import mobilenet_v2
from hashiflex.passes import annotate, calibrate_activations, import_torch, quantize_weights
from hashiflex.quant.fakequant import FakeQuantNet, fake_quant_int_outputs, record_activations
from hashiflex.quant.fold import fold_bn

CIFAR_IN = Input(3, 32, 32, TensorType(8, False, -8))


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model.eval()


@pytest.fixture(scope="module")
def mnv2():
    torch.manual_seed(0)
    return _randomize_bn(mobilenet_v2(0.35, 10, cifar=True))


def test_bn_folding_is_exact():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    bn = _randomize_bn(nn.BatchNorm2d(5)).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w, b = fold_bn(conv.weight.detach().numpy(), conv.bias.detach().numpy(), bn.weight.detach().numpy(),
                   bn.bias.detach().numpy(), bn.running_mean.numpy(), bn.running_var.numpy(), bn.eps)
    folded = torch.nn.functional.conv2d(x, torch.tensor(w), torch.tensor(b), padding=1)
    assert torch.allclose(folded, bn(conv(x)), rtol=1e-12, atol=1e-12)


def test_import_maps_every_layer_of_mobilenet_v2(mnv2):
    g = import_torch(mnv2, CIFAR_IN, "mnv2")
    convs = [l for l in g.layers if isinstance(l, Conv2d)]
    assert len(convs) == 52  # stem + 17 blocks (the first has no expansion) + last 1x1
    assert sum(c.depthwise for c in convs) == 17
    assert sum(isinstance(l, Add) for l in g.layers) == 10  # residual connections
    # every linear bottleneck got a signed requant point
    assert sum(isinstance(l, Requant) and l.act == "none" for l in g.layers) == 17
    infos = annotate(g, require_quantized=False)
    assert infos[-1].out_shape == (10, 1, 1)
    # the float IR computes what torch computes (BN folded, pool average folded)
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    got = FakeQuantNet(g, quantize=False).double().eval()(x)
    assert torch.allclose(got, mnv2.double()(x), rtol=1e-9, atol=1e-9)
    mnv2.float()


def test_golden_equals_fake_quant_on_mobilenet_v2_035(mnv2):
    g = import_torch(mnv2, CIFAR_IN, "mnv2")
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, size=(16, 3, 32, 32))
    g = calibrate_activations(g, record_activations(g, calib * 2.0 ** -8), 8)
    q = quantize_weights(g, {l.name: (8 if l.name in ("features.0.0", "classifier.1") else 5)
                             for l in g.layers if hasattr(l, "weight")})
    x = rng.integers(0, 256, size=(6, 3, 32, 32))
    x[0] = 0
    x[1] = 255
    gold = ref.run(q, x)
    assert np.array_equal(gold, fake_quant_int_outputs(q, x, ref.output_exp(q)))
    assert np.abs(gold).max() > 0  # not a network that outputs zeros whatever it sees


def test_sums_wider_than_float32_are_requantized_exactly_in_the_golden_torch_path(mnv2):
    """3-term weights make most accumulators need more than float32's 24 bits: their planes are requantized in
    float32 (ops.base.SplitAcc) and every traced activation equals the int64 NumPy spec."""
    from hashiflex.ops import base

    g = import_torch(mnv2, CIFAR_IN, "mnv2")
    rng = np.random.default_rng(1)
    g = calibrate_activations(g, record_activations(g, rng.integers(0, 256, size=(16, 3, 32, 32)) * 2.0 ** -8), 8)
    q = quantize_weights(g, 5, 3)
    wide = [n for n, p in ref.Golden(q).plan.items() if getattr(p, "guard", 0) >= base.EXACT_F32]
    assert len(wide) > 10
    x = rng.integers(0, 256, size=(5, 3, 32, 32))
    x[0], x[1] = 0, 255
    y, acts = ref.run(q, x, trace=True)
    y_np, acts_np = ref.run(q, x, trace=True, fast=False)
    assert np.array_equal(y, y_np) and all(np.array_equal(acts[k], acts_np[k]) for k in acts_np)
    fused = []
    real = base.SplitAcc.requant
    try:  # the untraced run takes the float32 path for the wide sums
        base.SplitAcc.requant = lambda self, s, c: fused.append(real(self, s, c) is not None) or real(self, s, c)
        assert np.array_equal(ref.Golden(q).run(x), y_np)
    finally:
        base.SplitAcc.requant = real
    assert len(fused) >= len(wide) - 1 and all(fused)


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.mill
def test_reduced_mobilenet_v2_runs_bit_exact_in_rtl_at_its_ii(work_root):
    """A reduced MobileNetV2 (width 0.35, 32x32 CIFAR-style, three stages: depthwise strides, residual adds,
    ReLU6, linear bottlenecks) unrolled to 256 cycles/image (4 pixels per beat at 32x32): generator ->
    Verilator == golden model, bit for bit, images back to back at the modelled II."""
    from hashiflex import hw
    from hashiflex.export import design_from_graph, write_design
    from hashiflex.flow import quantize_ptq
    from hashiflex.models import mobilenet_v2_mini
    from hashiflex.passes import initiation_interval
    from hashiflex.sim import StreamSim
    from tests.conftest import require_tool

    require_tool("verilator")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, size=(32, 3, 32, 32))
    g = quantize_ptq(_randomize_bn(mobilenet_v2_mini(0.35, 10)), CIFAR_IN, "mnv2_mini", calib * 2.0 ** -8)
    assert sum(isinstance(l, Add) for l in g.layers) == 2 and sum(getattr(l, "depthwise", False) for l in g.layers) == 5
    d = design_from_graph(g, levels_per_stage=4, target_ii=256)
    base = work_root / "mnv2_mini"
    write_design(d, base / "design.json")
    params = hw.elaborate(base / "design.json", base / "rtl", quiet=True)
    hw.check_hw_params(g, params, 4, 256)
    assert params["ii_cycles_per_image"] == initiation_interval(g, 256) == 256
    assert params["input_parallelism"] == 4
    x = rng.integers(0, 256, size=(8, 3, 32, 32))
    x[0], x[1] = 0, 255
    res = StreamSim(base / "rtl", params, d).run(x, progress=False)
    gold = ref.run(g, x)
    assert int((res.outputs != gold).any(axis=1).sum()) == 0
    assert res.cycles_per_image == 256
