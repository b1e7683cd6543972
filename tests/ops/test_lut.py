"""lut: activations as exact lookup tables on the quantized input (golden == torch == fake-quant, the table is
the function rounded), their import, design.json, and the refusals."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.export import design_from_graph, validate_design
from hashiflex.export.design import DesignValidationError
from hashiflex.ir import Graph, Input, IRError, Requant, TensorType
from hashiflex.ops import Lut
from hashiflex.ops.lut import FUNCTIONS
from hashiflex.passes import annotate, import_torch
from hashiflex.quant.fakequant import fake_quant_int_outputs
from tests.helpers import import_and_quantize, random_inputs


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(FUNCTIONS)), st.integers(2, 8), st.booleans(), st.integers(-6, 0), st.integers(2, 9),
       st.integers(-8, 0), st.integers(0, 2 ** 32 - 1))
def test_the_table_is_the_function_rounded_and_every_rung_agrees(act, bits, signed, in_exp, out_bits, out_exp, seed):
    g = Graph("lut", Input(2, 3, 4, TensorType(bits, signed, in_exp)),
              [Lut("f", act, TensorType(out_bits, FUNCTIONS[act][1], out_exp))])
    info = annotate(g)[0]
    x = random_inputs(g, 3, seed)
    y = ref.run(g, x, fast=False)
    lo, hi = g.layers[0].clamp()
    f = {"hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "silu": F.silu, "sigmoid": torch.sigmoid,
         "tanh": torch.tanh, "gelu": F.gelu}[act]
    want = np.clip(np.floor(f(torch.tensor(x * 2.0 ** in_exp)).numpy() / 2.0 ** out_exp + 0.5), lo, hi)
    assert np.array_equal(y, want.reshape(3, -1).astype(np.int64))
    assert np.array_equal(ref.run(g, x), y)                                  # the torch path
    assert np.array_equal(fake_quant_int_outputs(g, x, info.out_exp), y)     # the fake-quant model
    table = g.layers[0].table(in_exp, info.in_bounds)
    assert len(table) == info.in_bounds[1] - info.in_bounds[0] + 1
    assert info.out_bounds == (table.min(), table.max())


def test_a_wide_input_and_an_unknown_function_are_refused():
    g = Graph("lut", Input(1, 2, 2, TensorType(13, True, -6)), [Lut("f", "silu", TensorType(8, True, -5))])
    with pytest.raises(IRError, match=r"layer 'f': field 'in_bounds': a lookup table is built for at most 4096 input "
                                      r"values, found \[-4096, 4095\] \(8192\)"):
        annotate(g)
    with pytest.raises(IRError, match=r"layer 'f': field 'act': expected one of gelu, hardsigmoid, .* found 'swish'"):
        Lut("f", "swish")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.act1, self.c2, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Hardswish(), nn.Conv2d(3, 4, 1), \
            nn.Linear(4, 3)

    def forward(self, x):
        x = F.silu(self.c2(self.act1(self.c1(x)))).tanh()
        return self.fc(torch.sigmoid(x).mean((2, 3)))


def test_import_maps_every_spelling_and_quantizes_bit_exact():
    torch.manual_seed(0)
    m = Net().eval()
    g, q = import_and_quantize(m, Input(2, 5, 5, TensorType(8, False, -8)), calib=16)
    assert [l.act for l in g.layers if isinstance(l, Lut)] == ["hardswish", "silu", "tanh", "sigmoid"]
    # a conv before a lookup gets a requantize point: the table reads a narrow quantized value
    k = next(i for i, l in enumerate(g.layers) if isinstance(l, Lut))
    assert isinstance(g.layers[k - 1], Requant)
    assert [l.out.signed for l in g.layers if isinstance(l, Lut)] == [True, True, True, False]
    d = design_from_graph(q)
    k = next(i for i, l in enumerate(d["layers"]) if l["op"] == "lut")
    assert len(d["layers"][k]["table"]) == d["layers"][k]["in_bounds"][1] - d["layers"][k]["in_bounds"][0] + 1
    assert isinstance(validate_design(d).layers[k], Lut)
    d["layers"][k]["table"][0] += 1
    with pytest.raises(DesignValidationError, match=rf"design\.layers\[{k}\]\.table"):
        validate_design(d)


def test_gelus_tanh_approximation_is_refused():
    with pytest.raises(IRError, match=r"module '0' \(GELU\): expected GELU\(approximate='none'\)"):
        import_torch(nn.Sequential(nn.GELU(approximate="tanh")), Input(1, 2, 2, TensorType(8, False, -8)))
