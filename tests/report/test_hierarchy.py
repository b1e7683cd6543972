"""pyverilog netlist inspection: hierarchy, adders and registers per module, cross-checked with hw_params."""
import copy
import re

import pytest

from hashiflex import hw
from hashiflex.hw import HwMismatchError
from hashiflex.report.hierarchy import check_netlist, cross_check, format_hierarchy, inspect_verilog, instance_counts

pytestmark = [pytest.mark.slow, pytest.mark.mill]


@pytest.fixture(scope="module")
def default_netlist(default_flow):
    work, _ = default_flow
    p = hw.read_hw_params(work / "rtl")
    p["_verilog_path"] = work / "rtl" / p["verilog"]
    return inspect_verilog(p["_verilog_path"]), p


def _verilog_figures(mods, p, name):
    """What the Verilog holds for layer ``name`` (lanes, adders, lane register bits), counted from the netlist:
    the expectations below come from the design under test, never from one training run."""
    inst = mods[mods[p["top"]].instances[name]]
    lanes = {k: n for k, n in inst.children.items() if k.startswith("ShiftAddLane_")}
    adders = sum(mods[k].adders * n for k, n in instance_counts(mods, inst.name).items())
    if lanes:
        adders = sum(mods[k].adders * n for k, n in lanes.items())
    return {"parallelism": sum(lanes.values()), "adders": adders,
            "register_bits": sum(mods[k].register_bits * n for k, n in lanes.items())}


def test_default_netlist_agrees_with_hw_params(default_netlist):
    mods, p = default_netlist
    errors, folded = cross_check(mods, p)
    assert errors == []
    # what firtool folded (a channel constant after training, say) is reported, and only ever less than modelled
    for l in p["layers"]:
        have = _verilog_figures(mods, p, l["name"])
        if l["op"] in ("conv2d", "linear"):
            assert have["parallelism"] == l["parallelism"]
            for f in ("adders", "register_bits"):
                assert have[f] <= l[f]
                assert (have[f] < l[f]) == any(f"layer {l['name']!r}: {have[f]} " in d for d in folded), (l, have)
    n = instance_counts(mods, p["top"])
    assert n[p["top"]] == 1
    weight_layers = [l["name"] for l in p["layers"] if l["op"] in ("conv2d", "linear")]
    assert sum(1 for m in n if m.startswith("ShiftAddLane_")) == len(weight_layers)
    text = format_hierarchy(mods, p["top"])
    assert p["top"] in text and "ShiftAddLane_conv2" in text
    assert all(m.multipliers == 0 for m in mods.values())


@pytest.mark.parametrize("field, layer, delta, message", [
    ("adders", "conv2", -1, "layer 'conv2': {have} adders in the Verilog, hw_params {want}"),
    ("register_bits", "fc", -8, "layer 'fc': {have} register bits in the lanes in the Verilog, hw_params {want}"),
    ("parallelism", "conv1", -1, "layer 'conv1': {have} lane instances in the Verilog, hw_params {want}"),
    ("adders", "requant", -1, "layer '{layer}': {have} adders in the Verilog, hw_params {want}"),
    ("adders", "requant", 1, "FOLDED layer '{layer}': {have} adders in the Verilog of {want} modelled"),
])
def test_more_than_modelled_is_an_error_naming_the_layer(default_netlist, field, layer, delta, message):
    mods, p = default_netlist
    if layer == "requant":  # a requant layer that rounds (shift > 0: one adder per channel and lane)
        layer = next(l["name"] for l in p["layers"] if l["op"] == "requant" and l["adders"] > 0)
    have = _verilog_figures(mods, p, layer)[field]
    bad = copy.deepcopy(p)
    l = next(x for x in bad["layers"] if x["name"] == layer)
    l[field] = have + delta  # the model says one less (an error) or one more (folded) than the Verilog holds
    want = message.format(layer=layer, have=have, want=have + delta)
    errors, folded = cross_check(mods, bad)
    if want.startswith("FOLDED "):
        assert errors == []
        assert any(want[7:] in d for d in folded), folded
    else:
        assert any(want in d for d in errors), errors
        with pytest.raises(HwMismatchError, match=re.escape(want)):
            check_netlist(p["_verilog_path"], bad)


def test_a_missing_layer_instance_is_an_error(default_netlist):
    mods, p = default_netlist
    bad = copy.deepcopy(p)
    bad["layers"].append(dict(bad["layers"][0], name="ghost"))
    assert any("layer 'ghost': no instance named after it" in d for d in cross_check(mods, bad)[0])


def test_unrolled_and_dag_designs_never_exceed_the_model(elaborated):
    checked = 0
    for g, d, p, rtl in elaborated:
        mods = check_netlist(rtl / p["verilog"], p)  # raises where the Verilog has more than modelled
        folded = " ".join(cross_check(mods, p)[1])
        # lanes per layer as design.json asks for them (the unroll pass's choice), not as hw_params reports them
        lanes = {l["name"]: l["parallelism"] for l in d["layers"] if l["op"] in ("conv2d", "linear")
                 and f"layer {l['name']!r}" not in folded}  # random zero weights: dead lanes are folded away
        top = mods[p["top"]]
        for name, par in lanes.items():
            assert sum(n for k, n in mods[top.instances[name]].children.items() if k.startswith("ShiftAddLane_")) == par
            checked += 1
    assert checked > 0  # weight layers were compared, not an empty loop
