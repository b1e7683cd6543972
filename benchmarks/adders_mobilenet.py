"""Adders of the whole real MobileNetV2-1.0-224 (the shared ImageNet weights, 5-bit Po2 with 8-bit first/last
layers, TF padding) under the adder-graph planner, per term setting: with sharing (the plan design.json
carries), without (every channel summed on its own), the planner's time, and the largest adder depth.

    python benchmarks/adders_mobilenet.py [--terms 1,2,3] [--calib 16] [--target-ii N] [--elaborate 1]

Calibration only sets the activation exponents and the biases (the final bias adds); the codes, and so the
plans, follow from the weights. ``--elaborate K``: also export the K-term design (design.json with its plans as
binary tables) and run the Chisel generator on it, measuring wall time and the peak memory of the process tree;
the generator's hw_params.json (its adders, checked against the Python model) goes into the point.
Writes benchmarks/results/adders_mobilenet_v2.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=SHARED / "models/mobilenet_v2_coral/mobilenet_v2_coral.pth")
    ap.add_argument("--data", type=Path, default=SHARED / "data/imagenet-dev")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--terms", default="1,2,3")
    ap.add_argument("--target-ii", type=int, default=None, help="pixel parallelism for this II (default: 1 pixel/beat)")
    ap.add_argument("--elaborate", type=int, default=None, help="term setting to export and elaborate")
    ap.add_argument("--work", type=Path, default=ROOT / "build/bench_adders_mnv2")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/adders_mobilenet_v2.json")
    args = ap.parse_args(argv)

    from hashiflex import adders
    from hashiflex.flow import Config, layer_bits, pretrained_model
    from hashiflex.ir import Conv2d, Linear
    from hashiflex.imagenet import ImageFolder, input_type, value_batches
    from hashiflex.passes import calibrate_activations, hw_model, import_torch, quantize_weights, same_padding
    from hashiflex.quant.fakequant import activation_ranges

    t0 = time.perf_counter()
    model = pretrained_model("mobilenet_v2", str(args.weights))
    g = same_padding(import_torch(model, input_type(), name="mobilenet_v2"), "tf")
    g = calibrate_activations(g, activation_ranges(g, value_batches(ImageFolder(args.data, limit=args.calib), 8)))
    bits = layer_bits(g, Config(weight_bits=5, edge_bits=8))
    print(f"imported and calibrated on {args.calib} images in {time.perf_counter() - t0:.0f} s")
    points = []
    for k in [int(v) for v in args.terms.split(",")]:
        q = quantize_weights(g, bits, k)
        adders._cache.clear()
        t = time.perf_counter()
        hw = [m for m in hw_model(q, 4, args.target_ii) if m.op in ("conv2d", "linear")]
        dt = time.perf_counter() - t
        depth = max(adders.plan_codes(l.q.codes, l.q.terms, isinstance(l, Conv2d) and l.depthwise).depth()
                    for l in q.layers if isinstance(l, (Conv2d, Linear)))
        p = {"terms": k, "adders": sum(m.adders for m in hw), "adders_unshared": sum(m.adders_unshared for m in hw),
             "plan_seconds": dt, "max_tree_depth": depth,
             "largest_layer": max(((m.name, m.adders) for m in hw), key=lambda x: x[1])}
        p["saved"] = 1 - p["adders"] / p["adders_unshared"]
        points.append(p)
        print(f"{k} term(s): {p['adders']:,} adders with sharing, {p['adders_unshared']:,} without "
              f"({100 * p['saved']:.1f} % saved), planned in {dt:.1f} s, depth <= {depth}")
        if args.elaborate == k:
            p["elaboration"] = elaborate(q, args.work / f"mnv2_t{k}", args.target_ii)
            print(f"  elaborated: {p['elaboration']}")
    out = {"command": "python benchmarks/adders_mobilenet.py " + " ".join(argv or []),
           "machine": f"{platform.node()} ({platform.machine()})", "calibration_images": args.calib,
           "target_ii": args.target_ii, "points": points}
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


def elaborate(q, base: Path, target_ii) -> dict:
    """Export the quantized graph and run the generator on it (time, peak memory, its hw_params checked)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from elaborate_mobilenet import run_measured

    from hashiflex.export import design_from_graph, write_design
    from hashiflex.hw import check_design_hw, read_hw_params

    t = time.perf_counter()
    d = design_from_graph(q, 4, target_ii)
    write_design(d, base / "design.json", tables=True)
    export_s = time.perf_counter() - t
    cmd = [str(ROOT / "mill"), "--no-server", "--ticker", "false", "hashiflex.run",
           "--design", str(base / "design.json"), "--out", str(base / "rtl")]
    rc, wall, peak = run_measured(cmd, ROOT, base / "elaborate.log")
    row = {"export_s": round(export_s, 1), "rc": rc, "elaborate_s": round(wall, 1),
           "peak_rss_gib": round(peak / 2 ** 30, 2)}
    if rc != 0:
        row["error"] = (base / "elaborate.log").read_text()[-2000:]
        return row
    hp = read_hw_params(base / "rtl")
    check_design_hw(d, q, hp)
    phases = [l for l in (base / "elaborate.log").read_text().splitlines() if "chisel" in l and "firtool" in l]
    row.update(adders=hp["adders"], adders_unshared=hp["adders_unshared"], ii_cycles_per_image=hp["ii_cycles_per_image"],
               register_bits=hp["register_bits"], verilog_mib=round((base / "rtl" / hp["verilog"]).stat().st_size
                                                                    / 2 ** 20, 1),
               phases=phases[-1].strip() if phases else None)
    return row


if __name__ == "__main__":
    main()
