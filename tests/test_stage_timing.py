"""The stage timing model (hashiflex.stage_timing): stages placed as the generator places them, the fit, and the
levels per stage chosen for a clock."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashiflex import stage_timing
from hashiflex.analysis import annotate
from hashiflex.hwmodel import hw_model
from hashiflex.ops import op_of
from hashiflex.ops.weighted import WeightedOp
from hashiflex.stage_timing import Stage, StageTimingModel
from tests.helpers import random_graph


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 2))
def test_stages_are_the_generators(seed, levels, terms):
    """As many stages as the hardware model counts besides the input register (the generator's StageSchedule
    places them the same way), their levels summing to the lane's depth, none deeper than ``levels``."""
    g = random_graph(seed, max_c=4, max_hw=5, convs=3, max_terms=terms)
    hw = {m.name: m for m in hw_model(g, levels)}
    for layer, info in zip(g.layers, annotate(g)):
        if not isinstance(op_of(layer), WeightedOp):
            continue
        widths = stage_timing.level_widths(layer, info)
        stages = stage_timing.stages_of(widths, levels)
        depth = widths.shape[1] - 1
        assert len(stages) + (depth > 0) == hw[layer.name].stages
        assert sum(s.levels for s in stages) == depth and all(s.levels <= levels for s in stages)
        assert all(s.fanout >= 1 for s in stages) and (depth == 0 or all(s.width >= 1 for s in stages))


@settings(max_examples=20, deadline=None)
@given(st.floats(-200, 200), st.floats(50, 400), st.floats(0, 30), st.floats(0, 100), st.integers(0, 1000))
def test_the_fit_recovers_a_model_that_made_the_data(c0, c_level, c_bit, c_fanout, seed):
    rng = np.random.default_rng(seed)
    true = StageTimingModel(c0, c_level, c_bit, c_fanout)
    lanes = [[Stage(int(rng.integers(1, 7)), int(rng.integers(8, 24)), int(rng.integers(1, 64)))
              for _ in range(int(rng.integers(1, 4)))] for _ in range(30)]
    m = stage_timing.fit([(s, true.lane_ps(s)) for s in lanes])
    assert m.rms_error_ps < 1e-6 * (1 + abs(c0) + c_level)
    for s in lanes:
        assert math.isclose(m.lane_ps(s), true.lane_ps(s), abs_tol=1e-6 * (1 + abs(c0) + c_level))


def test_levels_for_a_clock_are_the_most_that_meet_it():
    g = random_graph(7, max_c=6, max_hw=6, convs=4, max_terms=2)
    model = stage_timing.load()
    weighted = [(l, i) for l, i in zip(g.layers, annotate(g)) if isinstance(op_of(l), WeightedOp)]
    for ps in (500, 800, 1000, 2000):
        levels, predicted = stage_timing.levels_for_clock(g, ps, model, margin_ps=25)
        assert set(levels) == {l.name for l, _ in weighted}
        for layer, info in weighted:
            w = stage_timing.level_widths(layer, info)
            lps = levels[layer.name]
            assert predicted[layer.name] == model.lane_ps(stage_timing.stages_of(w, lps))
            if lps > 1:  # it meets the clock (one level is the floor, met or not) ...
                assert predicted[layer.name] + 25 <= ps
            depth = w.shape[1] - 1
            assert 1 <= lps <= max(1, min(depth, stage_timing.MAX_LEVELS))  # never more levels than the lane has
            if lps < min(depth, stage_timing.MAX_LEVELS):  # ... and one more level of any count above it would not
                more = [model.lane_ps(stage_timing.stages_of(w, k)) for k in range(lps + 1, depth + 1)]
                assert min(more) + 25 > ps
    with pytest.raises(ValueError, match="period_ps: expected a positive clock period"):
        stage_timing.levels_for_clock(g, 0)


def test_the_packaged_model_loads_and_a_bad_file_names_what_it_expected(tmp_path):
    m = stage_timing.load()
    assert m.c_level > 0 and m.points >= 4 and m.max_under_ps >= 0
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"c0": 1.0, "c_level": 2.0}))
    with pytest.raises(ValueError, match=r"m\.json: expected c0, c_level, c_bit and c_fanout"):
        stage_timing.load(bad)
    bad.write_text(json.dumps({"c0": 1.0, "c_level": -2.0, "c_bit": 0.0, "c_fanout": 0.0}))
    with pytest.raises(ValueError, match="c_level must be positive"):
        stage_timing.load(bad)
    bad.write_text(json.dumps({"c0": float("nan"), "c_level": 2.0, "c_bit": 0.0, "c_fanout": 0.0}))
    with pytest.raises(ValueError, match="coefficients must be finite numbers"):
        stage_timing.load(bad)
