"""The area model: module kinds recognised from names and hw_params, and the fit recovers known costs."""
import numpy as np
import pytest

from hashiflex.report.area_model import FEATURES, AreaModel, evaluate, fit, module_features

HW = {"layers": [{"name": "features.3.conv.0.0", "adder_bits": 1200, "register_bits": 300}]}


def test_module_kinds_and_their_features():
    f = module_features("ShiftAddLayer_features3conv00_n24_o144_p4_s2", HW)
    assert (f["adder_bits"], f["flip_flop_bits"]) == (1200, 300)
    w = module_features("WindowGen_c16_8x8_k3s1p1_b8_i2o2", HW)
    assert w["flip_flop_bits"] == 4 * 8 * 16 * 8          # k+s rows of the image width, all channels
    assert w["mux_bits"] > 0
    # TF 'SAME' padding (per side): a stride-2 window on 8x8 padded below and right has 4 output columns, as the
    # symmetric 1-padded one does; unpadded left and right it has 3 (fewer column candidates per element)
    # a max pool's line buffer pads with the format's smallest value (a `_v` suffix): the same hardware
    assert module_features("WindowGen_c16_8x8_k3s1p1_b8_i2o2_v128", HW) == w
    tf = module_features("WindowGen_c16_8x8_k3s2pt0b1l0r1_b8_i2o2", HW)
    assert tf == module_features("WindowGen_c16_8x8_k3s2p1_b8_i2o2", HW)
    assert module_features("WindowGen_c16_8x8_k3s2pt0b1l0r0_b8_i2o1", HW)["mux_bits"] < module_features(
        "WindowGen_c16_8x8_k3s2pt0b1l1r0_b8_i2o1", HW)["mux_bits"]
    assert module_features("Requant_c32_i12s_sh3_lo0_hi255", HW)["elementwise_bits"] == 32 * 12
    assert module_features("Queue7_Vec16_UInt8", HW)["flip_flop_bits"] == 7 * 16 * 8
    assert module_features("Fork_n2_l16_w8", HW)["modules"] == 1
    assert module_features("Something_else", HW) is None
    assert module_features("ShiftAddLayer_unknown_n1_o1_p1_s1", HW) is None


def test_fit_recovers_known_costs_and_reports_held_out_error():
    rng = np.random.default_rng(0)
    true = dict(zip(FEATURES, [0.9, 0.3, 0.05, 0.2, 10.0]))
    data = []
    for i in range(40):
        f = {k: float(rng.integers(0, 5000)) for k in FEATURES}
        f["modules"] = 1.0
        data.append((f"m{i}", f, AreaModel(true).predict(f)))
    model = fit(data[:30])
    for k in FEATURES:
        assert model.coef[k] == pytest.approx(true[k], rel=1e-6)
    ev = evaluate(model, data[30:])
    assert ev["modules"] == 10 and ev["max_abs_error"] < 1e-6


@pytest.mark.slow
@pytest.mark.mill
def test_max_pool_features_follow_the_generators_register_count(elaborated):
    """The model prices a max pool from its module name; its flip-flops equal what the generator reports."""
    seen = 0
    for _, d, params, _ in elaborated:
        width = {l["name"]: l["out_width"] for l in d["layers"]} | {"input": d["input"]["bits"]}
        signed = {l["name"]: l["out_signed"] for l in d["layers"]} | {"input": d["input"]["signed"]}
        for l, h in zip(d["layers"], params["layers"]):
            if l["op"] != "max_pool2d":
                continue
            name = (f"MaxPool_c{l['in_shape'][0]}_k{l['kernel']}_p{l['parallelism']}_s{h['stages']}_i{width[l['src']]}"
                    f"{'s' if signed[l['src']] else 'u'}")
            f = module_features(name, params)
            assert f["flip_flop_bits"] == h["register_bits"], name
            assert f["adder_bits"] == h["comparators"] * (width[l["src"]] + 1)
            seen += 1
    assert seen >= 3
