"""An area model for designs too large to synthesize, calibrated on modules that were synthesized.

Every top-level module the generator emits is one of a few kinds, and its area follows from a handful of counts
the generator already reports or its module name encodes: adder bits (each adder as wide as its exact result),
flip-flop bits (pipeline registers, line buffers, skip FIFOs, accumulators), multiplexer input bits (the line
buffers' ring-slot and column selection), and element-wise bits (requantization, residual adds). The model is
linear in those counts, area = sum_k coef_k * feature_k, fitted with non-negative least squares on Yosys + ASAP7
areas of synthesized modules; :func:`evaluate` reports its error on held-out modules.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ("adder_bits", "flip_flop_bits", "mux_bits", "elementwise_bits", "modules")


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "", name)


_WINDOW = re.compile(r"WindowGen_c(\d+)_(\d+)x(\d+)_k(\d+)s(\d+)p(?:(\d+)|t\d+b\d+l(\d+)r(\d+))_b(\d+)_i(\d+)o(\d+)(?:_v\d+)?")
_REQUANT = re.compile(r"Requant_c(\d+)_i(\d+)[su]")
_ADD = re.compile(r"ResidualAdd_l(\d+)_a(\d+)[su]x(\d+)_b(\d+)[su]x(\d+)")
_POOL = re.compile(r"SumPool_c(\d+)_n(\d+)_p(\d+)_i(\d+)[su]_o(\d+)")
_MAXPOOL = re.compile(r"MaxPool_c(\d+)_k(\d+)_p(\d+)_s(\d+)_i(\d+)[su]")
_QUEUE = re.compile(r"Queue(\d+)_Vec(\d+)_UInt(\d+)")
_LAYER = re.compile(r"ShiftAddLayer_(.+)_n\d+_o\d+_p\d+_s\d+")


def module_features(module: str, hw_params: dict) -> dict[str, float] | None:
    """The model's features of one instance of a top-level module (None: a kind the model does not know)."""
    base = re.sub(r"_\d+$", "", module)  # Chisel's suffix for a second module of the same name
    f = dict.fromkeys(FEATURES, 0.0)
    f["modules"] = 1.0
    if m := _LAYER.fullmatch(base):
        layers = {_sanitize(l["name"]): l for l in hw_params["layers"]}
        layer = layers.get(m.group(1))
        if layer is None:
            return None
        f["adder_bits"] = layer["adder_bits"]
        f["flip_flop_bits"] = layer["register_bits"]
    elif m := _WINDOW.fullmatch(base):
        c, h, w, k, s, p, left, right, bits, p_in, p_out = (None if v is None else int(v) for v in m.groups())
        rows = k + s
        out_w = (w + (2 * p if p is not None else left + right) - k) // s + 1
        f["flip_flop_bits"] = rows * w * c * bits
        # ring-slot select per window row, then one column select per window element over the row's beats
        f["mux_bits"] = k * w * c * bits * (rows - 1) + p_out * c * k * k * bits * (out_w // p_out - 1)
    elif m := _REQUANT.fullmatch(base.split("_sh")[0]):
        lanes, width = map(int, m.groups())
        f["elementwise_bits"] = lanes * width
    elif m := _ADD.match(base):
        lanes, aw, ash, bw, bsh = map(int, m.groups())
        # the aligned sum, the rounding adder and the clamp: about three requant lanes' worth each
        f["elementwise_bits"] = 3 * lanes * (max(aw + ash, bw + bsh) + 1)
    elif m := _POOL.fullmatch(base):
        c, n, par, iw, ow = map(int, m.groups())
        f["adder_bits"] = c * par * (ow + 1)
        f["flip_flop_bits"] = c * (2 * ow + 1)
    elif m := _MAXPOOL.fullmatch(base):
        c, k, par, stages, width = map(int, m.groups())
        cmp = c * (k * k - 1) * par
        f["adder_bits"] = cmp * (width + 1)  # a comparator is a subtractor's carry chain
        f["mux_bits"] = cmp * width          # and the 2:1 select of the larger
        levels, per = math.ceil(math.log2(k * k)), hw_params["adder_levels_per_stage"]
        regd = {0} if levels == 0 else set(range(per, levels + 1, per)) | {levels}
        f["flip_flop_bits"] = sum(-(-k * k // (1 << lv)) for lv in regd) * width * c * par  # MaxPoolParams.registerBits
    elif m := _QUEUE.fullmatch(base):
        depth, lanes, width = map(int, m.groups())
        f["flip_flop_bits"] = depth * lanes * width
    elif base.startswith("Fork_"):
        pass  # wires and a few gates
    else:
        return None
    return f


@dataclass
class AreaModel:
    coef: dict[str, float]          # um^2 per unit of each feature

    def predict(self, features: dict[str, float]) -> float:
        return sum(self.coef[k] * features[k] for k in FEATURES)

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "coef_um2": self.coef}


def samples(report, hw_params: dict) -> list[tuple[str, dict[str, float], float]]:
    """(module, features of one instance, synthesized area of one instance) for the top's children."""
    out = []
    for child, n, um2 in report.breakdown():
        f = module_features(child, hw_params)
        if f is not None:
            out.append((child, f, um2 / n))
    return out


def fit(data: list[tuple[str, dict[str, float], float]]) -> AreaModel:
    """Non-negative least squares, weighted so that every module counts by its relative error."""
    from scipy.optimize import nnls

    a = np.array([[f[k] for k in FEATURES] for _, f, _ in data], dtype=float)
    y = np.array([area for *_, area in data], dtype=float)
    w = 1.0 / np.maximum(y, 1.0)
    coef, _ = nnls(a * w[:, None], y * w)
    return AreaModel(dict(zip(FEATURES, map(float, coef))))


def evaluate(model: AreaModel, data) -> dict:
    """Relative error per held-out module, and on their total."""
    rows = [(name, area, model.predict(f)) for name, f, area in data]
    errs = [abs(p - a) / a for _, a, p in rows if a > 0]
    total_a = sum(a for _, a, _ in rows)
    total_p = sum(p for *_, p in rows)
    return {"modules": len(rows), "mean_abs_error": float(np.mean(errs)), "max_abs_error": float(np.max(errs)),
            # each module's error weighted by its area: what an estimate of a whole design inherits
            "area_weighted_abs_error": sum(abs(p - a) for _, a, p in rows) / total_a,
            "total_error": (total_p - total_a) / total_a,
            "rows": [{"module": n, "um2": a, "model_um2": p} for n, a, p in rows]}


def with_adder_bits(hw_params: dict, design_path: str | Path) -> dict:
    """hw_params with each layer's ``adder_bits``; an older generator did not report them, so they come from the
    Python model of the same adder graphs (which the generator's figures are checked against)."""
    if "adder_bits" in hw_params["layers"][0]:
        return hw_params
    from ..export import load_design
    from ..export.design import parallelism_in
    from ..hwmodel import hw_model

    d, g = load_design(design_path)
    m = {x.name: x for x in hw_model(g, hw_params["adder_levels_per_stage"], d["hardware"].get("target_ii"),
                                     parallelism_in(d))}
    return dict(hw_params, layers=[dict(l, adder_bits=m[l["name"]].adder_bits or 0) for l in hw_params["layers"]])


def estimate(model: AreaModel, verilog: str | Path, hw_params: dict) -> dict:
    """Area of a design from its hw_params.json and the module instances in its Verilog (no synthesis)."""
    top = hw_params["top"]
    text = Path(verilog).read_text()

    def instances(module: str) -> list[tuple[str, str]]:
        body = text[text.index(f"module {module}("):]
        body = body[:body.index("endmodule")]
        return re.findall(r"^\s+(\w+)\s+(\w+)\s*\(", body, flags=re.M)

    insts = [m for m, _ in instances(top)]
    total, unknown, parts = 0.0, [], {}
    if hw_params.get("npu"):  # hardened backbone + NPU: the model covers the backbone's layers; the NPU's MAC
        # array and weight memory (an SRAM in silicon) are not in its calibration set
        inner = dict((i, m) for m, i in instances(top))
        insts = [m for m, _ in instances(inner["backbone"])]
        unknown.append(inner["npu"])
    for name in insts:
        f = module_features(name, hw_params)
        if f is None:
            unknown.append(name)
            continue
        a = model.predict(f)
        total += a
        parts[name] = parts.get(name, 0.0) + a
    return {"area_um2": total, "unmodelled_modules": sorted(set(unknown)), "breakdown": parts}


def save(model: AreaModel, path: Path, evaluation: dict | None = None) -> None:
    doc = model.to_json()
    if evaluation is not None:
        doc["held_out"] = evaluation
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load(path: Path) -> AreaModel:
    return AreaModel(json.loads(Path(path).read_text())["coef_um2"])
