"""VCD traces of the running design: windowed, read back, ready/valid streams decoded, and the widget."""
import json

import numpy as np
import pytest

from hashiflex import hw
from hashiflex.data import digits
from hashiflex.sim import StreamSim
from hashiflex.sim.stream import to_beats
from hashiflex.sim.vcd import images_in_flight, layer_activity, read_vcd, stream_stats

pytestmark = [pytest.mark.verilator, pytest.mark.slow, pytest.mark.mill]
N = 4


@pytest.fixture(scope="module")
def traced(default_flow, tmp_path_factory):
    work, _ = default_flow
    d = json.loads((work / "design.json").read_text())
    sim = StreamSim(work / "rtl", hw.read_hw_params(work / "rtl"), d)
    x = digits().x_test[:N]
    out = tmp_path_factory.mktemp("vcd")
    full = sim.run(x, vcd=out / "full.vcd", progress=False, backpressure=np.array([0, 0, 1]))
    start = sim.cycle
    part = sim.run(x, vcd=out / "part.vcd", vcd_window=(70, 150), progress=False)
    return d, x, full, read_vcd(out / "full.vcd"), part, read_vcd(out / "part.vcd"), start


def test_streams_decode_to_what_the_harness_saw(traced):
    d, x, full, t, *_ = traced
    s = {r.stream: r for r in stream_stats(t)}
    assert s["TOP.in"].transfers == N * 64 and s["TOP.out"].transfers == N
    assert s["TOP.out"].stalls == full.output_stalls > 0  # out_ready low one cycle in three
    assert s["TOP.in"].stalls == full.input_waits
    # the pixels crossing the input port, in order, are the images' beats
    v, r = t.sampled("TOP.in_valid") == 1, t.sampled("TOP.in_ready") == 1
    assert np.array_equal(t.sampled("TOP.in_bits_0")[v & r], to_beats(x, 1, 5)[:, 0])


def test_layer_pixels_and_images_in_flight(traced):
    d, x, full, t, *_ = traced
    act = {r["layer"]: r for r in layer_activity(t, d)}
    assert [r for r in act] == [l["name"] for l in d["layers"]]
    assert act["conv1"]["pixels"] == N * 64 and act["conv2"]["pixels"] == N * 16 and act["fc"]["beats"] == N
    cycles, inside = images_in_flight(t, d)
    assert inside.min() >= 0 and inside[-1] == 0 and inside.max() >= 1


def test_a_window_traces_only_its_cycles_at_their_true_times(traced):
    d, x, full, t, part, tp, start = traced
    assert tp.cycle_time == t.cycle_time
    assert tp.cycles.min() >= start + 70 and tp.cycles.max() < start + 150
    assert tp.path.stat().st_size < t.path.stat().st_size / 2
    s = {r.stream: r for r in stream_stats(tp)}
    assert s["TOP.in"].transfers == len(tp.cycles)  # free-running: a beat every cycle of the window


def test_wave_viewer(traced):
    pytest.importorskip("ipywidgets")
    from hashiflex.sim.widgets import WaveViewer

    d, x, full, t, *_ = traced
    v = WaveViewer(t, d)
    assert "TOP.in_valid" in v.picker.value  # sensible defaults
    names = ["TOP.in_valid", "TOP.in_bits_0", "TOP.Hashiflex_digits_cnn.conv1.out_valid", "TOP.out_bits_3"]
    v.select(names)
    c0 = int(t.cycles[20])
    v.window.value = (c0, c0 + 40)
    v.cursor.value = c0 + 5
    i = int(np.nonzero(t.cycles == c0 + 5)[0][0])
    assert v.values_at() == {n: int(t.sampled(n)[i]) for n in names}
    fig = v.render()
    assert [lab.get_text() for lab in fig.axes[0].get_yticklabels()] == [n.split(".", 1)[1] for n in names]
    cycles, inside = images_in_flight(t, d)
    assert v.images_in_flight_at() == int(inside[cycles == c0 + 5][0])
    assert "images in flight" in v.table.value
    v.zoom(0.5)
    assert v.window.value[1] - v.window.value[0] <= 21
    rows = v.decoder_rows()
    assert any(r["stream"] == "TOP.in" for r in rows) and any(r["stream"].startswith("layer conv2") for r in rows)
    v.search.value = r"conv2\..*valid"
    assert v.picker.options and all("conv2." in n for n in v.picker.options)
    with pytest.raises(KeyError):
        v.select(["TOP.nope"])


def test_layer_stats_from_the_run(default_flow):
    work, _ = default_flow
    d = json.loads((work / "design.json").read_text())
    sim = StreamSim(work / "rtl", hw.read_hw_params(work / "rtl"), d)
    res = sim.run(digits().x_test[:3], progress=False, layer_stats=True, backpressure=np.array([0, 1]))
    by = {r["layer"]: r for r in res.layers}
    assert by["conv1"]["pixels"] == 3 * 64 and by["conv2"]["pixels"] == 3 * 16 and by["fc"]["beats"] == 3
    assert by["fc"]["stalls"] == res.output_stalls  # the last layer's stalls are the harness's


def test_a_shallow_trace_keeps_the_layers_and_drops_their_insides(default_flow, tmp_path):
    """trace_depth=2: the top's and the layers' ports, not the adder-graph lanes inside them."""
    work, _ = default_flow
    d = json.loads((work / "design.json").read_text())
    sim = StreamSim(work / "rtl", hw.read_hw_params(work / "rtl"), d, trace_depth=2)
    sim.run(digits().x_test[:2], vcd=tmp_path / "shallow.vcd", progress=False)
    t = read_vcd(tmp_path / "shallow.vcd")
    assert not [s for s in t.scopes() if s.endswith(".l")] and "TOP.Hashiflex_digits_cnn.conv2" in t.scopes()
    assert [r["pixels"] for r in layer_activity(t, d)][:3] == [128, 128, 32]
    with pytest.raises(ValueError, match="trace_depth"):
        StreamSim(work / "rtl", hw.read_hw_params(work / "rtl"), d, trace_depth=0)


def test_an_untraced_model_computes_the_same_and_refuses_to_trace(default_flow, tmp_path):
    """trace=False, build_opt="-O0" (the layerwise verification's models): no trace code, a model of its own, the
    same outputs; a VCD or layer statistics asked of it is a clear error, and so are a trace depth and a bad level."""
    work, _ = default_flow
    d = json.loads((work / "design.json").read_text())
    params = hw.read_hw_params(work / "rtl")
    traced = StreamSim(work / "rtl", params, d)
    bare = StreamSim(work / "rtl", params, d, trace=False, make_jobs=1, build_opt="-O0")
    assert bare.build_dir != traced.build_dir
    x = digits().x_test[:3]
    assert np.array_equal(bare.run(x, progress=False).outputs, traced.run(x, progress=False).outputs)
    # the trace code is what makes big models slow to build: none of it is left
    decls = lambda sim: sum(f.read_text().count("decl") for f in sim.build_dir.glob("*Trace*.cpp"))  # noqa: E731
    assert decls(bare) == 0 < decls(traced)
    with pytest.raises(ValueError, match="vcd: this model was built with trace=False"):
        bare.run(x, vcd=tmp_path / "no.vcd", progress=False)
    with pytest.raises(ValueError, match="layer_stats: this model was built with trace=False"):
        bare.run(x, layer_stats=True, progress=False)
    with pytest.raises(ValueError, match="trace_depth=2: expected None when trace=False"):
        StreamSim(work / "rtl", params, d, trace=False, trace_depth=2)
    with pytest.raises(ValueError, match="make_jobs: expected >= 1"):
        StreamSim(work / "rtl", params, d, trace=False, make_jobs=0)
    with pytest.raises(ValueError, match="build_opt: expected a C\\+\\+ optimisation level .* found 'fast'"):
        StreamSim(work / "rtl", params, d, build_opt="fast")
