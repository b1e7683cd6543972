"""Golden model == RTL, bit for bit: random designs with hypothesis-drawn inputs, and back-pressure."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hashiflex import ref
from hashiflex.passes import initiation_interval
from hashiflex.sim import StreamSim
from tests.conftest import require_tool
from tests.helpers import random_inputs

pytestmark = [pytest.mark.verilator, pytest.mark.slow, pytest.mark.mill]


@pytest.fixture(scope="module")
def sims(elaborated):
    require_tool("verilator")
    return [(g, StreamSim(rtl, params, d)) for g, d, params, rtl in elaborated]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.integers(0, 2 ** 32 - 1), st.integers(1, 5))
def test_rtl_equals_golden_on_random_designs(sims, data, seed, n):
    g, sim = sims[data.draw(st.integers(0, len(sims) - 1))]
    x = random_inputs(g, n, seed)
    res = sim.run(x, progress=False)
    assert np.array_equal(res.outputs, ref.run(g, x))


def test_images_stream_back_to_back_at_the_model_ii(sims, elaborated):
    for (g, sim), (_, d, _, _) in zip(sims, elaborated):
        res = sim.run(random_inputs(g, 6, 1), progress=False)
        assert res.cycles_per_image == initiation_interval(g, d["hardware"]["target_ii"]), g.name


def test_the_dag_designs_cover_what_they_should(elaborated):
    """Guards the fixture: depthwise, residual adds and several pixels per beat are really in there."""
    layers = [l for _, d, _, _ in elaborated for l in d["layers"]]
    assert any(l["op"] == "add" for l in layers)
    assert any(l.get("groups", 1) > 1 for l in layers)
    assert any(l["parallelism"] > 1 for l in layers)
    pools = [l for l in layers if l["op"] == "max_pool2d"]
    assert any(l["kernel"] == 3 and isinstance(l["padding"], list) for l in pools)  # padded, asymmetric
    assert any(l["kernel"] == 1 and l["stride"] == 1 for l in pools)                # pointwise, no line buffer
    assert any(l["parallelism"] > 1 for l in pools)
    assert any(l["op"] == "lut" and l["parallelism"] > 1 for l in layers)
    assert any(l["op"] == "channel_select" and l["parallelism"] > 1 for l in layers)
    cats = [l for l in layers if l["op"] == "concat"]
    assert any(l["inputs"][0] == l["src"] != "input" for l in cats) and any(l["parallelism"] > 1 for l in cats)


@pytest.mark.parametrize("pattern", [[True, False], [False, False, True], [True, True, True, False]])
def test_back_pressure_loses_nothing(sims, pattern):
    for g, sim in sims:
        x = random_inputs(g, 4, 2)
        res = sim.run(x, backpressure=np.array(pattern), progress=False)
        assert np.array_equal(res.outputs, ref.run(g, x)), g.name


def test_vcd_trace_is_written(sims, tmp_path):
    g, sim = sims[0]
    vcd = tmp_path / "trace.vcd"
    sim.run(random_inputs(g, 1, 0), vcd=vcd, progress=False)
    text = vcd.read_text()
    assert "$enddefinitions" in text and "in_valid" in text


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 100_000), st.sampled_from([None, 1, 2, 3, 5, 8]), st.integers(1, 4), st.integers(1, 3),
       st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_random_dag_designs_match_golden_at_their_ii(tmp_path_factory, seed, target, levels, max_terms, asym_pad,
                                                      max_pool, concat, own_par, lut, select, own_levels):
    """Whole flow per example: random DAG (depthwise, residuals, strides, sparsity, exponents, 1-3 term weights,
    per-side padding, max pools, concatenations, lookup-table activations, channel selections) -> design.json unrolled to a random target, or to a random
    buildable parallelism of its own (``own_par``: the file is authoritative), some layers with adder levels per
    stage of their own (``own_levels``) -> generator -> Verilator; bit-exact and at the modelled II."""
    from hashiflex import hw
    from hashiflex.export import design_from_graph, write_design
    from tests.helpers import random_graph, random_levels, random_parallelism

    require_tool("verilator")
    g = random_graph(seed, max_c=3, max_hw=6, convs=3, dag=True, name=f"h{seed}", max_terms=max_terms,
                     asym_pad=asym_pad, max_pool=max_pool, concat=concat, lut=lut,
                     select=select)
    par = random_parallelism(g, seed) if own_par else None
    own = random_levels(g, seed) if own_levels else None
    d = design_from_graph(g, levels, target, parallelism=par, levels=own)
    base = tmp_path_factory.mktemp("hyp")
    write_design(d, base / "design.json")
    params = hw.elaborate(base / "design.json", base / "rtl", quiet=True)
    hw.check_design_hw(d, g, params)
    x = random_inputs(g, 4, seed)
    res = StreamSim(base / "rtl", params, d).run(x, progress=False)
    assert np.array_equal(res.outputs, ref.run(g, x))
    assert res.cycles_per_image == initiation_interval(g, target, par) == params["ii_cycles_per_image"]


def test_the_c_driver_and_the_python_loop_agree(sims):
    """StreamSim.run's C loop (the default) and its per-cycle Python loop: same outputs, cycles, waits, stalls."""
    for g, sim in sims:
        x = random_inputs(g, 3, 5)
        slow, fast = sim.run(x, progress=False, fast=False), sim.run(x, progress=False, fast=True)
        assert np.array_equal(slow.outputs, fast.outputs), g.name
        assert (slow.cycles, slow.latency, slow.cycles_per_image) == (fast.cycles, fast.latency, fast.cycles_per_image)
        bp = np.array([0, 1, 1])
        start = sim.cycle
        slow = sim.run(x, progress=False, fast=False, backpressure=bp)
        # the pattern is indexed by the absolute cycle: start the second run at the same phase
        while (sim.cycle - start) % len(bp):
            sim.step()
        fast = sim.run(x, progress=False, fast=True, backpressure=bp)
        assert np.array_equal(slow.outputs, fast.outputs), g.name
        assert (slow.cycles, slow.input_waits, slow.output_stalls) == (fast.cycles, fast.input_waits,
                                                                       fast.output_stalls), g.name
