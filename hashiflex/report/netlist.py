"""Count what the generated Verilog really contains, with Yosys (independent of the generator's own figures)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NetlistStats:
    flip_flop_bits: int     # register bits after proc (all $dff-like cells, times their width)
    add_sub_cells: int      # $add/$sub cells: the shift-add trees, requant rounding, counters
    cells: int


_CELL = re.compile(r"^\s+\$(\w+?)_(\d+)\s+(\d+)\s*$")


def netlist_stats(verilog: str | Path, top: str) -> NetlistStats:
    """Run ``yosys`` (read, hierarchy, proc, flatten, opt_clean, stat -width) and parse the cell counts."""
    if shutil.which("yosys") is None:
        raise FileNotFoundError("yosys is not installed (apt-get install yosys; `make deps` does it)")
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.txt"
        script = (f"read_verilog -sv {Path(verilog).resolve()}; hierarchy -top {top}; proc; flatten; opt_clean; "
                  f"tee -q -o {stat} stat -width")
        proc = subprocess.run(["yosys", "-q", "-p", script], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed on {verilog}:\n{proc.stderr[-2000:]}")
        text = stat.read_text()
    ff = adders = 0
    for line in text.splitlines():
        m = _CELL.match(line)
        if not m:
            continue
        kind, width, count = m.group(1), int(m.group(2)), int(m.group(3))
        if "dff" in kind or "dlatch" in kind:
            ff += width * count
        elif kind in ("add", "sub"):
            adders += count
    cells = int(re.search(r"Number of cells:\s+(\d+)", text).group(1))
    return NetlistStats(ff, adders, cells)
