"""Fit the stage timing model (hashiflex.stage_timing) on synthesized adder lanes, and report its error.

Each point is one ShiftAddLane module synthesized onto ASAP7 and timed with OpenSTA (``hashiflex synth``, or
``benchmarks/timing_levels.py``), matched to its layer in the design it came from, whose adder plan gives the
stage's adder levels and widest adder at that design's levels per stage::

    python benchmarks/stage_timing.py \
        --synth build/bench_elab/mnv2_w10_real_t1_tf/design.json:benchmarks/results/synth_modules_...json \
        --levels-sweep build/bench_elab/real_t1_tf_c64:benchmarks/results/timing_levels.json \
        [--package]     # also write hashiflex/stage_timing.json, the model `hashiflex export --clock-ps` uses

Writes benchmarks/results/stage_timing.{json,png}: the coefficients, every point (predicted vs measured) and the
fit's error; a point whose path is not the adder arithmetic (fewer than ``--min-cells`` cells: a register's fanout,
not its stage's adders) is listed but not fitted.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashiflex import stage_timing  # noqa: E402
from hashiflex.analysis import annotate  # noqa: E402
from hashiflex.ops import op_of  # noqa: E402
from hashiflex.ops.weighted import WeightedOp  # noqa: E402


def _ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name)


def _weighted(g):
    return {_ident(l.name): (l, i) for l, i in zip(g.layers, annotate(g)) if isinstance(op_of(l), WeightedOp)}


def synth_points(design_json: Path, synth_json: Path, widths_cache: dict) -> list[dict]:
    from hashiflex.export.design import levels_in, load_design

    d, g = load_design(design_json)  # validated: the graph the generator built
    own = levels_in(d)
    by_id = _weighted(g)
    rows = json.loads(synth_json.read_text())["modules"]
    out = []
    for r in rows:
        m = re.match(r"ShiftAddLane_(.+?)_n\d+_o\d+_s\d+_[0-9a-f]{8}$", r["module"])
        if not m or not r.get("period_ps"):
            continue
        layer, info = by_id[m.group(1)]
        lps = own.get(layer.name, d["hardware"]["adder_levels_per_stage"])
        key = (str(design_json), layer.name)
        if key not in widths_cache:
            widths_cache[key] = stage_timing.level_widths(layer, info)
        out.append({"source": str(synth_json), "layer": layer.name, "levels_per_stage": lps,
                    "stages": stage_timing.stages_of(widths_cache[key], lps), "period_ps": r["period_ps"],
                    "path_cells": r.get("path_cells")})
    return out


def sweep_points(work: Path, sweep_json: Path, widths_cache: dict) -> list[dict]:
    import pickle

    with open(work / "po2.pkl", "rb") as f:
        g = pickle.load(f)["graph"]
    by_name = {l.name: (l, i) for l, i in zip(g.layers, annotate(g))}
    out = []
    for r in json.loads(sweep_json.read_text())["rows"]:
        layer, info = by_name[r["layer"]]
        key = (str(work), layer.name)
        if key not in widths_cache:
            widths_cache[key] = stage_timing.level_widths(layer, info)
        out.append({"source": str(sweep_json), "layer": layer.name, "levels_per_stage": r["levels_per_stage"],
                    "stages": stage_timing.stages_of(widths_cache[key], r["levels_per_stage"]),
                    "period_ps": r["lane_period_ps"], "path_cells": None})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", action="append", default=[], metavar="DESIGN_JSON:SYNTH_JSON",
                    help="a design and its per-module synthesis (hashiflex synth's synth_modules.json)")
    ap.add_argument("--levels-sweep", action="append", default=[], metavar="WORK:TIMING_LEVELS_JSON",
                    help="a work folder (po2.pkl) and benchmarks/timing_levels.py's results on it")
    ap.add_argument("--min-cells", type=int, default=8,
                    help="fit only paths of at least this many cells (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stage_timing.json")
    ap.add_argument("--package", action="store_true", help="also write hashiflex/stage_timing.json")
    ap.add_argument("--held-out", type=Path, default=None, metavar="MODEL_JSON",
                    help="also report this (earlier) model's error on the points: a held-out check when they were "
                         "not in its fit")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cache: dict = {}
    points = []
    for item in args.synth:
        a, b = item.rsplit(":", 1)
        points += synth_points(Path(a), Path(b), cache)
    for item in args.levels_sweep:
        a, b = item.rsplit(":", 1)
        points += sweep_points(Path(a), Path(b), cache)
    fitted = [p for p in points if p["path_cells"] is None or p["path_cells"] >= args.min_cells]
    src = "; ".join(args.synth + args.levels_sweep)
    model = stage_timing.fit([(p["stages"], p["period_ps"]) for p in fitted], source=src)
    held = None
    if args.held_out is not None:
        old = stage_timing.load(args.held_out)
        err = [old.lane_ps(p["stages"]) - p["period_ps"] for p in fitted]
        held = {"model": old.to_json(), "file": str(args.held_out), "points": len(err),
                "rms_error_ps": round(float(sum(e * e for e in err) / len(err)) ** 0.5, 1),
                "max_under_ps": round(max(0.0, -min(err)), 1), "max_over_ps": round(max(0.0, max(err)), 1)}
    for p in points:
        p["predicted_ps"] = round(model.lane_ps(p["stages"]), 1)
        p["fitted"] = p in fitted
        p["stages"] = [[s.levels, s.width, s.fanout] for s in p["stages"]]
    doc = {"command": "python benchmarks/stage_timing.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
           "model": model.to_json(), "held_out": held, "points": points,
           "seconds": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if args.package:
        (ROOT / "hashiflex" / "stage_timing.json").write_text(json.dumps(model.to_json(), indent=1) + "\n")
    print(f"period_ps = {model.c0:.1f} + {model.c_level:.1f} x levels + {model.c_bit:.2f} x width + "
          f"{model.c_fanout:.1f} x log2(fanout)  "
          f"({model.points} lanes fitted, rms {model.rms_error_ps:.1f} ps, max {model.max_error_ps:.1f} ps)")
    if held:
        print(f"held-out ({held['file']}, fitted without these lanes): rms {held['rms_error_ps']} ps, "
              f"most under-predicted by {held['max_under_ps']} ps, most over by {held['max_over_ps']} ps")
    for p in points:
        print(f"  {p['layer']:24s} L={p['levels_per_stage']}  measured {p['period_ps']:7.1f}  predicted "
              f"{p['predicted_ps']:7.1f}{'' if p['fitted'] else '  (not fitted: ' + str(p['path_cells']) + ' cells)'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        for lps in sorted({p["levels_per_stage"] for p in points}):
            ps = [p for p in points if p["levels_per_stage"] == lps and p["fitted"]]
            ax.scatter([p["period_ps"] for p in ps], [p["predicted_ps"] for p in ps], s=12, label=f"{lps} levels/stage")
        lim = [min(p["period_ps"] for p in fitted) * 0.9, max(p["period_ps"] for p in fitted) * 1.05]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("synthesized lane period (ps, OpenSTA, ASAP7)")
        ax.set_ylabel("stage timing model (ps)")
        ax.set_title(f"rms {model.rms_error_ps:.0f} ps, max {model.max_error_ps:.0f} ps, {model.points} lanes")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"), dpi=120)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
