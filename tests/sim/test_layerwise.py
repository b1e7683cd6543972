"""Full-size verification layer by layer (hashiflex.sim.layerwise): each layer cut out with its input's exact bounds
builds the full design's modules, and co-simulates bit-exact on the golden model's activations."""
import json
import shutil

import numpy as np
import pytest

from hashiflex.export import design_from_graph, load_design
from hashiflex.ir import Input, IRError, TensorType
from hashiflex.sim.layerwise import (chain_design, golden_activations, join_harness, layer_design, port_list,
                                     undriven_outputs, verify_layers)
from tests.conftest import require_tool
from tests.helpers import random_graph, random_inputs


def test_a_cut_out_layer_reads_its_input_tensor_with_its_exact_bounds():
    from hashiflex.analysis import annotate

    g = random_graph(4, max_c=3, max_hw=6, convs=3, dag=True, max_pool=True)
    d = design_from_graph(g, 2, 3)
    infos = {i.name: i for i in annotate(g)}
    for k, (layer, srcs) in enumerate(zip(g.layers, g.sources())):
        cut = layer_design(d, g, k)
        if len(srcs) > 1:
            assert cut is None
            continue
        sub, one = cut
        src = srcs[0]
        want = g.input.range if src == "input" else tuple(infos[src].out_bounds)
        assert one.input.range == tuple(want)
        if src != "input":
            assert sub["input"]["bounds"] == list(want)
        assert sub["input"]["parallelism"] == (d["input"]["parallelism"] if src == "input" else
                                               next(l["parallelism"] for l in d["layers"] if l["name"] == src))
        assert sub["layers"][0] | {"src": src} == {**d["layers"][k]} | {"src": src}  # the same layer record
        x = random_inputs(g, 2, k)
        acts = golden_activations(g, x)
        from hashiflex import ref

        i = one.input
        assert np.array_equal(ref.run(one, acts[src].reshape(2, i.channels, i.height, i.width)),
                              acts[layer.name].reshape(2, -1))


def test_a_cut_out_block_computes_what_the_network_computes_there_and_keeps_its_layer_records():
    from hashiflex import ref

    g = random_graph(7, max_c=3, max_hw=6, convs=4, dag=True)
    d = design_from_graph(g, 2, 3)
    x = random_inputs(g, 2, 7)
    acts = golden_activations(g, x)
    srcs = g.sources()
    blocks = refused = 0
    for a in range(len(g.layers)):
        for b in range(a, len(g.layers)):
            names = {l.name for l in g.layers[a:b + 1]}
            outside = {s for k in range(a, b + 1) for s in srcs[k] if s not in names}
            if len(outside) > 1:
                with pytest.raises(ValueError, match=r"layer \S+ reads \S+ from outside the block, beside its input"):
                    chain_design(d, g, a, b)
                refused += 1
                continue
            sub, block = chain_design(d, g, a, b)
            (ext,) = outside
            i = block.input
            assert np.array_equal(ref.run(block, acts[ext].reshape(2, i.channels, i.height, i.width)),
                                  acts[g.layers[b].name].reshape(2, -1))
            for rec in sub["layers"]:  # the same records, up to where they read from
                full = next(l for l in d["layers"] if l["name"] == rec["name"])
                assert {k: v for k, v in rec.items() if k not in ("src", "skip")} == \
                    {k: v for k, v in full.items() if k not in ("src", "skip")}
            blocks += 1
    assert blocks > len(g.layers) and refused > 0  # the graph has residual adds: some ranges read two tensors
    with pytest.raises(ValueError, match="not a range"):
        chain_design(d, g, 3, 2)


def test_golden_activations_are_computed_once_per_design_and_images(tmp_path, monkeypatch):
    """A resumed full-size run reads the golden tensors back instead of minutes of golden model; the cache is named
    by the design's content (its weight tables' sha256 included) and the images'."""
    from hashiflex import ref
    from hashiflex.export import write_design
    from hashiflex.sim.layerwise import activations_cache

    g = random_graph(3, max_c=3, max_hw=6, convs=3, dag=True)
    path = write_design(design_from_graph(g, 2, 3), tmp_path / "d" / "design.json")
    x = random_inputs(g, 2, 3)
    cache = activations_cache(path, x, tmp_path)
    want = golden_activations(g, x, cache)
    assert cache.exists() and [f.name for f in tmp_path.iterdir() if f.is_file()] == [cache.name]

    def no_golden(*a, **k):
        raise AssertionError("the golden model ran again")

    monkeypatch.setattr(ref, "run", no_golden)
    got = golden_activations(g, x, cache)
    assert got.keys() == want.keys()
    assert all(got[k].dtype == np.int64 and np.array_equal(got[k], want[k]) for k in want)
    assert activations_cache(path, x[:1], tmp_path) != cache            # other images
    assert activations_cache(path, x.astype(np.int32), tmp_path) != cache  # same values, another dtype
    write_design(design_from_graph(g, 3, 3), tmp_path / "d" / "design.json")
    assert activations_cache(path, x, tmp_path) != cache                 # another design


def test_input_bounds_must_lie_in_the_format_and_are_carried_by_design_json():
    t = TensorType(8, False, -5)
    with pytest.raises(IRError, match=r"input.bounds: expected \[lo, hi\] with 0 <= lo <= hi <= 255"):
        Input(1, 2, 2, t, (0, 256))
    assert Input(1, 2, 2, t, (0, 192)).range == (0, 192) and Input(1, 2, 2, t).range == (0, 255)


@pytest.mark.verilator
def test_every_layer_of_the_default_design_verifies_alone_and_a_changed_module_is_caught(default_flow, tmp_path):
    require_tool("verilator")
    work, _ = default_flow
    d, g = load_design(work / "design.json")
    from hashiflex.flow import Config, _ds

    x = _ds(Config()).x_test[:2]
    r = verify_layers(work / "design.json", x, tmp_path / "lw", progress=False, jobs=1)
    single = [l.name for l, s in zip(g.layers, g.sources()) if len(s) == 1]
    assert sorted(row["layer"] for row in r["layers"]) == sorted(single)
    assert r["mismatched_values"] == 0 and r["modules_differ"] == []
    assert all(row["modules_checked"] >= 1 for row in r["layers"] if row["op"] == "conv2d")
    assert json.loads((tmp_path / "lw" / "layerwise.json").read_text())["layers_verified"] == len(single)
    # the same layers against a full design whose first lane differs: named, not passed
    bad = tmp_path / "bad"
    shutil.copytree(work / "rtl", bad / "rtl")
    shutil.copy(work / "design.json", bad / "design.json")
    sv = next((bad / "rtl").glob("*.sv"))
    text = sv.read_text()
    i = text.index("module ShiftAddLane_")
    lane = text[i + 7:].split("(", 1)[0]
    j = text.index("endmodule", i)
    sv.write_text(text[:j] + "  // changed\n" + text[j:])
    r2 = verify_layers(bad / "design.json", x, tmp_path / "lw2", progress=False, jobs=1)
    assert r2["modules_differ"] == [lane]


_LAYER_SV = """module M(
  input  [7:0] in_a,
               in_b,
  output [7:0] out_x
);
  assign out_x = in_a + in_b;
endmodule

module Top(
  input  [7:0] a,
               b,
  output [7:0] x
);
  M m (
    .in_a  (a),
    .in_b  (b
              ),
    .out_x (x)
  );
endmodule
"""

_FULL_M = """module M(
  input  [7:0] in_a,
  output [7:0] out_x,
               out_y
);
  assign out_x = in_a;
  assign out_y = in_a;
endmodule
"""


def test_a_module_the_full_design_specialises_is_simulated_as_the_full_design_has_it():
    """firtool folds a constant input away or keeps another layer's outputs: the layer's harness then runs the
    full design's text, its connections to ports that module lacks removed (and no dangling comma)."""
    from hashiflex.sim.layerwise import _modules, ports, with_full_modules

    assert ports(_FULL_M) == ["in_a", "out_x", "out_y"]
    out = with_full_modules(_LAYER_SV, ["M"], {"M": _FULL_M})
    mods = _modules(out)
    assert mods["M"] == _FULL_M
    assert ".in_b" not in mods["Top"] and "(b" not in mods["Top"]
    assert "    .in_a  (a),\n    .out_x (x)\n  );" in mods["Top"]
    with pytest.raises(ValueError, match="module N: not in both the layer's and the full design's Verilog"):
        with_full_modules(_LAYER_SV, ["N"], {"M": _FULL_M})


_JOIN_SV = """module Add2(
  output       a_ready,
  input        a_valid,
  input  [3:0] a_bits_0,
               a_bits_1,
  output       b_ready,
  input        b_valid,
  input  [4:0] b_bits_1,
  input        out_ready,
  output       out_valid,
  output [5:0] out_bits_0,
               out_bits_1
);
  assign out_bits_0 = a_bits_0;
  assign out_bits_1 = a_bits_1 + b_bits_1;
endmodule

module Top(
  input clock
);
  Add2 add_1 (
    .a_valid (1'h1)
  );
  Other x (
  );
endmodule
"""


def test_a_join_is_wrapped_as_the_full_design_holds_it_with_its_operands_side_by_side():
    """Ports parsed with firtool's continuation lines; operand lane p*C_i + c reads input lane p*C + offset_i + c;
    a lane the full design folded away (b_bits_0) stays unconnected; a missing instance or stream is named."""
    from hashiflex.sim.layerwise import _modules

    full = _modules(_JOIN_SV)
    assert port_list(full["Add2"])[:4] == [("a_ready", "output", 1), ("a_valid", "input", 1), ("a_bits_0", "input", 4),
                                           ("a_bits_1", "input", 4)]
    text, held, width = join_harness(full, "add.1", [1, 1], 2, 1, "H")  # a layer name's dot is an underscore
    assert held == ["Add2"] and width == 5 and text.endswith(full["Add2"])
    top = _modules(text)["H"]
    assert "input [4:0] in_bits_3," in top and "output [5:0] out_bits_1\n" in top
    assert ".a_bits_1(in_bits_2[3:0])," in top and ".b_bits_1(in_bits_3[4:0])," in top
    assert "b_bits_0" not in top and "assign in_ready = ready_0 & ready_1;" in top
    with pytest.raises(ValueError, match="layer add2: expected one instance named add2 in the full design's Verilog, "
                                         "found 0"):
        join_harness(full, "add2", [1, 1], 2, 1, "H")
    with pytest.raises(ValueError, match=r"layer add_1: module Add2 has input streams \['a', 'b'\] and output "
                                         r"streams \['out'\]; expected 3 operand streams and one output"):
        join_harness(full, "add_1", [1, 1, 1], 2, 1, "H")
    # output lanes the module lacks (channels no later layer reads) are left undriven, and found so
    text, _, _ = join_harness(full, "add_1", [1, 1], 2, 2, "H")
    top = _modules(text)["H"]
    assert "output [5:0] out_bits_3\n" in top and ".out_bits_1(out_bits_1)" in top and ".out_bits_2(" not in top
    assert undriven_outputs(text, "H") == [2, 3]
    with pytest.raises(ValueError, match=r"layer add_1: module Add2 has none of the output lanes \['out_bits_0'"):
        join_harness({"Add2": full["Add2"].replace("out_bits", "o_bits"), "Top": full["Top"]}, "add_1", [1, 1], 2,
                     1, "H")


@pytest.mark.verilator
def test_residual_adds_and_concatenations_verify_on_the_full_designs_module_and_a_changed_one_is_caught(
        elaborated, tmp_path):
    require_tool("verilator")
    g, d, _, rtl = next(e for e in elaborated if e[0].name == "cat2")
    joins = [l.name for l, s in zip(g.layers, g.sources()) if len(s) > 1]
    op = {r["name"]: r["op"] for r in d["layers"]}
    assert {op[n] for n in joins} == {"add", "concat"}
    from tests.helpers import random_inputs

    x = random_inputs(g, 2, 3)
    pattern = "^(" + "|".join(joins) + ")$"
    r = verify_layers(rtl.parent / "design.json", x, tmp_path / "lw", match=pattern, progress=False, jobs=1)
    assert sorted(row["layer"] for row in r["layers"]) == sorted(joins) and r["skipped"] == []
    assert r["mismatched_values"] == 0 and r["modules_differ"] == []
    assert all(row["modules_checked"] == 1 and row["values"] > 0 for row in r["layers"])
    # the same adds against a full design whose ResidualAdd reads operand b where it read a: mismatches, not a pass
    bad = tmp_path / "bad"
    shutil.copytree(rtl, bad / "rtl")
    shutil.copy(rtl.parent / "design.json", bad / "design.json")
    sv = next((bad / "rtl").glob("*.sv"))
    text = sv.read_text()
    i = text.index("module ResidualAdd_")
    j = text.index(");", i)
    k = text.index("endmodule", j)
    sv.write_text(text[:j] + text[j:k].replace("a_bits_", "b_bits_") + text[k:])
    adds = [n for n in joins if op[n] == "add"]
    r2 = verify_layers(bad / "design.json", x, tmp_path / "lw2", match="^(" + "|".join(adds) + ")$", progress=False,
                       jobs=1)
    assert r2["mismatched_values"] > 0


_PASS_PORTS = """  input        clock,
               reset,
  output       in_ready,
  input        in_valid,
  input  [7:0] in_bits_0,
               in_bits_1,
  input        out_ready,
  output       out_valid,
  output [7:0] out_bits_0,
               out_bits_1
);"""

_PASS_SV = f"""module M(
{_PASS_PORTS}
  reg [7:0] r0;
  reg [7:0] r1;
  reg       v;
  always @(posedge clock) begin
    if (reset)
      v <= 1'h0;
    else if (out_ready | ~v)
      v <= in_valid;
    if (out_ready | ~v) begin
      r0 <= in_bits_0 + 8'h1;
      r1 <= in_bits_1 + 8'h2;
    end
  end
  assign in_ready = out_ready | ~v;
  assign out_valid = v;
  assign out_bits_0 = r0;
  assign out_bits_1 = r1;
endmodule

module T(
{_PASS_PORTS}
  M m (
    .clock      (clock),
    .reset      (reset),
    .in_ready   (in_ready),
    .in_valid   (in_valid),
    .in_bits_0  (in_bits_0),
    .in_bits_1  (in_bits_1),
    .out_ready  (out_ready),
    .out_valid  (out_valid),
    .out_bits_0 (out_bits_0),
    .out_bits_1 (out_bits_1)
  );
endmodule
"""


@pytest.mark.verilator
def test_a_channel_the_full_design_removed_is_unobservable_if_dead_and_a_mismatch_if_live(tmp_path):
    """The full design's M lacks channel 1 (firtool removed a channel no later layer reads, back to its input):
    simulated with that text, the layer's output lane 1 is undriven. Dead by the liveness: reported, not compared;
    live: every value of it mismatches; channel 0 is compared either way."""
    from hashiflex.sim.layerwise import _modules, cosim_layer

    require_tool("verilator")
    mods = _modules(_PASS_SV)
    full_m = (mods["M"].replace("               in_bits_1,\n", "").replace("  output [7:0] out_bits_0,\n               "
                                                                           "out_bits_1\n", "  output [7:0] out_bits_0\n")
              .replace("      r1 <= in_bits_1 + 8'h2;\n", "").replace("  assign out_bits_1 = r1;\n", ""))
    assert [n for n, _, _ in port_list(full_m) if "bits" in n] == ["in_bits_0", "out_bits_0"]
    assert undriven_outputs(_PASS_SV, "T") == []
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / "T.sv").write_text(_PASS_SV)
    params = {"verilog": "T.sv", "top": "T", "ii_cycles_per_image": 6}
    design = {"name": "T", "input": {"shape": [2, 2, 3], "bits": 8, "parallelism": 1},
              "output": {"features": 12, "width": 8, "signed": False},
              "layers": [{"name": "l", "op": "conv2d", "out_shape": [2, 2, 3], "parallelism": 1}]}
    x = np.arange(24).reshape(2, 2, 2, 3)
    want = x + np.array([1, 2])[None, :, None, None]
    dead = cosim_layer(str(rtl), params, design, x, want, {"M": full_m}, np.array([True, False]))
    assert dead["modules_differ"] == ["M"] and dead["unobservable_channels"] == [1]
    assert dead["mismatched_values"] == 0 and dead["values"] == 12 and dead["lost_live_channels"] == []
    lost = cosim_layer(str(rtl), params, design, x, want, {"M": full_m}, np.array([True, True]))
    assert lost["lost_live_channels"] == [1] and lost["mismatched_values"] == 12 and lost["values"] == 24
    bad = want.copy()
    bad[1, 0, 1, 2] += 1  # channel 0 is still compared
    assert cosim_layer(str(rtl), params, design, x, bad, {"M": full_m}, np.array([True, False]))["mismatched_values"] \
        == 1
    same = cosim_layer(str(rtl), params, design, x, want, {"M": mods["M"]}, np.array([True, False]))
    assert same["modules_differ"] == [] and same["unobservable_channels"] == [] and same["values"] == 24
    with pytest.raises(ValueError, match="live: expected 2 output channels, found 3"):
        cosim_layer(str(rtl), params, design, x, want, {"M": mods["M"]}, np.ones(3, dtype=bool))
