"""max_pool2d: the IR rule, the golden functions (NumPy spec == torch == torch's own max_pool2d), import."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.export import design_from_graph, validate_design
from hashiflex.ir import Graph, Input, IRError, TensorType
from hashiflex.ops import MaxPool2d
from hashiflex.passes import annotate, hw_model, import_torch
from hashiflex.quant.fakequant import FakeQuantNet, fake_quant_int_outputs
from tests.helpers import import_and_quantize


def _pool_graph(c, h, w, k, s, pads, signed, bits):
    g = Graph("mp", Input(c, h, w, TensorType(bits, signed, -3)), [MaxPool2d("pool", k, s, pads)])
    annotate(g)
    return g


@st.composite
def pools(draw):
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = draw(st.integers(1, 4))
    pads = tuple(draw(st.integers(0, k - 1)) for _ in range(4))
    pool = MaxPool2d("pool", k, draw(st.integers(1, 3)), pads)
    if not pool.fits(h, w):
        pool = MaxPool2d("pool", 1, 1, 0)
    return c, h, w, pool, draw(st.booleans()), draw(st.integers(2, 8))


@settings(max_examples=60, deadline=None)
@given(pools(), st.integers(0, 2 ** 32 - 1))
def test_golden_is_torchs_max_pool_with_minus_infinity_padding(p, seed):
    c, h, w, pool, signed, bits = p
    g = _pool_graph(c, h, w, pool.kernel, pool.stride, pool.pads, signed, bits)
    lo, hi = g.input.type.range
    x = np.random.default_rng(seed).integers(lo, hi + 1, size=(3, c, h, w))
    t, b, l, r = pool.pads
    want = F.max_pool2d(F.pad(torch.tensor(x, dtype=torch.float64), (l, r, t, b), value=float("-inf")),
                        pool.kernel, pool.stride).numpy().astype(np.int64).reshape(3, -1)
    assert np.array_equal(ref.run(g, x, fast=False), want)
    assert np.array_equal(ref.run(g, x), want)  # the torch path
    assert np.array_equal(fake_quant_int_outputs(g, x, g.input.type.exp), want)
    info = annotate(g)[0]
    assert info.out_bounds == g.input.type.range and info.out_exp == g.input.type.exp


def test_padding_alone_is_refused_and_the_kernel_must_fit():
    with pytest.raises(IRError, match=r"layer 'p': field 'padding': expected less than the kernel 2"):
        MaxPool2d("p", 2, 1, (0, 2, 0, 0))
    g = Graph("mp", Input(1, 2, 2, TensorType(4, False, 0)), [MaxPool2d("p", 3, 1, (0, 0, 1, 0))])
    with pytest.raises(IRError, match=r"layer 'p': kernel 3, stride 1, padding \(0, 0, 1, 0\) do not fit 2x2"):
        annotate(g)


def test_hw_model_counts_comparators_and_stages():
    g = _pool_graph(4, 8, 8, 3, 2, 1, False, 8)
    m = hw_model(g, levels_per_stage=2)[0]
    assert m.comparators == 4 * 8 and m.adders == 0   # 9 taps: 8 comparators per channel and pixel
    assert m.stages == 3                              # the inputs, then ceil(log2 9) = 4 levels, 2 per stage
    assert (m.beats_in, m.beats_out) == (64, 16)


def test_design_json_round_trip_and_bad_fields_name_the_field():
    g = _pool_graph(2, 6, 6, 3, 2, (0, 1, 0, 1), True, 5)
    d = design_from_graph(g)
    layer = d["layers"][0]
    assert (layer["op"], layer["kernel"], layer["stride"], layer["padding"]) == ("max_pool2d", 3, 2, [0, 1, 0, 1])
    back = validate_design(d)
    assert isinstance(back.layers[0], MaxPool2d) and back.layers[0].pads == (0, 1, 0, 1)
    d["layers"][0]["stride"] = 1
    with pytest.raises(ValueError, match=r"design\.layers\[0\]\.out_shape"):
        validate_design(d)


class _ResNetStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = F.max_pool2d(self.pool(torch.relu(self.bn(self.conv(x)))), 2)
        return self.fc(x.mean((2, 3)))


def test_import_maps_max_pools_ceil_mode_and_mean_exactly():
    torch.manual_seed(0)
    m = _ResNetStem().eval()
    _, q = import_and_quantize(m, Input(3, 15, 15, TensorType(8, False, -8)), seed=1)
    pools = [l for l in q.layers if isinstance(l, MaxPool2d)]
    assert [(p.kernel, p.stride) for p in pools] == [(3, 2), (2, 2)]
    assert pools[0].pads == (1, 2, 1, 2)  # ceil mode: one more row and column of (never winning) padding


@pytest.mark.parametrize("flatten", ["method", "view", "reshape", "module", "function"])
def test_every_spelling_of_flatten_imports(flatten):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.flat, self.fc = nn.Conv2d(2, 3, 3), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(3, 2)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            x = {"method": lambda: x.flatten(1), "view": lambda: x.view(x.size(0), -1),
                 "reshape": lambda: x.reshape(x.shape[0], -1), "module": lambda: self.flat(x),
                 "function": lambda: torch.flatten(x, 1)}[flatten]()
            return self.fc(x)

    m = Net().eval()
    g = import_torch(m, Input(2, 6, 6, TensorType(8, False, -8)))
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64)
    assert torch.allclose(FakeQuantNet(g, quantize=False).double()(x), m.double()(x), atol=1e-12)


def test_a_mean_over_channels_and_a_partial_average_pool_are_refused():
    class Mean(nn.Module):
        def forward(self, x):
            return x.mean(1)

    with pytest.raises(IRError, match=r"node 'mean' \(method \.mean\(\)\): a mean is supported over H and W"):
        import_torch(Mean(), Input(2, 4, 4, TensorType(8, False, -8)))
    with pytest.raises(IRError, match=r"module '0' \(AvgPool2d\): an average pool is supported over the whole 4x4"):
        import_torch(nn.Sequential(nn.AvgPool2d(2)), Input(2, 4, 4, TensorType(8, False, -8)))
