"""design.json: written from the quantized IR, validated against ``schema.json`` and re-derived before writing.

Validation has two parts: the JSON schema (types, ranges, required fields) and a semantic check that rebuilds
the IR from the file and re-derives every derived field (shapes, bounds, widths, exponents, II). Either failure
raises :class:`DesignValidationError` naming the field (``design.layers[2].out_bounds``) and what was expected.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .. import npu as npu_mod
from .. import ref
from ..ir import Graph, Input, IRError, TensorType
from ..ops import op_named, op_of
from ..numfmt import int_range, width_for
from ..analysis import annotate
from ..hwmodel import check_levels, initiation_interval
from ..hwmodel import parallelism as parallelism_of

FORMAT, VERSION = "hashiflex.design", 1
DEFAULT_LEVELS_PER_STAGE = 4


class DesignValidationError(ValueError):
    """design.json does not satisfy the contract; the message names the field and the expectation."""


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text())


_PLAIN_INT_ITEMS = {"type", "minimum", "maximum", "description"}


def _items(validator, items, instance, schema):
    """jsonschema's ``items``, with a fast path for the long lists of design.json (weight codes, adder sums: millions
    of them in a full-size MobileNetV2) under an item schema of ``type: integer`` and bounds: when every element is
    a plain int within the bounds there is nothing to report, checked at C speed. Anything else, and any list
    that fails, goes jsonschema's own way, so every error reads the same."""
    if (isinstance(instance, list) and len(instance) > 256 and isinstance(items, dict)
            and items.get("type") == "integer" and set(items) <= _PLAIN_INT_ITEMS
            and set(map(type, instance)) == {int}
            and ("minimum" not in items or min(instance) >= items["minimum"])
            and ("maximum" not in items or max(instance) <= items["maximum"])):
        return
    import jsonschema

    yield from jsonschema.Draft202012Validator.VALIDATORS["items"](validator, items, instance, schema)


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"items": _items})(schema())


def _ints(a) -> list[int]:
    return [int(v) for v in np.asarray(a).ravel()]


def design_from_graph(g: Graph, levels_per_stage: int = DEFAULT_LEVELS_PER_STAGE,
                      target_ii: int | None = None, npu: tuple | None = None,
                      parallelism: dict[str, int] | None = None, levels: dict[str, int] | None = None) -> dict:
    """The design.json document for a quantized graph (derived fields from :func:`annotate`; pixel parallelism
    from :func:`choose_parallelism` for ``target_ii`` cycles per image, None: one pixel per beat).

    ``npu``: (:class:`~hashiflex.npu.NpuConfig`, boot :class:`~hashiflex.npu.Head`) when the classification layer
    runs on the programmable NPU; ``g`` is then the hardened backbone, ending in the vector the NPU reads.

    ``parallelism``: pixels per beat of "input" and of every layer's output, when not the unroll pass's proposal
    for ``target_ii``; any buildable choice is taken (:func:`~hashiflex.hwmodel.check_parallelism`), and the II
    follows from it. The file's values are authoritative: validation and the generator read them back.

    ``levels``: adder levels per register stage of the layers that do not take the default ``levels_per_stage``
    (e.g. chosen per layer for a target clock: :func:`hashiflex.report.timing_model.levels_for_clock`), written as
    those layers' ``levels_per_stage``.
    """
    infos = annotate(g)
    try:
        par = parallelism_of(g, target_ii, parallelism)
        levels = check_levels(g, levels)
    except IRError as e:
        raise DesignValidationError(str(e)) from e
    layers = []
    for k, (layer, info, srcs) in enumerate(zip(g.layers, infos, g.sources())):
        try:
            width, signed = width_for(*info.out_bounds)
        except ValueError as e:
            raise DesignValidationError(f"design.layers[{k}].out_bounds: layer {layer.name!r}: {e} "
                                        f"(its clamp or exponents are inconsistent)") from e
        d = {"name": layer.name, "src": srcs[0], "in_shape": list(info.in_shape), "out_shape": list(info.out_shape),
             "in_bounds": list(info.in_bounds), "out_bounds": list(info.out_bounds),
             "out_width": width, "out_signed": signed, "out_exp": info.out_exp, "parallelism": par[layer.name]}
        if layer.name in levels:
            d["levels_per_stage"] = levels[layer.name]
        op = op_of(layer)
        d["op"] = op.op
        d.update(op.to_json(layer, info, srcs))
        layers.append(d)
    last = infos[-1]
    w, s = width_for(*last.out_bounds)
    t = g.input.type
    ii = initiation_interval(g, par=par)
    output = {"features": int(np.prod(last.out_shape)), "exp": last.out_exp, "bounds": list(last.out_bounds),
              "width": w, "signed": s}
    doc = {
        "format": FORMAT, "version": VERSION, "name": g.name,
        "input": {"shape": [g.input.channels, g.input.height, g.input.width], "bits": t.bits, "signed": t.signed,
                  "exp": t.exp, "parallelism": par["input"],
                  **({"bounds": list(g.input.bounds)} if g.input.bounds is not None else {})},
        "hardware": {"adder_levels_per_stage": levels_per_stage, "target_ii": target_ii, "ii_cycles_per_image": ii},
        "layers": layers,
        "output": output,
    }
    if npu is not None:
        cfg, head = npu
        _check_npu_input(last, cfg.in_features)
        if tuple(last.out_bounds) != tuple(cfg.in_bounds):
            raise DesignValidationError(f"design.npu.in_bounds: expected {list(last.out_bounds)} (the out_bounds "
                                        f"of {last.name!r}), found {list(cfg.in_bounds)}")
        try:
            head.check(cfg)
        except ValueError as e:
            raise DesignValidationError(f"design.npu.{e}") from e
        lo, hi = int_range(cfg.out_bits, True)
        doc["npu"] = dict(cfg.to_json(), head=head.to_json())
        doc["hardware"]["ii_cycles_per_image"] = max(ii, cfg.cycles_per_image)
        doc["output"] = {"features": cfg.capacity, "exp": last.out_exp + head.w_exp + head.shift, "bounds": [lo, hi],
                         "width": cfg.out_bits, "signed": True}
    return doc


def _path(parts) -> str:
    out = "design"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def graph_from_design(d: dict) -> Graph:
    """Rebuild the quantized IR from a schema-valid design document."""
    i = d["input"]
    c, h, w = i["shape"]
    try:
        inp = Input(c, h, w, TensorType(i["bits"], i["signed"], i["exp"]),
                    tuple(i["bounds"]) if "bounds" in i else None)
    except IRError as e:
        raise DesignValidationError(f"design.{e}") from e
    g = Graph(d["name"], inp, [])
    for k, l in enumerate(d["layers"]):
        where = f"design.layers[{k}]"
        try:
            layer = op_named(l["op"], f"{where}.op").from_json(l, where)
        except IRError as e:
            raise DesignValidationError(str(e)) from e
        g.layers.append(layer)
    return g


def levels_in(d: dict) -> dict[str, int]:
    """The adder levels per stage a design document gives its layers of their own (``levels_per_stage``)."""
    return {l["name"]: l["levels_per_stage"] for l in d["layers"] if "levels_per_stage" in l}


def parallelism_in(d: dict) -> dict[str, int]:
    """The pixels per beat a design document gives every tensor ("input" and each layer)."""
    return {"input": d["input"]["parallelism"], **{l["name"]: l["parallelism"] for l in d["layers"]}}


def validate_design(d: dict) -> Graph:
    """Validate a design document (schema, then every derived field); return its IR."""
    import jsonschema

    errors = sorted(_validator().iter_errors(d), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        e = jsonschema.exceptions.best_match(errors)
        raise DesignValidationError(f"{_path(e.absolute_path)}: {e.message}")
    names = [l["name"] for l in d["layers"]]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DesignValidationError(f"design.layers: layer name {sorted(dup)[0]!r} is used twice")
    try:
        g = graph_from_design(d)
        want = design_from_graph(g, d["hardware"]["adder_levels_per_stage"], d["hardware"].get("target_ii"),
                                 _npu_of(d, g), parallelism_in(d), levels_in(d))
    except DesignValidationError:
        raise
    except ValueError as e:  # IRError from annotate: shapes that do not chain
        raise DesignValidationError(f"design: {e}") from e
    _compare(want, d, [])
    return g


def _check_npu_input(last, in_features: int) -> None:
    """The NPU reads one vector of ``in_features`` per image: the backbone's last layer (LayerInfo) must give it."""
    if last.out_shape[1:] != (1, 1) or last.out_shape[0] != in_features:
        raise DesignValidationError(f"design.npu.in_features: expected the backbone to end in a vector of "
                                    f"{in_features} features, found {list(last.out_shape)} from {last.name!r}")


def _npu_of(d: dict, g: Graph):
    """The (config, boot head) of a schema-valid document's ``npu`` section, or None. ``g``: its backbone."""
    npu = npu_mod
    if "npu" not in d:
        return None
    _check_npu_input(annotate(g)[-1], d["npu"]["in_features"])
    try:
        return npu.from_design(d)
    except ValueError as e:
        raise DesignValidationError(f"design.{e}" if str(e).startswith("npu.") else f"design.npu: {e}") from e


def _compare(want, have, path) -> None:
    """Raise at the first field where ``have`` differs from the re-derived ``want``."""
    if isinstance(want, dict):
        for k, v in want.items():
            if k not in have:
                raise DesignValidationError(f"{_path(path + [k])}: required field is missing")
            _compare(v, have[k], path + [k])
    elif isinstance(want, list) and want and isinstance(want[0], (dict, list)):
        if len(want) != len(have):
            raise DesignValidationError(f"{_path(path)}: expected {len(want)} entries, found {len(have)}")
        for i, (a, b) in enumerate(zip(want, have)):
            _compare(a, b, path + [i])
    elif want != have:
        def shown(v):
            t = json.dumps(v)
            if isinstance(v, list) and isinstance(have, list) and len(t) >= 80:
                at = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
                return f"{len(v)} entries" + (f" ({v[at]} at index {at})" if at < len(v) else "")
            return t if len(t) < 80 else t[:77] + "..."
        raise DesignValidationError(f"{_path(path)}: expected {shown(want)} (derived from the weights and shapes), "
                                    f"found {shown(have)}")


TABLE_THRESHOLD = 1 << 16  # weight codes above which write_design moves them into a binary table


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp(path: Path) -> Path:
    """A temporary file beside ``path`` with the mode a plain ``open(path, "w")`` would give (0666 & ~umask;
    mkstemp's own 0600 would survive the rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def write_design(d: dict, path: str | os.PathLike, tables: bool | None = None) -> Path:
    """Validate, then write atomically (temporary files renamed into place): never half-written.

    With ``tables`` (default: when the design holds more than TABLE_THRESHOLD weight codes), the codes go into
    ``<stem>.weights.bin`` (int8, layer after layer) and each layer's ``weights.table`` names its slice and
    SHA-256; design.json stays small.
    """
    validate_design(d)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_codes = sum(len(l["weights"]["codes"]) for l in d["layers"] if "weights" in l)
    if tables is None:
        tables = n_codes > TABLE_THRESHOLD
    doc, blob = d, None
    if tables:
        doc = json.loads(json.dumps(d))
        table = path.with_name(path.stem + ".weights.bin")
        chunks, offset = [], 0
        for l in doc["layers"]:
            if "weights" in l:
                b = np.asarray(l["weights"].pop("codes"), dtype=np.int8).tobytes()
                l["weights"]["table"] = {"file": table.name, "offset": offset, "count": len(b),
                                         "sha256": hashlib.sha256(b).hexdigest()}
                chunks.append(b)
                offset += len(b)
            if "adders" in l:
                a = l["adders"]
                b = np.asarray(a.pop("sums") + a.pop("roots"), dtype="<i4").tobytes()
                a["table"] = {"file": table.name, "offset": offset, "count": len(b) // 4,
                              "sha256": hashlib.sha256(b).hexdigest()}
                chunks.append(b)
                offset += len(b)
        blob = (table, b"".join(chunks))
    tmps = []
    try:
        if blob is not None:
            t = _tmp(blob[0])
            tmps.append(t)
            t.write_bytes(blob[1])
        t = _tmp(path)
        tmps.append(t)
        t.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        if blob is not None:
            os.replace(tmps[0], blob[0])
        os.replace(tmps[-1], path)
    except BaseException:
        for t in tmps:
            t.unlink(missing_ok=True)
        raise
    return path


def _resolve_tables(d: dict, base: Path) -> dict:
    """Replace every ``weights.table`` and ``adders.table`` by the values it points to (int8 codes; int32 sums
    then roots), checking count and SHA-256."""
    blobs: dict[str, bytes] = {}

    def read(t, where: str, item: int, what: str) -> np.ndarray:
        try:
            blob = blobs.setdefault(t["file"], (base / t["file"]).read_bytes())
            b = blob[t["offset"]:t["offset"] + t["count"] * item]
        except (KeyError, TypeError, OSError) as e:
            raise DesignValidationError(f"{where}: cannot read the {what} table ({e})") from e
        if len(b) != t["count"] * item:
            raise DesignValidationError(f"{where}.count: expected {t['count'] * item} bytes at offset {t['offset']} "
                                        f"of {t['file']}, found {len(b)}")
        if hashlib.sha256(b).hexdigest() != t["sha256"]:
            raise DesignValidationError(f"{where}.sha256: expected {t['sha256']}, found "
                                        f"{hashlib.sha256(b).hexdigest()} (corrupt or stale table)")
        return np.frombuffer(b, dtype=np.int8 if item == 1 else "<i4").astype(int)

    for k, l in enumerate(d.get("layers", [])):
        if not isinstance(l, dict):
            continue
        t = l.get("weights", {}).get("table")
        if isinstance(t, dict):
            w = dict(l["weights"])
            del w["table"]
            w["codes"] = read(t, f"design.layers[{k}].weights.table", 1, "weight").tolist()
            l["weights"] = w
        t = l.get("adders", {}).get("table") if isinstance(l.get("adders"), dict) else None
        if isinstance(t, dict):
            v = read(t, f"design.layers[{k}].adders.table", 4, "adder")
            n_roots = 3 * (l["out_shape"][0] if isinstance(l.get("out_shape"), list) and l["out_shape"] else 0)
            if (len(v) - n_roots) % 5 or len(v) < n_roots:
                raise DesignValidationError(f"design.layers[{k}].adders.table.count: expected 5 per sum + 3 per "
                                            f"output channel ({n_roots // 3}), found {len(v)}")
            l["adders"] = {"sums": v[:len(v) - n_roots].tolist(), "roots": v[len(v) - n_roots:].tolist()}
    return d


def load_design(path: str | os.PathLike) -> tuple[dict, Graph]:
    """Read design.json (and its weight table, if any), validate, and return (document, IR)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DesignValidationError(f"{path}: not valid JSON ({e})") from e
    d = _resolve_tables(d, path.parent)
    return d, validate_design(d)


def npu_design(g, levels_per_stage: int = 4, target_ii: int | None = None, calib_images: np.ndarray | None = None,
               capacity: int | None = None, weight_bits: int = 8, bias_bits: int = 24, out_bits: int = 16,
               top_k: int = 1, tag: int = 1, levels: dict[str, int] | None = None) -> dict:
    """design.json for a quantized network with its final linear layer on the NPU: the backbone is hardened as
    usual; the NPU is sized to keep up with the backbone's II (:func:`size_npu`), and the boot head is the float
    linear layer quantized to ``weight_bits`` integers (logit shift calibrated on ``calib_images``). ``levels``:
    adder levels per stage of some backbone layers (a level choice for the head's layer is dropped with it)."""
    backbone, fc = npu_mod.split_head(g)
    last = annotate(backbone)[-1]
    cfg = npu_mod.size_npu(fc.in_features, last.out_bounds, capacity or fc.out_features,
                   initiation_interval(backbone, target_ii), weight_bits, bias_bits, out_bits, top_k)
    calib = ref.run(backbone, calib_images) if calib_images is not None else None
    head = npu_mod.quantize_head(fc.weight, fc.bias, last.out_exp, cfg, calib, tag)
    kept = {l.name for l in backbone.layers}
    return design_from_graph(backbone, levels_per_stage, target_ii, npu=(cfg, head),
                             levels={k: v for k, v in (levels or {}).items() if k in kept})
