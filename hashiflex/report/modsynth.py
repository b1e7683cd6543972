"""Per-module synthesis of a generated design, fanned out: the area and logic depth of every unique module
(Yosys + ASAP7), the critical path of every leaf module (OpenSTA), cached by module content.

Mapping is timing-driven (:func:`hashiflex.report.area.synthesis_script` with ``delay_target_ps``, default the
paper's 1 GHz): ABC buffers high-fanout nets and sizes slow paths for that period, so a module's period is what a
layout flow would start from, and its area includes those buffers.

A full-size design is far too large for one Yosys run (MobileNetV2-224 holds about two million adders; a 1,461-adder
layer takes 80 s), but the generator emits it as a hierarchy of unique modules, and synthesis keeps the hierarchy
(nothing is optimized across a module boundary), so each unique module can be synthesized on its own, its
submodules read as black boxes (ports only): the cells it maps for that module are those the one-run hierarchical
synthesis maps for it (:func:`hashiflex.report.area.synthesize`; a test checks the two agree on a generated
design). The design's area is then every module's own cells times its instances (:class:`AreaReport`, as
before).

Jobs run on Ray (:func:`hashiflex.fanout.run_jobs`, local by default, a cluster by ``address``); each result is
stored under ``cache/<key>.json`` as soon as it arrives, the key hashing the module's text, its submodules' keys,
the Liberty file and this flow's version, so a stopped run resumes and an unchanged module is never synthesized
twice (across designs too: the generator's module names carry their parameters, and identical modules hash
alike).

Memories (firtool's register arrays: the skip FIFOs' storage) are synthesized as standard-cell register files and
timed, but kept out of the clock figure: in silicon they are SRAM macros or register files from a memory compiler,
whose read path it sets.

Timing: a leaf module (no submodules: the adder lanes, line buffers, requantizers, pools) is timed with OpenSTA on
its mapped netlist, ideal clock, no wires (:mod:`hashiflex.report.timing`): register to register, and from its
inputs and to its outputs as if a flip-flop sat on the other side of every port (the synchronous reset excepted:
held for many cycles, and unbuffered here its fanout alone would read as a 1.2 ns path). A path that runs through
logic in two modules (combinational logic in a parent between a child's output and a register) is longer than
what either shows, so the slowest leaf is a lower bound of the design's clock period. :func:`hierarchical_timing`
gives the exact figure: once every module under the top is synthesized, their cached netlists are linked as the
design's hierarchy (each parent's black-box instances bound to its children's mapped cells) and OpenSTA times
every register-to-register path of the whole design across module boundaries (a line buffer's window multiplexer
into the tree that reads it; a pipeline's ready through the layers it stalls), ideal clock, no wires.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .area import AreaReport, ModuleArea

VERSION = 5  # bump when the synthesis script or what a job returns changes (invalidates the cache)

_MODULE = re.compile(r"^module\s+([A-Za-z_][A-Za-z0-9_$]*)\s*[(#;]", re.M)
_INSTANCE = re.compile(r"^\s+([A-Za-z_][A-Za-z0-9_$]*)\s+(?:#\s*\(.*?\)\s*)?([A-Za-z_][A-Za-z0-9_$]*)\s*\(", re.M)


def split_modules(text: str) -> dict[str, str]:
    """The modules of a Verilog file, each as its own text (``module`` to ``endmodule``), in file order."""
    out: dict[str, str] = {}
    starts = list(_MODULE.finditer(text))
    for k, m in enumerate(starts):
        end = text.find("\nendmodule", m.start())
        if end < 0 or (k + 1 < len(starts) and end > starts[k + 1].start()):
            raise ValueError(f"module {m.group(1)}: no endmodule before the next module")
        name = m.group(1)
        if name in out:
            raise ValueError(f"module {name} is defined twice")
        out[name] = text[m.start():end + len("\nendmodule")] + "\n"
    if not out:
        raise ValueError("no module found in the Verilog")
    return out


def port_stub(text: str) -> str:
    """A module's header alone, ``module name(ports);`` then ``endmodule``: all a parent synthesized with its
    children as black boxes reads of them. Yosys otherwise parses a child's whole text before it black-boxes it
    (a 7x7 layer's wrapper, 27 cells of its own, read its 12.9 MB lane: 831 s), and the top would read the whole
    design."""
    m = _MODULE.match(text.lstrip())
    if m is None:
        raise ValueError(f"not a module's text: {text[:60]!r}")
    body = text.lstrip()
    end = body.find(";", m.end() - 1) if body[m.end() - 1] == ";" else body.find(");", m.end())
    if end < 0:
        raise ValueError(f"module {m.group(1)}: no end of its port list")
    return body[:end + (1 if body[end] == ";" else 2)] + "\nendmodule\n"


def child_stubs(mods: dict[str, str], children: dict[str, Counter], name: str) -> dict[str, str]:
    """The port stubs of ``name``'s children: what its job reads of them (black boxes)."""
    return {c: port_stub(mods[c]) for c in children[name]}


def job_text(text: str, child_texts: dict[str, str]) -> str:
    """The Verilog one synthesis job reads: its children's texts (their stubs), then the module's."""
    return "".join(child_texts.values()) + text


def submodules(mods: dict[str, str]) -> dict[str, Counter]:
    """Per module: the modules of this file it instantiates, with their instance counts."""
    return {name: Counter(t for t, _ in _INSTANCE.findall(text) if t in mods) for name, text in mods.items()}


def reachable(children: dict[str, Counter], top: str) -> list[str]:
    """The modules under ``top`` (itself included), children before parents."""
    if top not in children:
        raise ValueError(f"top module {top} is not in the Verilog (modules: {', '.join(list(children)[:8])} ...)")
    order: list[str] = []
    seen: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        if m in path:
            raise ValueError(f"module {m} instantiates itself through {' -> '.join(path)}")
        if m in seen:
            return
        for c in children[m]:
            visit(c, path + (m,))
        seen.add(m)
        order.append(m)

    visit(top, ())
    return order


def module_keys(mods: dict[str, str], children: dict[str, Counter], order: list[str], liberty_digest: str) -> dict:
    """Content key of every module in ``order`` (children first): its text, its submodules' keys, the Liberty
    file, :data:`VERSION`."""
    keys: dict[str, str] = {}
    for m in order:
        h = hashlib.sha256(f"v{VERSION}\n{liberty_digest}\n".encode())
        h.update(mods[m].encode())
        for c in sorted(children[m]):
            h.update(f"{c}={keys[c]}\n".encode())
        keys[m] = h.hexdigest()[:32]
    return keys


_MEMORY = re.compile(r"^\s*reg\s+\[[^\]]+\]\s+\w+\s*\[\d+:\d+\]\s*;", re.M)  # an array: firtool's memories
_ARRAY = re.compile(r"^\s*reg\s+\[(\d+):(\d+)\]\s+\w+\s*\[(\d+):(\d+)\]\s*;", re.M)

MEMORY_MODEL = Path(__file__).with_name("synth_memory.json")  # fitted by benchmarks/synth_memory.py


def array_bits(text: str) -> int:
    """Bits of a module's register arrays (firtool's memories): Yosys expands each into that many flip-flops and
    their multiplexers, far more netlist than the few lines that declare it."""
    return sum((abs(int(a) - int(b)) + 1) * (abs(int(c) - int(d)) + 1) for a, b, c, d in _ARRAY.findall(text))


_OPERATOR = re.compile(r"[-+*^&|?~<>]|[=!]=")


def operators(text: str) -> int:
    """Operator characters of a module's text (``+ - * ^ & | ? ~ < >``, ``==``, ``!=``): each is a node of logic
    Yosys builds and maps, where a port list or an instance's connections are text with next to none (a layer
    wrapper's 390 KB of wiring needed 290 MB, a lane's 67 KB of adders 453 MB)."""
    return len(_OPERATOR.findall(text))


_DECL = re.compile(r"^\s*(?:wire|reg)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?[A-Za-z_][\w$]*\s*(\[)?", re.M)


def signal_bits(text: str) -> int:
    """Bits of a module's declared wires and registers (register arrays aside: :func:`array_bits`): the width of
    its logic, where :func:`operators` counts its nodes (a lane's 20-bit adders cost more than a requantizer's
    narrow ones)."""
    return sum((abs(int(a) - int(b)) + 1) if a else 1 for a, b, array in _DECL.findall(text) if not array)


@dataclass(frozen=True)
class MemoryModel:
    """The peak memory of one synthesis job (Yosys reads, maps and writes the module in one process) from the
    Verilog it reads (the module and its children's port stubs): ``base`` (the ASAP7 Liberty, Yosys itself) +
    ``per_byte`` x its bytes (parsing) + ``per_operator`` x its :func:`operators` + ``per_signal_bit`` x its
    :func:`signal_bits` (the logic: its nodes and their width) + ``per_array_bit`` x its :func:`array_bits`, times
    ``margin`` (over the jobs it was fitted on, the largest ratio to this line of a measured peak less
    :data:`MEMORY_SLACK`). It sizes the memory a job asks Ray for (:func:`hashiflex.fanout.run_jobs`) and orders
    the jobs, the smallest first."""
    base: float
    per_byte: float
    per_operator: float
    per_signal_bit: float
    per_array_bit: float
    margin: float

    @staticmethod
    def features(text: str) -> list[float]:
        return [1.0, float(len(text.encode())), float(operators(text)), float(signal_bits(text)),
                float(array_bits(text))]

    def line(self, text: str) -> float:
        return float(sum(c * f for c, f in zip(
            (self.base, self.per_byte, self.per_operator, self.per_signal_bit, self.per_array_bit),
            self.features(text))))

    def need(self, text: str) -> int:
        """Bytes to reserve for synthesizing ``text``."""
        return int(self.margin * self.line(text))

    def to_json(self) -> dict:
        return {"base_bytes": self.base, "per_text_byte": self.per_byte, "per_operator": self.per_operator,
                "per_signal_bit": self.per_signal_bit, "per_array_bit": self.per_array_bit, "margin": self.margin}


FIELDS = ("base_bytes", "per_text_byte", "per_operator", "per_signal_bit", "per_array_bit", "margin")


# What a job may use beyond its need: Ray reserves at most about 70 % of a node's memory, so a few hundred MB over
# is absorbed; without it one small module's shortfall (a layer wrapper of 10 operators: 290 MB against 121 MB)
# would set the margin that multiplies the largest jobs' needs.
MEMORY_SLACK = 256 * 2**20


def fit_memory_model(samples: list[tuple[str, int]]) -> MemoryModel:
    """Fit :class:`MemoryModel` on ``(job text, measured peak bytes)`` pairs: non-negative coefficients, each job
    weighted by 1/sqrt(its peak) (between an absolute fit, which the few large jobs would decide alone, and a
    relative one, in which the many small jobs outvote the large ones this model exists for); the margin makes
    every sample's need at least its peak less :data:`MEMORY_SLACK`."""
    import numpy as np
    from scipy.optimize import nnls

    if len(samples) < 5:
        raise ValueError(f"the memory model needs at least 5 measured jobs, got {len(samples)}")
    X = np.array([MemoryModel.features(t) for t, _ in samples])
    y = np.array([float(p) for _, p in samples])
    if (y <= 0).any():
        raise ValueError("a measured peak memory is not positive")
    w = 1.0 / np.sqrt(y)
    coef, _ = nnls(X * w[:, None], y * w)
    m = MemoryModel(*map(float, coef), margin=1.0)
    return MemoryModel(*map(float, coef),
                       margin=float(max(1.0, max((p - MEMORY_SLACK) / m.line(t) for t, p in samples))))


def load_memory_model(path: Path = MEMORY_MODEL) -> MemoryModel:
    """The fitted model (:data:`MEMORY_MODEL`); raises naming the file and the field when one is missing."""
    doc = json.loads(Path(path).read_text())
    try:
        return MemoryModel(*(float(doc[f]) for f in FIELDS))
    except KeyError as e:
        raise ValueError(f"{path}: the memory model has no field {e.args[0]!r} (expected "
                         f"{', '.join(FIELDS)})") from None


def synth_module(name: str, text: str, child_texts: dict[str, str], timing: bool,
                 delay_target_ps: float = 1000.0) -> dict:
    """One job: ``name`` synthesized alone onto ASAP7, its submodules as black boxes (``child_texts``: their
    :func:`port_stub` or whole text); a leaf module is also timed (``timing``). Runs on a Ray worker: everything it
    needs comes in the arguments or the installed package."""
    from .area import synthesize
    from .timing import critical_path

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hashiflex_synth_") as td:
        src = Path(td) / f"{name}.sv"
        src.write_text(job_text(text, child_texts))
        leaf = not child_texts
        net = Path(td) / f"{name}.net.v" if timing else None
        rep = synthesize(src, name, log=Path(td) / "yosys", netlist=net, blackboxes=tuple(child_texts),
                         delay_target_ps=delay_target_ps)
        m = rep.modules[name]
        out = {"module": name, "own_um2": m.own_um2, "cells": m.cells, "logic_depth_cells": m.depth,
               "synthesis_seconds": time.perf_counter() - t0, "peak_memory_bytes": rep.peak_memory_bytes,
               "text_bytes": len(src.read_bytes())}
        if net is not None:  # every module's mapped cells, for the whole design's timing (hierarchical_timing)
            out["netlist_gz"] = gzip.compress(net.read_bytes(), 6)
        if net is not None and leaf:
            if re.search(r"^\s*DFF", net.read_text(), re.M):
                t = critical_path(net, name, ports=True)
                out.update(period_ps=t.period_ps, path_cells=t.cells, startpoint=t.startpoint,
                           endpoint=t.endpoint)
            else:
                out["period_ps"] = None  # no flip-flop: purely combinational, timed with whatever registers it
    return out


@dataclass
class ModuleSynthesis:
    top: str
    order: list[str]               # every module under top, children first
    rows: dict[str, dict]          # module -> its job's result (+ key, cached, memory), for the modules done
    children: dict[str, Counter]
    instances: Counter             # module -> instances in the whole design
    report: AreaReport
    cache: Path
    too_large: dict[str, str] = field(default_factory=dict)  # module -> why it was not run (its memory need)

    @property
    def complete(self) -> bool:
        return len(self.rows) == len(self.order)

    @property
    def area_um2(self) -> float:
        return self.report.total(self.top)

    def slowest(self, memories: bool = False) -> dict | None:
        """The leaf with the longest path; memories (register arrays, SRAM macros in silicon, whose read path a
        memory compiler sets) only with ``memories``."""
        timed = [r for r in self.rows.values() if r.get("period_ps") and (memories or not r.get("memory"))]
        return max(timed, key=lambda r: r["period_ps"]) if timed else None

    def to_json(self) -> dict:
        """Per module done: its area, cells, depth, (leaves) critical path and instances; the slowest leaf and
        the clock it supports; the memories; the design's area once every module is done."""
        doc: dict = {"design": self.top, "modules_total": len(self.order), "modules_done": len(self.rows),
                     "complete": self.complete, "cache": str(self.cache),
                     "modules": [{**{k: self.rows[m].get(k) for k in (
                         "module", "own_um2", "cells", "logic_depth_cells", "period_ps", "path_cells",
                         "synthesis_seconds", "peak_memory_bytes", "cached", "memory")},
                                  "instances": self.instances[m]}
                                 for m in self.order if m in self.rows],
                     "synthesis_seconds": sum(r.get("synthesis_seconds") or 0 for r in self.rows.values())}
        if self.too_large:
            doc["too_large"] = [{"module": m, "why": w} for m, w in self.too_large.items()]
        s = self.slowest()
        if s:
            doc["slowest_leaf"] = {k: s.get(k) for k in ("module", "period_ps", "path_cells", "startpoint",
                                                         "endpoint")}
            doc["fmax_ghz_leaves"] = 1e3 / s["period_ps"]
        mem = [r for r in self.rows.values() if r.get("memory")]
        if mem:  # register arrays (the skip FIFOs' storage): standard-cell register files here, SRAM in silicon
            doc["memories"] = {"modules": len(mem),
                               "um2": sum(r["own_um2"] * self.instances[r["module"]] for r in mem),
                               "slowest_read_ps": max((r.get("period_ps") or 0) for r in mem)}
        if self.complete:
            doc["area_um2"] = self.area_um2
        return doc


_PORT = re.compile(r"^\s*(input|output|inout)\s+(\\\S+|\w+)\s*;", re.M)
_BIT = re.compile(r"^\\(\w+)\[(\d+)\]$")


def bus_wrapper(name: str, netlist: str) -> str:
    """``netlist`` (Yosys's mapped module ``name``, its ports split into bits ``\\x[3]``) renamed ``name__cells``,
    and a module ``name`` with the original bus ports that instantiates it: the ports a parent's black-box instance
    connects (``.x({...})``), so the hierarchy links as the generator wrote it."""
    head = re.compile(rf"^module {re.escape(name)}\(", re.M)
    if not head.search(netlist):
        raise ValueError(f"netlist of {name}: no `module {name}(` in it")
    body = head.sub(f"module {name}__cells(", netlist, count=1)
    buses: dict[str, list] = {}  # port -> [direction, widest bit + 1 or 0 for a scalar]
    conns = []
    for direction, port in _PORT.findall(body.split(f"module {name}__cells(", 1)[1].split("endmodule", 1)[0]):
        m = _BIT.match(port)
        if m:
            b = buses.setdefault(m.group(1), [direction, 0])
            b[1] = max(b[1], int(m.group(2)) + 1)
            conns.append(f"    .{port} ({m.group(1)}[{m.group(2)}])")
        else:
            buses[port.lstrip("\\")] = [direction, 0]
            conns.append(f"    .{port} ({port.lstrip(chr(92))})")
    decl = [f"  {d} {f'[{w - 1}:0] ' if w else ''}{p};" for p, (d, w) in buses.items()]
    return (body + f"\nmodule {name}({', '.join(buses)});\n" + "\n".join(decl) +
            f"\n  {name}__cells cells (\n" + ",\n".join(conns) + "\n  );\nendmodule\n")


_NETLIST_INSTANCE = re.compile(r"^\s+(\w+)\s+(\\\S+ |\w+)\s*\(", re.M)


def hierarchical_netlist(ms: "ModuleSynthesis") -> str:
    """Every module under the top as its cached mapped cells (children first), each wrapped by
    :func:`bus_wrapper`: the whole design's gate-level netlist, hierarchy kept. Needs every module synthesized with
    timing (the netlists are cached beside the results)."""
    if not ms.complete:
        missing = [m for m in ms.order if m not in ms.rows]
        raise ValueError(f"{len(missing)} of {len(ms.order)} modules under {ms.top} are not synthesized yet "
                         f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}): run synth to the end first")
    parts = []
    for m in ms.order:
        f = ms.cache / f"{ms.rows[m]['key']}.net.v.gz"
        if not f.exists():
            raise ValueError(f"module {m}: no netlist in {ms.cache} (synthesized without timing, or by a version that "
                             f"did not keep netlists): synthesize it again with timing")
        parts.append(bus_wrapper(m, gzip.decompress(f.read_bytes()).decode()))
    return "\n".join(parts)


def instance_paths(ms: "ModuleSynthesis", netlist: str) -> dict[str, str]:
    """Hierarchical instance path (``a/b``) -> module, for every submodule instance under the top."""
    mods = set(ms.order)
    inst: dict[str, list[tuple[str, str]]] = {}
    for m in ms.order:
        i = netlist.find(f"module {m}__cells(")
        text = netlist[i:netlist.find("\nendmodule", i)]
        inst[m] = [(t, n.strip().lstrip("\\")) for t, n in _NETLIST_INSTANCE.findall(text) if t in mods]
    out: dict[str, str] = {}

    def walk(m: str, prefix: str) -> None:
        for t, n in inst[m]:
            path = f"{prefix}{n}/cells"  # the wrapper's one instance of the cells
            out[f"{prefix}{n}"] = t
            walk(t, path + "/")

    walk(ms.top, "cells/")
    return out


@dataclass(frozen=True)
class HierTiming:
    period_ps: float
    startpoint: str
    endpoint: str
    cells: int
    modules: list[str]         # the modules the worst path runs through, in order (the top as ``top``)
    memories_excluded: int     # memory instances whose paths are left out (SRAM macros in silicon)

    def to_json(self) -> dict:
        return {"period_ps": self.period_ps, "fmax_ghz": 1e3 / self.period_ps, "startpoint": self.startpoint,
                "endpoint": self.endpoint, "path_cells": self.cells, "modules": self.modules,
                "memories_excluded": self.memories_excluded}


def hierarchical_timing(ms: "ModuleSynthesis", memories: bool = False, log: Path | None = None) -> HierTiming:
    """The worst register-to-register path of the whole design under ``ms.top``, across module boundaries (see the
    module docstring): OpenSTA on :func:`hierarchical_netlist`, ideal clock, no wires, its ports taken as flip-flops
    on the other side; paths through a memory (register arrays: SRAM macros in silicon) left out unless
    ``memories``."""
    from .area import merged_liberty
    from .timing import parse_report, run_sta, sta_script

    net = hierarchical_netlist(ms)
    paths = instance_paths(ms, net)
    mem = sorted(p for p, m in paths.items() if ms.rows[m].get("memory")) if not memories else []
    with tempfile.TemporaryDirectory(prefix="hashiflex_sta_") as td:
        nf = Path(td) / "design.net.v"
        nf.write_text(net)
        text = run_sta(sta_script(nf, ms.top, merged_liberty(), "clock", ports=True,
                                  extra=tuple(f"set_false_path -through [get_pins {{{p}/*}}]" for p in mem)),
                       f"the hierarchy of {ms.top}", log)
    t = parse_report(text)
    body = text[:text.find("data arrival time")]
    crossed: list[str] = []
    for pin in re.findall(r"^\s*-?[0-9.]+\s+-?[0-9.]+ [\^v] (\S+) \(", body, re.M):
        inst = pin.rsplit("/", 2)[0] if pin.count("/") >= 2 else ""
        inst = re.sub(r"/cells$", "", inst)
        mod = paths.get(inst, ms.top if inst in ("", "cells") else inst)
        if not crossed or crossed[-1] != mod:
            crossed.append(mod)

    def pretty(pin: str) -> str:  # the instance path as the generator named it (the wrappers' ``cells`` dropped)
        return re.sub(r"(^|/)cells/", r"\1", pin)

    return HierTiming(t.period_ps, pretty(t.startpoint), pretty(t.endpoint), t.cells, crossed, len(mem))


def instance_counts(children: dict[str, Counter], order: list[str], top: str) -> Counter:
    n = Counter({top: 1})
    for m in reversed(order):  # parents before children
        for c, k in children[m].items():
            n[c] += n[m] * k
    return n


def synthesize_modules(verilog: str | Path, top: str, cache: Path | None = None, address: str | None = None,
                       jobs: int | None = None, timing: bool = True, progress: bool = True,
                       limit: int | None = None, match: str | None = None,
                       delay_target_ps: float = 1000.0, memory_model: MemoryModel | None = None) -> ModuleSynthesis:
    """Synthesize every unique module under ``top`` (see the module docstring); results cached in ``cache``
    (default ~/.cache/hashiflex/synth). ``limit``: run at most this many new jobs, the smallest modules first (a
    partial, resumable run: the returned report then lacks the modules still to do and raises on their area);
    ``match``: only new jobs for modules whose names match this regular expression (e.g. the adder lanes).

    Each job asks Ray for the memory ``memory_model`` (default the fitted :data:`MEMORY_MODEL`) says it needs, so
    jobs share a node only as far as its memory goes; a job that needs more than the largest node has is not run
    and is listed in ``too_large`` with its need (the rest of the run goes on)."""
    import os

    from ..fanout import Oversize, run_jobs
    from .area import merged_liberty

    mods = split_modules(Path(verilog).read_text())
    children = submodules(mods)
    order = reachable(children, top)
    lib = merged_liberty()
    keys = module_keys(mods, children, order,
                       hashlib.sha256(lib.read_bytes()).hexdigest() + f"/D{delay_target_ps:g}/t{int(timing)}")
    cache = Path(cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hashiflex" / "synth")
    cache.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    todo = []
    for m in order:
        f = cache / f"{keys[m]}.json"
        if f.exists():
            rows[m] = {**json.loads(f.read_text()), "module": m, "key": keys[m], "cached": True}
        else:
            todo.append(m)
    if match is not None:
        todo = [m for m in todo if re.search(match, m)]
    stubs = {m: child_stubs(mods, children, m) for m in todo}
    mm = memory_model or load_memory_model()
    need = {m: mm.need(job_text(mods[m], stubs[m])) for m in todo}
    todo.sort(key=need.__getitem__)  # the smallest first: a partial run (limit, or stopped) covers the most
    if limit is not None:
        todo = todo[:limit]
    args = [(m, mods[m], stubs[m], timing, delay_target_ps) for m in todo]
    too_large: dict[str, str] = {}
    for i, r in run_jobs(synth_module, args, address=address, jobs=jobs, desc="synthesize modules",
                         progress=progress, memory=[need[m] for m in todo], oversize="skip"):
        m = todo[i]
        if isinstance(r, Oversize):
            too_large[m] = str(r)
            continue
        gz = r.pop("netlist_gz", None)
        if gz is not None:  # the netlist first: a result on file promises its netlist
            ntmp = cache / f".{keys[m]}.net.tmp"
            ntmp.write_bytes(gz)
            ntmp.replace(cache / f"{keys[m]}.net.v.gz")
        tmp = cache / f".{keys[m]}.tmp"
        tmp.write_text(json.dumps(r))
        tmp.replace(cache / f"{keys[m]}.json")
        rows[m] = {**r, "key": keys[m], "cached": False}
    rows = {m: {**rows[m], "memory": bool(_MEMORY.search(mods[m]))} for m in order if m in rows}
    report = AreaReport(top, {m: ModuleArea(m, r["own_um2"], dict(children[m]), r["cells"], r["logic_depth_cells"])
                              for m, r in rows.items()}, 0.0)
    ms = ModuleSynthesis(top, order, rows, children, instance_counts(children, order, top), report, cache,
                         too_large)
    if ms.complete:
        report.top_um2 = report.total(top)
    return ms


def _priced_synthesized(ms: ModuleSynthesis, verilog_text: str, hw_params: dict):
    """The instances the area model prices (:func:`hashiflex.report.area_model.priced_instances`, one entry per
    instance), their modules' features (None: not priced), the synthesized area of one instance of each module that
    is synthesized with everything under it, less its submodules the model prices on their own, and the modules at
    or under a priced instance."""
    from . import area_model as am

    insts, _ = am.priced_instances(verilog_text, hw_params)
    priced = set(insts)
    memo: dict[str, bool] = {}

    def done(m: str) -> bool:
        if m not in memo:
            memo[m] = m in ms.rows and all(done(c) for c in ms.children[m])
        return memo[m]

    under: set[str] = set()

    def mark(m: str) -> None:
        if m not in under:
            under.add(m)
            for c in ms.children[m]:
                mark(c)

    for m in priced:
        mark(m)
    feats = {m: am.module_features(m, hw_params) for m in priced}
    areas = {m: ms.report.total(m) - sum(k * ms.report.total(c) for c, k in ms.children[m].items() if c in priced)
             for m in priced if feats[m] is not None and done(m)}
    return insts, feats, areas, under


def area_model_samples(ms: ModuleSynthesis, verilog_text: str, hw_params: dict) -> list[tuple[str, dict, float]]:
    """(module, the model's features of one instance, synthesized area of one instance) for every module the area
    model prices that is synthesized with everything under it: samples to fit the model on
    (:func:`hashiflex.report.area_model.fit`) in the flow the design is synthesized with."""
    _, feats, areas, _ = _priced_synthesized(ms, verilog_text, hw_params)
    return [(m, feats[m], areas[m]) for m in sorted(areas)]


def area_model_check(ms: ModuleSynthesis, model, verilog_text: str, hw_params: dict) -> dict:
    """The area model against the synthesis as far as it has gone (a partial run included): every instance the
    model prices (:func:`hashiflex.report.area_model.priced_instances`) whose module is synthesized with everything
    under it is compared with the model's estimate of that instance; the design's area is then the synthesized
    figure where there is one and the model's elsewhere. An instance's synthesized area leaves out its submodules
    that the model prices on their own (the NPU's loader and weight banks); the modules above the priced ones (the
    top's own cells: wiring, skip registers) are counted once all of them are synthesized (``glue_um2``)."""
    insts, feats, areas, under = _priced_synthesized(ms, verilog_text, hw_params)
    rows: dict[str, dict] = {}
    synth_um2 = model_same = model_rest = 0.0
    rest = 0
    for m in insts:
        f = feats[m]
        if f is None:  # a memory array (an SRAM macro: priced by neither) or a module the table does not list
            continue
        pred = model.predict(f)
        if m in areas:
            a = areas[m]
            r = rows.setdefault(m, {"module": m, "instances": 0, "um2": a, "model_um2": pred,
                                    "error": pred / a - 1 if a > 0 else None})
            r["instances"] += 1
            synth_um2 += a
            model_same += pred
        else:
            rest += 1
            model_rest += pred
    glue = [m for m in ms.order if m not in under]
    glue_um2 = sum(ms.rows[m]["own_um2"] * ms.instances[m] for m in glue) if all(m in ms.rows for m in glue) else None
    errs = [abs(r["error"]) for r in rows.values() if r["error"] is not None]
    total = synth_um2 + model_rest + (glue_um2 or 0.0)
    return {"instances_synthesized": sum(r["instances"] for r in rows.values()), "instances_modelled": rest,
            "synthesized_um2": synth_um2, "model_um2_of_synthesized": model_same,
            "error_of_synthesized": model_same / synth_um2 - 1 if synth_um2 > 0 else None,
            "mean_abs_error_per_module": sum(errs) / len(errs) if errs else None,
            "modelled_um2": model_rest, "glue_um2": glue_um2,
            "area_um2_synthesized_or_modelled": total,
            "synthesized_fraction": (synth_um2 + (glue_um2 or 0.0)) / total if total > 0 else None,
            "rows": sorted(rows.values(), key=lambda r: -r["um2"] * r["instances"])}


def synth_work(work: Path, address: str | None = None, jobs: int | None = None, limit: int | None = None,
               timing: bool = True, area_model: Path | None = None, cache: Path | None = None,
               progress: bool = True, match: str | None = None, delay_target_ps: float = 1000.0,
               design_timing: bool = True) -> dict:
    """``hashiflex synth``: every unique module of WORK/rtl's design synthesized (fanned out, cached); writes
    WORK/report/synth_modules.json: per module its area, instances, logic depth and (leaves) critical path; the
    design's area; the slowest leaf and the images/s at the clock it supports; once every module is done (and
    ``design_timing``), the whole design's worst path across modules (:func:`hierarchical_timing`) and the images/s
    at its clock; with ``area_model``, the model's estimate of the same design and its error against the
    synthesis."""
    from .. import hw

    params = hw.read_hw_params(work / "rtl")
    sv = work / "rtl" / params["verilog"]
    (work / "report").mkdir(parents=True, exist_ok=True)
    ms = synthesize_modules(sv, params["top"], cache, address, jobs, timing, progress, limit, match, delay_target_ps)
    doc = {**ms.to_json(), "ii_cycles_per_image": params["ii_cycles_per_image"], "delay_target_ps": delay_target_ps}
    if "fmax_ghz_leaves" in doc:
        doc["images_per_second_at_fmax"] = doc["fmax_ghz_leaves"] * 1e9 / params["ii_cycles_per_image"]
    if ms.complete and timing and design_timing:
        h = hierarchical_timing(ms, log=work / "report" / "sta_design.log")
        doc["design_timing"] = {**h.to_json(),
                                "images_per_second": 1e12 / h.period_ps / params["ii_cycles_per_image"]}
    if area_model is not None:
        from . import area_model as am

        model = am.load(area_model)
        text = sv.read_text()
        doc["area_model"] = {"file": str(area_model), **area_model_check(ms, model, text, params)}
        if ms.complete:
            e = am.estimate(model, sv, params, text=text)
            # the model leaves memory arrays (SRAM macros in silicon) out: compare it with the rest
            mem_um2 = sum(ms.report.total(m) * ms.instances[m] for m in ms.rows
                          if am.memory_bits(m, params) is not None)
            doc["area_model"].update(area_um2=e["area_um2"], unmodelled_modules=e["unmodelled_modules"],
                                     memory_bits=e["memory_bits"], memory_um2_excluded=mem_um2,
                                     error=e["area_um2"] / (ms.area_um2 - mem_um2) - 1)
    out = work / "report" / "synth_modules.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    return doc


def format_synth(doc: dict) -> str:
    lines = [f"{doc['design']}: {doc['modules_done']} of {doc['modules_total']} unique modules synthesized "
             f"({doc['synthesis_seconds']:.0f} s of synthesis in all)"]
    if doc.get("area_um2") is not None:
        lines.append(f"area {doc['area_um2']:,.0f} um^2 (ASAP7, every module's own cells x its instances)")
        if "area_model" in doc:
            a = doc["area_model"]
            lines.append(f"area model {a['area_um2']:,.0f} um^2: {100 * a['error']:+.1f} % against the synthesis"
                         + (f" without the memory arrays ({a['memory_um2_excluded']:,.0f} um^2 as register files here, "
                            f"SRAM macros in silicon)" if a.get("memory_um2_excluded") else "")
                         + (f" (not modelled: {', '.join(a['unmodelled_modules'])})" if a["unmodelled_modules"]
                            else ""))
    else:
        lines.append("area: incomplete (run again to synthesize the rest; done modules are cached)")
    if doc.get("too_large"):
        t = doc["too_large"]
        lines.append(f"{len(t)} module(s) not run, each needing more memory than any node has (run them on a "
                     f"cluster with larger nodes: --address): "
                     + "; ".join(f"{r['module']} {r['why']}" for r in t[:5]) + (" ..." if len(t) > 5 else ""))
    a = doc.get("area_model")
    if a and a["instances_synthesized"]:
        lines.append(f"area model on the {a['instances_synthesized']} instances synthesized whole "
                     f"({len(a['rows'])} modules, {a['synthesized_um2']:,.0f} um^2): "
                     f"{100 * a['error_of_synthesized']:+.1f} % in all, {100 * a['mean_abs_error_per_module']:.1f} % "
                     f"mean per module")
    if a and not doc.get("complete"):
        lines.append(f"area, synthesized where done and modelled elsewhere: "
                     f"{a['area_um2_synthesized_or_modelled']:,.0f} um^2, {100 * a['synthesized_fraction']:.1f} % "
                     f"synthesized ({a['instances_modelled']} instances modelled"
                     + ("" if a["glue_um2"] is not None else ", the top's own cells not synthesized yet") + ")")
    if doc.get("slowest_leaf"):
        s = doc["slowest_leaf"]
        lines.append(f"slowest leaf module {s['module']}: {s['period_ps']:.1f} ps ({s['path_cells']} cells) -> "
                     f"{doc['fmax_ghz_leaves']:.2f} GHz, {doc['images_per_second_at_fmax'] / 1e6:.2f} M images/s at "
                     f"II {doc['ii_cycles_per_image']}" + ("" if doc.get("design_timing") else " (paths across modules not included)"))
    if doc.get("design_timing"):
        t = doc["design_timing"]
        lines.append(f"whole design, across modules: {t['period_ps']:.1f} ps ({t['path_cells']} cells, "
                     f"{t['startpoint']} -> {t['endpoint']}, through {' > '.join(t['modules'])}) -> "
                     f"{t['fmax_ghz']:.2f} GHz, {t['images_per_second'] / 1e6:.2f} M images/s at II "
                     f"{doc['ii_cycles_per_image']} (ideal clock, no wires)")
    if doc.get("memories"):
        m = doc["memories"]
        lines.append(f"{m['modules']} memories as standard-cell register files: {m['um2']:,.0f} um^2 in all, "
                     f"slowest read {m['slowest_read_ps']:.0f} ps (SRAM macros in silicon: not in the clock above)")
    return "\n".join(lines)
