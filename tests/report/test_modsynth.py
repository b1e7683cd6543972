"""Per-module synthesis fanned out on Ray (hashiflex.report.modsynth): the same cells as one hierarchical run."""
import json
import shutil
from collections import Counter

import pytest
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hashiflex.report import modsynth
from hashiflex.report.area import synthesize
from hashiflex.report.timing import critical_path

LEAF = """module add3(input clock, input [7:0] a, input [7:0] b, input [7:0] c, output reg [9:0] y);
  always @(posedge clock) y <= a + b + c;
endmodule
"""
MID = """module pair(input clock, input [7:0] a, input [7:0] b, output [10:0] y);
  wire [9:0] u;
  wire [9:0] v;
  add3 first (.clock(clock), .a(a), .b(b), .c(a), .y(u));
  add3 second (.clock(clock), .a(b), .b(a), .c(8'd3), .y(v));
  assign y = u + v;
endmodule
"""
NEG = """module neg(input clock, input [7:0] a, output reg [7:0] y);
  always @(posedge clock) y <= -a;
endmodule
"""
TOP = """module top(input clock, input [7:0] a, input [7:0] b, output reg [12:0] y);
  wire [10:0] p;
  wire [10:0] q;
  wire [7:0] n;
  pair one (.clock(clock), .a(a), .b(b), .y(p));
  pair two (.clock(clock), .a(b), .b(a), .y(q));
  neg inv (.clock(clock), .a(a), .y(n));
  always @(posedge clock) y <= p + q + n;
endmodule
"""
TEXT = "// a header line\n" + LEAF + "\n" + MID + "\n" + NEG + "\n" + TOP


def test_the_hierarchy_is_read_from_the_text():
    mods = modsynth.split_modules(TEXT)
    assert list(mods) == ["add3", "pair", "neg", "top"]
    assert mods["pair"].startswith("module pair(") and mods["pair"].rstrip().endswith("endmodule")
    ch = modsynth.submodules(mods)
    assert ch["top"] == Counter({"pair": 2, "neg": 1}) and ch["pair"] == Counter({"add3": 2}) and not ch["add3"]
    order = modsynth.reachable(ch, "top")
    assert order.index("add3") < order.index("pair") < order.index("top")
    assert modsynth.instance_counts(ch, order, "top") == Counter({"top": 1, "pair": 2, "add3": 4, "neg": 1})
    k1 = modsynth.module_keys(mods, ch, order, "lib")
    changed = dict(mods, add3=mods["add3"].replace("a + b + c", "a + b - c"))
    k2 = modsynth.module_keys(changed, ch, order, "lib")
    # a changed leaf changes its own key and its parents', not its siblings'
    assert k1["add3"] != k2["add3"] and k1["pair"] != k2["pair"] and k1["top"] != k2["top"]
    assert k1["neg"] == k2["neg"]
    assert modsynth.module_keys(mods, ch, order, "other lib")["neg"] != k1["neg"]


def test_a_child_is_read_as_its_port_header_alone():
    from hashiflex.sim.layerwise import port_list

    mods = modsynth.split_modules(TEXT)
    for name, text in mods.items():
        stub = modsynth.port_stub(text)
        assert stub.startswith(f"module {name}(") and stub.endswith(");\nendmodule\n")
        assert port_list(stub) == port_list(text) and "always" not in stub and "assign" not in stub
    assert modsynth.port_stub("module none;\n  wire w;\nendmodule\n") == "module none;\nendmodule\n"
    with pytest.raises(ValueError, match="not a module's text"):
        modsynth.port_stub("wire w;")
    with pytest.raises(ValueError, match="module cut: no end of its port list"):
        modsynth.port_stub("module cut(input a,\n")


def test_bad_verilog_is_named():
    with pytest.raises(ValueError, match="no module found"):
        modsynth.split_modules("// nothing\n")
    with pytest.raises(ValueError, match="module neg is defined twice"):
        modsynth.split_modules(NEG + NEG)
    with pytest.raises(ValueError, match="module add3: no endmodule before the next module"):
        modsynth.split_modules(LEAF.replace("endmodule", "") + NEG)
    with pytest.raises(ValueError, match="top module nope is not in the Verilog"):
        modsynth.reachable(modsynth.submodules(modsynth.split_modules(TEXT)), "nope")
    loop = "module a(input x);\n  b u (.x(x));\nendmodule\nmodule b(input x);\n  a v (.x(x));\nendmodule\n"
    with pytest.raises(ValueError, match="module a instantiates itself through a -> b"):
        modsynth.reachable(modsynth.submodules(modsynth.split_modules(loop)), "a")


def test_a_mapped_netlist_is_wrapped_with_its_bus_ports():
    net = ("module m(clock, \\a[0] , \\a[1] , y);\n  input clock;\n  wire clock;\n  input \\a[0] ;\n  input \\a[1] ;\n"
           "  output y;\n  AND2x2_ASAP7_75t_R _1_ (.A(\\a[0] ), .B(\\a[1] ), .Y(y));\nendmodule\n")
    w = modsynth.bus_wrapper("m", net)
    assert "module m__cells(clock," in w
    assert "module m(clock, a, y);\n  input clock;\n  input [1:0] a;\n  output y;" in w
    assert ".\\a[1] (a[1])" in w and ".y (y)" in w
    with pytest.raises(ValueError, match="netlist of n: no `module n\\(` in it"):
        modsynth.bus_wrapper("n", net)


RAM = """module ram_16x8(input clock, input [3:0] a, input [7:0] d, input we, output [7:0] q);
  reg [7:0] Memory[0:15];
  always @(posedge clock) if (we) Memory[a] <= d;
  assign q = Memory[a];
endmodule
"""


def test_a_module_register_arrays_are_counted_in_bits():
    assert modsynth.array_bits(RAM) == 128
    assert modsynth.array_bits(RAM + RAM.replace("[7:0] Memory[0:15]", "[21:0] Memory_1[0:2]")) == 128 + 66
    assert modsynth.array_bits(LEAF) == 0  # a plain register is not an array


WIRE = """module wire8(input [7:0] a, output [7:0] y);
  assign y = a;
endmodule
"""


def test_operators_and_signal_bits_are_counted_and_wiring_has_neither():
    assert modsynth.operators(LEAF) == 3  # a + b + c, and the nonblocking assignment's <
    assert modsynth.operators(WIRE) == 0 and modsynth.signal_bits(WIRE) == 0
    assert modsynth.operators("assign y = a == b ? c - d : ~e;") == 4  # ==, ?, -, ~
    assert modsynth.signal_bits(MID) == 20  # u and v
    assert modsynth.signal_bits(RAM) == 0  # the array is counted by array_bits
    assert modsynth.signal_bits("  wire x;\n  reg signed [3:0] r;\n  wire [0:7] z = x;\n") == 1 + 4 + 8


@settings(max_examples=25, deadline=None)
@given(coef=st.tuples(st.floats(1e7, 5e8), st.floats(10.0, 2000.0), st.floats(1e3, 2e5), st.floats(1e3, 5e4),
                      st.floats(0.0, 5e3)),
       sizes=st.lists(st.tuples(st.integers(1, 200), st.integers(0, 200), st.integers(0, 50)), min_size=6,
                      max_size=10, unique=True), noise=st.floats(1.0, 1.3))
def test_the_memory_fit_recovers_a_model_that_made_the_data_and_its_margin_covers_every_job(coef, sizes, noise):
    true = modsynth.MemoryModel(*coef, margin=1.0)
    texts = [LEAF * n + WIRE * w + MID * q + (RAM if k % 2 else "") for k, (n, w, q) in enumerate(sizes)]
    X = np.array([modsynth.MemoryModel.features(t) for t in texts])
    assume(np.linalg.matrix_rank(X) == 5)  # the features vary independently: the coefficients are determined
    exact = modsynth.fit_memory_model([(t, round(true.line(t))) for t in texts])
    for t in texts:
        assert exact.line(t) == pytest.approx(true.line(t), rel=1e-3)
    assert exact.margin == pytest.approx(1.0, abs=1e-3)
    # one job measured above the line: the margin lifts every need to at least its peak, less the slack
    peaks = [round(true.line(t) * (noise if k == 0 else 1.0)) for k, t in enumerate(texts)]
    noisy = modsynth.fit_memory_model(list(zip(texts, peaks)))
    assert all(noisy.need(t) >= p - modsynth.MEMORY_SLACK - 1 for t, p in zip(texts, peaks))
    assert noisy.margin == pytest.approx(max(1.0, max((p - modsynth.MEMORY_SLACK) / m for p, m in
                                                      zip(peaks, map(noisy.line, texts)))), rel=1e-9)
    # the need grows with the text: a larger module never asks for less
    for unit in (LEAF, WIRE, MID, RAM):
        needs = [noisy.need(unit * n) for n in (1, 10, 100)]
        assert needs == sorted(needs)


def test_the_memory_model_is_read_from_its_file_and_a_bad_one_is_named(tmp_path):
    m = modsynth.load_memory_model()  # the one fitted on measured jobs (benchmarks/synth_memory.py)
    assert m.base > 0 and m.margin >= 1.0 and min(m.to_json().values()) >= 0
    assert m.need(LEAF * 1000) > m.need(LEAF) > m.base
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"base_bytes": 1.0, "per_text_byte": 2.0, "per_operator": 3.0, "per_signal_bit": 1.0,
                               "margin": 1.0}))
    with pytest.raises(ValueError, match=r"m\.json: the memory model has no field 'per_array_bit'"):
        modsynth.load_memory_model(bad)
    with pytest.raises(ValueError, match="at least 5 measured jobs, got 2"):
        modsynth.fit_memory_model([(LEAF, 1), (RAM, 2)])


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's runs (run_jobs leaves a Ray it did not start running)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yosys") is None or shutil.which("sta") is None, reason="needs yosys and OpenSTA")
def test_modules_synthesized_apart_on_ray_agree_with_one_hierarchical_run_and_are_cached(tmp_path, local_ray):
    sv = tmp_path / "top.sv"
    sv.write_text(TEXT)
    whole = synthesize(sv, "top", log=tmp_path / "whole", netlist=tmp_path / "whole.net.v", delay_target_ps=1000.0)
    cache = tmp_path / "cache"
    ms = modsynth.synthesize_modules(sv, "top", cache=cache, jobs=2, progress=False)
    assert set(ms.rows) == {"add3", "pair", "neg", "top"} and not any(r["cached"] for r in ms.rows.values())
    # the same logic, mapped by ABC in another context: ABC's result depends on the order it meets the logic
    # (Yosys's global cell numbering), so a module's cells differ by a few percent between contexts (6 % on the
    # 47-cell `pair` here); alone, a module always meets the same text, so its figure is reproducible
    for m, r in ms.rows.items():
        assert r["own_um2"] == pytest.approx(whole.modules[m].own_um2, rel=0.10), m
    assert ms.area_um2 == pytest.approx(whole.top_um2, rel=0.05)
    (tmp_path / "pair_alone.sv").write_text(LEAF + MID)
    alone = synthesize(tmp_path / "pair_alone.sv", "pair", log=tmp_path / "alone", blackboxes=("add3",),
                       delay_target_ps=1000.0)
    assert alone.modules["pair"].own_um2 == ms.rows["pair"]["own_um2"]
    # leaves are timed (a module with submodules is not)
    assert ms.rows["pair"].get("period_ps") is None and ms.rows["add3"]["period_ps"] > ms.rows["neg"]["period_ps"]
    assert ms.slowest()["module"] == "add3"
    doc = ms.to_json()
    assert {r["module"]: r["instances"] for r in doc["modules"]} == {"add3": 4, "pair": 2, "neg": 1, "top": 1}
    assert json.loads(json.dumps(doc))["fmax_ghz_leaves"] == pytest.approx(1e3 / ms.rows["add3"]["period_ps"])
    # a path across modules (pair's unregistered sum into top's register) is longer than any leaf's: per-module
    # timing is a lower bound of the design's clock period, which the whole-design timing gives where it fits
    full = critical_path(tmp_path / "whole.net.v", "top")
    assert full.period_ps > ms.rows["add3"]["period_ps"]
    # the cached netlists linked as the hierarchy time that path exactly: from add3's register through pair's sum
    # into top's register, longer than any leaf's path
    h = modsynth.hierarchical_timing(ms, log=tmp_path / "sta.log")
    assert h.period_ps > max(r.get("period_ps") or 0 for r in ms.rows.values())
    assert h.modules[0] == "add3" and h.modules[-1] == "top" and "pair" in h.modules, h
    assert "/cells" not in h.startpoint and h.startpoint.count("/") == 2 and h.endpoint.count("/") == 0, h
    assert h.to_json()["fmax_ghz"] == pytest.approx(1e3 / h.period_ps)
    # a second run synthesizes nothing: every module comes from the cache, with the same figures
    again = modsynth.synthesize_modules(sv, "top", cache=cache, jobs=2, progress=False)
    assert all(r["cached"] for r in again.rows.values()) and again.area_um2 == ms.area_um2
    # a partial run (limit) keeps what it did; the rest follows on the next call
    cache2 = tmp_path / "cache2"
    part = modsynth.synthesize_modules(sv, "top", cache=cache2, jobs=1, progress=False, limit=2)
    assert len(part.rows) == 2 and len(list(cache2.glob("*.json"))) == 2
    with pytest.raises(KeyError):
        part.report.total("top")
    with pytest.raises(ValueError, match="2 of 4 modules under top are not synthesized yet"):
        modsynth.hierarchical_timing(part)
    area_only = modsynth.synthesize_modules(sv, "top", cache=tmp_path / "cache4", jobs=2, progress=False, timing=False)
    with pytest.raises(ValueError, match="module add3: no netlist in .* synthesize it again with timing"):
        modsynth.hierarchical_timing(area_only)
    only = modsynth.synthesize_modules(sv, "top", cache=tmp_path / "cache3", jobs=1, progress=False, match="^ne")
    assert list(only.rows) == ["neg"]  # only the modules the pattern names
    rest = modsynth.synthesize_modules(sv, "top", cache=cache2, jobs=2, progress=False)
    assert sum(not r["cached"] for r in rest.rows.values()) == 2 and rest.area_um2 == pytest.approx(ms.area_um2)
    # every job's peak memory is measured: at least Yosys with the ASAP7 Liberty read, each what its text needs
    for m, r in ms.rows.items():
        assert 50 * 2**20 < r["peak_memory_bytes"] < 4 * 2**30, (m, r["peak_memory_bytes"])
        assert r["text_bytes"] >= len(modsynth.split_modules(TEXT)[m])
    # a module that needs more memory than the largest node has is not run, and named; the rest go on
    from hashiflex.fanout import largest_node_memory

    mods = modsynth.split_modules(TEXT)
    children = modsynth.submodules(mods)
    jobs = {m: modsynth.job_text(mods[m], modsynth.child_stubs(mods, children, m)) for m in mods}
    big = max(jobs, key=lambda m: len(jobs[m].encode()))
    per_byte = 1.001 * largest_node_memory() / len(jobs[big].encode())
    assert all(len(jobs[m].encode()) * per_byte < largest_node_memory() for m in jobs if m != big)
    huge = modsynth.MemoryModel(0.0, per_byte, 0.0, 0.0, 0.0, 1.0)
    part = modsynth.synthesize_modules(sv, "top", cache=tmp_path / "cache5", jobs=2, progress=False,
                                       memory_model=huge)
    assert set(part.rows) == set(mods) - {big} and list(part.too_large) == [big] and not part.complete
    doc = {**part.to_json(), "ii_cycles_per_image": 1}
    doc["images_per_second_at_fmax"] = doc["fmax_ghz_leaves"] * 1e9
    assert doc["too_large"] == [{"module": big, "why": part.too_large[big]}]
    assert part.too_large[big].startswith(f"needs {huge.need(jobs[big]) / 2**30:.1f} GiB, the largest node has")
    assert "1 module(s) not run, each needing more memory than any node has" in modsynth.format_synth(doc)
