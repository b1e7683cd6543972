"""Netlist inspection with pyverilog: parse the generated Verilog, list the module hierarchy with instance counts,
count adders (binary + and -) and register bits per module, and cross-check them against hw_params.json.

The generator names each layer's instance after the layer (``conv1``, ``conv1_window``, ``relu1``...), so the
check walks from the top (or the ``backbone`` of a design with an NPU) to each layer: a shift-add layer holds
``parallelism`` lane instances whose adders and register bits add up to the layer's figures, a requantize its
rounding adders, a pool or residual add its modelled adders plus counters; nothing outside the NPU multiplies.
More than modelled is an error (:class:`hashiflex.hw.HwMismatchError`); less is logic firtool folded because it
is constant or feeds nothing (zero weights downstream), listed separately. On the default design they agree
exactly.

``hashiflex netlist --work build`` prints the hierarchy and the check.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..hw import HwMismatchError


@dataclass
class ModuleStats:
    name: str
    adders: int = 0              # binary + and - operators
    multipliers: int = 0         # binary * operators
    register_bits: int = 0       # bits of reg declarations
    instances: dict[str, str] = field(default_factory=dict)  # instance name -> module

    @property
    def children(self) -> Counter:
        return Counter(self.instances.values())


def inspect_verilog(path: str | Path) -> dict[str, ModuleStats]:
    """Per module of the file: adders, multipliers, register bits and the instances it holds."""
    from pyverilog.vparser import ast as A
    from pyverilog.vparser.parser import VerilogParser

    text = Path(path).read_text()
    tree = VerilogParser(outputdir=str(_parser_cache()), debug=False).parse(text, debug=False)
    out: dict[str, ModuleStats] = {}

    def width(w) -> int:
        if w is None:
            return 1
        return abs(int(w.msb.value) - int(w.lsb.value)) + 1

    for d in tree.description.definitions:
        if not isinstance(d, A.ModuleDef):
            continue
        m = ModuleStats(d.name)
        todo = [d]
        while todo:
            n = todo.pop()
            if isinstance(n, (A.Plus, A.Minus)):
                m.adders += 1
            elif isinstance(n, A.Times):
                m.multipliers += 1
            elif isinstance(n, A.Reg):
                length = 1
                if getattr(n, "dimensions", None) is not None:  # memories: reg [w] x [depth]
                    for dim in n.dimensions.lengths:
                        length *= width(dim)
                m.register_bits += width(n.width) * length
            elif isinstance(n, A.InstanceList):
                for i in n.instances:
                    m.instances[i.name] = n.module
            todo.extend(n.children())
        out[d.name] = m
    return out


def _parser_cache() -> Path:
    from ..sim.stream import default_cache

    d = default_cache().parent / "pyverilog"
    d.mkdir(parents=True, exist_ok=True)
    return d


def instance_counts(mods: dict[str, ModuleStats], top: str) -> Counter:
    """How many times each module is instantiated under ``top`` (the whole tree, top included once)."""
    total: Counter = Counter({top: 1})

    def visit(name: str, k: int) -> None:
        for child, n in mods[name].children.items():
            total[child] += k * n
            visit(child, k * n)

    visit(top, 1)
    return total


def format_hierarchy(mods: dict[str, ModuleStats], top: str, max_depth: int = 3) -> str:
    """The instance tree (distinct children per level with their counts), with adders and register bits."""
    lines = [f"{'module':<64} {'count':>7} {'adders':>9} {'reg bits':>9}"]

    def visit(name: str, k: int, depth: int) -> None:
        m = mods[name]
        lines.append(f"{'  ' * depth + name:<64} {k:>7} {m.adders:>9} {m.register_bits:>9}")
        if depth < max_depth:
            for child, n in sorted(m.children.items()):
                visit(child, n, depth + 1)

    visit(top, 1, 0)
    return "\n".join(lines)


def cross_check(mods: dict[str, ModuleStats], hw_params: dict) -> tuple[list[str], list[str]]:
    """(errors, folded): where the netlist has more than hw_params.json models (or a layer instance is missing, or
    something outside the NPU multiplies) it is an error; where it has less, firtool folded logic that is constant
    or feeds nothing (zero weights downstream), which is reported, not an error."""
    top = hw_params["top"]
    errors: list[str] = []
    folded: list[str] = []
    if top not in mods:
        return [f"top module {top!r} is not in the Verilog"], []
    base = mods[top]
    if hw_params.get("npu"):
        if base.instances.get("backbone") is None or base.instances.get("npu") != hw_params["npu"]["module"]:
            return [f"{top}: expected instances 'backbone' and 'npu' ({hw_params['npu']['module']}), found "
                    f"{base.instances}"], []
        base = mods[base.instances["backbone"]]
    npu_mods = set(instance_counts(mods, hw_params["npu"]["module"])) if hw_params.get("npu") else set()
    for name, m in mods.items():
        if m.multipliers and name not in npu_mods:
            errors.append(f"{name}: {m.multipliers} multipliers outside the NPU (a Po2 layer only shifts and adds)")

    def compare(layer: str, what: str, have: int, want: int, exact_floor: bool = False) -> None:
        if have > want and not exact_floor:
            errors.append(f"layer {layer!r}: {have} {what} in the Verilog, hw_params {want}")
        elif have < want:
            folded.append(f"layer {layer!r}: {have} {what} in the Verilog of {want} modelled (folded by firtool)")

    for l in hw_params["layers"]:
        inst = base.instances.get(l["name"])
        if inst is None:
            errors.append(f"layer {l['name']!r}: no instance named after it in {base.name}")
            continue
        m = mods[inst]
        if l["op"] in ("conv2d", "linear"):
            lanes = {k: n for k, n in m.children.items() if k.startswith("ShiftAddLane_")}
            compare(l["name"], "lane instances", sum(lanes.values()), l["parallelism"])
            compare(l["name"], "adders", sum(mods[k].adders * n for k, n in lanes.items()), l["adders"])
            compare(l["name"], "register bits in the lanes", sum(mods[k].register_bits * n for k, n in lanes.items()),
                    l["register_bits"])
        else:  # requant: its rounding adders; pools and residual adds also count their beats (more is theirs)
            adders = sum(mods[k].adders * n for k, n in instance_counts(mods, inst).items())
            compare(l["name"], "adders", adders, l["adders"], exact_floor=l["op"] != "requant")
    return errors, folded


def check_netlist(verilog: str | Path, hw_params: dict) -> dict[str, ModuleStats]:
    """Parse, cross-check, raise :class:`HwMismatchError` listing every difference; return the module table."""
    mods = inspect_verilog(verilog)
    errors, _ = cross_check(mods, hw_params)
    if errors:
        raise HwMismatchError("the Verilog disagrees with hw_params.json:\n  " + "\n  ".join(errors))
    return mods
