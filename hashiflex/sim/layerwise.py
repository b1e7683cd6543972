"""Full-size verification layer by layer: every single-input layer of a design co-simulated alone, at its full size,
against the golden model on real activations.

A full-size design (MobileNetV2-224: two million adders) is too large for one Verilator model, but each layer
alone is not. :func:`layer_design` cuts layer k out of a design as a design of its own: its input is the tensor
the layer reads, with that tensor's format, exponent and exact bounds (design.json ``input.bounds``), and the
layer keeps its parallelism and adder levels per stage, so the generator builds the same modules as in the full
design (:func:`verify_layers` checks it: every module of the layer's Verilog must be, text for text, the module
of that name in the full design's Verilog). Its input is what the golden model computes for that tensor on the
given images, its expected output what the golden model computes for the layer: 0 mismatches means the full
design's module computes exactly what the spec does on real data.

The layers are elaborated in one generator run (one JVM; Mill's build folder is not shared between processes),
then each is built with Verilator and simulated as its own job, fanned out with Ray
(:func:`hashiflex.fanout.run_jobs`, local by default, a cluster by ``address``), the smallest first, each result
written as it arrives (a stopped run resumes). Layers that read two tensors (residual adds, concatenations) are
listed as not covered here: the reduced networks co-simulate them whole.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from ..analysis import annotate
from ..ir import Graph, Input, TensorType
from ..numfmt import width_for


def tensor_input(g: Graph, name: str) -> Input:
    """Tensor ``name`` of ``g`` ("input" or a layer's output) as a design input: its shape, format, exponent and
    exact bounds."""
    if name == "input":
        return g.input
    info = annotate(g)[[l.name for l in g.layers].index(name)]
    bits, signed = width_for(*info.out_bounds)
    return Input(*info.out_shape, TensorType(bits, signed, info.out_exp), tuple(int(b) for b in info.out_bounds))


def layer_design(d: dict, g: Graph, k: int) -> tuple[dict, Graph] | None:
    """Layer ``k`` of design ``d`` (IR ``g``) as a design of its own, or None when it reads two tensors."""
    from ..export.design import design_from_graph, levels_in, parallelism_in

    layer = g.layers[k]
    srcs = g.sources()[k]
    if len(srcs) > 1:
        return None
    src = srcs[0]
    inp = tensor_input(g, src)
    one = Graph(f"{d['name']}_L{k}", inp, [dataclasses.replace(layer, src=None)])
    par = parallelism_in(d)
    own = levels_in(d)
    sub = design_from_graph(one, d["hardware"]["adder_levels_per_stage"], None,
                            parallelism={"input": par[src], layer.name: par[layer.name]},
                            levels={layer.name: own[layer.name]} if layer.name in own else None)
    return sub, one


def chain_design(d: dict, g: Graph, first: int, last: int) -> tuple[dict, Graph]:
    """Layers ``first`` to ``last`` of design ``d`` (IR ``g``) as a design of its own: a block of the network with
    the same modules, parallelism and levels per stage as in the full design (e.g. an inverted-residual block, its
    residual add included), to synthesize and time across its module boundaries, or co-simulate. Every tensor the
    layers read from outside the block must be one and the same (it becomes the design's input); raises naming
    the layer otherwise."""
    from ..export.design import design_from_graph, levels_in, parallelism_in

    if not 0 <= first <= last < len(g.layers):
        raise ValueError(f"layers {first}..{last}: not a range of the {len(g.layers)} layers of {g.name}")
    names = {l.name for l in g.layers[first:last + 1]}
    srcs = g.sources()
    reads = [(k, t) for k in range(first, last + 1) for t in srcs[k] if t not in names]
    ext = reads[0][1]  # the first layer's source is always outside
    for k, t in reads:
        if t != ext:
            raise ValueError(f"layers {g.layers[first].name}..{g.layers[last].name}: layer {g.layers[k].name} "
                             f"reads {t} from outside the block, beside its input {ext}; a block reads one tensor")
    inp = tensor_input(g, ext)
    layers = []
    for k in range(first, last + 1):
        layer = g.layers[k]
        src = srcs[k][0]
        rep = {"src": None if k == first else ("input" if src == ext else src)}
        if getattr(layer, "skip", None) == ext:
            rep["skip"] = "input"
        if ext in getattr(layer, "extra", ()) and not hasattr(layer, "skip"):
            raise ValueError(f"layer {layer.name}: reads {ext} beside its source; only a residual add's skip "
                             f"can be the block's input")
        layers.append(dataclasses.replace(layer, **rep))
    sub = Graph(f"{d['name']}_L{first}_{last}", inp, layers)
    par = parallelism_in(d)
    own = levels_in(d)
    design = design_from_graph(sub, d["hardware"]["adder_levels_per_stage"], None,
                               parallelism={"input": par[ext], **{n: par[n] for n in names}},
                               levels={n: own[n] for n in names if n in own} or None)
    return design, sub


def golden_activations(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of ``g`` (and "input") on integer images ``x``, as the golden model computes them."""
    from .. import ref

    _, acts = ref.run(g, x, trace=True)
    return {"input": np.asarray(x, dtype=np.int64), **acts}


def _modules(text: str) -> dict[str, str]:
    from ..report.modsynth import split_modules

    return split_modules(text)


def ports(module_text: str) -> list[str]:
    """The port names of one module's Verilog (firtool's header: one port per line, up to ``);``)."""
    head = module_text.split(");", 1)[0].split("(", 1)[1]
    return re.findall(r"(\w+),?[ \t]*$", head, re.M)


def with_full_modules(text: str, names: list[str], full: dict[str, str]) -> str:
    """The layer's Verilog ``text`` with the modules ``names`` replaced by the full design's text of them
    (``full``), and the layer's connections to ports such a module does not have in the full design removed.

    firtool specialises a module to every place it is used: in the full design a line buffer shared by four
    layers keeps the union of their taps, and a requantizer whose input channel is constant in every instance has
    that input folded in; cut out alone, the same module is emitted with other ports. Simulating the full
    design's text in the layer's harness checks what the full design holds (a constant input folded away must
    then also be constant in the golden data, or the layer mismatches)."""
    mods = _modules(text)
    for name in names:
        if name not in mods or name not in full:
            raise ValueError(f"module {name}: not in both the layer's and the full design's Verilog")
        text = text.replace(mods[name], full[name])
        keep = set(ports(full[name]))
        out, lines, i = [], text.split("\n"), 0
        head = re.compile(rf"^\s*{re.escape(name)}\s+\w+\s*\($")
        while i < len(lines):
            out.append(lines[i])
            if not head.match(lines[i]):
                i += 1
                continue
            i += 1
            conns: list[list[str]] = []
            while not re.match(r"^\s*\);\s*$", lines[i]):
                m = re.match(r"^\s*\.(\w+)\s*\(", lines[i])
                if m:
                    conns.append([m.group(1), lines[i]])
                else:  # a connection's expression continued on the next line
                    conns[-1].append(lines[i])
                i += 1
            kept = [c for c in conns if c[0] in keep]
            for k, c in enumerate(kept):
                body = c[1:]
                body[-1] = body[-1].rstrip().rstrip(",") + ("," if k + 1 < len(kept) else "")
                out.extend(body)
            out.append(lines[i])  # ");"
            i += 1
        text = "\n".join(out)
    return text


def cosim_layer(rtl: str, params: dict, design: dict, x: np.ndarray, want: np.ndarray,
                full_modules: dict[str, str]) -> dict:
    """One job: build the layer's Verilator model, stream ``x``, compare with ``want``; check its modules against
    the full design's (``full_modules``: name -> text of the modules this layer instantiates). A module whose
    text differs is simulated as the full design has it (:func:`with_full_modules`)."""
    from .stream import StreamSim

    t0 = time.perf_counter()
    rtl = Path(rtl)
    text = (rtl / params["verilog"]).read_text()
    mods = _modules(text)
    differ = sorted(m for m, t in full_modules.items() if mods.get(m) != t)
    if differ:  # simulate the full design's text of those modules: a copy of the layer's rtl folder
        patched = rtl.parent / "rtl_full_modules"
        shutil.rmtree(patched, ignore_errors=True)
        shutil.copytree(rtl, patched)
        # an output the full design keeps for another layer is left unconnected here
        (patched / params["verilog"]).write_text("/* verilator lint_off PINMISSING */\n"
                                                 + with_full_modules(text, differ, full_modules))
        rtl = patched
    models = rtl.parent / "verilator"  # the layer's own build folder: full-size models are large, removed after
    sim = StreamSim(rtl, params, design, build_root=models, quiet=True)
    built = time.perf_counter() - t0
    res = sim.run(x, progress=False)
    del sim
    shutil.rmtree(models, ignore_errors=True)
    if differ:
        shutil.rmtree(rtl, ignore_errors=True)  # the patched copy
    got = res.outputs
    bad = int((got.reshape(len(x), -1) != want.reshape(len(x), -1)).any(1).sum())
    return {"layer": design["layers"][0]["name"], "op": design["layers"][0]["op"], "images": int(len(x)),
            "mismatched_images": bad, "values": int(want.size),
            "mismatched_values": int((got.reshape(want.shape) != want).sum()),
            "modules_checked": len(full_modules), "modules_differ": differ,
            "cycles_per_image": res.cycles_per_image, "ii_cycles_per_image": params["ii_cycles_per_image"],
            "build_s": round(built, 1), "sim_s": round(time.perf_counter() - t0 - built, 1)}


_LAYER_MODULE = re.compile(r"^(ShiftAddLane|ShiftAddLayer|WindowGen|MaxPool|Requant|Lut|SumPool)_")


def verify_layers(design_path: str | Path, x: np.ndarray, work: str | Path, address: str | None = None,
                  jobs: int | None = None, limit: int | None = None, match: str | None = None,
                  max_adders: int | None = None, progress: bool = True) -> dict:
    """Co-simulate the single-input layers of the design at ``design_path`` (elaborated: its ``rtl`` folder beside
    it) one by one on integer images ``x`` (see the module docstring); results in WORK/layerwise.json, resumed
    from it. ``limit``: at most this many new layers, the fewest adders first; ``match``: only layers whose name
    matches; ``max_adders``: skip layers with more adders (a lane too large for this machine's Verilator)."""
    from .. import hw
    from ..export.design import load_design, write_design
    from ..fanout import run_jobs

    design_path = Path(design_path)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "layerwise.json"
    done = {r["layer"]: r for r in json.loads(out.read_text())["layers"]} if out.exists() else {}
    d, g = load_design(design_path)
    full_params = hw.read_hw_params(design_path.parent / "rtl")
    adders = {l["name"]: l["adders"] for l in full_params["layers"]}
    todo, skipped = [], []
    for k, layer in enumerate(g.layers):
        if layer.name in done or (match and not re.search(match, layer.name)):
            continue
        if len(g.sources()[k]) > 1:
            skipped.append({"layer": layer.name, "why": "reads two tensors (co-simulated in the reduced networks)"})
        elif max_adders is not None and adders[layer.name] > max_adders:
            skipped.append({"layer": layer.name, "why": f"{adders[layer.name]:,} adders > --max-adders"})
        else:
            todo.append(k)
    todo.sort(key=lambda k: adders[g.layers[k].name])
    if limit is not None:
        todo = todo[:limit]
    acts = golden_activations(g, x) if todo else {}
    subs = []
    for k in todo:
        sub, one = layer_design(d, g, k)
        base = work / f"L{k:03d}"
        write_design(sub, base / "design.json")
        subs.append((k, sub, one, base))
    t0 = time.perf_counter()
    params = hw.elaborate_many([(b / "design.json", b / "rtl") for *_, b in subs], quiet=True) if subs else []
    elaborate_s = time.perf_counter() - t0
    full = _modules((design_path.parent / "rtl" / full_params["verilog"]).read_text()) if subs else {}
    args = []
    for (k, sub, one, base), p in zip(subs, params):
        hw.check_design_hw(sub, one, p)
        mine = _modules((base / "rtl" / p["verilog"]).read_text())
        ours = {m: full.get(m) for m in mine if _LAYER_MODULE.match(m)}
        src = g.sources()[k][0]
        c, h, w = sub["input"]["shape"]  # a vector (after a global pool) is a 1x1 map here
        args.append((str(base / "rtl"), p, sub, acts[src].reshape(len(x), c, h, w), acts[g.layers[k].name], ours))
    for i, r in run_jobs(cosim_layer, args, address=address, jobs=jobs, desc="co-simulate layers",
                         progress=progress):
        done[r["layer"]] = r
        _write(out, done, skipped, elaborate_s)
    return _write(out, done, skipped, elaborate_s)


def _write(out: Path, done: dict, skipped: list, elaborate_s: float) -> dict:
    rows = list(done.values())
    doc = {"layers": rows, "skipped": skipped, "elaborate_s": round(elaborate_s, 1),
           "layers_verified": len(rows), "mismatched_values": sum(r["mismatched_values"] for r in rows),
           "modules_differ": sorted({m for r in rows for m in r["modules_differ"]})}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    return doc
