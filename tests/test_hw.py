"""The Chisel generator through Mill: elaboration, its error messages, and the hw_params check."""
import copy
import json

import pytest

from hashiflex import hw
from hashiflex.export import design_from_graph, write_design
from tests.helpers import random_graph

pytestmark = [pytest.mark.mill, pytest.mark.slow]


def test_generator_refuses_a_bad_design_naming_the_field(tmp_path):
    d = design_from_graph(random_graph(5, convs=1, head=True))
    d["layers"][0]["stride"] = 0  # the Python side would refuse this too: write it by hand
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(hw.ElaborationError, match=r"design.layers\[0\].stride: expected an integer in \[1, 8\], found 0"):
        hw.elaborate(p, tmp_path / "rtl", quiet=True)
    assert not (tmp_path / "rtl").exists()  # nothing half-written


def test_generator_refuses_bounds_the_weights_do_not_give(tmp_path):
    g = random_graph(5, convs=1, head=True)
    d = design_from_graph(g)
    lo, hi = d["layers"][0]["out_bounds"]
    d["layers"][0]["out_bounds"] = [lo, hi + 1]
    d["layers"][1]["in_bounds"] = [lo, hi + 1]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(hw.ElaborationError, match=r"design.layers\[0\].out_bounds: expected \[.*\] \(from the weights"):
        hw.elaborate(p, tmp_path / "rtl", quiet=True)


def test_hw_params_agree_with_the_python_model_and_mismatch_is_loud(elaborated):
    for g, d, params, _ in elaborated:
        hw.check_hw_params(g, params, d["hardware"]["adder_levels_per_stage"], d["hardware"]["target_ii"])
    g, d, params, _ = elaborated[0]
    wrong = copy.deepcopy(params)
    wrong["layers"][0]["adders"] += 1
    wrong["adders"] += 1
    with pytest.raises(hw.HwMismatchError, match=r"layers\[conv0\].adders: Python model \d+, generator \d+"):
        hw.check_hw_params(g, wrong, d["hardware"]["adder_levels_per_stage"])


def test_same_design_gives_byte_identical_verilog(tmp_path, elaborated):
    g, d, params, rtl = elaborated[0]
    p = tmp_path / "d.json"
    write_design(d, p)
    again = hw.elaborate(p, tmp_path / "rtl", quiet=True)
    assert again == params
    assert (tmp_path / "rtl" / params["verilog"]).read_bytes() == (rtl / params["verilog"]).read_bytes()


def test_no_multiplier_in_the_generated_verilog(elaborated):
    for *_, params, rtl in elaborated:
        text = (rtl / params["verilog"]).read_text()
        assert " * " not in text


def test_generator_checks_the_weight_table(tmp_path, elaborated):
    import shutil

    g, d, params, rtl = elaborated[1]  # written with a binary table
    src = rtl.parent
    for f in ("design.json", "design.weights.bin"):
        shutil.copy(src / f, tmp_path / f)
    good = (tmp_path / "design.weights.bin").read_bytes()
    # the first bytes are the first layer's codes, the last its last layer's adder plan (int32)
    for at, field in ((0, r"design.layers\[0\].weights.table"), (-1, r"adders.table")):
        b = bytearray(good)
        b[at] ^= 1
        (tmp_path / "design.weights.bin").write_bytes(bytes(b))
        with pytest.raises(hw.ElaborationError, match=field + r".sha256: expected [0-9a-f]{64}, found"):
            hw.elaborate(tmp_path / "design.json", tmp_path / "rtl", quiet=True)


def test_hw_params_follow_their_schema_and_a_stale_file_names_the_field(tmp_path, elaborated):
    import shutil

    for _, _, params, rtl in elaborated:
        assert hw.read_hw_params(rtl) == params  # every generated file is schema-valid
    layers = [l for _, _, p, _ in elaborated for l in p["layers"]]
    assert any(l["op"] == "max_pool2d" and l["comparators"] > 0 for l in layers)
    assert any(l["op"] == "concat" and len(l["fifo_depth"]["inputs"]) == 2 for l in layers)
    _, _, params, rtl = next(e for e in elaborated if any(l["op"] == "max_pool2d" for l in e[2]["layers"]))
    stale = copy.deepcopy(params)
    del stale["layers"][1]["comparators"]  # what a generator before max pools wrote
    del stale["modules"]                    # and before the module table
    shutil.copytree(rtl, tmp_path / "rtl")
    (tmp_path / "rtl" / "hw_params.json").write_text(json.dumps(stale))
    with pytest.raises(hw.HwMismatchError, match=r"hw_params(\.layers\[1\])?: '(comparators|modules)' is a required "
                                                 r"property"):
        hw.read_hw_params(tmp_path / "rtl")
