"""The embedded default end to end: every digits test image through the RTL, bit-exact."""

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mill, pytest.mark.verilator]


def test_default_runs_bit_exact_on_the_whole_test_split(default_flow):
    work, r = default_flow
    assert r["images"] == 360
    assert r["mismatches"] == 0
    assert r["rtl_accuracy"] == r["po2_accuracy"] == r["golden_accuracy"]
    assert r["cycles_per_image"] == r["ii_model"]
    assert r["po2_accuracy"] > 0.9 and r["float_accuracy"] > 0.9


def test_second_demo_run_reuses_every_step(default_flow):
    from hashiflex import flow

    work, first = default_flow
    again = flow.demo(work, progress=False, netlist=False)
    assert set(again["reused"]) == {"train", "quantize", "export", "elaborate", "cosim"}
    assert {k: v for k, v in again.items() if k not in ("seconds", "reused")} == \
        {k: v for k, v in first.items() if k not in ("seconds", "reused")}


def test_netlist_count_with_yosys(default_flow):
    from hashiflex import hw
    from hashiflex.report import netlist_stats
    from tests.conftest import require_tool

    require_tool("yosys")
    work, r = default_flow
    p = hw.read_hw_params(work / "rtl")
    s = netlist_stats(work / "rtl" / p["verilog"], p["top"])
    # every modelled adder is in the netlist (plus counters and address arithmetic)
    assert s.add_sub_cells >= p["adders"]
    assert s.flip_flop_bits > 0


def test_training_can_start_from_a_state_dict_file(tmp_path):
    import torch

    from hashiflex import flow
    from hashiflex.models import DigitsCNN, mobilenet_v2

    src = DigitsCNN(16, 32, classes=4)  # another head: its fc is skipped
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = DigitsCNN(16, 32)
    skipped = flow.load_state_dict_file(dst, str(tmp_path / "w.pt"))
    assert skipped == ["fc.weight", "fc.bias"]
    assert torch.equal(dst.conv2.weight, src.conv2.weight)
    torch.save(mobilenet_v2(0.35, 10).state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="keys not in the model"):
        flow.load_state_dict_file(dst, str(tmp_path / "m.pt"))


def test_export_checks_the_ladder_before_writing_and_the_cli_names_it(default_flow, tmp_path, monkeypatch, capsys):
    import shutil

    from hashiflex import cli, flow

    work, _ = default_flow
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(work / "po2.pkl", w / "po2.pkl")
    real = flow.fake_quant_int_outputs

    def off_by_one(g, x, e):
        y = real(g, x, e)
        y[2, 1] += 1
        return y

    monkeypatch.setattr(flow, "fake_quant_int_outputs", off_by_one)
    with pytest.raises(flow.GoldenMismatchError, match=r"differ on 1 of 360 test images \(first: image 2\); "
                                                       r"nothing was written"):
        flow.step_export(w)
    assert not (w / "design.json").exists()
    assert cli.main(["export", "--work", str(w)]) == 1
    assert "error: export" in capsys.readouterr().err and not (w / "design.json").exists()


def test_export_takes_a_users_parallelism_and_refuses_a_bad_one(default_flow, tmp_path, capsys):
    import json
    import shutil

    from hashiflex import cli
    from hashiflex.export import load_design
    from hashiflex.export.design import parallelism_in
    from hashiflex.passes import initiation_interval

    work, _ = default_flow
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(work / "po2.pkl", w / "po2.pkl")
    d0 = json.loads((work / "design.json").read_text())
    width = d0["input"]["shape"][2]
    p = next(p for p in range(2, width + 1) if width % p == 0)
    assert cli.main(["export", "--work", str(w), "--parallelism", f"input={p}"]) == 0
    d = json.loads((w / "design.json").read_text())
    assert d["input"]["parallelism"] == p
    _, g = load_design(w / "design.json")
    assert d["hardware"]["ii_cycles_per_image"] == initiation_interval(g, par=parallelism_in(d))
    assert cli.main(["export", "--work", str(w), "--parallelism", "nope=2"]) == 1
    assert "--parallelism: 'nope' is not a tensor of the network" in capsys.readouterr().err
    first = d["layers"][0]["name"]
    assert cli.main(["export", "--work", str(w), "--parallelism", f"{first}=3"]) == 1
    assert "parallelism: expected a divisor of the width" in capsys.readouterr().err



def test_export_chooses_adder_levels_per_layer_for_a_clock(default_flow, tmp_path, capsys):
    """--clock-ps: each conv/linear layer gets the most levels per stage the stage timing model predicts within
    the period (so a shorter period never gets more), written into design.json where validation reads them
    back; --stage-levels sets a layer's outright and is refused on a layer without a tree."""
    import json
    import shutil

    from hashiflex import cli, stage_timing
    from hashiflex.export import load_design
    from hashiflex.export.design import levels_in

    work, _ = default_flow
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(work / "po2.pkl", w / "po2.pkl")
    chosen = {}
    for ps in (700, 1000, 1400):
        assert cli.main(["export", "--work", str(w), "--clock-ps", str(ps)]) == 0
        d, g = load_design(w / "design.json")
        chosen[ps] = levels_in(d)
        want, predicted = stage_timing.levels_for_clock(g, ps)
        assert chosen[ps] == want and set(want) == {l.name for l in g.layers if getattr(l, "q", None) is not None}
    for name in chosen[700]:
        assert chosen[700][name] <= chosen[1000][name] <= chosen[1400][name]
    assert any(chosen[700][n] < chosen[1400][n] for n in chosen[700])  # the clock changes something here
    conv = next(iter(chosen[1000]))
    assert cli.main(["export", "--work", str(w), "--clock-ps", "1000", "--stage-levels", f"{conv}=7"]) == 0
    assert levels_in(json.loads((w / "design.json").read_text()))[conv] == 7
    requant = next(l["name"] for l in d["layers"] if l["op"] == "requant")
    assert cli.main(["export", "--work", str(w), "--stage-levels", f"{requant}=2"]) == 1
    assert f"levels_per_stage: layer '{requant}' (requant) has no adder or comparator tree" in capsys.readouterr().err
    assert cli.main(["export", "--work", str(w), "--stage-levels", "x=y"]) == 1
    assert "--stage-levels: expected LAYER=LEVELS items" in capsys.readouterr().err
