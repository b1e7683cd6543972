"""The area model: module kinds recognised from names and hw_params, and the fit recovers known costs."""
import numpy as np
import pytest

from hashiflex.report.area_model import (FEATURES, AreaModel, estimate, evaluate, fit, fit_feature, memory_bits,
                                        module_features)

HW = {"modules": [
    {"name": "ShiftAddLayer_features3conv00_n24_o144_p4_s2", "kind": "adder_layer", "lanes": 4, "adders": 400,
     "adder_bits": 1200, "register_bits": 300, "stages": 2, "inputs": 24, "outputs": 144},
    {"name": "WindowGen_c16_8x8_k3s1p1_b8_i2o2", "kind": "line_buffer", "channels": 16, "height": 8, "width": 8,
     "kernel": 3, "stride": 1, "rows": 4, "bits": 8, "par_in": 2, "par_out": 2, "out_width": 8},
    {"name": "WindowGen_c16_8x8_k3s2p1_b8_i2o2", "kind": "line_buffer", "channels": 16, "height": 8, "width": 8,
     "kernel": 3, "stride": 2, "rows": 5, "bits": 8, "par_in": 2, "par_out": 2, "out_width": 4},
    {"name": "WindowGen_c16_8x8_k3s2p1_b8_i2o1", "kind": "line_buffer", "channels": 16, "height": 8, "width": 8,
     "kernel": 3, "stride": 2, "rows": 5, "bits": 8, "par_in": 2, "par_out": 1, "out_width": 4},
    {"name": "Requant_c32_i12s_sh3_lo0_hi255", "kind": "requant", "lanes": 32, "in_width": 12, "shift": 3,
     "out_width": 8},
    {"name": "Queue7_Vec16_UInt8", "kind": "fifo", "depth": 7, "lanes": 16, "width": 8},
    {"name": "Fork_n2_l16_w8", "kind": "fork", "readers": 2, "lanes": 16, "width": 8},
    {"name": "Lut_l6_n64_i6s_o5_0a1b2c3d", "kind": "lut", "lanes": 6, "entries": 64, "in_width": 6, "out_width": 5},
    {"name": "MaxPool_c4_k3_p2_s2_i8u", "kind": "max_pool", "channels": 4, "kernel": 3, "par": 2, "width": 8,
     "comparators": 64, "register_bits": 640},
    {"name": "Weird_m", "kind": "weird"}]}


def test_module_kinds_and_their_features_come_from_the_generators_table():
    f = module_features("ShiftAddLayer_features3conv00_n24_o144_p4_s2", HW)
    assert (f["adder_bits"], f["flip_flop_bits"], f["modules"]) == (1200, 300, 1)
    w = module_features("WindowGen_c16_8x8_k3s1p1_b8_i2o2", HW)
    assert w["flip_flop_bits"] == 4 * 8 * 16 * 8          # k+s rows of the image width, all channels
    assert w["mux_bits"] > 0
    # one output column per beat means more column candidates per window element than two
    assert module_features("WindowGen_c16_8x8_k3s2p1_b8_i2o1", HW)["mux_bits"] > module_features(
        "WindowGen_c16_8x8_k3s2p1_b8_i2o2", HW)["mux_bits"]
    assert module_features("WindowGen_c16_8x8_k3s1p1_b8_i2o2_1", HW) == w  # Chisel's suffix for a second copy
    assert module_features("Requant_c32_i12s_sh3_lo0_hi255", HW)["elementwise_bits"] == 32 * 12
    assert module_features("Queue7_Vec16_UInt8", HW)["flip_flop_bits"] == 7 * 16 * 8
    assert module_features("Fork_n2_l16_w8", HW)["modules"] == 1
    assert module_features("Lut_l6_n64_i6s_o5_0a1b2c3d", HW)["mux_bits"] == 6 * 64 * 5  # a table per lane
    mp = module_features("MaxPool_c4_k3_p2_s2_i8u", HW)
    assert (mp["adder_bits"], mp["mux_bits"], mp["flip_flop_bits"]) == (64 * 9, 64 * 8, 640)
    assert module_features("Something_else", HW) is None  # not in the table: not priced
    # a torch layer name with dots: the table has the desired name, the Verilog Chisel's legal one
    dotted = dict(HW, modules=[dict(m, name=m["name"].replace("features3conv00", "features.3.conv.0.0"))
                               for m in HW["modules"]])
    assert module_features("ShiftAddLayer_features3conv00_n24_o144_p4_s2", dotted) == f
    with pytest.raises(ValueError, match=r"hw_params.modules\['Weird_m'\]: kind 'weird' has no area model"):
        module_features("Weird_m", HW)


NPU = {"name": "Npu_i32_o40_l5_w16_wb8_a26_k1_s4", "kind": "npu", "in_features": 32, "in_width": 8, "capacity": 40,
       "lanes": 5, "width": 16, "weight_bits": 8, "bias_bits": 24, "acc_width": 26, "out_bits": 16, "shift_bits": 6,
       "index_bits": 6, "top_k": 1, "scan": 4, "tiles": 8, "chunks": 2, "partial_sums": 10}
NPU_HW = {"top": "Hashiflex_t", "npu": {"module": NPU["name"]}, "modules": HW["modules"][4:5] + [
    NPU, {"name": "mem_32x640", "kind": "memory", "depth": 32, "width": 640, "write_mask_lanes": 80},
    {"name": "NpuLoader_i32_o40_l5_w16", "kind": "npu_loader", "in_features": 32, "capacity": 40, "macs": 80,
     "schedule": 16}]}
NPU_VERILOG = """module Hashiflex_t(
  input clock,
  output done
);
  Backbone_t backbone (
    .clock (clock)
  );
  Npu_i32_o40_l5_w16_wb8_a26_k1_s4 npu (
    .clock (clock)
  );
endmodule
module Backbone_t(
  input clock
);
  Requant_c32_i12s_sh3_lo0_hi255 requant (
    .clock (clock)
  );
endmodule
module Npu_i32_o40_l5_w16_wb8_a26_k1_s4(
  input clock
);
  NpuLoader_i32_o40_l5_w16 loader (
    .clock (clock)
  );
  mem_32x640 mem_ext (
    .clock (clock)
  );
endmodule
"""


def test_the_npu_is_priced_from_its_parameters_and_its_weight_memory_is_counted_apart(tmp_path):
    f = module_features(NPU["name"], NPU_HW)
    # the lanes x width multipliers: weight bits x input bits each, and a dot-product tree per lane
    assert f["multiplier_bits"] == 5 * 16 * 8 * 8 and f["adder_bits"] >= 5 * 15 * 26
    # both bias banks and both logits buffers are registers
    assert f["flip_flop_bits"] >= 2 * 40 * 24 + 2 * 40 * 16
    wider = dict(NPU_HW, modules=[dict(m, lanes=10, tiles=4) if m["kind"] == "npu" else m for m in NPU_HW["modules"]])
    assert module_features(NPU["name"], wider)["multiplier_bits"] == 2 * f["multiplier_bits"]
    # the dot product's first stage registers its partial sums: accumulator-wide each
    more = dict(NPU_HW, modules=[dict(m, partial_sums=20) if m["kind"] == "npu" else m for m in NPU_HW["modules"]])
    assert module_features(NPU["name"], more)["flip_flop_bits"] == f["flip_flop_bits"] + 10 * 26
    older = dict(NPU_HW, modules=[{k: v for k, v in m.items() if k != "partial_sums"} for m in NPU_HW["modules"]])
    with pytest.raises(ValueError, match=r"hw_params.modules\['Npu_i32_o40_l5_w16_wb8_a26_k1_s4'\]: kind 'npu' "
                                         r"lacks parameter 'partial_sums' \(a table from an older generator"):
        module_features(NPU["name"], older)
    loader = module_features("NpuLoader_i32_o40_l5_w16", NPU_HW)
    assert loader["modules"] == 1 and loader["flip_flop_bits"] > 0 and loader["multiplier_bits"] == 0
    # a memory array is an SRAM macro in silicon: not priced by the logic model, its bits reported
    assert module_features("mem_32x640", NPU_HW) is None
    assert memory_bits("mem_32x640", NPU_HW) == 32 * 640
    assert memory_bits(NPU["name"], NPU_HW) is None
    (tmp_path / "t.sv").write_text(NPU_VERILOG)
    model = AreaModel(dict(zip(FEATURES, [0.2, 0.4, 0.05, 0.1, 1.0, 0.6])))
    e = estimate(model, tmp_path / "t.sv", NPU_HW)
    parts = ("Requant_c32_i12s_sh3_lo0_hi255", NPU["name"], "NpuLoader_i32_o40_l5_w16")
    assert e["area_um2"] == pytest.approx(sum(model.predict(module_features(m, NPU_HW)) for m in parts))
    assert set(e["breakdown"]) == set(parts)
    assert (e["unmodelled_modules"], e["memory_bits"]) == ([], 32 * 640)
    assert e["npu_um2"] == pytest.approx(sum(model.predict(module_features(m, NPU_HW)) for m in parts[1:]))


TRUE = dict(zip(FEATURES, [0.9, 0.3, 0.05, 0.2, 10.0, 0.7]))


def _samples(n: int, seed: int) -> list[tuple[str, dict[str, float], float]]:
    """``n`` modules with random features (one module each) and their areas under the coefficients TRUE."""
    rng = np.random.default_rng(seed)
    feats = [dict({k: float(rng.integers(0, 5000)) for k in FEATURES}, modules=1.0) for _ in range(n)]
    return [(f"m{i}", f, AreaModel(TRUE).predict(f)) for i, f in enumerate(feats)]


def test_one_coefficient_is_fitted_with_the_others_kept():
    true = TRUE
    data = _samples(6, 1)
    start = AreaModel({**true, "multiplier_bits": 0.0})
    got = fit_feature(start, data, "multiplier_bits")
    assert got.coef["multiplier_bits"] == pytest.approx(0.7, rel=1e-9)
    assert {k: v for k, v in got.coef.items() if k != "multiplier_bits"} == {
        k: v for k, v in true.items() if k != "multiplier_bits"}
    with pytest.raises(ValueError, match="no module has any multiplier_bits"):
        fit_feature(start, [(n, dict(f, multiplier_bits=0.0), a) for n, f, a in data], "multiplier_bits")
    with pytest.raises(ValueError, match="no coefficient for multiplier_bits .*benchmarks/area_model.py"):
        AreaModel({k: v for k, v in true.items() if k != "multiplier_bits"})


def test_fit_recovers_known_costs_and_reports_held_out_error():
    true = TRUE
    data = _samples(40, 0)
    model = fit(data[:30])
    for k in FEATURES:
        assert model.coef[k] == pytest.approx(true[k], rel=1e-6)
    ev = evaluate(model, data[30:])
    assert ev["modules"] == 10 and ev["max_abs_error"] < 1e-6


def test_the_fit_weights_a_module_by_the_square_root_of_its_area():
    """Two modules that disagree: with weights 1/sqrt(area) the fit minimizes (c - 1)^2 / 1 + (100 c - 400)^2 / 400,
    at c = 101/26; weighting by the relative error (c = 20/17) would let the small module outvote the large one, by
    area alone (c = 4) the small one would count for nothing."""
    one = dict.fromkeys(FEATURES, 0.0)
    data = [("small", dict(one, adder_bits=1.0), 1.0), ("large", dict(one, adder_bits=100.0), 400.0)]
    model = fit(data)
    assert model.coef["adder_bits"] == pytest.approx(101 / 26, rel=1e-9)
    assert all(v == 0 for k, v in model.coef.items() if k != "adder_bits")


@pytest.mark.slow
@pytest.mark.mill
def test_every_module_under_the_top_is_in_the_table(elaborated):
    """The generator lists every module the pipeline instantiates, under the name the Verilog gives it."""
    from hashiflex.report.hierarchy import inspect_verilog

    kinds = set()
    for _, d, params, rtl in elaborated:
        mods = inspect_verilog(rtl / params["verilog"])
        for child in mods[params["top"]].children:
            assert module_features(child, params) is not None, (d["name"], child)
        kinds |= {m["kind"] for m in params["modules"]}
    assert kinds == {"adder_layer", "line_buffer", "requant", "residual_add", "sum_pool", "max_pool", "lut", "fifo",
                     "concat", "fork", "channel_select"}
