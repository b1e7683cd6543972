"""hashiflex.npu: sizing, head quantization, the golden model, load images and their checks (no hardware)."""
import dataclasses
import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hashiflex import npu
from hashiflex.export import DesignValidationError, design_from_graph, npu_design, validate_design
from hashiflex.npu import Head, NpuConfig, NpuError, Status, encode, expected_status
from tests.helpers import random_graph

CFG = NpuConfig(in_features=6, in_bounds=(0, 255), capacity=5, lanes=2, width=3, weight_bits=6, bias_bits=12,
                out_bits=8, top_k=2, scan=1)


def head(o=4, seed=0, shift=3, tag=9) -> Head:
    rng = np.random.default_rng(seed)
    return Head(rng.integers(-32, 32, size=(o, CFG.in_features)), rng.integers(-2048, 2048, size=o), -5, shift, tag)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 2000))
def test_the_array_is_the_smallest_that_meets_the_target(c, o, target):
    lanes, width = npu.choose_array(c, o, target)
    sched = math.ceil(o / lanes) * math.ceil(c / width)
    assert sched <= target  # always reachable: lanes = capacity gives one tile
    for l in range(1, o + 1):  # and no array with fewer multipliers meets it
        t = math.ceil(o / l)
        if t <= target:
            assert l * math.ceil(c / (target // t)) >= lanes * width


def test_mobilenet_v2_head_sizing_matches_the_papers_order():
    """1280 -> 1000 at ~800 cycles/image needs ~1,600 MACs (the paper: ~1,550 lanes at 826)."""
    cfg = npu.size_npu(1280, (0, 255 * 49), 1000, 784)
    assert cfg.cycles_per_image <= 784
    assert 1280 * 1000 / 784 <= cfg.macs <= 1.1 * 1280 * 1000 / 784


def test_acc_width_holds_the_worst_case():
    m = 255 * CFG.in_features * (1 << (CFG.weight_bits - 1)) + (1 << (CFG.bias_bits - 1))
    assert -(1 << (CFG.acc_width - 1)) <= -m and m <= (1 << (CFG.acc_width - 1)) - 1
    assert m > (1 << (CFG.acc_width - 2)) - 1  # and is the smallest such width


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 5), st.integers(0, 8))
def test_golden_head_equals_python_integers(seed, o, shift):
    """run_head / top_k against plain Python ints (round half up, clamp, stable ranking)."""
    rng = np.random.default_rng(seed)
    h = Head(rng.integers(-32, 32, size=(o, 6)), rng.integers(-2048, 2048, size=o), 0, shift)
    x = rng.integers(0, 256, size=(7, 6))
    x[0] = 255
    logits = npu.run_head(h, CFG, x)
    for n in range(len(x)):
        want = []
        for r in range(o):
            acc = sum(int(a) * int(b) for a, b in zip(h.weights[r], x[n])) + int(h.bias[r])
            y = (acc + (1 << (shift - 1))) >> shift if shift else acc
            want.append(max(-128, min(127, y)))
        assert logits[n].tolist() == want
        order = sorted(range(o), key=lambda i: (-want[i], i))[:2]
        assert npu.top_k(logits[n:n + 1], 2)[0].tolist() == order


def test_top_k_ties_go_to_the_lower_index():
    assert npu.top_k(np.array([[3, 7, 7, 1, 7]]), 3).tolist() == [[1, 2, 4]]


def test_image_layout_and_crc():
    h = head()
    w = encode(h, CFG)
    assert w.dtype == np.uint32
    assert len(w) == npu.HEADER_WORDS + 4 * 6 + 4 + 1
    assert w[0] == npu.MAGIC and w[2] == (6 << 16 | 4) and w[3] == 3 and w[4] == 9
    assert np.array_equal(w[5:5 + 24].view(np.int32), h.weights.ravel())
    assert w[-1] == zlib.crc32(w[:-1].astype("<u4").tobytes())
    assert expected_status(w, CFG) == Status.OK


@pytest.mark.parametrize("edit, code", [
    (lambda w: w.__setitem__(0, 0), Status.BAD_MAGIC),
    (lambda w: w.__setitem__(1, w[1] + (1 << 16)), Status.BAD_VERSION),
    (lambda w: w.__setitem__(1, w[1] + 1), Status.BAD_BITS),
    (lambda w: w.__setitem__(2, 7 << 16 | 4), Status.BAD_SHAPE),
    (lambda w: w.__setitem__(2, 6 << 16 | 6), Status.BAD_SHAPE),
    (lambda w: w.__setitem__(3, 99), Status.BAD_SHIFT),
    (lambda w: w.__setitem__(7, 32), Status.BAD_VALUE),
    (lambda w: w.__setitem__(7, 0xFFFFFFDF), Status.BAD_VALUE),       # -33 < -32
    (lambda w: w.__setitem__(6, w[6] ^ 1), Status.BAD_CHECKSUM),
])
def test_every_refusal_has_its_code(edit, code):
    w = encode(head(), CFG).copy()
    edit(w)
    assert expected_status(w, CFG) == code


def test_length_errors():
    w = encode(head(), CFG)
    assert expected_status(w[:-1], CFG) == Status.TOO_SHORT
    assert expected_status(w[:3], CFG) == Status.TOO_SHORT
    assert expected_status(np.append(w, 0), CFG) == Status.TOO_LONG


@pytest.mark.parametrize("change, field", [
    (dict(weights=np.zeros((4, 5), dtype=int)), "head.weights: expected shape (out_features, 6)"),
    (dict(weights=np.zeros((6, 6), dtype=int), bias=np.zeros(6, dtype=int)), "head.weights: expected 1..5 outputs"),
    (dict(weights=np.zeros((1, 6), dtype=int), bias=np.zeros(1, dtype=int)), "at least top_k=2 outputs"),
    (dict(bias=np.zeros(3, dtype=int)), "head.bias: expected 4 entries"),
    (dict(weights=np.full((4, 6), 32)), "head.weights: expected values in [-32, 31] (6-bit)"),
    (dict(bias=np.full(4, 5000)), "head.bias: expected values in [-2048, 2047]"),
    (dict(weights=np.zeros((4, 6))), "head.weights: expected integers"),
    (dict(shift=40), "head.shift: expected 0.."),
    (dict(tag=-1), "head.tag"),
])
def test_the_encoder_refuses_bad_heads_before_they_reach_hardware(change, field):
    h = head()
    for k, v in change.items():
        setattr(h, k, v)
    with pytest.raises(NpuError, match=field.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        encode(h, CFG)


def test_config_checks_its_fields():
    with pytest.raises(NpuError, match=r"npu.lanes: expected an integer in \[1, 5\], found 9"):
        NpuConfig(6, (0, 255), 5, 9, 1)
    with pytest.raises(NpuError, match=r"npu.top_k"):
        NpuConfig(6, (0, 255), 5, 1, 1, top_k=6)


def test_quantized_head_tracks_the_float_head():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 6)) * 0.01
    b = rng.normal(size=5) * 0.1
    x = rng.integers(0, 256, size=(200, 6))
    in_exp = -6
    cfg = dataclasses.replace(CFG, bias_bits=24)
    h = npu.quantize_head(w, b, in_exp, cfg, calib=x)
    assert np.abs(h.weights).max() <= 31 and np.abs(h.weights).max() >= 16  # the range is used
    logits = npu.run_head(h, cfg, x)
    assert np.abs(logits).max() <= 127
    ref = (x * 2.0 ** in_exp) @ w.T + b
    got = logits * 2.0 ** (in_exp + h.w_exp + h.shift)
    assert (np.argmax(got, 1) == np.argmax(ref, 1)).mean() > 0.9


def _npu_graph():
    g = random_graph(0, max_c=4, max_hw=6, head=True, name="npug")
    g.layers[-1].weight = np.random.default_rng(0).normal(size=g.layers[-1].weight.shape)
    return g


def test_npu_design_validates_and_re_derives():
    g = _npu_graph()
    d = npu_design(g, capacity=6, top_k=2)
    bb = validate_design(d)
    assert [l.name for l in bb.layers] == [l.name for l in g.layers[:-1]]
    cfg, h = npu.from_design(d)
    assert (cfg.capacity, cfg.top_k, h.out_features) == (6, 2, g.layers[-1].out_features)
    assert d["hardware"]["ii_cycles_per_image"] == max(cfg.cycles_per_image, 25)
    assert d["output"] == {"features": 6, "exp": d["layers"][-1]["out_exp"] + h.w_exp + h.shift,
                           "bounds": [-(1 << 15), (1 << 15) - 1], "width": 16, "signed": True}


@pytest.mark.parametrize("path, value, message", [
    (("npu", "acc_width"), 5, "design.npu.acc_width: expected"),
    (("npu", "cycles_per_image"), 1, "design.npu.cycles_per_image: expected"),
    (("npu", "in_features"), 3, "design.npu.in_features: expected the backbone to end in a vector of 3"),
    (("npu", "lanes"), 0, "design.npu.lanes"),
    (("npu", "head", "shift"), 60, "design.npu.head.shift: expected 0..")
])
def test_a_bad_npu_section_is_refused_with_its_path(path, value, message):
    d = npu_design(_npu_graph(), capacity=6)
    node = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(DesignValidationError, match=message.replace(".", r"\.")):
        validate_design(d)


def test_the_npu_needs_a_network_ending_in_a_linear_layer():
    g = random_graph(0, max_c=4, max_hw=6, head=False)
    with pytest.raises(NpuError, match="expected the network to end in a linear layer"):
        npu_design(g)
    with pytest.raises(DesignValidationError, match="design.npu.in_features"):
        design_from_graph(g, npu=(CFG, head()))
