"""Does area follow the adder count? One layer's constant-matrix multiply, planned by hashiflex (hashiflex.adders)
and by da4ml (``da4ml.cmvm.solve``), written as the same plain combinational Verilog and synthesized with Yosys
onto ASAP7 (hashiflex.report.area: ABC mapping, area and logic depth per module).

Both graphs go through one emitter, so only the graphs differ: every node is a two-input add/subtract of shifted
operands, each wire exactly as wide as its value interval (8-bit signed inputs), outputs the exact products
(a negated output costs its negation on either side). Each netlist is checked before synthesis: the emitted
Verilog is simulated with Icarus on random inputs against x @ W.T.

    python benchmarks/adders_area.py [--only NAME ...] [--out adders_area.json]

Writes benchmarks/results/adders_area.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adders_vs_da4ml import SHARED_WEIGHTS, po2_matrix, real_matrix  # noqa: E402

from hashiflex import adders  # noqa: E402
from hashiflex.report.area import synthesize  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
IN_BITS = 8
MATRICES = [("64x64, 50 % zero", lambda: po2_matrix(64, 64, 0.5, 1)),
            ("MobileNetV2 conv 3x3 32x27", lambda: real_matrix(SHARED_WEIGHTS, "features.0.0.weight", 1))]


class Graph:
    """A DAG of two-input sums: node n's integer wire v_n stands for v_n * 2**scale[n]. A reference is
    (node, shift, neg): +-v_node * 2**(scale + shift)."""

    def __init__(self, n_in: int):
        self.n_in = n_in
        self.scale = [0] * n_in
        self.ops: list[tuple] = []  # (ref_a, ref_b): node n_in + j = ref_a + ref_b
        self.outs: list[tuple | None] = []

    def add(self, ra: tuple, rb: tuple) -> int:
        self.scale.append(min(self.scale[ra[0]] + ra[1], self.scale[rb[0]] + rb[1]))
        self.ops.append((ra, rb))
        return len(self.scale) - 1

    def adders(self) -> int:
        return len(self.ops) + sum(1 for r in self.outs if r is not None and r[2])

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Exact outputs (object ints) for integer inputs x (n,): the graph's meaning, checked against W x."""
        v = [int(a) for a in x]

        def term(r, base):
            node, s, ng = r
            t = v[node] << (self.scale[node] + s - base)
            return -t if ng else t
        for j, (ra, rb) in enumerate(self.ops):
            base = self.scale[self.n_in + j]
            v.append(term(ra, base) + term(rb, base))
        return np.array([0 if r is None else term(r, 0) for r in self.outs], dtype=object)


def from_plan(plan: adders.AdderPlan) -> Graph:
    g = Graph(plan.n_in)
    for a, sa, b, sb, nb in plan.sums.tolist():
        g.add((a, sa, False), (b, sb, bool(nb)))
    g.outs = [None if node < 0 else (node, s, bool(ng)) for node, s, ng in plan.roots.tolist()]
    return g


def from_da4ml(pipe, n_in: int) -> Graph:
    """da4ml's Pipeline (stages of CombLogic ops: -1 input, 0 add, 1 subtract, ``data`` the second operand's
    shift) as a Graph, stage outputs feeding the next stage's inputs."""
    g = Graph(n_in)
    refs = [(i, 0, False) for i in range(n_in)]
    for sol in pipe.solutions:
        node_ref: list[tuple] = []
        for op in sol.ops:
            if op.opcode == -1:  # an input (None: a zero output of the stage before)
                r = refs[op.id0]
                node_ref.append(None if r is None else (r[0], r[1] + int(sol.inp_shifts[op.id0]), r[2]))
            elif op.opcode in (0, 1):
                ra, rb = node_ref[op.id0], node_ref[op.id1]
                if rb is not None:
                    rb = (rb[0], rb[1] + int(op.data), rb[2] != (op.opcode == 1))
                if ra is None or rb is None:  # a sum with zero is wiring (it spends no adder)
                    node_ref.append(ra if rb is None else rb)
                    continue
                if ra[2]:  # keep the first operand positive: -a + b = b - a, -a - b = -(a + b)
                    if not rb[2]:
                        ra, rb = rb, ra
                    else:
                        n = g.add((ra[0], ra[1], False), (rb[0], rb[1], False))
                        node_ref.append((n, 0, True))
                        continue
                node_ref.append((g.add(ra, rb), 0, False))
            else:
                raise ValueError(f"da4ml op with opcode {op.opcode} is not an add/subtract: not a pure adder graph")
        refs = []
        for idx, s, ng in zip(sol.out_idxs, sol.out_shifts, sol.out_negs):
            if idx < 0 or node_ref[idx] is None:
                refs.append(None)
                continue
            node, s0, g0 = node_ref[idx]
            refs.append((node, s0 + int(s), g0 != bool(ng)))
    g.outs = refs
    return g


def _bits(lo: int, hi: int) -> int:
    return max(int(hi).bit_length(), int(-lo - 1).bit_length()) + 1 if (lo, hi) != (0, 0) else 1


def verilog(g: Graph, top: str) -> tuple[str, int]:
    """Plain Verilog of the graph, every wire as wide as its exact interval (by interval arithmetic), and its
    adder bits: each sum's width less the low bits one operand alone sets (below the other's shift)."""
    lim = 1 << (IN_BITS - 1)
    adder_bits = 0
    iv = [(-lim, lim - 1)] * g.n_in

    def rng(r, base):
        node, s, ng = r
        k = g.scale[node] + s - base
        lo, hi = iv[node][0] << k, iv[node][1] << k
        return (-hi, -lo) if ng else (lo, hi)

    lines = []
    for j, (ra, rb) in enumerate(g.ops):
        n = g.n_in + j
        base = g.scale[n]
        (alo, ahi), (blo, bhi) = rng(ra, base), rng(rb, base)
        iv.append((alo + blo, ahi + bhi))
        w = _bits(*iv[n])
        ka, kb = g.scale[ra[0]] + ra[1] - base, g.scale[rb[0]] + rb[1] - base
        adder_bits += w - kb - (0 if rb[2] else ka)  # b shifted: a alone sets its low bits; a shifted: b, if added
        lines.append(f"  wire signed [{w - 1}:0] n{n} = (n{ra[0]} <<< {ka}) {'-' if rb[2] else '+'} "
                     f"(n{rb[0]} <<< {kb});")
    ports = [f"input signed [{IN_BITS - 1}:0] n{i}" for i in range(g.n_in)]
    outs = []
    for o, r in enumerate(g.outs):
        if r is None:
            ports.append(f"output signed [0:0] y{o}")
            outs.append(f"  assign y{o} = 1'sb0;")
            continue
        lo, hi = rng(r, 0)
        ports.append(f"output signed [{_bits(lo, hi) - 1}:0] y{o}")
        k = g.scale[r[0]] + r[1]
        outs.append(f"  assign y{o} = {'-' if r[2] else ''}(n{r[0]} <<< {k});")
    src = f"module {top}(\n  " + ",\n  ".join(ports) + ");\n" + "\n".join(lines + outs) + "\nendmodule\n"
    return src, adder_bits


def simulate(src: str, top: str, g: Graph, x: np.ndarray, tmp: Path) -> np.ndarray:
    """The emitted Verilog's outputs for each input row of x, by Icarus Verilog."""
    tb = [f"module tb;", *(f"  reg signed [{IN_BITS - 1}:0] n{i};" for i in range(g.n_in)),
          *(f"  wire signed [63:0] y{o};" for o in range(len(g.outs))),
          f"  {top} dut(" + ", ".join([f".n{i}(n{i})" for i in range(g.n_in)]
                                     + [f".y{o}(y{o})" for o in range(len(g.outs))]) + ");",
          "  initial begin"]
    for row in x:
        tb += [f"    n{i} = {int(v)};" for i, v in enumerate(row)]
        tb += ["    #1;", '    $display("' + " ".join(["%0d"] * len(g.outs)) + '", '
               + ", ".join(f"y{o}" for o in range(len(g.outs))) + ");"]
    tb += ["  end", "endmodule"]
    (tmp / "dut.v").write_text(src)
    (tmp / "tb.v").write_text("\n".join(tb) + "\n")
    subprocess.run(["iverilog", "-o", str(tmp / "sim"), str(tmp / "dut.v"), str(tmp / "tb.v")], check=True,
                   capture_output=True)  # (its port-width warnings: the 64-bit probes are sign-extended)
    out = subprocess.run(["vvp", "-n", str(tmp / "sim")], check=True, capture_output=True, text=True).stdout
    return np.array([[int(v) for v in line.split()] for line in out.strip().splitlines()], dtype=object)


def measure(name: str, g: Graph, w: np.ndarray, tmp: Path) -> dict:
    top = "cmvm_" + name
    src, adder_bits = verilog(g, top)
    x = np.random.default_rng(0).integers(-(1 << (IN_BITS - 1)), 1 << (IN_BITS - 1), size=(6, w.shape[1]))
    exact = bool(all(np.array_equal(g.evaluate(r), (w.astype(object) @ r.astype(object))) for r in x))
    sim = simulate(src, top, g, x, tmp)
    rtl_exact = bool(np.array_equal(sim, x.astype(object) @ w.T.astype(object)))
    path = tmp / f"{top}.v"
    path.write_text(src)
    t = time.perf_counter()
    rep = synthesize(path, top, log=tmp / top, flat=True)
    return {"adders": g.adders(), "adder_bits": adder_bits, "exact": exact, "rtl_exact": rtl_exact, "area_um2": rep.top_um2,
            "cells": rep.modules[top].cells, "logic_depth_cells": rep.max_depth(top),
            "synthesis_seconds": time.perf_counter() - t}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="matrix names (substrings) to run")
    ap.add_argument("--out", default="adders_area.json")
    args = ap.parse_args(argv)
    for tool in ("yosys", "iverilog"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (`make deps` installs it)")
    from da4ml.cmvm import solve

    mats = [m for m in MATRICES if not args.only or any(s in m[0] for s in args.only)]
    if not SHARED_WEIGHTS.exists():
        print(f"{SHARED_WEIGHTS} not found: the real MobileNetV2 layer is skipped")
        mats = [m for m in mats if "MobileNetV2" not in m[0]]
    rows = []
    out = {"machine": f"{platform.node()} ({platform.machine()})", "command": "python benchmarks/adders_area.py",
           "library": "ASAP7 RVT TT (hashiflex/report/asap7), Yosys synth -flatten + ABC", "in_bits": IN_BITS,
           "rows": rows}
    print(f"{'matrix':<30} {'':>9} {'adders':>7} {'area um2':>9} {'cells':>6} {'depth':>5}")
    with tempfile.TemporaryDirectory() as td:
        for name, make in mats:
            w = make()
            graphs = {"hashiflex": from_plan(adders.plan_matrix(w)),
                      "da4ml": from_da4ml(solve(np.ascontiguousarray(w.T, dtype=np.float32)), w.shape[1])}
            row = {"matrix": name, "shape": list(w.shape)}
            for tool, g in graphs.items():
                row[tool] = measure(tool, g, w, Path(td))
                r = row[tool]
                print(f"{name:<30} {tool:>9} {r['adders']:>7} {r['area_um2']:>9.1f} {r['cells']:>6} "
                      f"{r['logic_depth_cells']:>5}" + ("" if r["exact"] and r["rtl_exact"] else "  NOT EXACT"))
            h, d = row["hashiflex"], row["da4ml"]
            row["ratio_adders"] = h["adders"] / d["adders"]
            row["ratio_adder_bits"] = h["adder_bits"] / d["adder_bits"]
            row["ratio_area"] = h["area_um2"] / d["area_um2"]
            print(f"{name:<30} {'ratio':>9} {row['ratio_adders']:>7.3f} {row['ratio_area']:>9.3f}   "
                  f"adder bits {h['adder_bits']:,} / {d['adder_bits']:,} = {row['ratio_adder_bits']:.3f}")
            rows.append(row)
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
