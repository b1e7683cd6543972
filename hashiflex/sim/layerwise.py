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
written as it arrives (a stopped run resumes).

A layer that reads several tensors (a residual add, a concatenation) cannot be cut out as a one-input design, so it
is verified on the full design's own module: :func:`join_harness` wraps the module the full design instantiates
for that layer (its text, and its submodules', copied from the full design's Verilog) in a top whose one input
stream carries every operand's lanes side by side; the operands are the golden model's tensors, so each beat
offers all of them at once, as the FIFOs before the join do in the full design once they are primed.

A channel that no later layer reads (a pointwise conv whose weights from it are all zero) is dead: firtool removes
its logic from the full design, back to the ports that carried it, so the full design's module has no output for
it. Such an output is reported as unobservable, not compared, and only when the graph's liveness
(:func:`hashiflex.analysis.live_channels`) says the channel is dead; a live channel the full design lacks counts as
mismatched in every value.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from ..analysis import annotate, live_channels
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


_DIR = re.compile(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)")


def port_list(module_text: str) -> list[tuple[str, str, int]]:
    """The ports of one module's Verilog as (name, "input"/"output", width), in order (firtool's header: one port
    per line; a line without a direction continues the one above)."""
    head = module_text.split(");", 1)[0].split("(", 1)[1]
    out, cur = [], None
    for line in head.split("\n"):
        m = _DIR.match(line)
        if m:
            cur = (m.group(1), int(m.group(2)) + 1 if m.group(2) else 1)
            name = m.group(3)
        else:
            n = re.match(r"^\s*(\w+),?\s*$", line)
            if not n:
                continue
            if cur is None:
                raise ValueError(f"port {n.group(1)}: no direction before it")
            name = n.group(1)
        out.append((name, *cur))
    return out


def join_harness(full: dict[str, str], layer: str, channels: list[int], par: int, out_channels: int,
                 top: str) -> tuple[str, list[str], int]:
    """Verilog for verifying layer ``layer`` of a full design that joins several streams (``full``: its modules by
    name): the module the full design instantiates as ``layer`` and every module under it, text for text, inside
    a top ``top`` with the generator's stream ports (``in_bits_<p*C + c>``, ``out_bits_<p*C_out + c>``, ``par``
    pixels per beat) whose input beat carries the operands' channels side by side (``channels[i]`` of operand i,
    in the natural order of the module's input stream names). Every operand is valid when the input is; the input is taken when
    every operand is. Returns (the Verilog, the names of the full design's modules it holds, the input lanes'
    width: the widest operand's)."""
    from ..report.modsynth import reachable, submodules

    inst = re.sub(r"\W", "_", layer)
    owners = [m.group(1) for t in full.values()
              for m in re.finditer(rf"^\s*(\w+)\s+{re.escape(inst)}\s*\(\s*$", t, re.M)]
    if len(owners) != 1:
        raise ValueError(f"layer {layer}: expected one instance named {inst} in the full design's Verilog, "
                         f"found {len(owners)}")
    mod = owners[0]
    ports = port_list(full[mod])
    width = {n: w for n, _, w in ports}
    # operand streams in the natural order of their names (a, b; in_0, in_1, ..., in_10): firtool does not keep
    # a MixedVec's element order among the ports
    natural = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]  # noqa: E731
    ins = sorted((n[:-len("_valid")] for n, d, _ in ports if d == "input" and n.endswith("_valid")), key=natural)
    outs = [n[:-len("_valid")] for n, d, _ in ports if d == "output" and n.endswith("_valid")]
    if len(ins) != len(channels) or len(outs) != 1:
        raise ValueError(f"layer {layer}: module {mod} has input streams {ins} and output streams {outs}; "
                         f"expected {len(channels)} operand streams and one output")
    total = sum(channels)
    w_in = max([w for n, w in width.items() if any(n.startswith(f"{i}_bits_") for i in ins)] or [1])
    lanes = [(f"{ins[i]}_bits_{p * c + j}", p * total + sum(channels[:i]) + j)
             for i, c in enumerate(channels) for p in range(par) for j in range(c)]
    outp = [f"{outs[0]}_bits_{q}" for q in range(par * out_channels)]
    held_out = [n for n in outp if n in width]
    if not held_out:
        raise ValueError(f"layer {layer}: module {mod} has none of the output lanes {outp[:4]}...")
    w_out = width[held_out[0]]
    rng = lambda w: f"[{w - 1}:0] " if w > 1 else ""  # noqa: E731
    decl = ["  input clock,", "  input reset,", "  output in_ready,", "  input in_valid,"]
    decl += [f"  input {rng(w_in)}in_bits_{k}," for k in range(par * total)]
    decl += ["  input out_ready,", "  output out_valid,"]
    decl += [f"  output {rng(w_out)}out_bits_{q}," for q in range(par * out_channels)]
    decl[-1] = decl[-1].rstrip(",")
    conn = [f"    .{n}({n})," for n in ("clock", "reset") if n in width]
    for i, s in enumerate(ins):
        conn += [f"    .{s}_valid(in_valid),", f"    .{s}_ready(ready_{i}),"]
    # a lane the full design's module lacks was folded away as a constant there: left unconnected here too
    conn += [f"    .{n}(in_bits_{k}[{width[n] - 1}:0])," for n, k in lanes if n in width]
    conn += [f"    .{outs[0]}_ready(out_ready),", f"    .{outs[0]}_valid(out_valid),"]
    # an output lane it lacks carried a channel no later layer reads: left undriven (see undriven_outputs)
    conn += [f"    .{n}(out_bits_{q})," for q, n in enumerate(outp) if n in width]
    conn[-1] = conn[-1].rstrip(",")
    held = reachable(submodules(full), mod)
    text = "\n".join([f"module {top}(", *decl, ");",
                      *[f"  wire ready_{i};" for i in range(len(ins))],
                      "  assign in_ready = " + " & ".join(f"ready_{i}" for i in range(len(ins))) + ";",
                      f"  {mod} dut (", *conn, "  );", "endmodule", ""])
    return text + "".join(full[m] for m in held), held, w_in


def join_job(d: dict, g: Graph, k: int, full: dict[str, str], acts: dict[str, np.ndarray], base: Path) -> tuple:
    """The arguments of :func:`cosim_layer` for layer ``k`` of design ``d`` (IR ``g``), a layer that reads several
    tensors: its :func:`join_harness` written under ``base``, its operands side by side as the input, the golden
    output as the expectation."""
    rec = d["layers"][k]
    srcs = g.sources()[k]
    n = len(next(iter(acts.values())))
    shapes = [tuple(acts[s].shape[1:]) if acts[s].ndim == 4 else (acts[s].shape[1], 1, 1) for s in srcs]
    if len({s[1:] for s in shapes}) != 1:
        raise ValueError(f"layer {rec['name']}: operands of sizes {shapes}; a join reads maps of one size")
    _, h, w = shapes[0]
    par = rec["parallelism"]
    top = f"JoinHarness_L{k}"
    text, held, bits = join_harness(full, rec["name"], [s[0] for s in shapes], par, rec["out_shape"][0], top)
    rtl = base / "rtl"
    rtl.mkdir(parents=True, exist_ok=True)
    (rtl / f"{top}.sv").write_text(text)
    x = np.concatenate([acts[s].reshape(n, *shape) for s, shape in zip(srcs, shapes)], axis=1)
    design = {"name": top, "input": {"shape": [sum(s[0] for s in shapes), h, w], "bits": bits, "parallelism": par},
              "output": {"features": int(np.prod(rec["out_shape"])), "width": rec["out_width"],
                         "signed": rec["out_signed"]},
              "layers": [{"name": rec["name"], "op": rec["op"], "out_shape": rec["out_shape"], "parallelism": par}]}
    params = {"verilog": f"{top}.sv", "top": top, "ii_cycles_per_image": h * w // par}
    return str(rtl), params, design, x, acts[rec["name"]], {m: full[m] for m in held}


def golden_activations(g: Graph, x: np.ndarray, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Every tensor of ``g`` (and "input") on integer images ``x``, as the golden model computes them.

    ``cache``: a .npz file that holds them (read when it exists, written when not): a resumed run of a full-size
    design skips minutes of golden model. The caller names it by the design's and the images' content."""
    from .. import ref

    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return {k: z[k].astype(np.int64) for k in z.files}
    _, acts = ref.run(g, x, trace=True)
    acts = {"input": np.asarray(x, dtype=np.int64), **acts}
    if cache is not None:
        small = all(np.iinfo(np.int32).min <= a.min() and a.max() <= np.iinfo(np.int32).max for a in acts.values())
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **{k: a.astype(np.int32) if small else a for k, a in acts.items()})
        tmp.replace(cache)
    return acts


def activations_cache(design_path: Path, x: np.ndarray, work: Path) -> Path:
    """Where :func:`golden_activations` keeps the golden tensors of this design (design.json names its weight
    tables by sha256) on these images."""
    h = hashlib.sha256(design_path.read_bytes())
    h.update(repr((x.shape, str(x.dtype))).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return work / f"golden-{h.hexdigest()[:16]}.npz"


def _modules(text: str) -> dict[str, str]:
    from ..report.modsynth import split_modules

    return split_modules(text)


def ports(module_text: str) -> list[str]:
    """The port names of one module's Verilog, in order (:func:`port_list` without directions and widths)."""
    return [name for name, _, _ in port_list(module_text)]


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


def undriven_outputs(text: str, top: str) -> list[int]:
    """The lanes q of module ``top``'s output stream (``out_bits_<q>``) that nothing in it drives: after
    :func:`with_full_modules` or in a :func:`join_harness`, the lanes whose port the full design's module lacks."""
    return _undriven(_modules(text), top)


def _undriven(mods: dict[str, str], top: str) -> list[int]:
    if top not in mods:
        raise ValueError(f"module {top}: not in the Verilog")
    body = mods[top].split(");", 1)[1]
    used = set(re.findall(r"(?<![.\w])(out_bits_\d+)\b", body))  # a net, not another instance's port name
    return [int(n[len("out_bits_"):]) for n, d, _ in port_list(mods[top])
            if d == "output" and n.startswith("out_bits_") and n not in used]


def cosim_layer(rtl: str, params: dict, design: dict, x: np.ndarray, want: np.ndarray,
                full_modules: dict[str, str], live: np.ndarray | None = None) -> dict:
    """One job: build the layer's Verilator model, stream ``x``, compare with ``want``; check its modules against
    the full design's (``full_modules``: name -> text of the modules this layer instantiates). A module whose
    text differs is simulated as the full design has it (:func:`with_full_modules`).

    ``live``: which output channels the network's output depends on (:func:`hashiflex.analysis.live_channels`).
    The full design computes no value for a dead channel (firtool removed its logic), so an output lane left
    undriven by the full design's module is compared only if its channel is live: then every value of it counts
    as mismatched (the full design lost a channel it needs); a dead channel's values are reported as
    unobservable, not compared."""
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
        text = "/* verilator lint_off PINMISSING */\n" + with_full_modules(text, differ, full_modules)
        (patched / params["verilog"]).write_text(text)
        rtl = patched
        mods = _modules(text)
    channels = design["layers"][0]["out_shape"][0]
    dropped = sorted({q % channels for q in _undriven(mods, params["top"])})
    if live is None:
        live = np.ones(channels, dtype=bool)
    if len(live) != channels:
        raise ValueError(f"live: expected {channels} output channels, found {len(live)}")
    models = rtl.parent / "verilator"  # the layer's own build folder: full-size models are large, removed after
    sim = StreamSim(rtl, params, design, build_root=models, quiet=True, trace=False, build_opt="-O0")
    built = time.perf_counter() - t0
    res = sim.run(x, progress=False)
    del sim
    shutil.rmtree(models, ignore_errors=True)
    if differ:
        shutil.rmtree(rtl, ignore_errors=True)  # the patched copy
    n = len(x)
    want = want.reshape(n, channels, -1)
    differs = res.outputs.reshape(want.shape) != want
    dead = [c for c in dropped if not live[c]]
    lost = [c for c in dropped if live[c]]
    differs[:, lost] = True        # the full design does not compute a channel the network needs
    differs[:, dead] = False       # nor one it does not need: not observable in the full design
    return {"layer": design["layers"][0]["name"], "op": design["layers"][0]["op"], "images": int(n),
            "mismatched_images": int(differs.reshape(n, -1).any(1).sum()),
            "values": int(want.size - n * len(dead) * want.shape[2]),
            "mismatched_values": int(differs.sum()),
            "unobservable_channels": dead, "lost_live_channels": lost,
            "modules_checked": len(full_modules), "modules_differ": differ,
            "cycles_per_image": res.cycles_per_image, "ii_cycles_per_image": params["ii_cycles_per_image"],
            "build_s": round(built, 1), "sim_s": round(time.perf_counter() - t0 - built, 1)}


_LAYER_MODULE = re.compile(r"^(ShiftAddLane|ShiftAddLayer|WindowGen|MaxPool|Requant|Lut|SumPool)_")


def verify_layers(design_path: str | Path, x: np.ndarray, work: str | Path, address: str | None = None,
                  jobs: int | None = None, limit: int | None = None, match: str | None = None,
                  max_adders: int | None = None, progress: bool = True) -> dict:
    """Co-simulate the layers of the design at ``design_path`` (elaborated: its ``rtl`` folder beside it) one by
    one on integer images ``x`` (see the module docstring: single-input layers cut out and elaborated, joins on the
    full design's module); results in WORK/layerwise.json, resumed from it. ``limit``: at most this many new layers, the fewest adders first; ``match``: only layers whose name
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
        if max_adders is not None and adders[layer.name] > max_adders:
            skipped.append({"layer": layer.name, "why": f"{adders[layer.name]:,} adders > --max-adders"})
        else:
            todo.append(k)
    todo.sort(key=lambda k: adders[g.layers[k].name])
    if limit is not None:
        todo = todo[:limit]
    acts = golden_activations(g, x, activations_cache(design_path, x, work)) if todo else {}
    joins = [k for k in todo if len(g.sources()[k]) > 1]
    subs = []
    for k in todo:
        if k in joins:
            continue
        sub, one = layer_design(d, g, k)
        base = work / f"L{k:03d}"
        write_design(sub, base / "design.json")
        subs.append((k, sub, one, base))
    t0 = time.perf_counter()
    params = hw.elaborate_many([(b / "design.json", b / "rtl") for *_, b in subs], quiet=True) if subs else []
    elaborate_s = time.perf_counter() - t0
    full = _modules((design_path.parent / "rtl" / full_params["verilog"]).read_text()) if todo else {}
    live = live_channels(g) if todo else {}
    args = [(*join_job(d, g, k, full, acts, work / f"L{k:03d}"), live[g.layers[k].name]) for k in joins]
    for (k, sub, one, base), p in zip(subs, params):
        hw.check_design_hw(sub, one, p)
        mine = _modules((base / "rtl" / p["verilog"]).read_text())
        ours = {m: full.get(m) for m in mine if _LAYER_MODULE.match(m)}
        src = g.sources()[k][0]
        c, h, w = sub["input"]["shape"]  # a vector (after a global pool) is a 1x1 map here
        args.append((str(base / "rtl"), p, sub, acts[src].reshape(len(x), c, h, w), acts[g.layers[k].name], ours,
                     live[g.layers[k].name]))
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
