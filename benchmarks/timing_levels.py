"""Clock vs adder levels per register stage, measured: real MobileNetV2 layers elaborated alone at each setting,
synthesized onto ASAP7 (Yosys) and timed (OpenSTA), to choose the stages for a target clock.

Every adder-graph lane is pipelined with a register after every ``levels_per_stage`` adder levels; fewer levels
per stage give a faster clock and more flip-flops. For each chosen layer of the quantized network in WORK
(``hashiflex quantize --init ...`` or the elaboration benchmark's ``real_t1_tf_c64``), the layer and its
requantizer are exported as a design of their own (8x8 input of the layer's input type, one pixel per beat: the
lane module is the full-size design's, up to its input interval, which is the type's full range here rather than
the tighter one the previous layer's clamp gives), elaborated (``./mill hashiflex.run``), every module synthesized
and every leaf timed (:func:`hashiflex.report.modsynth.synth_work`, cached by module content; ABC maps for the target
clock, buffering high-fanout nets). The slowest timed module at each setting is the clock it supports.

    python benchmarks/timing_levels.py --work build/bench_elab/real_t1_tf_c64 --levels 1,2,3,4 \\
        --layers features.1.conv.0.0,features.1.conv.1,features.2.conv.0.0 --target-ghz 1.0

Writes benchmarks/results/timing_levels.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def layer_design(g, name: str, size: int):
    """The conv layer ``name`` of graph ``g`` and the requantizer after it, as a graph of their own whose input
    is the layer's input (type and channels) at ``size`` x ``size``."""
    from hashiflex.ir import Conv2d, Graph, Input, Requant

    src = dict(zip([l.name for l in g.layers], g.sources()))
    conv = g.layer(name)
    if not isinstance(conv, Conv2d):
        raise ValueError(f"--layers: {name} is a {type(conv).__name__}, expected a conv layer")
    after = [l for l in g.layers if isinstance(l, Requant) and (l.src or None) == name]
    if not after:
        i = [l.name for l in g.layers].index(name)
        after = [l for l in g.layers[i + 1:i + 2] if isinstance(l, Requant)]
    if not after:
        raise ValueError(f"--layers: {name} is not followed by a requantizer")
    s = src[name][0]
    in_type = g.input.type if s == "input" else g.layer(s).out
    cin = conv.weight.shape[1] * conv.groups
    sub = Graph(f"lvl_{name.replace('.', '_')}", Input(cin, size, size, in_type),
                [replace(conv, src="input"), replace(after[0], src=name)])
    return sub


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder with the quantized network's po2.pkl")
    ap.add_argument("--layers", default="features.1.conv.0.0,features.1.conv.1,features.2.conv.0.0")
    ap.add_argument("--levels", default="1,2,3,4")
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--target-ghz", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--out-work", type=Path, default=Path("build/bench_timing"))
    ap.add_argument("--out", default="timing_levels")
    args = ap.parse_args(argv)
    from hashiflex.export import design_from_graph, write_design
    from hashiflex.flow import load_quantized
    from hashiflex.hw import check_design_hw, elaborate
    from hashiflex.report.modsynth import synth_work

    import os

    import ray

    ray.init(num_cpus=args.jobs or os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # one local Ray for every synthesis below
    g = load_quantized(args.work)[0]
    rows = []
    for name in args.layers.split(","):
        sub = layer_design(g, name, args.size)
        for lv in [int(v) for v in args.levels.split(",")]:
            base = args.out_work.resolve() / f"{sub.name}_l{lv}"
            d = design_from_graph(sub, lv, None)
            write_design(d, base / "design.json", tables=True)
            t = time.perf_counter()
            p = elaborate(base / "design.json", base / "rtl", quiet=True)
            elab = time.perf_counter() - t
            check_design_hw(d, sub, p)
            s = synth_work(base, jobs=args.jobs, progress=False, delay_target_ps=1e3 / args.target_ghz)
            lane = [r for r in s["modules"] if r["module"].startswith("ShiftAddLane") and r["period_ps"]]
            row = {"layer": name, "levels_per_stage": lv, "period_ps": s["slowest_leaf"]["period_ps"],
                   "slowest_module": s["slowest_leaf"]["module"], "path_cells": s["slowest_leaf"]["path_cells"],
                   "lane_period_ps": max(r["period_ps"] for r in lane) if lane else None,
                   "area_um2": s["area_um2"], "adders": p["adders"], "register_bits": p["register_bits"],
                   "stages": p["latency_stages"], "elaborate_s": round(elab, 1),
                   "synthesis_s": round(s["synthesis_seconds"], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    ray.shutdown()
    levels = sorted({r["levels_per_stage"] for r in rows})
    worst = {lv: max(r["period_ps"] for r in rows if r["levels_per_stage"] == lv) for lv in levels}
    target_ps = 1e3 / args.target_ghz
    meets = [lv for lv in levels if worst[lv] <= target_ps]
    out = {"command": "python benchmarks/timing_levels.py " + " ".join(argv if argv is not None else
                                                                       __import__("sys").argv[1:]),
           "machine": f"{platform.node()} ({platform.machine()})", "work": str(args.work),
           "library": "ASAP7 RVT TT, Yosys 0.23 + ABC, OpenSTA (ideal clock, no wires)", "rows": rows,
           "worst_period_ps": worst, "target_ghz": args.target_ghz,
           "levels_for_target": max(meets) if meets else None,
           "fmax_ghz": {lv: 1e3 / worst[lv] for lv in levels}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1) + "\n")
    _plot(rows, worst, target_ps, RESULTS / f"{args.out}.png")
    for lv in levels:
        print(f"{lv} adder levels per stage: slowest {worst[lv]:.0f} ps -> {1e3 / worst[lv]:.2f} GHz")
    print(f"levels per stage for {args.target_ghz} GHz: {out['levels_for_target']}")
    return out


def _plot(rows, worst, target_ps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in dict.fromkeys(r["layer"] for r in rows):
        rr = [r for r in rows if r["layer"] == name]
        ax[0].plot([r["levels_per_stage"] for r in rr], [r["period_ps"] for r in rr], "o-", label=name)
        ax[1].plot([r["levels_per_stage"] for r in rr], [r["register_bits"] for r in rr], "o-", label=name)
    ax[0].axhline(target_ps, ls="--", color="gray", lw=0.8)
    ax[0].set(xlabel="adder levels per register stage", ylabel="slowest path (ps)", title="clock period (OpenSTA)")
    ax[1].set(xlabel="adder levels per register stage", ylabel="register bits", title="flip-flops")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
