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
    # through a hierarchy OpenSTA lists each cell's input pin as well: a cell still counts once
    both = REPORT.replace("  17.2   60.1 ^ _341_/Y", "   0.0   42.9 v _341_/A (INVx1_ASAP7_75t_R)\n  17.2   60.1 ^ _341_/Y")
    assert both.count("_341_/") == 2 and parse_report(both).cells == 3


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


def _fanout(netlist: str) -> dict[str, int]:
    """Cell input pins each net drives in a structural netlist (clock, reset and tie nets excluded)."""
    import re

    pins = re.findall(r"\.(?!Y\(|QN\(|H\(|L\()[A-Z0-9]+\(([^()]+)\)", netlist)
    return {n.strip(): pins.count(n) for n in set(pins) if n.strip() not in ("clock", "reset")}


# One flip-flop read by 200 output ports (Yosys folds identical registers into one, as it does for the bits that
# many outputs of an adder lane share): the ports alias one net.
FANOUT = """module fan(input clock, input [7:0] a, output [199:0] y, output [7:0] z);
  reg q;
  reg [7:0] r;
  always @(posedge clock) begin q <= ^a; r <= a + {7'd0, q}; end
  assign y = {200{q}};
  assign z = r;
endmodule
"""


@pytest.mark.skipif(shutil.which("sta") is None or shutil.which("yosys") is None, reason="needs yosys + OpenSTA")
def test_a_register_read_by_many_ports_is_buffered_for_the_delay_target(tmp_path):
    """Timing-driven mapping sees every aliased output port as a load of the flip-flop that drives it, so it
    buffers that net as it buffers any high-fanout net: no net left driving the 200 ports' loads alone, and the
    path through the flip-flop as short as the same module's with one port. (Before, the ports were split after
    mapping, and the one unbuffered net read as a 2.4 ns path on a depthwise lane of MobileNetV2.)"""
    src = tmp_path / "fan.sv"
    src.write_text(FANOUT)
    net = tmp_path / "fan.net.v"
    synthesize(src, "fan", log=tmp_path / "fan", netlist=net, delay_target_ps=1000.0)
    one = tmp_path / "one.sv"
    one.write_text(FANOUT.replace("[199:0] y", "[0:0] y").replace("{200{q}}", "q").replace("module fan", "module one"))
    net1 = tmp_path / "one.net.v"
    synthesize(one, "one", log=tmp_path / "one", netlist=net1, delay_target_ps=1000.0)
    fan = _fanout(net.read_text())
    assert max(fan.values()) <= 32, sorted(fan.items(), key=lambda kv: -kv[1])[:3]
    t, t1 = critical_path(net, "fan", ports=True), critical_path(net1, "one", ports=True)
    assert t.period_ps < t1.period_ps + 150, (t, t1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sta") is None or shutil.which("yosys") is None, reason="needs yosys + OpenSTA")
def test_a_lanes_data_inputs_end_at_its_input_registers(default_flow, tmp_path):
    """What feeds a lane (a line buffer's window multiplexers, a requantizer) is combinational on the stream; the
    lane registers its inputs first, so no path runs through that logic and the lane's first adders: from a data
    input at most the register's enable multiplexer lies before a flip-flop (the first stage's adders without it)."""
    from hashiflex import hw
    from hashiflex.report.modsynth import split_modules

    work, _ = default_flow
    params = hw.read_hw_params(work / "rtl")
    mods = split_modules((work / "rtl" / params["verilog"]).read_text())
    lane = next(m for m in mods if m.startswith("ShiftAddLane_conv1_"))
    (tmp_path / "lane.sv").write_text(mods[lane])
    synthesize(tmp_path / "lane.sv", lane, log=tmp_path / "lane", netlist=tmp_path / "lane.net.v",
               delay_target_ps=1000.0)
    from_inputs = critical_path(tmp_path / "lane.net.v", lane, from_ports="x_*")
    inside = critical_path(tmp_path / "lane.net.v", lane)
    assert from_inputs.startpoint.startswith("x_") and from_inputs.cells <= 2, from_inputs
    assert inside.cells > 4 * max(1, from_inputs.cells), inside  # the adders lie between registers
