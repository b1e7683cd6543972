"""The fine-tune flow on the embedded default: NPU design of the trained net, head retrained on new data, loaded
into the running co-simulation (no re-elaboration), bit-exact before and after."""
import json

import numpy as np
import pytest

from hashiflex import finetune as ft
from hashiflex.data import digits

pytestmark = [pytest.mark.slow, pytest.mark.mill, pytest.mark.verilator]


@pytest.fixture(scope="module")
def tuned(default_flow):
    work, _ = default_flow
    r = ft.finetune(work, "shift", epochs=150, limit=120, progress=False)
    return work, r


def test_shifted_digits_recover_after_fine_tuning_the_head(tuned):
    work, r = tuned
    b, a = r["before"], r["after"]
    assert b["mismatches"] == 0 and a["mismatches"] == 0  # RTL == golden with each head, bit for bit
    assert b["rtl_accuracy"] == b["golden_accuracy"] and a["rtl_accuracy"] == a["golden_accuracy"]
    assert a["rtl_accuracy"] > b["rtl_accuracy"] + 0.4  # ~20 % -> ~90 % (a one-pixel camera shift)
    assert r["load_status"] == "OK" and r["tag"] == b["tag"] + 1 == a["tag"]
    assert a["cycles_per_image"] == r["ii_cycles_per_image"] == r["fully_hardened"]["ii_cycles_per_image"]
    saved = json.loads((work / "finetune" / "finetune.json").read_text())
    assert saved["after"] == a
    words = np.fromfile(work / "finetune" / "head.bin", dtype="<u4")
    assert len(words) == r["load_words"]


def test_relabelled_task_runs_on_the_same_npu_without_re_elaborating(tuned):
    work, _ = tuned
    rtl = work / "npu" / "rtl" / "hw_params.json"
    stamp = rtl.stat().st_mtime_ns
    parity = [d % 2 for d in range(10)]
    r = ft.finetune(work, "none", parity, epochs=150, limit=80, progress=False)
    assert rtl.stat().st_mtime_ns == stamp  # the design was not elaborated again
    assert r["classes"] == 2 and r["after"]["mismatches"] == 0
    assert r["after"]["rtl_accuracy"] > 0.85
    # logits beyond the loaded head's 2 classes are zero (checked in _evaluate); the NPU keeps its capacity
    assert r["npu"]["capacity"] == 10


def test_a_task_with_more_classes_than_the_npu_holds_is_refused(default_flow):
    work, _ = default_flow
    with pytest.raises(ValueError, match="has 11 classes, but the NPU was built for at most 10"):
        ft.finetune(work, "none", list(range(1, 11)), epochs=1, limit=4, progress=False)


def test_task_arguments_are_checked():
    ds = digits()
    with pytest.raises(ValueError, match="task: expected one of"):
        ft.make_task(ds, "rotate")
    with pytest.raises(ValueError, match="labels: expected 10 non-negative class numbers"):
        ft.make_task(ds, "none", [0, 1])
    t = ft.make_task(ds, "shift")
    assert t.x_train.shape == ds.x_train.shape and (t.x_train[:, :, 0, :] == 0).all()
    lo, hi = ds.input.type.range
    for name in ft.TASKS:
        x = ft.make_task(ds, name).x_test
        assert x.min() >= lo and x.max() <= hi, name


def test_report_splits_backbone_and_npu(tuned):
    from hashiflex.report.report import build_report, format_report

    work, r = tuned
    rep = build_report(work / "npu", area=False, progress=False)
    assert rep["npu"]["macs"] == r["npu"]["macs"] and rep["npu"]["cycles_per_image"] == r["npu"]["cycles_per_image"]
    assert rep["ii_cycles_per_image"] == max(rep["backbone_ii_cycles"], rep["npu"]["cycles_per_image"])
    assert 0 < rep["npu"]["energy_pj"] < rep["energy_pj_per_image"]
    assert "NPU head (programmable)" in format_report(rep)
    from tests.conftest import ROOT

    modelled = build_report(work / "npu", area=False, progress=False, netlist=False,
                            area_model=ROOT / "benchmarks" / "results" / "area_model.json")
    # every module priced: the backbone's layers, the NPU's logic and loader; its weight banks counted as SRAM bits
    assert modelled["area_model_unmodelled"] == []
    doc = json.loads((ROOT / "benchmarks" / "results" / "area_model.json").read_text())["held_out"]
    full = [f["leave_one_out"]["area_weighted_abs_error"] for f in doc.get("full_size", [])]
    assert modelled["area_model_full_size_error"] == (max(full) if full else None)
    if full:
        assert f"{100 * max(full):.1f} % area-weighted on full-size modules left out" in format_report(modelled)
    assert 0 < modelled["npu"]["area_model_um2"] < modelled["area_model_um2"]
    assert modelled["backbone_area_model_um2"] == pytest.approx(modelled["area_model_um2"]
                                                                - modelled["npu"]["area_model_um2"])
    from hashiflex import hw

    n = hw.read_hw_params(work / "npu" / "rtl")["npu"]  # two banks of schedule words, a weight per MAC in each
    assert n["weight_memory_words"] == 2 * n["schedule_cycles"]
    assert modelled["area_model_memory_bits"] == n["weight_memory_words"] * n["weight_memory_word_bits"]
    text = format_report(modelled)
    assert "bits of SRAM" in text and "hardened backbone / NPU logic" in text


def test_npu_energy_follows_the_schedule():
    from hashiflex.npu import NpuConfig
    from hashiflex.report.energy import npu_energy_pj

    n = NpuConfig(32, (0, 4080), 10, lanes=5, width=1, weight_bits=8).to_json()  # 13-bit unsigned inputs
    e = npu_energy_pj(n)
    assert e > 0
    assert npu_energy_pj(dict(n, capacity=20)) == pytest.approx(2 * e)  # twice the MAC slots
    assert npu_energy_pj(dict(n, lanes=10)) == pytest.approx(e)          # same work, fewer cycles


def test_cosim_step_boots_an_npu_design_and_checks_logits_and_top_k(tuned):
    from hashiflex import flow

    work, _ = tuned
    r = flow.step_cosim(work / "npu", limit=30, progress=False)
    assert r["mismatches"] == 0 and r["images"] == 30
    d = json.loads((work / "npu" / "design.json").read_text())
    assert r["cycles_per_image"] == d["hardware"]["ii_cycles_per_image"]
    assert r["rtl_accuracy"] == r["golden_accuracy"] > 0.5
