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


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 3), st.integers(0, 2 ** 32 - 1), st.integers(1, 5))
def test_rtl_equals_golden_on_random_designs(sims, which, seed, n):
    g, sim = sims[which]
    x = random_inputs(g, n, seed)
    res = sim.run(x, progress=False)
    assert np.array_equal(res.outputs, ref.run(g, x))


def test_images_stream_back_to_back_at_the_model_ii(sims):
    for g, sim in sims:
        res = sim.run(random_inputs(g, 6, 1), progress=False)
        assert res.cycles_per_image == initiation_interval(g), g.name


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
