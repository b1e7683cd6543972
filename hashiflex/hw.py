"""Run the Chisel generator (Mill) and check what it reports (hw_params.json) against the Python model."""
from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .ir import Graph
from .hwmodel import hw_model, initiation_interval, latency_stages


class HwMismatchError(AssertionError):
    """hw_params.json disagrees with the Python model of the hardware."""


class ElaborationError(RuntimeError):
    """The generator rejected the design or failed; the message carries its error."""


def project_root() -> Path:
    """The checkout holding build.sc and ./mill (HASHIFLEX_ROOT, else found above this package)."""
    env = os.environ.get("HASHIFLEX_ROOT")
    if env:
        return Path(env)
    for d in Path(__file__).resolve().parents:
        if (d / "build.sc").exists() and (d / "mill").exists():
            return d
    raise FileNotFoundError("cannot find the hashiflex checkout (build.sc + ./mill); set HASHIFLEX_ROOT")


def elaborate(design: str | os.PathLike, out: str | os.PathLike, quiet: bool = False) -> dict:
    """``./mill hashiflex.run --design DESIGN --out OUT``; returns hw_params.json."""
    return elaborate_many([(design, out)], quiet)[0]


def elaborate_many(jobs: list[tuple[str | os.PathLike, str | os.PathLike]], quiet: bool = False) -> list[dict]:
    """Elaborate several designs in one generator run (one JVM start); returns their hw_params.json."""
    root = project_root()
    cmd = [str(root / "mill"), "--no-server", "--ticker", "false", "hashiflex.run"]
    for design, out in jobs:
        cmd += ["--design", str(Path(design).resolve()), "--out", str(Path(out).resolve())]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        errs = [l for l in (proc.stderr + proc.stdout).splitlines() if "error:" in l]
        msg = errs[0].split("error:", 1)[1].strip() if errs else (proc.stderr + proc.stdout)[-3000:]
        raise ElaborationError(msg)
    if not quiet:
        for line in proc.stdout.splitlines():
            if line.startswith("elaborated") or " elaborated " in line:
                print(line.split("] ", 1)[-1])
    return [read_hw_params(out) for _, out in jobs]


@lru_cache(maxsize=1)
def hw_params_schema() -> dict:
    """The JSON Schema of hw_params.json (hashiflex/export/hw_params.schema.json)."""
    return json.loads(resources.files("hashiflex.export").joinpath("hw_params.schema.json").read_text())


def read_hw_params(out: str | os.PathLike) -> dict:
    """hw_params.json in ``out``, validated against its schema; an error names the field (a stale file from an
    older generator, say) and what was expected."""
    import jsonschema

    p = Path(out) / "hw_params.json"
    d = json.loads(p.read_text())
    if d.get("format") != "hashiflex.hw_params" or d.get("version") != 1:
        raise HwMismatchError(f"{p}: expected format hashiflex.hw_params version 1")
    errors = list(jsonschema.Draft202012Validator(hw_params_schema()).iter_errors(d))
    if errors:
        e = jsonschema.exceptions.best_match(errors)
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in e.absolute_path)
        raise HwMismatchError(f"{p}: hw_params{where}: {e.message} (elaborate again if the file predates the "
                              "generator)")
    return d


def check_hw_params(g: Graph, hw: dict, levels_per_stage: int, target_ii: int | None = None, npu=None,
                    par: dict[str, int] | None = None, levels: dict[str, int] | None = None) -> None:
    """Compare every figure the generator reports with the Python model; raise listing all differences.
    ``npu``: the design's :class:`~hashiflex.npu.NpuConfig` (``g`` is then the backbone); ``par``: the design's
    parallelism (None: the unroll pass's proposal for ``target_ii``); ``levels``: its per-layer adder levels per
    stage (the layers that do not take ``levels_per_stage``)."""
    model = hw_model(g, levels_per_stage, target_ii, par, levels)
    diffs = _check_npu(hw.get("npu"), npu)
    if [l["name"] for l in hw["layers"]] != [m.name for m in model]:
        raise HwMismatchError(f"hw_params.layers: expected layers {[m.name for m in model]}, "
                              f"found {[l['name'] for l in hw['layers']]}")
    for m, l in zip(model, hw["layers"]):
        for key, want in (("op", m.op), ("adders", m.adders), ("stages", m.stages), ("beats_in", m.beats_in),
                          ("beats_out", m.beats_out), ("parallelism", m.parallelism),
                          ("adders_unshared", m.adders if m.adders_unshared is None else m.adders_unshared)) + (
                          (("adder_bits", m.adder_bits),) if m.adder_bits is not None and "adder_bits" in l else ()) + (
                          ("comparators", m.comparators),):
            if l[key] != want:
                diffs.append(f"layers[{m.name}].{key}: Python model {want}, generator {l[key]}")
        if m.acc_width is not None and l["out_width"] != m.acc_width:
            diffs.append(f"layers[{m.name}].out_width: Python model {m.acc_width}, generator {l['out_width']}")
    backbone_ii = initiation_interval(g, target_ii, par)
    totals = (("ii_cycles_per_image", max(backbone_ii, npu.cycles_per_image if npu else 0)),
              ("adders", sum(m.adders for m in model)),
              ("comparators", sum(m.comparators for m in model)),
              ("latency_stages", latency_stages(g, model)),
              ("adders_unshared", sum(m.adders if m.adders_unshared is None else m.adders_unshared for m in model)))
    for key, want in totals:
        if hw[key] != want:
            diffs.append(f"{key}: Python model {want}, generator {hw[key]}")
    if "backbone_ii_cycles" in hw and hw["backbone_ii_cycles"] != backbone_ii:
        diffs.append(f"backbone_ii_cycles: Python model {backbone_ii}, generator {hw['backbone_ii_cycles']}")
    if diffs:
        raise HwMismatchError("hw_params.json disagrees with the Python hardware model:\n  " + "\n  ".join(diffs))



def check_design_hw(d: dict, g: Graph, hw: dict) -> None:
    """:func:`check_hw_params` with the levels, target II and NPU a design document names."""
    from .export.design import levels_in, parallelism_in
    from .npu import from_design

    n = from_design(d)
    check_hw_params(g, hw, d["hardware"]["adder_levels_per_stage"], d["hardware"].get("target_ii"),
                    n[0] if n else None, parallelism_in(d), levels_in(d))


def _check_npu(have: dict | None, cfg) -> list[str]:
    """The NPU's figures (schedule, array, memory, status codes) against hashiflex.npu."""
    from . import npu as npu_mod

    if cfg is None:
        return [] if have is None else ["npu: the design has no NPU, but the generator reports one"]
    if have is None:
        return ["npu: the design has an NPU, but the generator reports none"]
    want = {"cycles_per_image": cfg.cycles_per_image, "schedule_cycles": cfg.tiles * cfg.chunks, "lanes": cfg.lanes,
            "width": cfg.width, "macs": cfg.macs, "acc_width": cfg.acc_width, "memory_bits": cfg.memory_bits,
            "weight_memory_words": 2 * cfg.tiles * cfg.chunks, "image_header_words": npu_mod.HEADER_WORDS,
            "magic": npu_mod.MAGIC, "status_codes": {s.name: int(s) for s in npu_mod.Status}}
    return [f"npu.{k}: Python model {v}, generator {have.get(k)}" for k, v in want.items() if have.get(k) != v]


def format_hw_params(p: dict) -> str:
    """hw_params.json as a table: per layer parallelism, beats, stages, adders with and without sharing."""
    rows = [("layer", "op", "pixels/beat", "beats in", "beats out", "stages", "adders", "unshared", "out bits")]
    for l in p["layers"]:
        rows.append((l["name"], l["op"], l["parallelism"], l["beats_in"], l["beats_out"], l["stages"],
                     f"{l['adders']:,}", f"{l['adders_unshared']:,}", l["out_width"]))
    rows.append(("total", "", p["input_parallelism"], "", "", p["latency_stages"], f"{p['adders']:,}",
                 f"{p['adders_unshared']:,}", ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).rjust(w) if i > 1 else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.append(f"II {p['ii_cycles_per_image']} cycles/image (input {p['input_parallelism']} pixels/beat), "
                 f"latency {p['latency_stages']} register stages on the longest path")
    return "\n".join(lines)
