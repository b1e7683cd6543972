"""Calibrate the area model on synthesized modules, report its error on held-out ones, estimate MobileNetV2-224.

    python benchmarks/area_model.py [--designs 8] [--target-ghz 1.0] [--full WORK ...] [--estimate build/bench_elab]

    python benchmarks/area_model.py --npu [--npu-probes 3]   # the NPU's multiplier coefficient, the rest kept

Small MobileNetV2-like blocks (pointwise expand, depthwise 3x3 with stride 1/2, project, residual, pool, linear;
random widths, sizes, sparsity and unroll) are elaborated and synthesized module by module in the flow
``hashiflex synth`` runs (hashiflex.report.modsynth: Yosys + ASAP7, ABC mapping for the delay of --target-ghz,
cached by module content); every module the model prices becomes a sample (its features, its synthesized area
per instance, :func:`hashiflex.report.modsynth.area_model_samples`). Every fourth design is held out: the model is
fitted on the others' modules and its error is measured on modules of designs it never saw.

``--full WORK``: a full-size design synthesized (in part) by ``hashiflex synth --work WORK --target-ghz G`` at the
same target: its modules synthesized with everything under them join the data. The model fitted on the small
designs alone is first measured on them (how far it carries to full size), then each full-size module is left out
in turn and predicted by the model fitted on the small designs and the other full-size modules; the model kept is
fitted on all of them.

Then the area of each design under --estimate (the full-size elaboration benchmark's outputs) is estimated
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


def calibrate_npu(work: Path, probes: int, jobs: int | None, delay_target_ps: float) -> None:
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
        ms = synthesize_modules(rtl / p["verilog"], p["top"], jobs=jobs, progress=False, match=NPU_MODULES,
                                delay_target_ps=delay_target_ps)
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
               "elaborate_and_synthesis_s": round(synth_s, 1), "delay_target_ps": delay_target_ps}
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


def full_size_samples(work: Path, delay_target_ps: float) -> tuple[str, list]:
    """The modules of the full-size design in WORK that ``hashiflex synth`` synthesized with everything under them
    at this delay target (from the synthesis cache: nothing is synthesized here)."""
    from hashiflex.report.modsynth import area_model_samples, synthesize_modules

    p = hw.read_hw_params(work / "rtl")
    sv = work / "rtl" / p["verilog"]
    ms = synthesize_modules(sv, p["top"], limit=0, progress=False, delay_target_ps=delay_target_ps)
    data = area_model_samples(ms, sv.read_text(), p)
    if not data:
        raise ValueError(f"--full {work}: no module the area model prices is synthesized whole at "
                         f"{delay_target_ps:g} ps (run `hashiflex synth --work {work} --target-ghz "
                         f"{1e3 / delay_target_ps:g}` first)")
    return p["design"], data


def leave_one_out(base: list, full: list) -> dict:
    """Each full-size module predicted by the model fitted on ``base`` and the other full-size modules."""
    return area_model.errors([(name, um2, area_model.fit(base + full[:i] + full[i + 1:]).predict(f))
                              for i, (name, f, um2) in enumerate(full)])


def _summary(ev: dict) -> str:
    return (f"mean |error| {100 * ev['mean_abs_error']:.1f} %, max {100 * ev['max_abs_error']:.1f} %, "
            f"area-weighted {100 * ev['area_weighted_abs_error']:.1f} %, on the total {100 * ev['total_error']:+.1f} %")


def main(argv=None):
    from hashiflex.report.modsynth import area_model_samples, synthesize_modules

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--designs", type=int, default=8)
    ap.add_argument("--work", default="build/area_model")
    ap.add_argument("--estimate", default="build/bench_elab", help="folder of elaborated designs to estimate")
    ap.add_argument("--target-ghz", type=float, default=1.0,
                    help="the clock ABC maps for, as `hashiflex synth --target-ghz` (default: %(default)s)")
    ap.add_argument("--full", action="append", default=[], metavar="WORK",
                    help="a full-size design's work folder synthesized by `hashiflex synth` at --target-ghz: its "
                         "modules synthesized whole join the data (see above); may repeat")
    ap.add_argument("--npu", action="store_true", help="fit the NPU's multiplier coefficient only (see above)")
    ap.add_argument("--npu-probes", type=int, default=3, help="how many of NPU_PROBES (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=None, help="synthesis jobs at once (default: every core)")
    args = ap.parse_args(argv)
    if args.target_ghz <= 0:
        ap.error(f"--target-ghz: expected a clock above 0 GHz, found {args.target_ghz}")
    delay = 1e3 / args.target_ghz  # as `hashiflex synth` derives it: the synthesis cache is keyed by it
    work = Path(args.work).resolve()
    if args.npu:
        return calibrate_npu(work / "npu", args.npu_probes, args.jobs, delay)
    full = [full_size_samples(Path(w), delay) for w in args.full]  # fail early, before any synthesis
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
        sv = rtl / p["verilog"]
        ms = synthesize_modules(sv, p["top"], jobs=args.jobs, progress=False, delay_target_ps=delay)
        (held if i % 4 == 3 else train).extend(area_model_samples(ms, sv.read_text(), p))
    synth_s = time.perf_counter() - t0
    small = area_model.fit(train)
    ev_small = area_model.evaluate(small, held)
    print(f"small designs: fitted on {len(train)} modules, held out {ev_small['modules']}: {_summary(ev_small)}")
    full_doc = []
    big = [s for _, data in full for s in data]
    for name, data in full:
        ev = area_model.evaluate(small, data)
        loo = leave_one_out(train + [s for s in big if s not in data], data)
        full_doc.append({"design": name, "modules": len(data), "small_designs_model": ev,
                         "leave_one_out": loo})
        print(f"{name}: {len(data)} modules synthesized whole; the small designs' model on them: {_summary(ev)}")
        print(f"  each left out, fitted on the small designs and the others: {_summary(loo)}")
    model = area_model.fit(train + big)
    ev = area_model.evaluate(model, held)
    ev_train = area_model.evaluate(model, train + big)
    RESULTS.mkdir(parents=True, exist_ok=True)
    area_model.save(model, RESULTS / "area_model.json",
                    {**ev, "train_modules": len(train) + len(big), "train_mean_abs_error": ev_train["mean_abs_error"],
                     "designs": args.designs, "synthesis_s": round(synth_s, 1), "delay_target_ps": delay,
                     "small_designs_only": {k: v for k, v in ev_small.items() if k != "rows"}, "full_size": full_doc})
    print(f"kept: fitted on {len(train)} small-design modules + {len(big)} full-size, held out {ev['modules']}: "
          f"{_summary(ev)}")
    print("coefficients (um^2 per unit):", {k: round(v, 4) for k, v in model.coef.items()})
    # the NPU's multipliers: no block design has any
    calibrate_npu(work / "npu", args.npu_probes, args.jobs, delay)
    model = area_model.load(RESULTS / "area_model.json")

    est, skipped = [], []
    for rtl in sorted(Path(args.estimate).glob("*/rtl")):
        p = hw.read_hw_params(rtl)
        try:
            e = area_model.estimate(model, rtl / p["verilog"], p)
        except ValueError as err:  # a design elaborated by an older generator: its table lacks a parameter
            skipped.append({"design": p["design"], "why": str(err)})
            print(f"skipped {rtl}: {err}")
            continue
        row = {"design": p["design"], "area_mm2": round(e["area_um2"] / 1e6, 3), "npu_mm2": round(e["npu_um2"] / 1e6, 3),
               "memory_bits": e["memory_bits"], "adders": p["adders"],
               "ii_cycles_per_image": p["ii_cycles_per_image"], "unmodelled": e["unmodelled_modules"]}
        est.append(row)
        print(json.dumps(row))
    if est:
        (RESULTS / "area_mobilenet_v2.json").write_text(json.dumps(
            {"model": "benchmarks/results/area_model.json", "held_out_mean_abs_error": ev["mean_abs_error"],
             "held_out_area_weighted_abs_error": ev["area_weighted_abs_error"],
             "full_size_leave_one_out": [{k: v for k, v in f["leave_one_out"].items() if k != "rows"}
                                         for f in full_doc],
             "designs": est, "skipped": skipped}, indent=2) + "\n")


if __name__ == "__main__":
    main()
