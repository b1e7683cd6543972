"""How much memory a module's synthesis job needs: measure it, fit the model the fan-out reserves by, predict the rest.

    python benchmarks/synth_memory.py --work build/bench_elab/mnv2_w10_real_t1_tf_c1100 [--work ...]
        [--limit 40] [--match 'ShiftAddLane_features(00|2conv00|4conv2|7conv2)_'] [--jobs 2] [--target-ghz 0.909]

``hashiflex synth`` runs one Yosys job per unique module (hashiflex.report.modsynth), and the jobs of one design
range from a 3 K-cell requantizer to a 57 M-cell classifier lane: each job asks Ray for the memory
:class:`hashiflex.report.modsynth.MemoryModel` says it needs, so a node never runs more than it can hold. This
script synthesizes modules of the designs under ``--work`` (``--limit``: the smallest new ones; ``--match``: those
named; cached by content, as ``hashiflex synth`` caches them, and a job measures its Yosys run's peak resident
memory), fits the model on every measured job (its text: the module and its children's port stubs), measures
it leaving each job out in turn, and writes it to hashiflex/report/synth_memory.json (``--no-write`` keeps the one
there). Baseline, in the same run: the rule of thumb the README used before (about 3 KB of Yosys memory per mapped
cell), which needs the cell count, known only after synthesis.

Then it predicts the need of every module of those designs not synthesized yet (neither in the cache nor in an
earlier run's result given by ``--timings``): how many fit the memory Ray schedules on this machine and which need
more (a cluster's larger nodes: ``hashiflex synth --address``), and the CPU time they will take, by a power law
in their operators fitted on every module timed (adder lanes apart from the rest). Writes
benchmarks/results/synth_memory.json and .png.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from hashiflex import hw
from hashiflex.fanout import largest_node_memory
from hashiflex.report import modsynth

RESULTS = Path(__file__).resolve().parent / "results"
PER_CELL = 3e3  # the README's former rule: about 3 KB of Yosys memory per cell (2 jobs measured by hand)


def design_jobs(work: Path) -> tuple[Path, str, dict[str, str], list[str], dict[str, int]]:
    """(Verilog file, top, every module's job text, modules under the top children first, instances) of WORK/rtl's
    design."""
    params = hw.read_hw_params(work / "rtl")
    sv = work / "rtl" / params["verilog"]
    mods = modsynth.split_modules(sv.read_text())
    children = modsynth.submodules(mods)
    order = modsynth.reachable(children, params["top"])
    jobs = {m: modsynth.job_text(mods[m], modsynth.child_stubs(mods, children, m)) for m in order}
    return sv, params["top"], jobs, order, modsynth.instance_counts(children, order, params["top"])


def leave_one_out(samples: list[tuple[str, int]]) -> list[dict]:
    rows = []
    for k, (text, peak) in enumerate(samples):
        m = modsynth.fit_memory_model(samples[:k] + samples[k + 1:])
        rows.append({"line_error": m.line(text) / peak - 1, "covered": m.need(text) >= peak - modsynth.MEMORY_SLACK})
    return rows


def time_law(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """seconds = exp(a) * (operators + 1) ** b, least squares in log: (a, b, rms of the log residuals)."""
    if len(points) < 3:
        raise ValueError(f"the time law needs at least 3 timed modules, got {len(points)}")
    x = np.log([o + 1.0 for o, _ in points])
    y = np.log([t for _, t in points])
    (a, b), *_ = np.linalg.lstsq(np.c_[np.ones_like(x), x], y, rcond=None)
    return float(a), float(b), float(np.sqrt(np.mean((y - a - b * x) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, action="append", required=True, help="an elaborated design (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="synthesize at most this many new modules per design")
    ap.add_argument("--match", default=None, help="synthesize only modules whose names match")
    ap.add_argument("--no-synth", action="store_true", help="only what the cache holds")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--target-ghz", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not replace hashiflex/report/synth_memory.json")
    ap.add_argument("--timings", type=Path, action="append", default=[],
                    help="an earlier `hashiflex synth` result (synth_modules.json) of the same design: its modules "
                         "count as synthesized, and their times join the time law")
    ap.add_argument("--out", type=Path, default=RESULTS / "synth_memory.json")
    args = ap.parse_args()
    delay = 1e3 / args.target_ghz

    try:
        current = modsynth.load_memory_model()
    except (FileNotFoundError, ValueError):
        # nothing fitted yet (or in an older form): a job reserves a byte per byte of its text (next to nothing),
        # which orders the jobs
        current = modsynth.MemoryModel(0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        print("no memory model yet: the calibration jobs reserve next to no memory (keep --limit/--match modest)")
    earlier = {r["module"]: r for f in args.timings for r in json.loads(f.read_text())["modules"]}
    samples: list[tuple[str, int]] = []
    rows, pending, timed = [], [], []
    t0 = time.perf_counter()
    for work in args.work:
        sv, top, jobs, order, instances = design_jobs(work)
        # the cache's modules, and with synthesis the new ones (--no-synth: nothing run)
        ms = modsynth.synthesize_modules(sv, top, args.cache, None, args.jobs, True, not args.no_synth,
                                         0 if args.no_synth else args.limit, args.match, delay, memory_model=current)
        for m in order:
            r = ms.rows.get(m)
            ops = modsynth.operators(jobs[m])
            if r is not None and r.get("peak_memory_bytes"):
                samples.append((jobs[m], int(r["peak_memory_bytes"])))
                rows.append({"design": top, "module": m, "text_bytes": len(jobs[m].encode()), "operators": ops,
                             "signal_bits": modsynth.signal_bits(jobs[m]),
                             "array_bits": modsynth.array_bits(jobs[m]), "cells": r["cells"],
                             "peak_memory_bytes": int(r["peak_memory_bytes"]),
                             "synthesis_seconds": r["synthesis_seconds"]})
            if r is not None or m in earlier:
                timed.append((m, ops, (r or earlier[m])["synthesis_seconds"]))
            else:
                pending.append({"design": top, "module": m, "text_bytes": len(jobs[m].encode()), "operators": ops,
                                "instances": instances[m], "text": jobs[m]})
    print(f"{len(samples)} jobs measured ({time.perf_counter() - t0:.0f} s here), {len(pending)} modules to go")
    model = modsynth.fit_memory_model(samples)
    loo = leave_one_out(samples)
    for r, (text, _), e in zip(rows, samples, loo):
        r.update(model_line_bytes=model.line(text), left_out_error=e["line_error"],
                 left_out_covered=e["covered"], per_cell_rule_error=PER_CELL * r["cells"] / r["peak_memory_bytes"] - 1)
    mae = float(np.mean([abs(r["left_out_error"]) for r in rows]))
    rule = float(np.mean([abs(r["per_cell_rule_error"]) for r in rows]))
    print(f"model: {model.base / 2**20:.0f} MiB + {model.per_byte:.1f} B per byte of Verilog + "
          f"{model.per_operator / 2**10:.1f} KiB per operator + {model.per_signal_bit / 2**10:.1f} KiB per signal bit + "
          f"{model.per_array_bit / 2**10:.1f} KiB per array bit, "
          f"margin {model.margin:.2f}")
    print(f"left out: mean |error| {100 * mae:.1f} % (the line), {sum(r['left_out_covered'] for r in rows)} of "
          f"{len(rows)} peaks within the need (less {modsynth.MEMORY_SLACK >> 20} MiB of slack); the 3 KB/cell rule (needs the cells) {100 * rule:.1f} %: "
          f"{rule / mae:.1f}x the model's error")
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    node = largest_node_memory()
    ray.shutdown()
    for p in pending:
        p["need_bytes"] = model.need(p.pop("text"))
    pending.sort(key=lambda p: p["need_bytes"])
    over = [p for p in pending if p["need_bytes"] > node]
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"modules to go: {len(pending) - len(over)} fit the {node / 2**30:.1f} GiB Ray schedules here (of "
          f"{machine / 2**30:.1f} GiB; Ray counts what is free when it starts), {len(over)} need more:")
    for p in over:
        print(f"  {p['module']}: {p['need_bytes'] / 2**30:.1f} GiB ({p['text_bytes'] / 2**20:.1f} MiB of Verilog, "
              f"{p['operators']:,} operators)")
    laws = {lanes: time_law([(o, t) for m, o, t in timed if m.startswith("ShiftAddLane") == lanes])
            for lanes in (True, False)}
    for p in pending:
        a, b, _ = laws[p["module"].startswith("ShiftAddLane")]
        p["predicted_cpu_hours"] = float(np.exp(a) * (p["operators"] + 1) ** b / 3600)
    hours = sum(p["predicted_cpu_hours"] for p in pending)
    print(f"synthesis time, log-log in the operators over {len(timed)} modules timed: lanes t ~ ops^"
          f"{laws[True][1]:.2f} (rms {laws[True][2]:.2f} in log), the rest ~ ops^{laws[False][1]:.2f}: the modules to "
          f"go need about {hours:,.0f} CPU-hours, the largest "
          + ", ".join(f"{p['module']} {p['predicted_cpu_hours']:.0f} h" for p in
                      sorted(pending, key=lambda p: -p["predicted_cpu_hours"])[:3]))
    doc = {"command": "python benchmarks/synth_memory.py " + " ".join(
               f"--work {w}" for w in args.work) + (f" --limit {args.limit}" if args.limit else "")
           + (f" --match '{args.match}'" if args.match else "") + (" --no-synth" if args.no_synth else "")
           + f" --target-ghz {args.target_ghz}",
           "model": model.to_json(), "jobs_measured": len(rows), "left_out_mean_abs_error": mae,
           "left_out_covered": sum(r["left_out_covered"] for r in rows),
           "baseline": {"what": "3 KB per mapped cell (the README's former rule; needs the synthesized cells)",
                        "mean_abs_error": rule, "ratio_to_model": rule / mae},
           "node_memory_bytes": node, "machine_memory_bytes": machine, "modules_to_go": len(pending),
           "modules_to_go_over_node": len(over),
           "largest_need_bytes": max((p["need_bytes"] for p in pending), default=None),
           "time_law": {"lanes": dict(zip(("log_a", "b", "rms_log"), laws[True])),
                        "other": dict(zip(("log_a", "b", "rms_log"), laws[False])), "modules_timed": len(timed),
                        "timings_from": [str(f) for f in args.timings]},
           "modules_to_go_cpu_hours": hours,
           "measured": rows, "to_go": pending}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if not args.no_write:
        modsynth.MEMORY_MODEL.write_text(json.dumps(
            {**model.to_json(), "fitted_by": doc["command"], "jobs": len(rows)}, indent=1) + "\n")
        print(f"-> {modsynth.MEMORY_MODEL}")
    plot(rows, pending, model, node, args.out.with_suffix(".png"))
    print(f"-> {args.out}")


def plot(rows: list[dict], pending: list[dict], model: modsynth.MemoryModel, node: int, out: Path) -> None:
    """Left: every measured job's peak against the model's line (and the need the margin makes of it); right: the
    predicted need of every module not synthesized yet, against the memory Ray schedules on this node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gib = 2**30
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for kind, mark in (("ShiftAddLane", "o"), ("ram_", "s"), ("", ".")):
        sel = [r for r in rows if (r["module"].startswith(kind) if kind else
                                   not r["module"].startswith(("ShiftAddLane", "ram_")))]
        if sel:
            a.loglog([r["model_line_bytes"] / gib for r in sel], [r["peak_memory_bytes"] / gib for r in sel], mark,
                     ms=4, label={"ShiftAddLane": "adder lanes", "ram_": "register arrays", "": "other modules"}[kind])
    lo = min(r["peak_memory_bytes"] for r in rows) / gib / 1.5
    hi = max(r["peak_memory_bytes"] for r in rows) / gib * 1.5
    a.loglog([lo, hi], [lo, hi], "k-", lw=0.8, label="the model's line")
    a.loglog([lo, hi], [lo * model.margin, hi * model.margin], "k--", lw=0.8,
             label=f"reserved (x{model.margin:.2f} margin)")
    a.set_xlabel("model (GiB)")
    a.set_ylabel("measured Yosys peak (GiB)")
    a.set_title(f"{len(rows)} jobs measured")
    a.legend(fontsize=8)
    needs = sorted(p["need_bytes"] / gib for p in pending)
    b.semilogy(range(1, len(needs) + 1), needs, ".", ms=4)
    b.axhline(node / gib, color="k", ls=":", lw=1, label=f"Ray memory on this node ({node / gib:.1f} GiB)")
    b.set_xlabel("modules not synthesized yet, by need")
    b.set_ylabel("predicted need (GiB)")
    b.set_title(f"{len(needs)} modules to go")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
