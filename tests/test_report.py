"""`hashiflex report` on a small design: a real Yosys + ASAP7 synthesis."""
import json

import pytest

from hashiflex import flow
from hashiflex.report.area import parse_stat
from hashiflex.report.report import build_report

pytestmark = [pytest.mark.slow, pytest.mark.mill, pytest.mark.verilator]


@pytest.fixture(scope="module")
def tiny(work_root):
    work = work_root / "tiny"
    cfg = flow.Config(c1=2, c2=4, epochs=5, qat_epochs=2)
    flow.demo(work, cfg, progress=False, netlist=False)
    return work


def test_report_synthesizes_and_writes_markdown_and_html(tiny):
    r = build_report(tiny, progress=False)
    assert r["area_um2"] > 0
    assert sum(p["um2"] for p in r["area_breakdown"]) == pytest.approx(r["area_um2"], rel=1e-6)
    assert r["measured_cycles_per_image"] == r["ii_cycles_per_image"] == 64
    assert r["images_per_second"] == pytest.approx(1e9 / 64)
    assert r["energy_pj_per_image"] > 0 and r["mismatches"] == 0
    for f in ("report.md", "report.html", "report.json", "area.png"):
        assert (tiny / "report" / f).stat().st_size > 0
    assert json.loads((tiny / "report" / "report.json").read_text())["design"] == "digits_cnn"
    depth = {p["module"].split("_")[0] + "_" + p["module"].split("_")[1]: p["logic_depth"] for p in r["area_breakdown"]}
    assert depth["ShiftAddLayer_conv2"] > 0  # a pipeline stage of adders has a real logic depth
    assert "logic depth" in (tiny / "report" / "report.md").read_text()


def test_stat_parser_counts_instances():
    text = """
=== leaf ===
   Number of cells:                  2
     INVx1_ASAP7_75t_R               2
   Chip area for module '\\leaf': 1.500000

=== top ===
   Number of cells:                  3
     INVx1_ASAP7_75t_R               1
     leaf                            2
   Chip area for module '\\top': 0.250000

=== design hierarchy ===

   top                               1
     leaf                            2

   Chip area for top module '\\top': 3.250000
"""
    r = parse_stat(text, "top")
    assert r.modules["top"].children == {"leaf": 2}
    assert r.total("top") == pytest.approx(3.25) == r.top_um2


def test_energy_counts_each_lane_once_per_beat():
    """Unrolling P times multiplies adders by P and divides beats by P: the energy per image stays the same."""
    from hashiflex.report.energy import ADD_FJ_PER_BIT, energy_per_image

    def params(par):
        return {"ii_cycles_per_image": 64 // par, "register_bits": 0, "line_buffer_bits": 0,
                "layers": [{"op": "conv2d", "adders": 10 * par, "out_width": 8, "beats_in": 64 // par,
                            "beats_out": 64 // par}]}
    e1, e4 = energy_per_image({}, params(1), 0), energy_per_image({}, params(4), 0)
    assert e1.adders_pj == e4.adders_pj == 10 * 8 * 64 * ADD_FJ_PER_BIT / 1000
