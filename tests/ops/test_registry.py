"""The op registry: every layer type has one definition, and every dispatch raises on a type it does not know."""
from dataclasses import dataclass

import numpy as np
import pytest

from hashiflex import ref
from hashiflex.analysis import live_channels
from hashiflex.export import design_from_graph
from hashiflex.export.design import DesignValidationError, graph_from_design
from hashiflex.ir import Graph, Input, IRError, TensorType
from hashiflex.ops import OPS, op_named, op_of
from hashiflex.passes import annotate, hw_model
from hashiflex.quant.fakequant import FakeQuantNet
from tests.helpers import random_graph


@dataclass
class Mystery:
    name: str
    src: str | None = None


def _graph():
    return Graph("m", Input(1, 4, 4, TensorType(4, False, 0)), [Mystery("what")])


UNKNOWN = (r"layer 'what': unknown layer type Mystery \(known: " + ", ".join(sorted(t.__name__ for t in OPS)) +
           r"\); define it in hashiflex/ops")


@pytest.mark.parametrize("site", [
    pytest.param(lambda g: annotate(g, require_quantized=False), id="annotate"),
    pytest.param(lambda g: hw_model(g, 2), id="hw_model"),
    pytest.param(lambda g: design_from_graph(g), id="design_from_graph"),
    pytest.param(lambda g: ref.run(g, np.zeros((1, 1, 4, 4), dtype=np.int64), fast=False), id="golden_numpy"),
    pytest.param(lambda g: ref.run(g, np.zeros((1, 1, 4, 4), dtype=np.int64)), id="golden_torch"),
    pytest.param(lambda g: FakeQuantNet(g, quantize=False), id="fake_quant"),
    pytest.param(lambda g: live_channels(g), id="live_channels"),
])
def test_an_unknown_layer_type_fails_loudly_at_every_site(site):
    with pytest.raises(IRError, match=UNKNOWN):
        site(_graph())


def test_an_unknown_op_in_design_json_names_the_field_and_the_known_ops():
    d = design_from_graph(random_graph(3))
    d["layers"][0]["op"] = "mystery"
    known = ", ".join(f"'{op.op}'" for op in sorted(OPS.values(), key=lambda o: o.op))
    with pytest.raises(DesignValidationError, match=rf"design\.layers\[0\]\.op: expected one of {known}, found "
                                                    r"'mystery'"):
        graph_from_design(d)


def test_every_op_is_registered_once_under_its_name_and_type():
    assert sorted(op.op for op in OPS.values()) == ["add", "channel_select", "concat", "conv2d", "linear", "lut",
                                                    "max_pool2d", "requant", "sum_pool"]
    for t, op in OPS.items():
        assert op.layer_type is t and op_named(op.op) is op
    g = random_graph(5, dag=True, convs=3, max_pool=True)
    assert all(op_of(l) is OPS[type(l)] for l in g.layers)
