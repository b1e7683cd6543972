"""concat: the IR rule (exponents aligned to the finest), golden == torch.cat, import of torch.cat, design.json."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.export import design_from_graph, validate_design
from hashiflex.export.design import DesignValidationError
from hashiflex.ir import Graph, Input, IRError, Requant, TensorType
from hashiflex.ops import Concat
from hashiflex.passes import annotate, hw_model, import_torch
from hashiflex.quant.fakequant import fake_quant_int_outputs
from tests.helpers import import_and_quantize, random_inputs


def _graph(c, h, w, shifts, signed):
    """The input, and requantized copies of it at other exponents, concatenated."""
    t = TensorType(5, signed, -2)
    layers = [Requant(f"r{i}", "none" if signed else "relu", TensorType(6, signed, -2 + s), src="input")
              for i, s in enumerate(shifts)]
    layers.append(Concat("cat", tuple(l.name for l in layers[1:]) + ("input",), src=layers[0].name))
    return Graph("cat", Input(c, h, w, t), layers)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.lists(st.integers(-2, 3), min_size=1, max_size=3),
       st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_golden_is_torch_cat_of_the_aligned_operands(c, h, w, shifts, signed, seed):
    g = _graph(c, h, w, shifts, signed)
    infos = {i.name: i for i in annotate(g)}
    cat = infos["cat"]
    exps = [infos[f"r{i}"].out_exp for i in range(len(shifts))] + [g.input.type.exp]
    assert cat.out_exp == min(exps) and cat.out_shape == (c * (len(shifts) + 1), h, w)
    x = random_inputs(g, 3, seed)
    y, tr = ref.run(g, x, trace=True, fast=False)
    ops = [tr[f"r{i}"] for i in range(len(shifts))] + [x]
    ordered = [ops[0], *ops[1:]]
    want = torch.cat([torch.tensor(a * 2.0 ** e) for a, e in zip(ordered, exps)], dim=1).numpy() / 2.0 ** cat.out_exp
    assert np.array_equal(y, want.reshape(3, -1).astype(np.int64))
    assert np.array_equal(ref.run(g, x), y)  # the torch path
    assert np.array_equal(fake_quant_int_outputs(g, x, cat.out_exp), y)
    assert cat.out_bounds[0] <= y.min() and y.max() <= cat.out_bounds[1]


def test_operands_of_another_size_are_refused_naming_them():
    from hashiflex.ops import MaxPool2d

    g = Graph("c", Input(1, 4, 4, TensorType(4, False, 0)), [MaxPool2d("pool", 2, 2), Concat("cat", ("input",), src="pool")])
    with pytest.raises(IRError, match=r"layer 'cat': field 'inputs': expected every operand of height x width 2x2 "
                                      r"\(like 'pool'\), found 4x4 from 'input'"):
        annotate(g)
    with pytest.raises(IRError, match=r"layer 'c': field 'inputs': expected at least two operands"):
        Concat("c", ())


class Fire(nn.Module):
    """SqueezeNet's Fire module: squeeze 1x1, then 1x1 and 3x3 expands concatenated."""
    def __init__(self):
        super().__init__()
        self.squeeze, self.e1, self.e3 = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 1), nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)


def test_import_of_a_fire_module_computes_what_torch_computes_and_quantizes_bit_exact():
    torch.manual_seed(0)
    m = nn.Sequential(Fire(), nn.Conv2d(7, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    # the float IR computes what torch computes: the average pool ends the network after conv -> ReLU, its 1/36
    # went into that conv
    _, q = import_and_quantize(m, Input(3, 6, 6, TensorType(8, False, -8)))
    cats = [l for l in q.layers if isinstance(l, Concat)]
    assert len(cats) == 1 and len(cats[0].extra) == 1
    assert [m.adders for m in hw_model(q, 2) if m.op == "concat"] == [0]  # wiring
    d = design_from_graph(q)
    (cat,) = [l for l in d["layers"] if l["op"] == "concat"]
    assert cat["inputs"][0] == cat["src"] and len(cat["inputs"]) == 2
    assert isinstance(validate_design(d).layer(cat["name"]), Concat)
    cat["inputs"] = cat["inputs"][::-1]
    with pytest.raises(DesignValidationError, match=r"design\.layers\[\d+\]\.inputs: expected the operands in "
                                                    r"channel order, starting with src"):
        validate_design(d)


def test_a_concatenation_along_another_dim_is_refused():
    class Cat(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], 2)

    with pytest.raises(IRError, match=r"node 'cat' \(function cat\): a concatenation is supported along channels"):
        import_torch(Cat(), Input(2, 4, 4, TensorType(8, False, -8)))
