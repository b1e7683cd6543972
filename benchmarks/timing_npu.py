"""The NPU's critical path at the dot-product width of the full-size designs, synthesized and timed across modules.

    python benchmarks/timing_npu.py [--widths 80,40] [--jobs 1]

The MobileNetV2 NPUs are 143 lanes x 80 MACs (II 112) and 143 x 40 (II 224); every lane is the same circuit, so
the clock is set by one lane's path: the products of a memory word and the input chunk, summed by a tree of
width - 1 adders into the accumulator register in one cycle. For each width, a small network (a 1x1 conv, a pool,
a linear layer of ``width`` inputs and 2 classes) gets an NPU of one lane of that width
(benchmarks/area_model.npu_probe), is elaborated, and every module is synthesized (``hashiflex synth``'s flow:
Yosys + ASAP7, cached by content) and the whole design timed across modules with OpenSTA (ideal clock, no wires;
the weight memory, an SRAM macro in silicon, left out of the paths). Writes benchmarks/results/timing_npu.json.
Its accumulator is narrower than the full-size NPU's (fewer inputs per output: 26 bits against 32), so the path
is a lower bound for theirs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from area_model import npu_probe  # noqa: E402

from hashiflex import hw  # noqa: E402
from hashiflex.export import write_design  # noqa: E402
from hashiflex.report.modsynth import synth_work  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="80,40")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--target-ghz", type=float, default=1.0)
    ap.add_argument("--work", default="build/timing_npu")
    args = ap.parse_args(argv)
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        d = npu_probe(width, 2, 2, 2)
        if (d["npu"]["lanes"], d["npu"]["width"]) != (1, width):
            raise SystemExit(f"width {width}: the probe's NPU is {d['npu']['lanes']} x {d['npu']['width']}, not 1 x {width}")
        work = Path(args.work) / f"w{width}"
        write_design(d, work / "design.json")
        t0 = time.perf_counter()
        hw.elaborate(work / "design.json", work / "rtl", quiet=True)
        doc = synth_work(work, jobs=args.jobs, delay_target_ps=1e3 / args.target_ghz)
        t = doc["design_timing"]
        rows.append({"width": width, "npu": {k: d["npu"][k] for k in ("lanes", "width", "acc_width")},
                     "period_ps": t["period_ps"], "fmax_ghz": t["fmax_ghz"], "path_cells": t["path_cells"],
                     "through": t["modules"], "slowest_leaf": doc["slowest_leaf"], "seconds": round(time.perf_counter() - t0, 1)})
        print(f"width {width}: {t['period_ps']:.1f} ps across modules ({t['path_cells']} cells, through "
              f"{', '.join(t['modules'])}) -> {t['fmax_ghz']:.3f} GHz")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "timing_npu.json"
    out.write_text(json.dumps({"command": "python benchmarks/timing_npu.py " + " ".join(argv or sys.argv[1:]),
                               "target_ghz": args.target_ghz, "rows": rows}, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
