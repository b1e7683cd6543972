"""Timing of the synthesized netlist (hashiflex.report.timing): OpenSTA on the ASAP7 Liberty."""
import shutil

import pytest

from hashiflex.report.area import synthesize
from hashiflex.report.timing import critical_path, parse_report

REPORT = """Startpoint: _421_ (rising edge-triggered flip-flop clocked by clk)
Endpoint: _484_ (rising edge-triggered flip-flop clocked by clk)
Path Group: clk
Path Type: max

 Delay   Time   Description
-------------------------------------------------------
   0.0    0.0   clock clk (rise edge)
   0.0    0.0   clock network delay (ideal)
   0.0    0.0 ^ _421_/CLK (DFFHQNx1_ASAP7_75t_R)
  42.9   42.9 v _421_/QN (DFFHQNx1_ASAP7_75t_R)
  17.2   60.1 ^ _341_/Y (INVx1_ASAP7_75t_R)
  27.4   87.5 ^ _257_/Y (XOR2xp5_ASAP7_75t_R)
  25.0  112.5 ^ _323_/Y (XNOR2xp5_ASAP7_75t_R)
   0.0  112.5 ^ _484_/D (DFFHQNx1_ASAP7_75t_R)
        112.5   data arrival time

1000.0 1000.0   clock clk (rise edge)
   0.0 1000.0   clock network delay (ideal)
   0.0 1000.0   clock reconvergence pessimism
       1000.0 ^ _484_/CLK (DFFHQNx1_ASAP7_75t_R)
 -19.5  980.5   library setup time
        980.5   data required time
-------------------------------------------------------
        980.5   data required time
       -112.5   data arrival time
-------------------------------------------------------
        868.0   slack (MET)
"""


def test_the_report_parser_reads_the_worst_path():
    t = parse_report(REPORT)
    assert (t.arrival_ps, t.setup_ps, t.startpoint, t.endpoint, t.cells) == (112.5, 19.5, "_421_", "_484_", 3)
    assert t.period_ps == pytest.approx(132.0) and t.fmax_ghz == pytest.approx(1e3 / 132.0)


def test_a_report_without_a_path_is_an_error_that_says_what_was_expected():
    with pytest.raises(ValueError, match="found no register-to-register path"):
        parse_report("No paths found.\n")
    with pytest.raises(ValueError, match="Startpoint, Endpoint, data arrival time and library setup time expected"):
        parse_report("Warning: something else\n")


def _chain(path, adds: int):
    terms = " + ".join(f"r{i}" for i in range(adds + 1))
    regs = "".join(f"  reg [11:0] r{i};\n" for i in range(adds + 1))
    loads = " ".join(f"r{i} <= a ^ {i};" for i in range(adds + 1))
    path.write_text(f"module chain(input clock, input [11:0] a, output reg [15:0] y);\n{regs}"
                    f"  always @(posedge clock) begin {loads} y <= {terms}; end\nendmodule\n")
    return path


@pytest.mark.skipif(shutil.which("sta") is None or shutil.which("yosys") is None, reason="needs yosys + OpenSTA")
def test_the_critical_path_grows_with_the_adders_between_registers_and_the_area_is_unchanged(tmp_path):
    periods = []
    for adds in (1, 4):
        v = _chain(tmp_path / f"c{adds}.v", adds)
        plain = synthesize(v, "chain", log=tmp_path / f"p{adds}")
        with_net = synthesize(v, "chain", log=tmp_path / f"n{adds}", netlist=tmp_path / f"n{adds}.v")
        assert with_net.top_um2 == plain.top_um2  # writing the netlist comes after the area is counted
        t = critical_path(tmp_path / f"n{adds}.v", "chain", log=tmp_path / f"sta{adds}.log")
        assert t.startpoint != t.endpoint and t.cells > 0 and t.setup_ps > 0
        periods.append(t.period_ps)
    assert 50 < periods[0] < periods[1] < 2000, periods


@pytest.mark.skipif(shutil.which("sta") is None, reason="needs OpenSTA")
def test_a_netlist_sta_cannot_read_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module chain(input clock);\n  assign { a, b } = 2'b0;\nendmodule\n")
    with pytest.raises(RuntimeError, match="OpenSTA failed on .*bad.v"):
        critical_path(bad, "chain")
