"""How long a pipeline stage of an adder lane takes, and the adder levels per stage that meet a clock.

A conv or linear layer's lane is its adder graph (:mod:`hashiflex.adders`) with a register after every
``levels_per_stage`` levels (and after the last): a stage's critical path runs through up to that many chained
adders, each as wide as its exact interval (:func:`hashiflex.adders.node_bounds`), from values that may feed many
adders. The model weighs those three, fitted on synthesized lanes (Yosys + ABC on ASAP7, timed with OpenSTA:
:mod:`hashiflex.report.modsynth`; ``benchmarks/stage_timing.py`` fits it and writes the packaged
``stage_timing.json``)::

    period_ps = c0 + c_level * log2(levels + 1) + c_bit * width + c_fanout * log2(fanout)

per stage (``levels``: adder levels in the stage, ``width``: bits of its widest adder, ``fanout``: the most adders
one value feeds, a shared input of a wide pointwise layer reaching a buffer tree); a lane's period is its slowest
stage's. Chained adders overlap (a sum's low bits are ready before its carry out, and ABC restructures the
chain), so a stage's delay grows with the logarithm of its levels rather than linearly: on MobileNetV2's lanes the
logarithmic form fits with less error than the linear one. :func:`levels_for_clock` then gives every layer the
most levels per stage whose predicted period meets a target (fewest registers); ``hashiflex export --clock-ps`` writes them into design.json, where the generator
builds them and synthesis checks them.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .analysis import annotate
from .ir import Graph, IRError
from .ops import op_of
from .ops.weighted import WeightedOp, final_bounds, shared_adder_graph, sint_width

MAX_LEVELS = 16  # the most adder levels per stage levels_for_clock considers


@dataclass(frozen=True)
class Stage:
    levels: int      # adder levels between its registers
    width: int       # bits of its widest adder
    fanout: int = 1  # the most adders one value read in the stage feeds (a shared input or subexpression)


def level_widths(layer, info) -> np.ndarray:
    """Per adder level of a conv/linear layer's lane (index 1..depth; the final bias level last): bits of its
    widest adder (row 0) and the most adders of that level one operand feeds (row 1), from its adder plan and
    exact input interval."""
    from . import adders

    op = op_of(layer)
    if not isinstance(op, WeightedOp):
        raise IRError(f"layer {layer.name!r} ({op.op}): only conv2d and linear lanes have adder stages to time")
    bounds = op.tree_bounds(layer, *info.in_bounds)
    ag = shared_adder_graph(layer.q.codes, layer.bias_int, op.depthwise(layer), in_bounds=bounds,
                            terms=layer.q.terms)
    plan = ag.plan
    vals = adders.node_bounds(plan, bounds)
    lv = np.asarray(plan.levels)
    width_at = np.zeros(ag.depth + 1, dtype=np.int64)
    for node in range(plan.n_in, len(vals)):
        width_at[lv[node]] = max(width_at[lv[node]], sint_width(*vals[node]))
    reads: dict[tuple[int, int], int] = {}  # (level, operand) -> adders of that level reading it
    for j, (a, _, b, _, _) in enumerate(plan.sums.tolist()):
        level = int(lv[plan.n_in + j])
        for o in (a, b):
            reads[level, o] = reads.get((level, o), 0) + 1
    for node, b in final_bounds(plan, vals, np.asarray(layer.bias_int).astype(np.int64)):
        width_at[ag.depth] = max(width_at[ag.depth], sint_width(*b))
        reads[ag.depth, node] = reads.get((ag.depth, node), 0) + 1
    fan_at = np.ones(ag.depth + 1, dtype=np.int64)
    for (level, _), n in reads.items():
        fan_at[level] = max(fan_at[level], n)
    return np.stack([width_at, fan_at])


def stages_of(width_at: np.ndarray, levels_per_stage: int) -> list[Stage]:
    """The register stages of a lane whose levels have these widest adders (:func:`level_widths`), at
    ``levels_per_stage``, as the generator places them: after every ``levels_per_stage`` levels and after the
    last (ShiftAdd.scala, StageSchedule). The register at the lane's inputs, with no adder before it, starts the
    first of them and is not one of them (:func:`hashiflex.ops.base.pipeline_stages` counts it)."""
    depth = width_at.shape[1] - 1
    if depth == 0:
        return [Stage(0, 0)]
    cuts = sorted(set(range(levels_per_stage, depth + 1, levels_per_stage)) | {depth})
    out, prev = [], 0
    for c in cuts:
        out.append(Stage(c - prev, int(width_at[0, prev + 1:c + 1].max()), int(width_at[1, prev + 1:c + 1].max())))
        prev = c
    return out


def lane_stages(layer, info, levels_per_stage: int) -> list[Stage]:
    """The register stages of a conv/linear layer's lane at ``levels_per_stage``, each with its adder levels
    and widest adder."""
    return stages_of(level_widths(layer, info), levels_per_stage)


def features(s: Stage) -> np.ndarray:
    """What the model weighs: 1, log2(levels + 1), width, log2(fanout)."""
    return np.asarray([1.0, math.log2(s.levels + 1), float(s.width), math.log2(max(1, s.fanout))])


@dataclass(frozen=True)
class StageTimingModel:
    c0: float
    c_level: float              # ps per doubling of (adder levels + 1)
    c_bit: float                # ps per bit of the widest adder
    c_fanout: float = 0.0       # ps per doubling of the largest fanout (the buffer tree it needs)
    rms_error_ps: float = 0.0   # of the fit, on its points
    max_error_ps: float = 0.0
    max_under_ps: float = 0.0   # the most a synthesized lane was slower than predicted (levels_for_clock's margin)
    points: int = 0
    source: str = ""            # what it was fitted on

    def stage_ps(self, s: Stage) -> float:
        return float(np.dot(self.coefficients, features(s)))

    @property
    def coefficients(self) -> np.ndarray:
        return np.asarray([self.c0, self.c_level, self.c_bit, self.c_fanout])

    def lane_ps(self, stages: list[Stage]) -> float:
        """The predicted period of a lane: its slowest stage's."""
        return max(self.stage_ps(s) for s in stages)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict, where: str = "stage timing model") -> "StageTimingModel":
        try:
            m = StageTimingModel(**{k: d[k] for k in ("c0", "c_level", "c_bit", "c_fanout")},
                                 **{k: d[k] for k in ("rms_error_ps", "max_error_ps", "max_under_ps", "points",
                                                      "source") if k in d})
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: expected c0, c_level, c_bit and c_fanout (ps, ps per doubling of adder "
                             f"levels + 1, ps per bit, ps per doubling of the fanout), "
                             f"found {sorted(d) if isinstance(d, dict) else d!r}") from e
        cs = (m.c0, m.c_level, m.c_bit, m.c_fanout)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in cs):
            raise ValueError(f"{where}: coefficients must be finite numbers, found {cs}")
        if m.c_level <= 0:
            raise ValueError(f"{where}: c_level must be positive (a stage with more adder levels is slower), "
                             f"found {m.c_level}")
        return m


def load(path: str | Path | None = None) -> StageTimingModel:
    """A fitted model (JSON); None: the packaged one (fitted on MobileNetV2's synthesized lanes)."""
    if path is None:
        text = resources.files("hashiflex").joinpath("stage_timing.json").read_text()
        where = "hashiflex/stage_timing.json"
    else:
        text = Path(path).read_text()
        where = str(path)
    return StageTimingModel.from_json(json.loads(text), where)


def fit(points: list[tuple[list[Stage], float]], source: str = "", rounds: int = 20) -> StageTimingModel:
    """Least squares over synthesized lanes (their stages, measured period in ps), slopes kept non-negative (a
    feature whose slope comes out negative is dropped and the rest refitted). A lane's period is its slowest
    stage's, which depends on the coefficients: start from the stage with the most levels (the widest, then the
    most fanout, among those), fit, take each lane's slowest stage under that fit, and fit again, ``rounds``
    times or until the choice settles."""
    if len(points) < 4:
        raise ValueError(f"fit: need at least 4 synthesized lanes (4 coefficients), found {len(points)}")
    y = np.asarray([ps for _, ps in points], dtype=np.float64)
    crit = [max(st, key=lambda s: (s.levels, s.width, s.fanout)) for st, _ in points]
    model = None
    for _ in range(rounds):
        a = np.asarray([features(s) for s in crit])
        keep = np.ones(a.shape[1], dtype=bool)
        while True:  # a negative slope (more levels, bits or fanout faster) is collinearity, not physics: drop it
            coef = np.zeros(a.shape[1])
            coef[keep] = np.linalg.lstsq(a[:, keep], y, rcond=None)[0]
            neg = [i for i in range(1, len(coef)) if keep[i] and coef[i] < 0]
            if not neg:
                break
            keep[min(neg, key=lambda i: coef[i])] = False
        model = StageTimingModel(*map(float, coef))
        nxt = [max(st, key=model.stage_ps) for st, _ in points]
        if nxt == crit:
            break
        crit = nxt
    err = np.asarray([model.lane_ps(st) for st, _ in points]) - y
    return StageTimingModel(model.c0, model.c_level, model.c_bit, model.c_fanout,
                            rms_error_ps=float(np.sqrt((err ** 2).mean())), max_error_ps=float(np.abs(err).max()),
                            max_under_ps=float(max(0.0, -err.min())), points=len(points), source=source)


def levels_for_clock(g: Graph, period_ps: float, model: StageTimingModel | None = None,
                     margin_ps: float | None = None) -> tuple[dict[str, int], dict[str, float]]:
    """Adder levels per stage for every conv/linear layer: the most (fewest registers; at most the lane's adder
    depth, where it is one stage) whose predicted period, plus ``margin_ps`` (default: the most a synthesized lane
    was slower than the model predicted), meets ``period_ps``; one level where even that misses. Returns (levels per layer, predicted period per layer in
    ps)."""
    model = model or load()
    if not period_ps > 0:
        raise ValueError(f"period_ps: expected a positive clock period, found {period_ps}")
    margin = model.max_under_ps if margin_ps is None else margin_ps
    levels, predicted = {}, {}
    for layer, info in zip(g.layers, annotate(g)):
        if not isinstance(op_of(layer), WeightedOp):
            continue
        widths = level_widths(layer, info)
        depth = max(1, widths.shape[1] - 1)  # more levels per stage than the lane has change nothing
        best = 1
        for lps in range(1, min(MAX_LEVELS, depth) + 1):
            if model.lane_ps(stages_of(widths, lps)) + margin <= period_ps:
                best = lps
        levels[layer.name] = best
        predicted[layer.name] = model.lane_ps(stages_of(widths, best))
    return levels, predicted
