"""Full-size elaboration: MobileNetV2 at 224x224 (1000 classes) through the Chisel generator, against width.

    python benchmarks/elaborate_mobilenet.py --widths 0.35,0.5,0.75,1.0 --target-ii 826

For each width: PTQ to Po2 (random-init weights, calibrated on random images: elaboration cost depends on the
weight count and sparsity, not on accuracy), export with binary weight tables, `./mill hashiflex.run`, and measure
wall time and the peak resident memory of the whole process tree (Mill, the generator JVM, firtool) by polling
/proc. hw_params.json gives cycles/image, adders, registers; the Verilog size shows that hierarchy keeps it
proportional to unique weights, not to the unroll. Ratios are against the smallest width in the same run.
Writes benchmarks/results/elaborate_mobilenet_v2.{json,png}.

``--init WEIGHTS.pth --calib-data DIR``: the real network instead of random weights (widths 1.0 only): the user's
pretrained path (``hashiflex quantize --arch mobilenet_v2 --init ... --calib-data ... --terms T --padding P``,
:func:`hashiflex.flow.step_quantize_pretrained`) quantizes the given torchvision MobileNetV2 state_dict on the
first ``--calib-images`` images of DIR, and the design is elaborated at ``--target-ii`` from that po2.pkl. E.g. the
paper's throughput point with the shared ImageNet weights, both configurations:

    python benchmarks/elaborate_mobilenet.py --init ../shared/models/mobilenet_v2_coral/mobilenet_v2_coral.pth \
        --calib-data ../shared/data/imagenet-dev --padding tf --terms 1 --target-ii 224 [--npu]

``--npu``: the paper's main configuration instead, the classifier on the programmable NPU sized for the backbone's
II (hashiflex.npu.size_npu); writes elaborate_mobilenet_v2_npu.{json,png} with the NPU's MACs and memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hashiflex.export import design_from_graph, npu_design, write_design
from hashiflex.flow import quantize_ptq
from hashiflex.hw import check_design_hw, project_root, read_hw_params
from hashiflex.ir import Input, TensorType
from hashiflex.models import mobilenet_v2
from hashiflex.quant.prune import weight_sparsity

RESULTS = Path(__file__).resolve().parent / "results"


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run_measured(cmd: list[str], cwd: Path, log: Path) -> tuple[int, float, int]:
    """(return code, wall seconds, peak tree RSS bytes)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.5)
    return proc.returncode, time.perf_counter() - t0, peak


def real_network(args, work: Path):
    """The pretrained path's quantized graph (cached in WORK/real_<terms>_<padding>/po2.pkl by its config) and four
    calibration images as values."""
    from hashiflex.flow import Config, load_quantized, step_quantize_pretrained
    from hashiflex.imagenet import ImageFolder

    cfg = Config(dataset="imagefolder", data_root=str(args.calib_data), arch="mobilenet_v2", init=str(args.init),
                 weight_bits=args.bits, edge_bits=8, padding=args.padding, terms=args.terms,
                 calib_images=args.calib_images, target_ii=args.target_ii, levels_per_stage=args.levels_per_stage,
                 adder_budget=args.adder_budget, act_range=args.act_range)
    tag = (f"_b{args.adder_budget}" if args.adder_budget else "") + ("_mse" if args.act_range == "mse" else "")
    qdir = work / f"real_t{args.terms}{tag}_{args.padding}_c{args.calib_images}"
    if not (qdir / "po2.pkl").exists() or Config(**load_quantized(qdir)[1]["config"]) != cfg:
        print(f"quantizing {args.init} ({args.terms} term(s), {args.padding} padding) ...", flush=True)
        step_quantize_pretrained(qdir, cfg)
    g = load_quantized(qdir)[0]
    g.name = f"mnv2_w10_real_t{args.terms}{tag}_{args.padding}" + \
        (f"_l{args.levels_per_stage}" if args.levels_per_stage != 4 else "")
    x = ImageFolder(cfg.data_root, cfg.classes, preprocess=cfg.preprocess, limit=4).arrays()[0]
    return g, x * 2.0 ** g.input.type.exp


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="0.35,0.5,0.75,1.0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--target-ii", type=int, default=826, help="cycles per image (826: the paper's NPU config)")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--levels-per-stage", type=int, default=4)
    ap.add_argument("--clock-ps", type=float, default=None,
                    help="per-layer adder levels per stage for this clock period (hashiflex.stage_timing)")
    ap.add_argument("--timing", action="store_true", help="firtool pass timings into WORK/<design>/elaborate.log")
    ap.add_argument("--work", default="build/bench_elab")
    ap.add_argument("--npu", action="store_true", help="classifier on the programmable NPU (hardened + NPU)")
    ap.add_argument("--out", default=None, help="default: results/elaborate_mobilenet_v2[_npu]")
    ap.add_argument("--init", type=Path, default=None, help="a torchvision MobileNetV2 state_dict (real weights)")
    ap.add_argument("--calib-data", type=Path, default=None, help="with --init: ImageFolder to calibrate on")
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--terms", default="1", help="with --init: 1..4 or auto")
    ap.add_argument("--adder-budget", type=int, default=None, help="with --terms auto: the design's adders "
                    "(default: what 2 terms everywhere cost)")
    ap.add_argument("--act-range", default="max", choices=("max", "mse"), help="with --init: activation scales")
    ap.add_argument("--padding", default="tf", choices=("tf", "torch"), help="with --init (default: %(default)s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    root = project_root()
    work = Path(args.work).resolve()
    rows = []
    if args.init is not None and (args.calib_data is None or args.size != 224 or args.classes != 1000):
        ap.error("--init needs --calib-data, and the real network is 224x224 with 1000 classes")
    widths = [1.0] if args.init is not None else [float(w) for w in args.widths.split(",")]
    for width in widths:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        if args.init is not None:
            g, calib = real_network(args, work)
        else:
            inp = Input(3, args.size, args.size, TensorType(8, False, -8))
            calib = rng.integers(0, 256, size=(4, 3, args.size, args.size)) * 2.0 ** -8
            g = quantize_ptq(mobilenet_v2(width, args.classes), inp, f"mnv2_w{str(width).replace('.', '')}", calib,
                             weight_bits=args.bits)
        levels, predicted = {}, {}
        if args.clock_ps is not None:
            from hashiflex import stage_timing

            levels, predicted = stage_timing.levels_for_clock(g, args.clock_ps)
            g.name += f"_c{args.clock_ps:g}"
        if args.npu:
            from hashiflex import npu

            d = npu_design(g, args.levels_per_stage, args.target_ii,
                           np.rint(calib * 2.0 ** -g.input.type.exp).astype(np.int64), levels=levels)
            g = npu.split_head(g)[0]
            g.name += "_npu"
            d["name"] = g.name
        else:
            d = design_from_graph(g, args.levels_per_stage, args.target_ii, levels=levels)
        base = work / g.name
        write_design(d, base / "design.json", tables=True)
        t_export = time.perf_counter() - t0
        weights = sum(int(l.q.codes.size) for l in g.layers if getattr(l, "q", None) is not None)
        nonzero = sum(int((l.q.codes != 0).sum()) for l in g.layers if getattr(l, "q", None) is not None)
        cmd = [str(root / "mill"), "--no-server", "--ticker", "false", "hashiflex.run",
               "--design", str(base / "design.json"), "--out", str(base / "rtl")] + (["--timing"] if args.timing else [])
        print(f"width {width}: {weights:,} weights ({nonzero:,} nonzero), elaborating ...", flush=True)
        rc, wall, peak = run_measured(cmd, root, base / "elaborate.log")
        phases = [l for l in (base / "elaborate.log").read_text().splitlines() if "chisel" in l and "firtool" in l]
        row = {"width": width, "weights_source": str(args.init) if args.init else "random init",
               "terms": args.terms if args.init else "1", "adder_budget": args.adder_budget if args.init else None,
               "act_range": args.act_range if args.init else None, "weights": weights, "nonzero_weights": nonzero, "phases": phases[-1].strip() if phases else None,
               "weight_sparsity": weight_sparsity(g), "export_s": round(t_export, 1), "rc": rc,
               "elaborate_s": round(wall, 1), "peak_rss_gib": round(peak / 2 ** 30, 2)}
        if levels:
            from collections import Counter

            row.update(clock_ps=args.clock_ps, levels_per_stage_histogram=dict(sorted(Counter(levels.values()).items())),
                       predicted_period_ps=round(max(predicted.values()), 1))
        if rc == 0:
            p = read_hw_params(base / "rtl")
            check_design_hw(d, g, p)
            sv = base / "rtl" / p["verilog"]
            row.update(ii_cycles_per_image=p["ii_cycles_per_image"], adders=p["adders"],
                       adders_unshared=p["adders_unshared"],
                       sharing_saves=round(1 - p["adders"] / p["adders_unshared"], 3),
                       register_bits=p["register_bits"], line_buffer_bits=p["line_buffer_bits"],
                       latency_stages=p["latency_stages"], verilog_mib=round(sv.stat().st_size / 2 ** 20, 1),
                       images_per_s_at_1ghz=round(1e9 / p["ii_cycles_per_image"]),
                       max_parallelism=max(l["parallelism"] for l in p["layers"]))
            if p.get("npu"):
                row["npu"] = {k: p["npu"][k] for k in ("module", "lanes", "width", "macs", "cycles_per_image",
                                                       "memory_bits", "weight_memory_words", "weight_memory_word_bits")}
                row["backbone_ii_cycles"] = p["backbone_ii_cycles"]
        else:
            row["error"] = (base / "elaborate.log").read_text()[-2000:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    base_row = rows[0]
    for r in rows:
        r["weights_ratio"] = round(r["weights"] / base_row["weights"], 2)
        r["time_ratio"] = round(r["elaborate_s"] / base_row["elaborate_s"], 2)
        r["memory_ratio"] = round(r["peak_rss_gib"] / max(base_row["peak_rss_gib"], 1e-9), 2)
    result = {"command": " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
              "machine": f"{os.cpu_count()} cores", "target_ii": args.target_ii, "size": args.size,
              "baseline": f"width {base_row['width']} in the same run", "rows": rows}
    out = Path(args.out or RESULTS / ("elaborate_mobilenet_v2" + ("_npu" if args.npu else "")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(rows, out.with_suffix(".png"))
    for r in rows:
        print(f"width {r['width']:<5} weights {r['weights']:>10,} ({r['weights_ratio']}x)  "
              f"elaborate {r['elaborate_s']:>7.1f} s ({r['time_ratio']}x)  peak {r['peak_rss_gib']:>5.2f} GiB "
              f"({r['memory_ratio']}x)  adders {r.get('adders', '-'):>10}  II {r.get('ii_cycles_per_image', '-')}")
    print(f"-> {out.with_suffix('.json')}")


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["rc"] == 0]
    if not ok:
        return
    w = [r["weights"] / 1e6 for r in ok]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(w, [r["elaborate_s"] / 60 for r in ok], "o-")
    ax[0].set(xlabel="weights (M)", ylabel="elaboration (min)", title="time")
    ax[1].plot(w, [r["peak_rss_gib"] for r in ok], "o-", color="C1")
    ax[1].axhline(16, ls="--", color="gray", lw=0.8)
    ax[1].set(xlabel="weights (M)", ylabel="peak RSS (GiB)", title="memory (process tree)")
    for a, r in zip([ax[0]] * len(ok), ok):
        a.annotate(f"w{r['width']}", (r["weights"] / 1e6, r["elaborate_s"] / 60), fontsize=7)
    fig.suptitle("MobileNetV2-224 elaboration (Chisel + firtool) vs network size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
