"""The NPU head in Verilator: golden == RTL for random heads loaded into one running simulation, reload while
images stream (atomic, at an image boundary), refused images (status codes, the old head keeps serving), and the
combined II = max(backbone, NPU) measured."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hashiflex import hw, npu
from hashiflex.export import design_from_graph, write_design
from hashiflex.npu import Head, NpuConfig, NpuError, Status, encode, expected_status
from hashiflex.passes import annotate, initiation_interval
from hashiflex.sim import StreamSim
from tests.conftest import require_tool
from tests.helpers import random_graph, random_inputs

pytestmark = [pytest.mark.verilator, pytest.mark.slow, pytest.mark.mill]


def _backbone(seed):
    g = random_graph(seed, max_c=4, max_hw=6, head=True, name=f"npu{seed}")
    return npu.split_head(g)[0]


def _designs():
    """(name, backbone, target_ii, config): backbone-bound (sized by the pass), scan-bound, schedule-bound."""
    out = []
    bb = _backbone(0)
    last = annotate(bb)[-1]
    out.append(("bb_bound", bb, None, npu.size_npu(last.out_shape[0], last.out_bounds, 7, initiation_interval(bb),
                                                     6, 12, 10, top_k=3)))
    bb = _backbone(4)
    last = annotate(bb)[-1]
    c, b = last.out_shape[0], last.out_bounds
    out.append(("scan_bound", bb, 4, NpuConfig(c, b, 9, lanes=2, width=2, weight_bits=5, bias_bits=10, out_bits=8,
                                               top_k=2, scan=1)))
    out.append(("mac_bound", bb, 4, NpuConfig(c, b, 3, lanes=1, width=1, weight_bits=8, bias_bits=16, out_bits=12,
                                              top_k=1, scan=1)))
    return out


def random_head(cfg: NpuConfig, rng, tag: int, out: int | None = None) -> Head:
    o = out or int(rng.integers(cfg.top_k, cfg.capacity + 1))
    wl, wh = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    bl, bh = -(1 << (cfg.bias_bits - 1)), (1 << (cfg.bias_bits - 1)) - 1
    w = rng.integers(wl, wh + 1, size=(o, cfg.in_features))
    w.flat[rng.integers(0, w.size)] = wl  # the extremes are in there
    return Head(w, rng.integers(bl, bh + 1, size=o), 0, int(rng.integers(0, cfg.max_shift + 1)), tag)


@pytest.fixture(scope="module")
def npu_sims(work_root):
    require_tool("verilator")
    rng = np.random.default_rng(5)
    jobs, meta = [], []
    for name, bb, target, cfg in _designs():
        d = design_from_graph(bb, 3, target, npu=(cfg, random_head(cfg, rng, 1)))
        base = work_root / "npu" / name
        write_design(d, base / "design.json")
        jobs.append((base / "design.json", base / "rtl"))
        meta.append((name, bb, cfg, d))
    params = hw.elaborate_many(jobs, quiet=True)
    out = {}
    for (name, bb, cfg, d), p, (_, rtl) in zip(meta, params, jobs):
        hw.check_design_hw(d, bb, p)
        sim = StreamSim(rtl, p, d)
        head = npu.from_design(d)[1]
        assert sim.load(encode(head, cfg)) == Status.OK
        out[name] = (bb, cfg, d, sim, head)
    return out


def _check(sim_entry, head, x):
    bb, cfg, d, sim, _ = sim_entry
    res = sim.run(x, progress=False)
    logits, top = npu.golden(bb, cfg, head, x)
    assert np.array_equal(res.outputs[:, :head.out_features], logits)
    assert not res.outputs[:, head.out_features:].any()
    assert np.array_equal(res.topk, top)
    return res


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.integers(0, 2 ** 32 - 1), st.integers(1, 4))
def test_random_heads_loaded_into_the_running_npu_equal_the_golden_model(npu_sims, data, seed, n):
    name = data.draw(st.sampled_from(sorted(npu_sims)))
    bb, cfg, d, sim, _ = npu_sims[name]
    rng = np.random.default_rng(seed)
    head = random_head(cfg, rng, tag=int(rng.integers(0, 2 ** 32)))
    assert sim.load(encode(head, cfg)) == Status.OK
    assert sim.status() == (Status.OK, head.tag)
    _check(npu_sims[name], head, random_inputs(bb, n, seed))


def test_combined_ii_is_the_slower_of_backbone_and_npu(npu_sims):
    seen = set()
    for name, (bb, cfg, d, sim, _) in npu_sims.items():
        head = random_head(cfg, np.random.default_rng(1), 3, out=cfg.capacity)
        assert sim.load(encode(head, cfg)) == Status.OK
        res = _check(npu_sims[name], head, random_inputs(bb, 6, 2))
        want = max(initiation_interval(bb, d["hardware"]["target_ii"]), cfg.cycles_per_image)
        assert d["hardware"]["ii_cycles_per_image"] == want
        assert res.cycles_per_image == want, name
        seen.add("npu" if cfg.cycles_per_image > initiation_interval(bb, d["hardware"]["target_ii"]) else "bb")
        if cfg.tiles * cfg.chunks < cfg.cycles_per_image:
            seen.add("scan")
    assert seen == {"npu", "bb", "scan"}  # the fixture covers each pace-setter


def test_reload_while_streaming_switches_heads_at_an_image_boundary(npu_sims):
    bb, cfg, d, sim, _ = npu_sims["bb_bound"]
    rng = np.random.default_rng(11)
    old, new = random_head(cfg, rng, 100, out=cfg.capacity), random_head(cfg, rng, 200, out=cfg.capacity)
    assert sim.load(encode(old, cfg)) == Status.OK
    x = random_inputs(bb, 12, 4)
    a, b = npu.golden(bb, cfg, old, x)[0], npu.golden(bb, cfg, new, x)[0]
    assert (a != b).any(axis=1).all()  # every image tells the heads apart
    res = sim.run(x, progress=False, load=encode(new, cfg))
    assert res.load_status == Status.OK and sim.status() == (Status.OK, 200)
    by_old = (res.outputs == a).all(axis=1)
    by_new = (res.outputs == b).all(axis=1)
    assert (by_old ^ by_new).all()  # each image was computed wholly by one head
    k = int(by_new.argmax())
    assert 0 < k < len(x) and by_old[:k].all() and by_new[k:].all()  # old ones first, then only new ones
    _check(npu_sims["bb_bound"], new, x[:3])


CORRUPTIONS = {
    "bad magic": lambda w, c: np.concatenate([[0], w[1:]]),
    "bad version": lambda w, c: np.concatenate([w[:1], [w[1] + (1 << 16)], w[2:]]),
    "bad bits": lambda w, c: np.concatenate([w[:1], [w[1] ^ (1 << 8)], w[2:]]),
    "too many outputs": lambda w, c: np.concatenate([w[:2], [c.in_features << 16 | (c.capacity + 1)], w[3:]]),
    "wrong in_features": lambda w, c: np.concatenate([w[:2], [(c.in_features + 1) << 16 | (w[2] & 0xFFFF)], w[3:]]),
    "shift too large": lambda w, c: np.concatenate([w[:3], [c.max_shift + 1], w[4:]]),
    "weight out of range": lambda w, c: np.concatenate([w[:5], [1 << (c.weight_bits - 1)], w[6:]]),
    "truncated": lambda w, c: w[:-3],
    "too long": lambda w, c: np.append(w, 7),
    "corrupt payload": lambda w, c: np.concatenate([w[:6], [w[6] ^ 1], w[7:]]),
    "empty image": lambda w, c: w[:1],
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_a_bad_image_is_refused_and_the_old_head_keeps_serving(npu_sims, what):
    bb, cfg, d, sim, _ = npu_sims["scan_bound"]
    rng = np.random.default_rng(21)
    good = random_head(cfg, rng, 77)
    assert sim.load(encode(good, cfg)) == Status.OK
    x = random_inputs(bb, 3, 9)
    before = _check(npu_sims["scan_bound"], good, x).outputs
    bad = CORRUPTIONS[what](encode(good, cfg), cfg).astype(np.uint64) & 0xFFFFFFFF
    want = expected_status(bad, cfg)
    assert want not in (Status.OK, Status.LOADING)
    assert sim.load(bad) == want
    assert sim.status() == (want, 77)
    assert np.array_equal(_check(npu_sims["scan_bound"], good, x).outputs, before)


def test_an_npu_without_weights_says_so(npu_sims):
    bb, cfg, d, sim, _ = npu_sims["mac_bound"]
    rtl = sim.rtl_dir  # a second model instance of the cached build starts empty
    other = StreamSim(rtl, hw.read_hw_params(rtl), d)
    assert other.status() == (Status.EMPTY, 0)
    with pytest.raises(NpuError, match="load a head first"):
        other.run(random_inputs(bb, 1, 0), progress=False)


def test_an_empty_load_image_is_too_short_and_changes_nothing(npu_sims):
    bb, cfg, d, sim, _ = npu_sims["scan_bound"]
    good = random_head(cfg, np.random.default_rng(5), 91)
    assert sim.load(encode(good, cfg)) == Status.OK
    x = random_inputs(bb, 2, 3)
    before = _check(npu_sims["scan_bound"], good, x).outputs
    assert expected_status(np.zeros(0, dtype=np.uint64), cfg) == Status.TOO_SHORT
    assert sim.load([]) == Status.TOO_SHORT  # not the previous load's status
    assert sim.status() == (Status.OK, 91)   # nothing crossed the port: the head keeps serving
    assert np.array_equal(_check(npu_sims["scan_bound"], good, x).outputs, before)


def test_the_npu_and_what_it_holds_are_in_the_module_table(npu_sims, work_root):
    """The area model prices the NPU's logic and its loader from the generator's table and counts its weight banks
    (NpuWeightMemory, kind "memory") as memory bits, leaving nothing unpriced."""
    from hashiflex.report import area_model
    from hashiflex.report.hierarchy import inspect_verilog

    model = area_model.AreaModel(dict.fromkeys(area_model.FEATURES, 1.0))
    for name, (bb, cfg, d, sim, _) in npu_sims.items():
        rtl = work_root / "npu" / name / "rtl"
        params = hw.read_hw_params(rtl)
        mods = inspect_verilog(rtl / params["verilog"])
        npu_mod = params["npu"]["module"]
        assert area_model.module_features(npu_mod, params) is not None, name
        mems = []
        for child in mods[npu_mod].children:
            if area_model.module_features(child, params) is None:
                mems.append(area_model.memory_bits(child, params))
        assert mems == [2 * cfg.tiles * cfg.chunks * cfg.lanes * cfg.width * cfg.weight_bits], name
        e = area_model.estimate(model, rtl / params["verilog"], params)
        assert e["unmodelled_modules"] == [] and e["memory_bits"] == mems[0], name
        assert npu_mod in e["breakdown"]
