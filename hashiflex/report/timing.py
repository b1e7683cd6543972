"""Static timing of the synthesized netlist with OpenSTA on the ASAP7 Liberty (NLDM delays, TT corner).

The netlist is the one the area figure counts (:func:`hashiflex.report.area.synthesize` with ``netlist=``): the
same cells, written as plain structural Verilog. OpenSTA times every register-to-register path across the
hierarchy (flip-flop clock-to-Q, the cells between, the capturing flip-flop's setup) with an ideal clock and no
wire load: the minimum clock period is the worst such path, so the figure is an upper bound on the clock a
placed and routed design reaches. Paths from input ports and to output ports are not constrained (the
pipeline's ports are registered on the other side, in whatever drives or reads it).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timing:
    arrival_ps: float      # clock edge to the capturing flip-flop's D on the worst path (clock-to-Q included)
    setup_ps: float        # the capturing flip-flop's setup time
    startpoint: str
    endpoint: str
    cells: int             # cells on that path (flip-flops not counted)

    @property
    def period_ps(self) -> float:
        """The shortest clock period every register-to-register path meets."""
        return self.arrival_ps + self.setup_ps

    @property
    def fmax_ghz(self) -> float:
        return 1e3 / self.period_ps


_START = re.compile(r"^Startpoint: (\S+)", re.M)
_END = re.compile(r"^Endpoint: (\S+)", re.M)
_ARRIVAL = re.compile(r"^\s*(-?[0-9.]+)\s+data arrival time", re.M)
_SETUP = re.compile(r"^\s*(-?[0-9.]+)\s+(-?[0-9.]+)\s+(?:library setup time|output external delay)", re.M)
_CELL = re.compile(r"^\s*-?[0-9.]+\s+-?[0-9.]+ [\^v] (\S+)/\S+ \((\S+)\)", re.M)


def parse_report(text: str) -> Timing:
    """The worst path of an OpenSTA ``report_checks -path_delay max`` report."""
    if "No paths found" in text:
        raise ValueError("OpenSTA found no register-to-register path (a design without two flip-flops in a row?)")
    try:
        start, end = _START.search(text).group(1), _END.search(text).group(1)
        arrival = float(_ARRIVAL.search(text).group(1))
        setup = -float(_SETUP.search(text).group(1))
    except AttributeError:
        raise ValueError("not an OpenSTA max-delay path report (Startpoint, Endpoint, data arrival time and "
                         f"library setup time expected):\n{text[-1500:]}") from None
    body = text[:_ARRIVAL.search(text).start()]
    # a cell counted once, whether the report lists only its output pin or (through a hierarchy) its input pin too
    cells = {inst for inst, c in _CELL.findall(body) if not c.startswith(("DFF", "SDF", "DHL", "DLL"))}
    return Timing(arrival, setup, start, end, len(cells))


# A module timed on its own (:mod:`hashiflex.report.modsynth`) has its ports constrained as if a flip-flop drove
# every input and captured every output on the other side: ASAP7 DFFHQNx1's clock-to-Q and setup time at the TT
# corner as OpenSTA reports them on a register-to-register path of a generated design (42.9 ps, 19.5 ps).
PORT_INPUT_DELAY_PS = 42.9
PORT_OUTPUT_DELAY_PS = 19.5


def sta_script(netlist: Path, top: str, liberty: Path, clock: str, ports: bool = False,
               from_ports: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """The OpenSTA script of :func:`critical_path`; ``extra``: commands before the report (e.g. false paths)."""
    lines = [f"read_liberty {liberty}", f"read_verilog {netlist}", f"link_design {top}",
             f"create_clock -name clk -period 100000 [get_ports {clock}]"]
    if ports or from_ports:  # the synchronous reset is held for many cycles (a buffer tree in layout): not timed
        lines += [f"set_input_delay {PORT_INPUT_DELAY_PS} -clock clk "
                  f"[delete_from_list [all_inputs] [get_ports {clock}]]",
                  f"set_output_delay {PORT_OUTPUT_DELAY_PS} -clock clk [all_outputs]",
                  "set rst [get_ports -quiet reset]",
                  "if {[llength $rst] > 0} { set_false_path -from $rst }"]
    start = f" -from [get_ports {{{from_ports}}}]" if from_ports else ""
    return "\n".join(lines + list(extra) + [f"report_checks -path_delay max -digits 1 -group_count 1{start}",
                                             "exit", ""])


def run_sta(script: str, what: str, log: Path | None = None) -> str:
    """Run an OpenSTA script; its report, or an error naming ``what`` with OpenSTA's own errors."""
    if shutil.which("sta") is None:
        raise FileNotFoundError("OpenSTA is not installed (apt-get install opensta; `make deps` does it)")
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "sta.tcl"
        f.write_text(script)
        proc = subprocess.run(["sta", "-no_init", "-no_splash", "-exit", str(f)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if log is not None:
        Path(log).write_text(text)
    errors = [l for l in text.splitlines() if l.startswith("Error")]
    if proc.returncode != 0 or errors:
        raise RuntimeError(f"OpenSTA failed on {what}:\n" + "\n".join(errors or text.splitlines()[-20:]))
    return text


def critical_path(netlist: str | Path, top: str, liberty: Path | None = None, clock: str = "clock",
                  log: Path | None = None, ports: bool = False, from_ports: str | None = None) -> Timing:
    """The worst register-to-register path of a mapped netlist (see the module docstring); ``ports``: also the
    paths from input ports and to output ports, each port taken as a flip-flop on the other side
    (:data:`PORT_INPUT_DELAY_PS`, :data:`PORT_OUTPUT_DELAY_PS`); ``from_ports``: only the paths from the input
    ports these names match (an OpenSTA pattern, e.g. ``x_*``), so taken."""
    from .area import merged_liberty

    lib = liberty or merged_liberty()
    text = run_sta(sta_script(Path(netlist).resolve(), top, lib, clock, ports, from_ports), str(netlist), log)
    return parse_report(text)
