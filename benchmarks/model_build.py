"""Verilator model build time: what the layer-by-layer verification of a full-size design spends most of its time on.

    python benchmarks/model_build.py [--work build] [--images 8] [--out NAME.json]

WORK is an elaborated design (design.json beside an rtl/ folder: the demo's digits CNN by default, or one layer of
a full-size design cut out by `hashiflex layerwise`, e.g. WORK/report/layerwise/L074). Its model is built from
scratch (a fresh build folder each time) four ways, in this run:
  * baseline: traced (pyverilator always adds --trace), Verilator's default C++ levels (-Os for the per-cycle code,
    -O1 for the rest), make one job at a time: how `hashiflex layerwise` built its models before;
  * the same with make on every core;
  * untraced (StreamSim(trace=False): /*verilator tracing_off*/ over the source), every core;
  * untraced and -O0 for all the C++ (build_opt="-O0"), every core: how `hashiflex layerwise` builds them now.
Each model then streams the same random images (over the design's whole input range) and its outputs must equal the
golden model's (np.array_equal, else the script fails); simulated cycles/s are reported beside the build time, since
-O0 trades simulation speed for build time. Ratios are against the baseline. Writes benchmarks/results/NAME.json
(default model_build_<top>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hashiflex import hw, ref
from hashiflex.export import load_design
from hashiflex.sim import StreamSim
from hashiflex.sim.stream import VERILATOR_ARGS, VERILATOR_CFLAGS, verilator_version

HERE = Path(__file__).resolve().parent
CORES = os.cpu_count() or 1
WAYS = [  # name, StreamSim keywords
    ("traced_default_opt_make_j1", {"trace": True, "build_opt": None, "make_jobs": 1}),
    (f"traced_default_opt_make_j{CORES}", {"trace": True, "build_opt": None, "make_jobs": CORES}),
    (f"untraced_default_opt_make_j{CORES}", {"trace": False, "build_opt": None, "make_jobs": CORES}),
    (f"untraced_O0_make_j{CORES}", {"trace": False, "build_opt": "-O0", "make_jobs": CORES}),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("build"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--out", default=None, help="result file name under benchmarks/results/")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="leave out the one-job traced build (when it takes too long; then no ratios)")
    args = ap.parse_args(argv)
    if not (args.work / "design.json").exists():
        sys.exit(f"{args.work}/design.json: not found (an elaborated design: `make demo`, or a layerwise L### folder)")
    d, g = load_design(args.work / "design.json")
    params = hw.read_hw_params(args.work / "rtl")
    lo, hi = g.input.range  # the exact bounds a cut-out layer carries (the type's range otherwise)
    x = np.random.default_rng(0).integers(lo, hi + 1, size=(args.images, g.input.channels, g.input.height,
                                                              g.input.width))
    x[0], x[-1] = lo, hi
    want = ref.run(g, x)
    rows = {}
    for name, kw in WAYS[1:] if args.skip_baseline else WAYS:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            t0 = time.perf_counter()
            sim = StreamSim(args.work / "rtl", params, d, build_root=tmp, **kw)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = sim.run(x, progress=False)
            run_s = time.perf_counter() - t0
            if not np.array_equal(res.outputs.reshape(want.shape), want):
                sys.exit(f"{name}: the model's outputs differ from the golden model's")
            del sim
            shutil.rmtree(tmp, ignore_errors=True)
        rows[name] = {**kw, "build_s": round(build_s, 1), "run_s": round(run_s, 3),
                      "cycles_per_s": round(res.cycles / run_s)}
        print(name, json.dumps(rows[name]), flush=True)
    base = rows.get(WAYS[0][0])
    out = {"command": "python benchmarks/model_build.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "design": d["name"], "top": params["top"], "layers": [l["name"] for l in d["layers"]],
           "adders": sum(l["adders"] for l in params["layers"]), "images": args.images,
           "verilator": verilator_version(), "verilator_args": VERILATOR_ARGS, "cflags": VERILATOR_CFLAGS,
           "machine": f"{CORES} cores", "load_average_1min_at_end": round(os.getloadavg()[0], 2), "builds": rows,
           "baseline": f"{WAYS[0][0]}: a traced model, make one job at a time, the same design, same run"}
    if base is not None:
        out["build_speedup_vs_baseline"] = {k: round(base["build_s"] / r["build_s"], 2) for k, r in rows.items()}
        out["sim_speed_vs_baseline"] = {k: round(r["cycles_per_s"] / base["cycles_per_s"], 2)
                                        for k, r in rows.items()}
        print("build speed-up:", out["build_speedup_vs_baseline"])
    path = HERE / "results" / (args.out or f"model_build_{params['top']}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("->", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
