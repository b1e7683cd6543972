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

Then it predicts the need of every module of those designs not synthesized yet: how many fit the memory Ray
schedules on this machine and which need more (a cluster's larger nodes: ``hashiflex synth --address``).
Writes benchmarks/results/synth_memory.json and .png.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hashiflex import hw
from hashiflex.fanout import largest_node_memory
from hashiflex.report import modsynth

RESULTS = Path(__file__).resolve().parent / "results"
PER_CELL = 3e3  # the README's former rule: about 3 KB of Yosys memory per cell (2 jobs measured by hand)


def design_jobs(work: Path) -> tuple[str, dict[str, str], list[str], dict[str, int]]:
    """(top, every module's job text, modules under the top children first, instances) of WORK/rtl's design."""
    params = hw.read_hw_params(work / "rtl")
    mods = modsynth.split_modules((work / "rtl" / params["verilog"]).read_text())
    children = modsynth.submodules(mods)
    order = modsynth.reachable(children, params["top"])
    jobs = {m: "".join(modsynth.port_stub(mods[c]) for c in children[m]) + mods[m] for m in order}
    return params["top"], jobs, order, modsynth.instance_counts(children, order, params["top"])


def leave_one_out(samples: list[tuple[str, int]]) -> list[dict]:
    rows = []
    for k, (text, peak) in enumerate(samples):
        m = modsynth.fit_memory_model(samples[:k] + samples[k + 1:])
        rows.append({"line_error": m.line(text) / peak - 1, "covered": m.need(text) >= peak})
    return rows


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
    ap.add_argument("--out", type=Path, default=RESULTS / "synth_memory.json")
    args = ap.parse_args()
    delay = 1e3 / args.target_ghz

    try:
        current = modsynth.load_memory_model()
    except FileNotFoundError:
        current = modsynth.MemoryModel(0.0, 0.0, 0.0, 1.0)  # nothing fitted yet: reserve nothing while measuring
        print("no memory model yet: the calibration jobs reserve no memory (keep --limit/--match modest)")
    samples: list[tuple[str, int]] = []
    rows, pending = [], []
    t0 = time.perf_counter()
    for work in args.work:
        top, jobs, order, instances = design_jobs(work)
        params = hw.read_hw_params(work / "rtl")
        sv = work / "rtl" / params["verilog"]
        if not args.no_synth:
            modsynth.synthesize_modules(sv, top, args.cache, None, args.jobs, True, True, args.limit, args.match,
                                        delay, memory_model=current)
        ms = modsynth.synthesize_modules(sv, top, args.cache, None, args.jobs, True, False, 0, None, delay,
                                         memory_model=current)  # what the cache holds, nothing run
        for m in order:
            r = ms.rows.get(m)
            if r is not None and r.get("peak_memory_bytes"):
                samples.append((jobs[m], int(r["peak_memory_bytes"])))
                rows.append({"design": top, "module": m, "text_bytes": len(jobs[m].encode()),
                             "array_bits": modsynth.array_bits(jobs[m]), "cells": r["cells"],
                             "peak_memory_bytes": int(r["peak_memory_bytes"]),
                             "synthesis_seconds": r["synthesis_seconds"]})
            elif r is None:
                pending.append({"design": top, "module": m, "text_bytes": len(jobs[m].encode()),
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
          f"{model.per_array_bit:.0f} B per array bit, margin {model.margin:.2f}")
    print(f"left out: mean |error| {100 * mae:.1f} % (the line), {sum(r['left_out_covered'] for r in rows)} of "
          f"{len(rows)} peaks within the need; the 3 KB/cell rule (needs the cells) {100 * rule:.1f} %: "
          f"{rule / mae:.1f}x the model's error")
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    node = largest_node_memory()
    ray.shutdown()
    for p in pending:
        p["need_bytes"] = model.need(p.pop("text"))
    pending.sort(key=lambda p: p["need_bytes"])
    over = [p for p in pending if p["need_bytes"] > node]
    print(f"modules to go: {len(pending) - len(over)} fit the {node / 2**30:.1f} GiB Ray schedules here, "
          f"{len(over)} need more:")
    for p in over:
        print(f"  {p['module']}: {p['need_bytes'] / 2**30:.1f} GiB ({p['text_bytes'] / 2**20:.1f} MiB of Verilog)")
    doc = {"command": "python benchmarks/synth_memory.py " + " ".join(
               f"--work {w}" for w in args.work) + (f" --limit {args.limit}" if args.limit else "")
           + (f" --match '{args.match}'" if args.match else "") + f" --target-ghz {args.target_ghz}",
           "model": model.to_json(), "jobs_measured": len(rows), "left_out_mean_abs_error": mae,
           "left_out_covered": sum(r["left_out_covered"] for r in rows),
           "baseline": {"what": "3 KB per mapped cell (the README's former rule; needs the synthesized cells)",
                        "mean_abs_error": rule, "ratio_to_model": rule / mae},
           "node_memory_bytes": node, "modules_to_go": len(pending), "modules_to_go_over_node": len(over),
           "largest_need_bytes": max((p["need_bytes"] for p in pending), default=None),
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plain = [r for r in rows if not r["array_bits"]]
    arrays = [r for r in rows if r["array_bits"]]
    ax.loglog([r["text_bytes"] for r in plain], [r["peak_memory_bytes"] / 2**30 for r in plain], "o", ms=4,
              label="measured (Yosys peak)")
    if arrays:
        ax.loglog([r["text_bytes"] for r in arrays], [r["peak_memory_bytes"] / 2**30 for r in arrays], "s", ms=4,
                  label="measured, register arrays")
    xs = np.geomspace(min(r["text_bytes"] for r in rows + pending), max(r["text_bytes"] for r in rows + pending), 50)
    ax.loglog(xs, [model.margin * (model.base + model.per_byte * x) / 2**30 for x in xs], "-", lw=1,
              label="reserved (model x margin)")
    if pending:
        ax.loglog([p["text_bytes"] for p in pending], [p["need_bytes"] / 2**30 for p in pending], "x", ms=4,
                  label="not synthesized yet: predicted need")
    ax.axhline(node / 2**30, color="k", ls=":", lw=1, label=f"Ray memory on this node ({node / 2**30:.1f} GiB)")
    ax.set_xlabel("job's Verilog (bytes)")
    ax.set_ylabel("peak memory (GiB)")
    ax.set_title("Per-module synthesis: memory per job")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
