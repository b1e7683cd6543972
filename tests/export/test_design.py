"""design.json: round trip, and every malformed document refused with the field named."""
import copy
import json

import numpy as np
import pytest

from hashiflex import ref
from hashiflex.export import (DesignValidationError, design_from_graph, load_design,
                              validate_design, write_design)
from tests.helpers import random_graph, random_inputs


@pytest.fixture
def doc():
    return design_from_graph(random_graph(7, convs=2, head=True))


def test_round_trip_keeps_the_golden_outputs(tmp_path, doc):
    g = random_graph(7, convs=2, head=True)
    write_design(doc, tmp_path / "d.json")
    d2, g2 = load_design(tmp_path / "d.json")
    assert d2 == doc
    x = random_inputs(g, 4, 0)
    assert np.array_equal(ref.run(g, x), ref.run(g2, x))


BAD = [
    (lambda d: d.pop("hardware"), r"design: 'hardware' is a required property"),
    (lambda d: d["layers"][0].update(op="max_pool"), r"design.layers\[0\].op: 'max_pool' is not one of"),
    (lambda d: d["layers"][0].update(kernel=0), r"design.layers\[0\].kernel: 0 is less than the minimum of 1"),
    (lambda d: d["layers"][0]["weights"]["codes"].append(1),
     r"design.layers\[0\].weights.codes: expected \d+ entries \(1 term of shape \[.*\]\), found \d+"),
    (lambda d: d["layers"][0]["weights"].update(codes=[99] * len(d["layers"][0]["weights"]["codes"])),
     r"design.layers\[0\].weights.codes\[0\]: expected a code in \[-\d+, \d+\] for \d-bit weights, found 99 "
     r"\(\d+ codes out of range\)"),
    (lambda d: d["layers"][0]["weights"]["codes"].__setitem__(-1, -16),  # the index and the sign are named
     r"design.layers\[0\].weights.codes\[\d+\]: expected a code in \[-\d+, \d+\] for \d-bit weights, found -16$"),
    (lambda d: d["layers"][0]["weights"].update(e_min=-120),  # the requant after it would shift by > 62
     r"layer 'act0': field 'shift': expected a requantizing shift in \[-62, 62\] .*, found \d+"),
    (lambda d: d["layers"][0].update(out_exp=5000), r"design.layers\[0\].out_exp: 5000 is greater than the maximum of 1024"),
    (lambda d: d["input"].update(shape=[1, 2 ** 21, 4]), r"design.input.shape\[1\]: 2097152 is greater than the maximum"),
    (lambda d: d["layers"][0].update(out_bounds=[d["layers"][0]["out_bounds"][0], d["layers"][0]["out_bounds"][1] + 1]),
     r"design.layers\[0\].out_bounds: expected \[.*\] \(derived from the weights and shapes\), found"),
    (lambda d: d["layers"][0].update(out_width=d["layers"][0]["out_width"] + 1), r"design.layers\[0\].out_width: expected"),
    (lambda d: d["hardware"].update(ii_cycles_per_image=1), r"design.hardware.ii_cycles_per_image: expected \d+"),
    (lambda d: d["input"].update(bits="8"), r"design.input.bits: '8' is not of type 'integer'"),
    (lambda d: d.update(version=2), r"design.version: 1 was expected"),
    (lambda d: d["layers"][1].update(name=d["layers"][0]["name"]), r"design.layers: layer name 'conv0' is used twice"),
    (lambda d: d["layers"][0].update(parallelism=d["layers"][0]["out_shape"][2] + 1),
     r"design.layers\[0\].parallelism: expected a divisor of the width \d+, or a whole number of rows dividing the "
     r"height \d+ \(a multiple of \d+\): a beat never straddles rows, found \d+"),
    (lambda d: d["layers"][0].update(parallelism=0), r"design.layers\[0\].parallelism: 0 is less than the minimum of 1"),
    (lambda d: d["input"].pop("parallelism"), r"design.input: 'parallelism' is a required property"),
]


@pytest.mark.parametrize("mutate,message", BAD)
def test_malformed_design_is_refused_naming_the_field(tmp_path, doc, mutate, message):
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(DesignValidationError, match=message):
        validate_design(bad)
    # nothing is written, not even partly
    with pytest.raises(DesignValidationError):
        write_design(bad, tmp_path / "bad.json")
    assert list(tmp_path.iterdir()) == []


def test_invalid_json_file_is_refused(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"format": ')
    with pytest.raises(DesignValidationError, match="not valid JSON"):
        load_design(p)


def test_failed_write_keeps_the_previous_file(tmp_path, doc):
    p = write_design(doc, tmp_path / "d.json")
    before = p.read_text()
    bad = copy.deepcopy(doc)
    bad["layers"][0]["kernel"] = 0
    with pytest.raises(DesignValidationError):
        write_design(bad, p)
    assert p.read_text() == before


def test_large_designs_keep_codes_in_a_checksummed_binary_table(tmp_path, doc):
    g = random_graph(7, convs=2, head=True)
    p = write_design(doc, tmp_path / "d.json", tables=True)
    on_disk = json.loads(p.read_text())
    assert all("codes" not in l["weights"] and "table" in l["weights"] for l in on_disk["layers"] if "weights" in l)
    assert all(set(l["adders"]) == {"table"} for l in on_disk["layers"] if "weights" in l)
    d2, g2 = load_design(p)
    assert d2 == doc
    x = random_inputs(g, 3, 1)
    assert np.array_equal(ref.run(g2, x), ref.run(g, x))
    # a flipped byte is caught by the checksum, naming the layer
    table = tmp_path / "d.weights.bin"
    b = bytearray(table.read_bytes())
    b[0] ^= 1
    table.write_bytes(bytes(b))
    with pytest.raises(DesignValidationError, match=r"design.layers\[0\].weights.table.sha256: expected"):
        load_design(p)
    b[0] ^= 1
    table.write_bytes(bytes(b[:-1]))  # the last table is the last layer's adder plan
    last = max(k for k, l in enumerate(on_disk["layers"]) if "adders" in l)
    with pytest.raises(DesignValidationError, match=rf"design.layers\[{last}\].adders.table.count: expected \d+ bytes"):
        load_design(p)


def _assert_round_trips(g, d, tmp_path):
    """write -> read gives the same design and a graph computing the same (golden model)."""
    write_design(d, tmp_path / "d.json")
    d2, g2 = load_design(tmp_path / "d.json")
    assert d2 == d
    x = random_inputs(g, 3, 0)
    assert np.array_equal(ref.run(g, x), ref.run(g2, x))


def test_dag_designs_with_a_target_round_trip(tmp_path):
    """Depthwise convs, residual adds (src/skip) and pixel parallelism survive write -> read -> golden."""
    g = random_graph(2, max_c=3, max_hw=6, convs=3, dag=True)
    d = design_from_graph(g, 2, target_ii=9)
    assert any(l["op"] == "add" for l in d["layers"]) and max(l["parallelism"] for l in d["layers"]) > 1
    _assert_round_trips(g, d, tmp_path)
    bad = copy.deepcopy(d)
    add = next(l for l in bad["layers"] if l["op"] == "add")
    add["skip"] = "nope"
    with pytest.raises(DesignValidationError, match="'nope' is not an earlier layer"):
        validate_design(bad)


def test_per_side_padding_round_trips_and_a_bad_one_is_refused(tmp_path):
    """[top, bottom, left, right] in design.json (symmetric padding stays one integer)."""
    g = random_graph(2, max_c=3, max_hw=6, convs=3, dag=True, asym_pad=True)
    d = design_from_graph(g, 2)
    pads = [l["padding"] for l in d["layers"] if l["op"] == "conv2d"]
    assert [1, 1, 2, 0] in pads and any(isinstance(p, int) for p in pads)
    _assert_round_trips(g, d, tmp_path)
    bad = copy.deepcopy(d)
    conv = next(l for l in bad["layers"] if isinstance(l.get("padding"), list))
    conv["padding"] = conv["padding"][:3]
    with pytest.raises(DesignValidationError, match=r"design.layers\[0\].padding: \[1, 1, 2\] is too short"):
        validate_design(bad)


def test_written_files_get_the_mode_the_umask_gives(tmp_path, doc):
    import os

    old = os.umask(0o022)
    try:
        write_design(doc, tmp_path / "d.json", tables=True)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"d.json": 0o644, "d.weights.bin": 0o644}


def test_any_buildable_parallelism_is_authoritative_and_a_bad_one_names_the_field():
    from hashiflex.export.design import parallelism_in
    from hashiflex.passes import initiation_interval
    from tests.helpers import random_parallelism

    g = random_graph(2, max_c=3, max_hw=7, convs=3, dag=True, max_pool=True, concat=True)
    proposed = parallelism_in(design_from_graph(g, 2, 3))
    par = next(p for p in (random_parallelism(g, s) for s in range(50)) if p != proposed)
    d = design_from_graph(g, 2, 3, parallelism=par)
    assert parallelism_in(d) == par
    assert d["hardware"]["ii_cycles_per_image"] == initiation_interval(g, par=par)  # the II follows from it
    validate_design(d)  # read back as written, not re-proposed
    validate_design(dict(d, hardware=dict(d["hardware"], target_ii=5)))  # the target only proposed it
    bad = copy.deepcopy(d)
    k = next(i for i, l in enumerate(bad["layers"]) if l["op"] == "requant")
    w = bad["layers"][k]["out_shape"][2]
    bad["layers"][k]["parallelism"] = next(p for p in range(1, w + 1) if w % p == 0 and p != par[bad["layers"][k]["name"]]) \
        if w > 1 else 1
    if bad["layers"][k]["parallelism"] != par[bad["layers"][k]["name"]]:
        with pytest.raises(DesignValidationError, match=rf"design\.layers\[{k}\]\.parallelism: expected \d+ \(the "
                                                        r"parallelism of '.*'; requant maps pixels one to one\)"):
            validate_design(bad)
    bad = copy.deepcopy(d)
    bad["input"]["parallelism"] = g.input.width + 1
    with pytest.raises(DesignValidationError, match=r"design\.input\.parallelism"):
        validate_design(bad)


def test_per_layer_levels_are_authoritative_and_a_bad_one_names_the_field():
    """A layer's own adder levels per stage (design.json ``levels_per_stage``) set its register stages; only
    layers with a tree take one, in [1, 64]; the message names the field and the layer."""
    from hashiflex.export.design import levels_in
    from hashiflex.hwmodel import hw_model
    from hashiflex.ops import op_of

    g = random_graph(4, max_c=3, max_hw=6, convs=3, dag=True, max_pool=True)
    conv = next(l for l in g.layers if op_of(l).op == "conv2d")
    base = {m.name: m.stages for m in hw_model(g, 4)}
    one = {m.name: m.stages for m in hw_model(g, 4, levels={conv.name: 1})}
    assert one[conv.name] >= base[conv.name] and {k: v for k, v in one.items() if k != conv.name} == \
        {k: v for k, v in base.items() if k != conv.name}
    d = design_from_graph(g, 4, levels={conv.name: 1})
    assert levels_in(d) == {conv.name: 1}
    assert validate_design(d) is not None
    k = next(i for i, l in enumerate(d["layers"]) if l["op"] == "requant")
    bad = copy.deepcopy(d)
    bad["layers"][k]["levels_per_stage"] = 2
    with pytest.raises(DesignValidationError, match=rf"design\.layers\[{k}\]\.levels_per_stage: layer '.*' "
                                                    r"\(requant\) has no adder or comparator tree"):
        validate_design(bad)
    bad = copy.deepcopy(d)
    j = next(i for i, l in enumerate(d["layers"]) if l["name"] == conv.name)
    bad["layers"][j]["levels_per_stage"] = 0
    with pytest.raises(DesignValidationError, match=rf"design\.layers\[{j}\]\.levels_per_stage"):
        validate_design(bad)
    with pytest.raises(DesignValidationError, match=r"levels_per_stage: no layer named 'nope'"):
        design_from_graph(g, 4, levels={"nope": 2})


def test_input_bounds_round_trip_and_out_of_format_bounds_name_the_field():
    """design.json ``input.bounds``: a narrower input (a layer's input fed alone) sets the first layer's in_bounds
    and widths; bounds outside the input format are refused naming the field."""
    from hashiflex.ir import Graph, Input, TensorType

    g = random_graph(3, max_c=3, max_hw=5, convs=2)
    t = TensorType(8, False, g.input.type.exp)
    g = Graph(g.name, Input(g.input.channels, g.input.height, g.input.width, t, (0, 100)), g.layers)
    d = design_from_graph(g, 2)
    assert d["input"]["bounds"] == [0, 100] and d["layers"][0]["in_bounds"] == [0, 100]
    assert validate_design(d).input.range == (0, 100)
    bad = copy.deepcopy(d)
    bad["input"]["bounds"] = [0, 300]
    with pytest.raises(DesignValidationError, match=r"design\.input\.bounds: expected \[lo, hi\] with 0 <= lo <= hi "
                                                    r"<= 255"):
        validate_design(bad)


@pytest.mark.parametrize("bad", [128, -128, True, 1.5, "1"])
def test_a_long_code_list_is_checked_as_jsonschema_checks_it(doc, bad):
    """design.json's long integer lists (codes, adder sums) take a fast path through the schema check; an element
    that breaks the item schema is still found, at its index, in jsonschema's own words."""
    import jsonschema

    from hashiflex.export.design import _path, schema

    d = copy.deepcopy(doc)
    d["layers"][0]["weights"]["codes"] = [0] * 1000
    d["layers"][0]["weights"]["codes"][777] = bad
    e = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(d))
    assert _path(e.absolute_path) == "design.layers[0].weights.codes[777]"
    with pytest.raises(DesignValidationError) as got:
        validate_design(d)
    assert str(got.value) == f"design.layers[0].weights.codes[777]: {e.message}"
    d["layers"][0]["weights"]["codes"][777] = 127  # in range: the schema passes; the count is the next check
    with pytest.raises(DesignValidationError, match=r"design.layers\[0\].weights.codes: expected \d+ entries"):
        validate_design(d)
