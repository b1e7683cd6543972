"""Area with Yosys and the ASAP7 7 nm standard cells (RVT, TT corner), per generated module.

The five ASAP7 Liberty files (BSD-3, see ``asap7/LICENSE``) ship with the package; Yosys 0.23 takes one
``-liberty`` file, so they are merged once (``asap7/merge_libs.py``) into a cached file. Synthesis keeps the
hierarchy: each unique module is mapped once and counted as many times as it is instantiated.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PDK = Path(__file__).resolve().parent / "asap7"
LIBS = ["asap7sc7p5t_SIMPLE_RVT_TT_nldm_211120.lib.gz", "asap7sc7p5t_INVBUF_RVT_TT_nldm_220122.lib.gz",
        "asap7sc7p5t_AO_RVT_TT_nldm_211120.lib.gz", "asap7sc7p5t_OA_RVT_TT_nldm_211120.lib.gz",
        "asap7sc7p5t_SEQ_RVT_TT_nldm_220123.lib.gz"]


def merged_liberty(cache: Path | None = None) -> Path:
    """The merged ASAP7 Liberty file, built once and cached by the inputs' content."""
    h = hashlib.sha256()
    for name in LIBS:
        h.update((PDK / name).read_bytes())
    base = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hashiflex"
    out = base / f"asap7_merged_{h.hexdigest()[:12]}.lib"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run([sys.executable, str(PDK / "merge_libs.py"), "-o", str(tmp), *(str(PDK / n) for n in LIBS)],
                       check=True, capture_output=True)
        tmp.replace(out)
    return out


@dataclass
class ModuleArea:
    name: str
    own_um2: float                          # this module's own cells
    children: dict[str, int] = field(default_factory=dict)  # submodule -> instances
    cells: int = 0
    depth: int = 0                          # cells on the longest path between flip-flops/ports (Yosys ltp)


@dataclass
class AreaReport:
    top: str
    modules: dict[str, ModuleArea]
    top_um2: float                          # as Yosys reports it for the top (the whole hierarchy)
    peak_memory_bytes: int | None = None    # the Yosys run's peak resident memory (when it was measured)

    def total(self, name: str) -> float:
        """Area of one instance of ``name`` with everything below it."""
        m = self.modules[name]
        return m.own_um2 + sum(n * self.total(c) for c, n in m.children.items())

    def breakdown(self) -> list[tuple[str, int, float]]:
        """(child module of the top, instances, total area of those instances)."""
        m = self.modules[self.top]
        return [(c, n, n * self.total(c)) for c, n in m.children.items()]

    def max_depth(self, name: str) -> int:
        """Logic depth of the deepest register-to-register path inside ``name`` (a pipeline stage)."""
        m = self.modules[name]
        return max([m.depth, *(self.max_depth(c) for c in m.children)])


_MOD = re.compile(r"^=== (.+?) ===")
_CELL = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")
_AREA = re.compile(r"Chip area for (?:top )?module '\\?(\S+)': ([0-9.]+)")


def parse_stat(text: str, top: str) -> AreaReport:
    modules: dict[str, ModuleArea] = {}
    cur = None
    top_area = None
    in_hierarchy = False
    for line in text.splitlines():
        m = _MOD.match(line)
        if m:
            in_hierarchy = m.group(1) == "design hierarchy"
            cur = None if in_hierarchy else modules.setdefault(m.group(1), ModuleArea(m.group(1), 0.0))
            continue
        a = _AREA.search(line)
        if a:
            if a.group(1) == top and "top module" in line:
                top_area = float(a.group(2))
            elif cur is not None and not in_hierarchy:
                cur.own_um2 = float(a.group(2))
            continue
        c = _CELL.match(line)
        if c and cur is not None and not in_hierarchy:
            cur.children[c.group(1)] = int(c.group(2))
        n = re.search(r"Number of cells:\s+(\d+)", line)
        if n and cur is not None and not in_hierarchy:
            cur.cells = int(n.group(1))
    for mod in modules.values():  # keep only submodules among the cell counts
        mod.children = {k: v for k, v in mod.children.items() if k in modules}
    if top not in modules:
        raise RuntimeError(f"yosys stat: module {top} not found")
    if top_area is None:
        top_area = modules[top].own_um2
    return AreaReport(top, modules, top_area)


_UNMAPPED = re.compile(r"^\s+(\$_\w+_)\s+(\d+)\s*$", re.M)


def synthesis_script(verilog: str | Path, top: str, lib: Path, stat: Path, ltp: Path, flat: bool = False,
                     netlist: Path | None = None, blackboxes: tuple[str, ...] = (),
                     delay_target_ps: float | None = None) -> str:
    """The Yosys script: generic synthesis, every flip-flop legalized to a plain D flip-flop (its enable and
    reset become logic), all logic mapped onto ASAP7 cells by ABC (so the enable/reset multiplexers are counted),
    the register-to-register depth measured while the flip-flops are still Yosys's own (``ltp -noff``), then the
    flip-flops mapped onto the library's and ABC run once more for what that adds (ASAP7's DFFHQN has an
    inverted output), and the area counted. ``flat``: flatten the hierarchy first (the reference check).
    ``netlist``: then write those cells as structural Verilog a timing analyser reads (bit-level nets, tie
    cells for constants, buffers for plain connections: after the area is counted, so it does not change it).
    ``blackboxes``: modules read for their ports only (a module synthesized on its own, its submodules elsewhere:
    :mod:`hashiflex.report.modsynth`). ``delay_target_ps``: ABC maps for that clock period with its timing
    constraints (every input driven by a BUFx2, 1 fF on every output), so it buffers high-fanout nets (a pipeline
    enable reaching thousands of flip-flops; a register many output ports read, each port bit split to its own net
    first) and sizes cells on slow paths, as a layout flow would: without it a
    timing figure is the unbuffered fanout's, tens of nanoseconds on a line buffer (the area is then a few percent
    higher)."""
    v = Path(verilog).resolve()
    bb = f"blackbox {' '.join(blackboxes)}; " if blackboxes else ""
    abc = f"abc -liberty {lib}"
    if delay_target_ps is not None:
        constr = stat.with_suffix(".constr")
        constr.write_text(f"set_driving_cell {BUF.split()[0]}\nset_load 1.0\n")
        abc += f" -constr {constr} -D {delay_target_ps:g}"
    # every output bit its own net (one buffer per port bit that aliases another net) before ABC maps: a flip-flop
    # shared by many output bits (opt_merge folds identical registers) is then one node with that many fanouts,
    # which ABC buffers for the delay target; unsplit, ABC sees one output and the aliases' load lands unbuffered
    fanout = "splitnets -ports; insbuf; " if delay_target_ps is not None else ""
    # the logic depth of a module synthesized with black-box children is that of its own glue (a layer's stall
    # control, wiring): not measured, since Yosys's ltp needs memory that grows with the ports it passes through
    # (12 GB on a layer wrapper wiring 7 lanes of 1,728 inputs)
    depth = "" if blackboxes else f"tee -q -o {ltp} ltp -noff; "
    script = (f"read_liberty -lib {lib}; read_verilog -sv {v}; {bb}synth -top {top}{' -flatten' if flat else ''}; "
              f"dfflegalize -cell $_DFF_P_ 01; {fanout}{abc}; opt_clean; {depth}"
              f"dfflibmap -liberty {lib}; {abc}; opt_clean; tee -q -o {stat} stat -liberty {lib}")
    if netlist is not None:
        script += (f"; splitnets -ports -format __; setundef -zero; hilomap -singleton -hicell {TIE_HI} "
                   f"-locell {TIE_LO}; opt_clean -purge; insbuf -buf {BUF}; "
                   f"write_verilog -noattr -noexpr -nohex -nodec {Path(netlist).resolve()}")
    return script


# Starts a command and writes its peak resident memory (wait4's ru_maxrss: the process and the children it waited
# for, ABC's under Yosys) to the file argv[1]. A forked process starts with its parent's resident pages counted, so
# a command forked straight from a large Python (a Ray worker, pytest with torch loaded) would read as at least that
# process's size; forked from this small one it reads as its own.
_LAUNCHER = ("import os, sys\n"
             "pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
             "code = os.waitstatus_to_exitcode(status)\n"
             "sys.exit(code if code >= 0 else 128 - code)\n")


def run_measured(cmd: list[str]) -> tuple[int, str, int]:
    """Run ``cmd`` (stdout discarded); return its exit status, its standard error and its peak resident memory in
    bytes (its own and its children's, the largest: what a job of it needs)."""
    with tempfile.TemporaryDirectory(prefix="hashiflex_run_") as td:
        rss = Path(td) / "maxrss"
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(rss), *cmd], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        if not rss.exists():
            why = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no error output"])[-1]
            raise RuntimeError(f"{cmd[0]} could not be started: {why}")
        return proc.returncode, proc.stderr.decode(errors="replace"), int(rss.read_text()) * 1024  # Linux: KiB


TIE_HI, TIE_LO, BUF = "TIEHIx1_ASAP7_75t_R H", "TIELOx1_ASAP7_75t_R L", "BUFx2_ASAP7_75t_R A Y"


def synthesize(verilog: str | Path, top: str, liberty: Path | None = None, log: Path | None = None,
               flat: bool = False, netlist: Path | None = None, blackboxes: tuple[str, ...] = (),
               delay_target_ps: float | None = None) -> AreaReport:
    """Synthesize with Yosys onto ASAP7 (hierarchy kept, or ``flat``) and read the area per module;
    ``netlist``: also write the mapped netlist there (for :func:`hashiflex.report.timing.critical_path`).

    Raises when any cell is left unmapped (a Yosys-internal ``$_..._`` cell has no area, so it would be missing
    from the figure)."""
    if shutil.which("yosys") is None:
        raise FileNotFoundError("yosys is not installed (apt-get install yosys; `make deps` does it)")
    lib = liberty or merged_liberty()
    stat = Path(str(log or Path(verilog).with_suffix(".yosys")) + (".flat" if flat else "") + ".stat")
    ltp = stat.with_suffix(".ltp")
    stat.parent.mkdir(parents=True, exist_ok=True)
    script = synthesis_script(verilog, top, lib, stat, ltp, flat, netlist, tuple(blackboxes), delay_target_ps)
    returncode, stderr, peak = run_measured(["yosys", "-q", "-p", script])
    if returncode != 0:
        errs = [l for l in stderr.splitlines() if "unsupported expression" not in l]  # scan flops: harmless
        raise RuntimeError(f"yosys failed on {verilog}:\n" + "\n".join(errs)[-2000:])
    text = stat.read_text()
    unmapped = sorted({m.group(1) for m in _UNMAPPED.finditer(text)})
    if unmapped:
        raise RuntimeError(f"yosys left cells unmapped on ASAP7 in {verilog} ({', '.join(unmapped)}): their area "
                           f"would be missing; see {stat}")
    report = parse_stat(text, top)
    report.peak_memory_bytes = peak
    for name, depth in re.findall(r"Longest topological path in (\S+) \(length=(\d+)\)",
                                  ltp.read_text() if ltp.exists() else ""):
        if name.lstrip("\\") in report.modules:
            report.modules[name.lstrip("\\")].depth = int(depth)
    return report
