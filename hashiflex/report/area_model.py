"""An area model for designs too large to synthesize, calibrated on modules that were synthesized.

Every top-level module the generator emits is one of a few kinds, listed with its parameters in hw_params.json
(``modules``), and its area follows from a handful of counts they give: adder bits (each adder as wide as its exact result),
flip-flop bits (pipeline registers, line buffers, skip FIFOs, accumulators), multiplexer input bits (the line
buffers' ring-slot and column selection), and element-wise bits (requantization, residual adds). The model is
linear in those counts, area = sum_k coef_k * feature_k, fitted with non-negative least squares on Yosys + ASAP7
areas of synthesized modules (small calibration designs and the modules of a full-size design synthesized so far,
in the flow ``hashiflex synth`` runs); :func:`evaluate` reports its error on held-out modules.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ("adder_bits", "flip_flop_bits", "mux_bits", "elementwise_bits", "modules", "multiplier_bits")


def _kinds():
    """kind (hw_params.json ``modules``) -> the features of one instance from its parameters."""
    def adder_layer(m):
        return {"adder_bits": m["adder_bits"], "flip_flop_bits": m["register_bits"]}

    def line_buffer(m):
        c, w, k, bits, rows, p_out = m["channels"], m["width"], m["kernel"], m["bits"], m["rows"], m["par_out"]
        # ring-slot select per window row, then one column select per window element over the row's beats
        return {"flip_flop_bits": rows * w * c * bits,
                "mux_bits": k * w * c * bits * (rows - 1) + p_out * c * k * k * bits * (m["out_width"] // p_out - 1)}

    def residual_add(m):
        # the aligned sum, the rounding adder and the clamp: about three requant lanes' worth each
        return {"elementwise_bits": 3 * m["lanes"] * (max(m["a_width"] + m["a_shift"], m["b_width"] + m["b_shift"]) + 1)}

    def sum_pool(m):
        return {"adder_bits": m["channels"] * m["par"] * (m["out_width"] + 1),
                "flip_flop_bits": m["channels"] * (2 * m["out_width"] + 1)}

    def max_pool(m):
        # a comparator is a subtractor's carry chain and the 2:1 select of the larger
        return {"adder_bits": m["comparators"] * (m["width"] + 1), "mux_bits": m["comparators"] * m["width"],
                "flip_flop_bits": m["register_bits"]}

    def npu(m):
        # the NPU's own logic (its loader and its weight memory are modules of their own): lanes x width
        # multipliers (their partial-product bits; their outputs registered), a tree of width - 1
        # accumulator-wide adders per lane, the accumulate, bias and rounding adds and the variable requantizing
        # shift per lane, the top-k comparators; registers for the input vector (two copies and the chunk
        # stage), the partial sums, the dot products and accumulators, a tile's sums, biases plus halves and rounded
        # sums, both banks of biases and both logits buffers
        lanes, width, aw, ib = m["lanes"], m["width"], m["acc_width"], m["in_width"]
        cap, tiles, chunks = m["capacity"], m["tiles"], m["chunks"]
        return {"multiplier_bits": lanes * width * m["weight_bits"] * ib,  # partial-product bits
                "adder_bits": lanes * (width - 1) * aw + 3 * lanes * (aw + 1) + m["scan"] * m["top_k"] * (m["out_bits"] + 1),
                # the registered products (signed: an unsigned input gains a bit)
                "flip_flop_bits": (2 * m["in_features"] + width) * ib + (m["partial_sums"] + 2 * lanes) * aw
                + 3 * lanes * (aw + 1)
                + 2 * cap * m["bias_bits"]
                + lanes * width * (ib + 1 + m["weight_bits"])
                + 2 * cap * m["out_bits"] + m["top_k"] * (m["out_bits"] + m["index_bits"] + 1),
                "mux_bits": width * ib * (chunks - 1) + lanes * m["bias_bits"] * (2 * tiles - 1)
                + lanes * (aw + 1) * m["shift_bits"] + 3 * cap * m["out_bits"] + m["scan"] * m["out_bits"] * (cap - 1),
                "elementwise_bits": lanes * (aw + 1)}

    return {
        "npu": npu,
        # a word-serial parser: its state, counters, CRC, tag and header registers and the CRC's unrolled XOR network
        "npu_loader": lambda m: {"flip_flop_bits": 200 + 2 * (m["schedule"] - 1).bit_length() + (m["macs"] - 1).bit_length(),
                                 "elementwise_bits": 32 * 32},
        "memory": None,  # a memory array: an SRAM macro in silicon, outside what the logic model prices
        "adder_layer": adder_layer,
        "line_buffer": line_buffer,
        "requant": lambda m: {"elementwise_bits": m["lanes"] * m["in_width"]},
        "residual_add": residual_add,
        "sum_pool": sum_pool,
        "max_pool": max_pool,
        "lut": lambda m: {"mux_bits": m["lanes"] * m["entries"] * m["out_width"]},  # an entries-way select per bit
        "fifo": lambda m: {"flip_flop_bits": m["depth"] * m["lanes"] * m["width"]},
        "concat": lambda m: {},  # wiring, and the join's few gates
        "fork": lambda m: {},    # wires and a few gates
        "channel_select": lambda m: {},  # wiring
    }


KINDS = _kinds()


def _legal(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_$]", "", name)


def _table(hw_params: dict) -> dict[str, dict]:
    return {_legal(m["name"]): m for m in hw_params["modules"]}


def module_features(module: str, hw_params: dict) -> dict[str, float] | None:
    """The model's features of one instance of a top-level module, from the generator's table of what it built
    (hw_params.json ``modules``: kind and parameters). None: a module the table does not list, or a memory array
    (an SRAM macro in silicon: :func:`memory_bits`), which the model does not price; a kind it lists but the model
    does not know raises."""
    # the table holds each module under its Verilog name (older tables: the desired name, which Chisel legalizes:
    # characters outside [A-Za-z0-9_$] dropped: a torch layer "features.0.0" builds ShiftAddLayer_features00_...)
    table = _table(hw_params)
    m = table.get(module) or table.get(re.sub(r"_\d+$", "", module))  # Chisel's suffix for a second module
    if m is None:
        return None
    if m["kind"] not in KINDS:
        raise ValueError(f"hw_params.modules[{m['name']!r}]: kind {m['kind']!r} has no area model (known: "
                         f"{', '.join(sorted(KINDS))})")
    if KINDS[m["kind"]] is None:
        return None
    f = dict.fromkeys(FEATURES, 0.0)
    f["modules"] = 1.0
    try:
        priced = KINDS[m["kind"]](m)
    except KeyError as e:
        raise ValueError(f"hw_params.modules[{m['name']!r}]: kind {m['kind']!r} lacks parameter {e.args[0]!r} (a "
                         f"table from an older generator: elaborate the design again)") from None
    f.update({k: float(v) for k, v in priced.items()})
    return f


def memory_bits(module: str, hw_params: dict) -> int | None:
    """Bits of a memory array the generator built (hw_params.json ``modules`` kind "memory"), else None."""
    m = _table(hw_params).get(module)
    return m["depth"] * m["width"] if m is not None and m["kind"] == "memory" else None


@dataclass
class AreaModel:
    coef: dict[str, float]          # um^2 per unit of each feature

    def __post_init__(self):
        missing = [k for k in FEATURES if k not in self.coef]
        if missing:
            raise ValueError(f"area model: no coefficient for {', '.join(missing)} (fitted by an older version: run "
                             f"benchmarks/area_model.py again)")

    def predict(self, features: dict[str, float]) -> float:
        return sum(self.coef[k] * features[k] for k in FEATURES)

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "coef_um2": self.coef}


def fit(data: list[tuple[str, dict[str, float], float]]) -> AreaModel:
    """Non-negative least squares, each module's residual weighted by 1/sqrt(its area): a module's area is a sum of
    cells, so the scatter of its area about the model grows with it like a count's (variance in proportion to the
    area). Weighting by the relative error instead lets the many small modules of the calibration designs outvote the
    few full-size ones that make a design's area (measured: 10.2 % low on the full-size MobileNetV2 modules left out,
    against 0.4 % with these weights; ``benchmarks/area_model.py --full``)."""
    from scipy.optimize import nnls

    a = np.array([[f[k] for k in FEATURES] for _, f, _ in data], dtype=float)
    y = np.array([area for *_, area in data], dtype=float)
    w = 1.0 / np.sqrt(np.maximum(y, 1.0))
    coef, _ = nnls(a * w[:, None], y * w)
    return AreaModel(dict(zip(FEATURES, map(float, coef))))


def fit_feature(model: AreaModel, data: list[tuple[str, dict[str, float], float]], feature: str) -> AreaModel:
    """``model`` with the coefficient of one ``feature`` fitted on ``data`` (non-negative least squares on the
    relative error, the other coefficients kept): a module kind whose cost the first fit's modules never had
    (the NPU's multipliers), calibrated on modules of that kind alone."""
    rest = {k: c for k, c in model.coef.items() if k != feature}
    x = np.array([f[feature] for _, f, _ in data], dtype=float)
    r = np.array([area - sum(rest[k] * f[k] for k in rest) for _, f, area in data], dtype=float)
    w = 1.0 / np.maximum(np.array([area for *_, area in data], dtype=float), 1.0)
    den = float(np.sum((w * x) ** 2))
    if den == 0:
        raise ValueError(f"fit_feature: no module has any {feature}")
    return AreaModel({**rest, feature: max(0.0, float(np.sum(w * x * w * r)) / den)})


def evaluate(model: AreaModel, data) -> dict:
    """Relative error per held-out module, and on their total."""
    return errors([(name, area, model.predict(f)) for name, f, area in data])


def errors(rows: list[tuple[str, float, float]]) -> dict:
    """:func:`evaluate`'s figures from (module, synthesized area, predicted area) rows, whatever predicted them."""
    errs = [abs(p - a) / a for _, a, p in rows if a > 0]
    total_a = sum(a for _, a, _ in rows)
    total_p = sum(p for *_, p in rows)
    return {"modules": len(rows), "mean_abs_error": float(np.mean(errs)), "max_abs_error": float(np.max(errs)),
            # each module's error weighted by its area: what an estimate of a whole design inherits
            "area_weighted_abs_error": sum(abs(p - a) for _, a, p in rows) / total_a,
            "total_error": (total_p - total_a) / total_a,
            "rows": [{"module": n, "um2": a, "model_um2": p} for n, a, p in rows]}


def priced_instances(verilog_text: str, hw_params: dict) -> tuple[list[str], list[str]]:
    """The module instances the model prices, one entry per instance (the top's children; with an NPU, the
    backbone's children, the NPU and what it holds), and those of the NPU among them."""
    top = hw_params["top"]

    def instances(module: str) -> list[tuple[str, str]]:
        body = verilog_text[verilog_text.index(f"module {module}("):]
        body = body[:body.index("endmodule")]
        # firtool writes an instance as "  Module name (" alone on its line (procedural code never ends a line there)
        return re.findall(r"^\s+(\w+)\s+(\w+)\s*\(\s*$", body, flags=re.M)

    insts = [m for m, _ in instances(top)]
    npu_mods: list[str] = []
    if hw_params.get("npu"):  # hardened backbone + NPU: the backbone's layers, the NPU and what it holds
        inner = dict((i, m) for m, i in instances(top))
        npu_mods = [inner["npu"]] + [m for m, _ in instances(inner["npu"])]
        insts = [m for m, _ in instances(inner["backbone"])] + npu_mods
    return insts, npu_mods


def estimate(model: AreaModel, verilog: str | Path, hw_params: dict, text: str | None = None) -> dict:
    """Area of a design from its hw_params.json and the module instances in its Verilog (no synthesis); ``text``:
    the Verilog file's text where the caller has read it already."""
    insts, npu_mods = priced_instances(Path(verilog).read_text() if text is None else text, hw_params)
    total, unknown, parts, mem = 0.0, [], {}, {}
    for name in insts:
        f = module_features(name, hw_params)
        if f is None:
            bits = memory_bits(name, hw_params)
            if bits is not None:
                mem[name] = mem.get(name, 0) + bits
            else:
                unknown.append(name)
            continue
        a = model.predict(f)
        total += a
        parts[name] = parts.get(name, 0.0) + a
    return {"area_um2": total, "unmodelled_modules": sorted(set(unknown)), "breakdown": parts,
            # memory arrays (the NPU's weight banks): SRAM macros from a memory compiler, not standard cells
            "memory_bits": sum(mem.values()), "memories": mem,
            "npu_um2": sum(a for m, a in parts.items() if m in npu_mods)}  # the NPU's logic and its loader


def save(model: AreaModel, path: Path, evaluation: dict | None = None) -> None:
    doc = model.to_json()
    if evaluation is not None:
        doc["held_out"] = evaluation
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load(path: Path) -> AreaModel:
    return AreaModel(json.loads(Path(path).read_text())["coef_um2"])
