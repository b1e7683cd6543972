"""Calibrate the area model on synthesized modules, report its error on held-out ones, estimate MobileNetV2-224.

    python benchmarks/area_model.py [--designs 8] [--estimate build/bench_elab]

    python benchmarks/area_model.py --npu [--npu-probes 3]   # the NPU's multiplier coefficient, the rest kept

Small MobileNetV2-like blocks (pointwise expand, depthwise 3x3 with stride 1/2, project, residual, pool, linear;
random widths, sizes, sparsity and unroll) are elaborated and synthesized with Yosys + ASAP7 (hashiflex.report.area);
every top-level module becomes a sample (its features, its synthesized area per instance). Every fourth design is
held out: the model is fitted on the others' modules and its error is measured on modules of designs it never
saw. Then the area of each design under --estimate (the full-size elaboration benchmark's outputs) is estimated
from its hw_params.json and Verilog instances. Writes benchmarks/results/area_model.json and
benchmarks/results/area_mobilenet_v2.json.

``--npu``: the NPU's modules (its MAC array's multipliers are a cost no backbone module has): small networks with an
NPU head of several shapes (lanes x width, chunks, tiles) are elaborated, their Npu and NpuLoader modules
synthesized one by one (hashiflex.report.modsynth, cached by content; the weight banks are SRAM macros, kept out),
and the coefficient of ``multiplier_bits`` fitted on them with the other coefficients kept
(:func:`hashiflex.report.area_model.fit_feature`), its error measured leaving each probe out in turn; written into
area_model.json beside the rest.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hashiflex import hw
from hashiflex.export import design_from_graph, npu_design, write_design
from hashiflex.ir import Input, TensorType
from hashiflex.report import area_model
from hashiflex.report.area import parse_stat, synthesize
from hashiflex.vectors import _Builder

RESULTS = Path(__file__).resolve().parent / "results"


def block_design(seed: int):
    """A random inverted-residual stack with a pooled linear head, and a target II."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 5))
    size = int(rng.choice([6, 8, 10]))
    b = _Builder(f"cal{seed}", Input(c, size, size, TensorType(8, False, -8)), seed)
    stem = b.conv("stem", c, c * 2, 3, stride=1, padding=1, sparsity=float(rng.uniform(0, 0.5)))
    b.requant("stem_act", "relu6")
    c *= 2
    skip = b.last
    del stem
    for i in range(int(rng.integers(1, 3))):
        e = c * int(rng.integers(2, 4))
        stride = int(rng.choice([1, 2])) if i else 1
        b.conv(f"b{i}_expand", c, e, 1, sparsity=float(rng.uniform(0, 0.6)))
        b.requant(f"b{i}_expand_act", "relu6")
        b.conv(f"b{i}_dw", e, e, 3, stride=stride, padding=1, groups=e, sparsity=float(rng.uniform(0, 0.3)))
        b.requant(f"b{i}_dw_act", "relu6")
        b.conv(f"b{i}_project", e, c, 1, sparsity=float(rng.uniform(0, 0.6)))
        b.requant(f"b{i}_project_q", "none", bits=8)
        if stride == 1:
            b.add(f"b{i}_res", skip, bits=8)
        skip = b.last
    b.pool("pool")
    b.linear("fc", c, int(rng.integers(3, 11)))
    target = int(rng.choice([size * size, size * size // 2, size * 2]))
    return b.g, target


# (vector features, classes, size, target II): NPUs of several shapes (size_npu chooses lanes x width): 5 x 16 in
# 2 chunks and 8 tiles, 1 x 64 in 64 tiles, 3 x 48 in 8 tiles; and a larger one, 25 x 16 (--npu-probes 4)
NPU_PROBES = [(32, 40, 4, 16), (64, 64, 8, 64), (48, 24, 4, 12), (64, 100, 4, 16)]
NPU_MODULES = r"^Npu(_|Loader)"  # the NPU's logic and its loader (not its weight memory, an SRAM macro)


def npu_probe(features: int, classes: int, size: int, target: int, seed: int = 0):
    """A 1x1 conv -> pool -> linear network whose linear layer goes on an NPU sized for ``target``."""
    b = _Builder(f"npuprobe_c{features}_o{classes}_t{target}", Input(3, size, size, TensorType(8, False, -8)), seed)
    b.conv("stem", 3, features, 1, sparsity=0.3)
    b.requant("act", "relu6", bits=8)
    b.pool("pool")
    b.linear("fc", features, classes)
    g = b.g
    g.layers[-1].weight = np.random.default_rng(seed).normal(size=g.layers[-1].weight.shape)
    return npu_design(g, target_ii=target)


def calibrate_npu(work: Path, probes: int, jobs: int | None) -> None:
    from hashiflex.report.modsynth import synthesize_modules

    path = RESULTS / "area_model.json"
    doc = json.loads(path.read_text())
    base = {k: v for k, v in doc["coef_um2"].items() if k != "multiplier_bits"}
    todo = []
    for spec in NPU_PROBES[:probes]:
        d = npu_probe(*spec)
        write_design(d, work / d["name"] / "design.json")
        todo.append((work / d["name"] / "design.json", work / d["name"] / "rtl"))
    t0 = time.perf_counter()
    params = hw.elaborate_many(todo, quiet=True)
    per_probe = []
    for (_, rtl), p in zip(todo, tqdm(params, desc="synthesize NPU modules")):
        ms = synthesize_modules(rtl / p["verilog"], p["top"], jobs=jobs, progress=False, match=NPU_MODULES)
        # ms.rows also holds the design's other modules found in the cache: the NPU's alone
        per_probe.append([(m, area_model.module_features(m, p), r["own_um2"]) for m, r in ms.rows.items()
                          if re.search(NPU_MODULES, m)])
    synth_s = time.perf_counter() - t0
    data = [r for rows in per_probe for r in rows]
    model = area_model.fit_feature(area_model.AreaModel({**base, "multiplier_bits": 0.0}), data, "multiplier_bits")
    held = []  # each probe's modules predicted by the coefficient fitted on the other probes
    for i, rows in enumerate(per_probe):
        rest = [r for j, other in enumerate(per_probe) if j != i for r in other]
        m_i = area_model.fit_feature(model, rest, "multiplier_bits")
        held.extend(area_model.evaluate(m_i, rows)["rows"])
    errs = [abs(r["model_um2"] - r["um2"]) / r["um2"] for r in held]
    npu_doc = {"probes": [list(s) for s in NPU_PROBES[:probes]], "modules": len(held),
               "leave_one_probe_out_mean_abs_error": float(np.mean(errs)),
               "leave_one_probe_out_max_abs_error": float(np.max(errs)), "rows": held,
               "elaborate_and_synthesis_s": round(synth_s, 1)}
    doc["coef_um2"] = model.coef
    doc["features"] = list(area_model.FEATURES)
    doc["npu"] = npu_doc
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"multiplier_bits: {model.coef['multiplier_bits']:.4f} um^2 per partial-product bit, fitted on "
          f"{len(data)} NPU modules of {probes} probes; leaving each probe out: mean |error| "
          f"{100 * npu_doc['leave_one_probe_out_mean_abs_error']:.1f} %, max "
          f"{100 * npu_doc['leave_one_probe_out_max_abs_error']:.1f} %")
    for r in held:
        print(f"  {r['module']}: synthesized {r['um2']:,.0f} um^2, model {r['model_um2']:,.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--designs", type=int, default=8)
    ap.add_argument("--work", default="build/area_model")
    ap.add_argument("--estimate", default="build/bench_elab", help="folder of elaborated designs to estimate")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the Yosys reports of an earlier run in WORK (refit without synthesizing again)")
    ap.add_argument("--npu", action="store_true", help="fit the NPU's multiplier coefficient only (see above)")
    ap.add_argument("--npu-probes", type=int, default=3, help="how many of NPU_PROBES (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=None, help="synthesis jobs at once (default: every core)")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    if args.npu:
        return calibrate_npu(work / "npu", args.npu_probes, args.jobs)
    jobs, graphs = [], []
    for seed in range(args.designs):
        g, target = block_design(seed)
        d = design_from_graph(g, 4, target)
        write_design(d, work / g.name / "design.json")
        jobs.append((work / g.name / "design.json", work / g.name / "rtl"))
        graphs.append((g, d, target))
    params = hw.elaborate_many(jobs, quiet=True)
    train, held = [], []
    t0 = time.perf_counter()
    for i, ((g, d, target), p, (_, rtl)) in enumerate(tqdm(list(zip(graphs, params, jobs)), desc="synthesis")):
        hw.check_hw_params(g, p, 4, target)
        stat = Path(str(rtl.parent / "yosys") + ".stat")
        if args.reuse and stat.exists():
            rep = parse_stat(stat.read_text(), p["top"])
        else:
            rep = synthesize(rtl / p["verilog"], p["top"], log=rtl.parent / "yosys")
        (held if i % 4 == 3 else train).extend(area_model.samples(rep, p))
    synth_s = time.perf_counter() - t0
    model = area_model.fit(train)
    ev = area_model.evaluate(model, held)
    ev_train = area_model.evaluate(model, train)
    RESULTS.mkdir(parents=True, exist_ok=True)
    area_model.save(model, RESULTS / "area_model.json",
                    {**ev, "train_modules": len(train), "train_mean_abs_error": ev_train["mean_abs_error"],
                     "designs": args.designs, "synthesis_s": round(synth_s, 1)})
    print(f"fitted on {len(train)} modules, held out {ev['modules']}: mean |error| {100 * ev['mean_abs_error']:.1f} %, "
          f"max {100 * ev['max_abs_error']:.1f} %, area-weighted {100 * ev['area_weighted_abs_error']:.1f} %, "
          f"on the held-out total {100 * ev['total_error']:+.1f} %")
    print("coefficients (um^2 per unit):", {k: round(v, 4) for k, v in model.coef.items()})
    calibrate_npu(work / "npu", args.npu_probes, args.jobs)  # the NPU's multipliers: no block design has any
    model = area_model.load(RESULTS / "area_model.json")

    est = []
    for rtl in sorted(Path(args.estimate).glob("*/rtl")):
        p = hw.read_hw_params(rtl)
        e = area_model.estimate(model, rtl / p["verilog"], p)
        row = {"design": p["design"], "area_mm2": round(e["area_um2"] / 1e6, 3), "adders": p["adders"],
               "ii_cycles_per_image": p["ii_cycles_per_image"], "unmodelled": e["unmodelled_modules"]}
        est.append(row)
        print(json.dumps(row))
    if est:
        (RESULTS / "area_mobilenet_v2.json").write_text(json.dumps(
            {"model": "benchmarks/results/area_model.json", "held_out_mean_abs_error": ev["mean_abs_error"],
             "held_out_area_weighted_abs_error": ev["area_weighted_abs_error"],
             "designs": est}, indent=2) + "\n")


if __name__ == "__main__":
    main()
