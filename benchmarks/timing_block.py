"""The clock across module boundaries, measured on a block of the real full-size design.

Per-module timing (``hashiflex synth``) times each leaf module alone, its ports taken as flip-flops on the other
side. In the generated pipeline some module boundaries are not registered: a requantizer and a residual add are
combinational on the stream (a conv lane's output register -> requantizer -> residual add -> the next lane's first
adder levels), a line buffer's window feeds the lane's first adders, and a stage's ``ready`` runs back through the
layers it stalls. Those paths are longer than either module shows, so the slowest leaf is a lower bound of the
period. This benchmark cuts a block of layers out of an exported design (:func:`hashiflex.sim.layerwise.chain_design`:
the same parallelism, levels per stage and so the same modules as in the full design), elaborates it, synthesizes
every module (cached by content, fanned out on Ray) and times the whole block with its netlists linked as the
hierarchy (:func:`hashiflex.report.modsynth.hierarchical_timing`): the worst path across modules, against the
slowest leaf in the same run.

    python benchmarks/timing_block.py --work build/bench_elab/mnv2_w10_real_t1_tf_c1100 \\
        --first features.5.conv.0.0 --last features.6.conv.0.2 --target-ghz 0.909

Writes benchmarks/results/timing_block_<design>_<first>_<last>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="an exported design's folder (its design.json)")
    ap.add_argument("--first", required=True, help="the block's first layer")
    ap.add_argument("--last", required=True, help="the block's last layer")
    ap.add_argument("--target-ghz", type=float, default=1.0, help="clock ABC maps for (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--address", default=None, help="a Ray cluster (default: local)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--block-dir", type=Path, default=None,
                    help="where the block's design and Verilog go (default: WORK/blocks/FIRST..LAST)")
    ap.add_argument("--no-elaborate", action="store_true",
                    help="time the block's Verilog already elaborated in WORK/blocks (e.g. by an earlier generator)")
    args = ap.parse_args(argv)

    from hashiflex import hw
    from hashiflex.export.design import load_design, write_design
    from hashiflex.report.modsynth import format_synth, split_modules, synth_work
    from hashiflex.sim.layerwise import chain_design

    d, g = load_design(args.work / "design.json")
    names = [l.name for l in g.layers]
    for n in (args.first, args.last):
        if n not in names:
            raise SystemExit(f"--first/--last: no layer {n} in {args.work / 'design.json'}")
    first, last = names.index(args.first), names.index(args.last)
    sub, one = chain_design(d, g, first, last)
    base = args.block_dir or args.work / "blocks" / f"{args.first}..{args.last}"
    t0 = time.perf_counter()
    if args.no_elaborate:
        params = hw.read_hw_params(base / "rtl")
    else:
        write_design(sub, base / "design.json")
        params = hw.elaborate(base / "design.json", base / "rtl", quiet=True)
        hw.check_design_hw(sub, one, params)
    elaborate_s = time.perf_counter() - t0
    same = None
    full_rtl = args.work / "rtl"
    if (full_rtl / "hw_params.json").exists():  # the block's modules must be the full design's, text for text
        full = split_modules((full_rtl / hw.read_hw_params(full_rtl)["verilog"]).read_text())
        mine = split_modules((base / "rtl" / params["verilog"]).read_text())
        same = {m: full.get(m) == t for m, t in mine.items() if re.match(r"(ShiftAdd|WindowGen|Requant|Residual)", m)}
    t0 = time.perf_counter()
    doc = synth_work(base, address=args.address, jobs=args.jobs, delay_target_ps=1e3 / args.target_ghz)
    synth_s = time.perf_counter() - t0
    print(format_synth(doc))
    t = doc.get("design_timing")
    leaf = doc.get("slowest_leaf")
    row = {"design": d["name"], "block": f"{args.first}..{args.last}", "layers": [l.name for l in one.layers],
           "ops": [type(l).__name__ for l in one.layers], "ii_cycles_per_image": params["ii_cycles_per_image"],
           "adders": params["adders"], "delay_target_ps": 1e3 / args.target_ghz,
           "modules": doc["modules_total"], "cells": sum(m["cells"] * m["instances"] for m in doc["modules"]),
           "area_um2": doc.get("area_um2"), "slowest_leaf": leaf, "design_timing": t,
           "across_over_leaf": t["period_ps"] / leaf["period_ps"] if t and leaf else None,
           "modules_same_as_full_design": same, "elaborate_s": None if args.no_elaborate else round(elaborate_s, 1),
           "synth_and_timing_s": round(synth_s, 1), "synthesis_seconds": round(doc["synthesis_seconds"], 1),
           "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
           "command": "python benchmarks/timing_block.py " + " ".join(argv or __import__("sys").argv[1:])}
    if t and leaf:
        print(f"across modules {t['period_ps']:.1f} ps vs slowest leaf {leaf['period_ps']:.1f} ps: "
              f"{row['across_over_leaf']:.3f}x")
    out = args.out or RESULTS / f"timing_block_{d['name']}_{args.first}_{args.last}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
