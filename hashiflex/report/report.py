"""`hashiflex report`: throughput, area (Yosys + ASAP7), energy estimate and accuracy for an elaborated design,
written as Markdown and HTML with figures."""
from __future__ import annotations

import glob
import html
import json
from pathlib import Path

from .. import hw
from .area import synthesize
from .energy import ADD_FJ_PER_BIT, energy_per_image, modelled_flip_flop_bits
from .netlist import netlist_stats

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PAPER = {"hardened + NPU": 1.21e6, "fully hardened": 4.0e6}


def latest_baseline() -> tuple[dict, str] | None:
    """The newest torch baseline measurement in benchmarks/results (GPU when one was measured)."""
    files = sorted(glob.glob(str(BENCH / "gpu_baseline_*.json")), key=lambda f: Path(f).stat().st_mtime)
    if not files:
        return None
    gpu = [f for f in files if "cpu" not in Path(f).name]
    f = (gpu or files)[-1]
    return json.loads(Path(f).read_text()), Path(f).name


def build_report(work: Path, clock_ghz: float = 1.0, area: bool = True, progress: bool = True,
                 netlist: bool = True, area_model: Path | None = None) -> dict:
    """``netlist=False``: no Yosys read of the Verilog (designs of millions of adders); flip-flop bits then come
    from hw_params.json (modelled). ``area`` needs the netlist. ``area_model``: a fitted model
    (benchmarks/area_model.py) estimates the area when it is not synthesized."""
    from tqdm.auto import tqdm

    from ..export import load_design

    rtl = work / "rtl"
    design, _ = load_design(work / "design.json")
    params = hw.read_hw_params(rtl)
    sv = rtl / params["verilog"]
    area = area and netlist
    steps = tqdm(total=2 + int(area), desc="report", disable=not progress)
    ff = netlist_stats(sv, params["top"]).flip_flop_bits if netlist else modelled_flip_flop_bits(params)
    steps.update()
    r: dict = {"design": design["name"], "clock_ghz": clock_ghz, "ii_cycles_per_image": params["ii_cycles_per_image"],
               "images_per_second": clock_ghz * 1e9 / params["ii_cycles_per_image"], "adders": params["adders"],
               "adders_unshared": params["adders_unshared"], "flip_flop_bits": ff,
               "flip_flop_bits_source": "Yosys netlist" if netlist else "hw_params.json (modelled)",
               "latency_stages": params["latency_stages"]}
    cosim = work / "cosim.json"
    if cosim.exists():
        c = json.loads(cosim.read_text())
        r.update(measured_cycles_per_image=c["cycles_per_image"], latency_cycles=c["latency_cycles"],
                 rtl_accuracy=c["rtl_accuracy"], mismatches=c["mismatches"], images=c["images"])
    e = energy_per_image(design, params, ff)
    r.update(energy_pj_per_image=e.total_pj, energy_adders_pj=e.adders_pj, energy_registers_pj=e.registers_pj,
             add_fj_per_bit=ADD_FJ_PER_BIT)
    if params.get("npu"):  # hardened backbone + programmable head: the paper's main configuration
        n = params["npu"]
        r["npu"] = {k: n[k] for k in ("module", "lanes", "width", "macs", "cycles_per_image", "memory_bits")}
        r["npu"]["energy_pj"] = e.npu_pj
        r["backbone_ii_cycles"] = params["backbone_ii_cycles"]
    if area:
        a = synthesize(sv, params["top"], log=work / "report" / "yosys")
        r["area_um2"] = a.top_um2
        r["area_breakdown"] = [{"module": m, "instances": n, "um2": um2, "logic_depth": a.max_depth(m)}
                               for m, n, um2 in a.breakdown()]
        if "npu" in r:
            r["npu"]["area_um2"] = sum(p["um2"] for p in r["area_breakdown"] if p["module"] == r["npu"]["module"])
            r["backbone_area_um2"] = r["area_um2"] - r["npu"]["area_um2"]
        steps.update()
    elif area_model is not None:
        from . import area_model as am

        model_doc = json.loads(Path(area_model).read_text())
        e = am.estimate(am.AreaModel(model_doc["coef_um2"]), sv, params)
        r["area_model_um2"] = e["area_um2"]
        r["area_model_unmodelled"] = e["unmodelled_modules"]
        r["area_model_memory_bits"] = e["memory_bits"]  # SRAM macros in silicon: not in the modelled area
        if "npu" in r:  # the NPU's own logic and its loader (its weight banks are the memory bits)
            r["npu"]["area_model_um2"] = e["npu_um2"]
            r["backbone_area_model_um2"] = e["area_um2"] - r["npu"]["area_model_um2"]
        r["area_model_file"] = str(area_model)
        held = model_doc.get("held_out", {})
        r["area_model_held_out_error"] = held.get("mean_abs_error")
        # the full-size modules each left out of the fit (benchmarks/area_model.py --full): the error a full-size
        # design's area inherits (each module's error weighted by its area)
        full = [f["leave_one_out"]["area_weighted_abs_error"] for f in held.get("full_size", [])]
        r["area_model_full_size_error"] = max(full) if full else None
    base = latest_baseline()
    if base:
        r["baseline"] = {"file": base[1], **base[0]}
        best = base[0]["best_images_per_second"]
        r["speedup_vs_baseline"] = r["images_per_second"] / best
    steps.update()
    steps.close()
    write(work / "report", r)
    return r


def _rows(r: dict) -> list[tuple[str, str]]:
    rows = [("design", r["design"]),
            ("cycles per image (model)", str(r["ii_cycles_per_image"]))]
    if "measured_cycles_per_image" in r:
        rows.append(("cycles per image (co-simulation, measured)", f"{r['measured_cycles_per_image']:.1f}"))
        rows.append(("latency (co-simulation, measured)", f"{r['latency_cycles']} cycles"))
        rows.append(("RTL accuracy / mismatches vs golden",
                     f"{100 * r['rtl_accuracy']:.2f} % / {r['mismatches']} of {r['images']}"))
    rows += [(f"images/s at {r['clock_ghz']:g} GHz (modelled)", f"{r['images_per_second']:,.0f}"),
             ("adders (with sharing / without)", f"{r['adders']:,} / {r['adders_unshared']:,}"),
             (f"flip-flop bits ({r['flip_flop_bits_source']})", f"{r['flip_flop_bits']:,}")]
    if "area_um2" in r:
        rows.append(("area, ASAP7 7 nm (Yosys synthesis, measured)",
                     f"{r['area_um2']:,.1f} um^2 = {r['area_um2'] / 1e6:.4f} mm^2"))
    if "area_model_um2" in r:
        err = r.get("area_model_held_out_error")
        mem = r.get("area_model_memory_bits") or 0
        full = r.get("area_model_full_size_error")
        rows.append(("area, ASAP7 7 nm (area model" + (f", held-out error {100 * err:.1f} %" if err is not None else "")
                     + (f", {100 * full:.1f} % area-weighted on full-size modules left out" if full is not None else "")
                     + ", modelled" + (f"; memory arrays apart: {mem:,} bits of SRAM" if mem else "") + ")",
                     f"{r['area_model_um2'] / 1e6:,.2f} mm^2"))
        if "npu" in r and "area_model_um2" in r["npu"]:
            rows.append(("area model: hardened backbone / NPU logic",
                         f"{r['backbone_area_model_um2'] / 1e6:,.2f} / {r['npu']['area_model_um2'] / 1e6:,.3f} mm^2"))
    if "npu" in r:
        n = r["npu"]
        rows.append(("NPU head (programmable)", f"{n['lanes']} lanes x {n['width']} = {n['macs']:,} MACs, "
                     f"{n['cycles_per_image']} cycles/image (backbone {r['backbone_ii_cycles']}), "
                     f"{n['memory_bits']:,.0f} weight+bias bits"))
        if "area_um2" in n:
            rows.append(("area: hardened backbone / NPU (Yosys synthesis, measured)",
                         f"{r['backbone_area_um2']:,.1f} / {n['area_um2']:,.1f} um^2"))
    rows.append(("energy per image (modelled)", f"{r['energy_pj_per_image']:.1f} pJ "
                 f"(adders {r['energy_adders_pj']:.1f}, registers {r['energy_registers_pj']:.1f}"
                 + (f", NPU {r['npu']['energy_pj']:.1f}" if "npu" in r else "") + ")"))
    if "baseline" in r:
        b = r["baseline"]
        rows.append((f"torch baseline ({b['file']}, {b['device']})", f"{b['best_images_per_second']:,.0f} images/s "
                     f"({b.get('network', '')})"))
        same = any(k in r["design"].lower() for k in ("mobilenet", "mnv2")) and "MobileNetV2" in b.get("network", "")
        rows.append(("speed-up vs that baseline" + ("" if same else " (different networks: not like for like)"),
                     f"{r['speedup_vs_baseline']:,.1f}x"))
    for k, v in PAPER.items():
        rows.append((f"paper, MobileNetV2 {k}", f"{v:,.0f} images/s"))
    return rows


def write(out: Path, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(r, indent=2) + "\n")
    figs = []
    if "area_breakdown" in r:
        parts = sorted(r["area_breakdown"], key=lambda p: -p["um2"])
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(parts) + 1))
        ax.barh([p["module"] for p in parts][::-1], [p["um2"] for p in parts][::-1], color="tab:blue")
        ax.set_xlabel("area (um^2, ASAP7 RVT TT)")
        ax.set_title(f"{r['design']}: {r['area_um2']:,.0f} um^2")
        fig.tight_layout()
        fig.savefig(out / "area.png", dpi=110)
        plt.close(fig)
        figs.append("area.png")
    rows = _rows(r)
    md = ["# hashiflex report", "", "| figure | value |", "|---|---|"]
    md += [f"| {a} | {b} |" for a, b in rows]
    md += ["", "Measured: cycles and accuracy in co-simulation, area from Yosys + ASAP7. Modelled: images/s at the "
           "clock, energy (see hashiflex/report/energy.py for sources and assumptions)."]
    if "area_breakdown" in r:
        md += ["", "| module | instances | area (um^2) | logic depth (cells, register to register) |",
               "|---|---|---|---|"]
        md += [f"| {p['module']} | {p['instances']} | {p['um2']:,.1f} | {p['logic_depth']} |"
               for p in sorted(r["area_breakdown"], key=lambda p: -p["um2"])]
    md += [f"\n![{f}]({f})" for f in figs]
    (out / "report.md").write_text("\n".join(md) + "\n")
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    imgs = "".join(f'<p><img src="{f}"></p>' for f in figs)
    (out / "report.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>hashiflex report</title><h1>hashiflex report: "
        f"{html.escape(r['design'])}</h1><table border=1 cellpadding=4>{body}</table>{imgs}\n")


def format_report(r: dict) -> str:
    rows = _rows(r)
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)
