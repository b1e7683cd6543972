"""pyverilog netlist inspection: hierarchy, adders and registers per module, cross-checked with hw_params."""
import copy

import pytest

from hashiflex import hw
from hashiflex.hw import HwMismatchError
from hashiflex.report.hierarchy import check_netlist, cross_check, format_hierarchy, inspect_verilog, instance_counts

pytestmark = [pytest.mark.slow, pytest.mark.mill]


@pytest.fixture(scope="module")
def default_netlist(default_flow):
    work, _ = default_flow
    p = hw.read_hw_params(work / "rtl")
    return inspect_verilog(work / "rtl" / p["verilog"]), p


def test_default_netlist_agrees_with_hw_params(default_netlist):
    mods, p = default_netlist
    assert cross_check(mods, p) == ([], [])  # exact: nothing folded, nothing extra
    n = instance_counts(mods, p["top"])
    assert n[p["top"]] == 1 and sum(1 for m in n if m.startswith("ShiftAddLane_")) == 3
    text = format_hierarchy(mods, p["top"])
    assert p["top"] in text and "ShiftAddLane_conv2" in text
    assert all(m.multipliers == 0 for m in mods.values())


@pytest.mark.parametrize("field, layer, delta, message", [
    ("adders", "conv2", -1, "layer 'conv2': 3268 adders in the Verilog, hw_params 3267"),
    ("register_bits", "fc", -8, "layer 'fc': 744 register bits in the lanes in the Verilog, hw_params 736"),
    ("parallelism", "conv1", -1, "layer 'conv1': 1 lane instances in the Verilog, hw_params 0"),
    ("adders", "relu1", -1, "layer 'relu1': 16 adders in the Verilog, hw_params 15"),
    ("adders", "relu1", 1, "FOLDED layer 'relu1': 16 adders in the Verilog of 17 modelled"),
])
def test_more_than_modelled_is_an_error_naming_the_layer(default_netlist, field, layer, delta, message):
    mods, p = default_netlist
    bad = copy.deepcopy(p)
    l = next(x for x in bad["layers"] if x["name"] == layer)
    l[field] += delta
    errors, folded = cross_check(mods, bad)
    if message.startswith("FOLDED "):
        assert errors == [] and any(message[7:] in d for d in folded), folded
    else:
        assert any(message in d for d in errors), errors
        with pytest.raises(HwMismatchError, match=message.split(":")[0]):
            if errors:
                raise HwMismatchError("\n".join(errors))


def test_a_missing_layer_instance_is_an_error(default_netlist):
    mods, p = default_netlist
    bad = copy.deepcopy(p)
    bad["layers"].append(dict(bad["layers"][0], name="ghost"))
    assert any("layer 'ghost': no instance named after it" in d for d in cross_check(mods, bad)[0])


def test_unrolled_and_dag_designs_never_exceed_the_model(elaborated):
    for g, d, p, rtl in elaborated:
        mods = check_netlist(rtl / p["verilog"], p)  # raises where the Verilog has more than modelled
        folded = " ".join(cross_check(mods, p)[1])
        lanes = {l["name"]: l["parallelism"] for l in p["layers"] if l["op"] in ("conv2d", "linear")
                 and f"layer {l['name']!r}" not in folded}  # random zero weights: dead lanes are folded away
        top = mods[p["top"]]
        for name, par in lanes.items():
            assert sum(n for k, n in mods[top.instances[name]].children.items() if k.startswith("ShiftAddLane_")) == par
