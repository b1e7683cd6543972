"""Per-layer term counts under an adder budget (``--terms auto --adder-budget N``).

A layer whose weights are sums of k signed powers of two costs about k times the adders of one term and rounds
its weights far more finely; layers differ a lot in both (depthwise layers: few adders, very sensitive; pointwise
layers: most of the adders). For each conv/linear layer L and each k in 1..K this measures

* the **cost**: adders of L's hardware with k-term weights, from the generator's own adder-graph plan
  (:func:`hashiflex.passes.shared_adder_graph`, sharing included) times L's pixel lanes, and
* the **damage**: the mean squared error of the network's output (logits) against the float network on
  calibration images when only L's weights are k-term Po2 (everything else float).

With ``--rounding reconstruct`` both are those of the weights rounded against calibration data, and the damage
is measured on images that rounding has **not seen** (:class:`Fold`: the weights rounded against the Hessians of
the other calibration images, averaged over two folds). Measured on the images it was fitted to, a layer with
more inputs than samples looks harmless whatever its rounding: MobileNetV2's classifier (1,280 inputs, one sample
per image) at one term measured 2e-4 on images among those it was rounded against, 0.047 on held-out ones, and
costs 2 points of top-1.
The costs are those of the final rounding (every calibration image). The allocation then assumes
the damages add up (the usual first-order model of mixed-precision search) and chooses the k of every
layer greedily by damage removed per adder spent, within the budget. Layers left out of ``choices`` keep the
counts they are given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..ir import Conv2d, Graph, IRError, Linear
from .fakequant import FakeQuantNet, batches_of


@dataclass(frozen=True)
class TermOption:
    layer: str
    terms: int
    adders: int        # the layer's adders (all pixel lanes), sharing included
    damage: float      # output MSE vs float when only this layer is quantized with ``terms`` terms

    def to_json(self) -> dict:
        return asdict(self)


def quantized_versions(calibrated: Graph, bits, max_terms: int, h=None, progress: bool = False) -> dict[int, Graph]:
    """k -> ``calibrated`` with every layer's weights k-term Po2, k = 1 .. max_terms: rounded to nearest, or,
    given the layers' Hessians ``h`` (:func:`hashiflex.quant.reconstruct.hessians`), rounded against the
    calibration data (:func:`hashiflex.quant.reconstruct.reconstruct`)."""
    from .ptq import quantize_weights
    from .reconstruct import reconstruct

    out = {}
    for k in range(1, max_terms + 1):
        q = quantize_weights(calibrated, bits, k)
        out[k] = q if h is None else reconstruct(calibrated, q, h=h, progress=progress)
    return out


@dataclass(frozen=True)
class Fold:
    """Images the damage is measured on (value domain) and the layers' Hessians of the *other* calibration images
    (:func:`hashiflex.quant.reconstruct.hessians`), which the weights are rounded against for the measurement."""
    x_value: np.ndarray
    h: dict


def sum_hessians(*parts: dict) -> dict:
    """The Hessians of the union of disjoint image sets: H = Σ x x^T adds up over images."""
    if not parts:
        raise IRError("sum_hessians: no Hessians to add")
    names = set(parts[0])
    for p in parts[1:]:
        if set(p) != names:
            raise IRError(f"sum_hessians: the parts hold different layers ({sorted(names ^ set(p))})")
    return {n: sum((p[n] for p in parts[1:]), parts[0][n].clone()) for n in parts[0]}


def layer_costs(calibrated: Graph, bits, max_terms: int, target_ii: int | None = None,
                quantized: dict[int, Graph] | None = None) -> dict[tuple[str, int], int]:
    """(layer, k) -> adders of that layer with k-term weights (the generator's plan, all lanes); ``quantized``:
    the k-term graphs to count (default: :func:`quantized_versions`, nearest rounding)."""
    from ..hwmodel import hw_model

    quantized = quantized or quantized_versions(calibrated, bits, max_terms)
    out = {}
    for k in range(1, max_terms + 1):
        q = quantized[k]
        for m in hw_model(q, 4, target_ii):
            if m.op in ("conv2d", "linear"):
                out[(m.name, k)] = m.adders
    return out


@torch.no_grad()
def layer_damage(calibrated: Graph, bits, max_terms: int, x_value, batch: int = 16,
                 progress: bool = False, quantized: dict[int, Graph] | None = None) -> dict[tuple[str, int], float]:
    """(layer, k) -> output MSE against the float network, only that layer's weights k-term Po2 (float32);
    ``quantized``: the k-term graphs (default: :func:`quantized_versions`, nearest rounding)."""
    from tqdm.auto import tqdm

    xs = [torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in batches_of(x_value, batch)]
    ref_net = FakeQuantNet(calibrated, quantize=False).float().eval()
    ref_out = [ref_net(x) for x in xs]
    quantized = quantized or quantized_versions(calibrated, bits, max_terms)
    idx = [i for i, l in enumerate(calibrated.layers) if isinstance(l, (Conv2d, Linear))]
    out = {}
    with tqdm(total=len(idx) * max_terms, desc="term sensitivity", disable=not progress, leave=False) as bar:
        for i in idx:
            name = calibrated.layers[i].name
            for k, q in quantized.items():
                g = calibrated.copy()
                g.layers[i] = replace(g.layers[i], weight=q.layers[i].q.float_weights())
                net = FakeQuantNet(g, quantize=False).float().eval()
                se = n = 0.0
                for x, fy in zip(xs, ref_out):
                    se += float(((net(x) - fy).double() ** 2).sum())
                    n += fy.numel()
                out[(name, k)] = se / max(n, 1)
                bar.update()
    return out


def held_out_damage(calibrated: Graph, bits, max_terms: int, folds: list[Fold], batch: int = 16,
                    progress: bool = False) -> dict[tuple[str, int], float]:
    """(layer, k) -> :func:`layer_damage` of the weights rounded against calibration data, measured on images the
    rounding did not see, averaged over ``folds``."""
    if not folds:
        raise IRError("held_out_damage: no folds (images and the Hessians without them)")
    total: dict[tuple[str, int], float] = {}
    for f in folds:
        versions = quantized_versions(calibrated, bits, max_terms, f.h, progress)
        for key, v in layer_damage(calibrated, bits, max_terms, f.x_value, batch, progress, versions).items():
            total[key] = total.get(key, 0.0) + v / len(folds)
    return total


def allocate(costs: dict[tuple[str, int], int], damage: dict[tuple[str, int], float], budget: int,
             choices: dict[str, tuple[int, ...]], start: dict[str, int] | None = None) -> dict[str, int]:
    """Greedy allocation: from ``start`` (default: the fewest terms of each layer's ``choices``), repeatedly move
    the one layer whose next larger choice removes the most damage per extra adder and still fits ``budget``
    (the total of every layer's adders). Raises when even the start does not fit."""
    k = dict(start or {n: min(c) for n, c in choices.items()})
    total = sum(costs[(n, t)] for n, t in k.items())
    if total > budget:
        raise IRError(f"--adder-budget {budget}: the fewest terms allowed already need {total} adders")
    while True:
        best = None
        for n, opts in choices.items():
            for t in opts:
                if t <= k[n]:
                    continue
                extra = costs[(n, t)] - costs[(n, k[n])]
                gain = damage[(n, k[n])] - damage[(n, t)]
                if gain <= 0 or total + extra > budget:
                    continue
                score = gain / max(extra, 1)
                if best is None or score > best[0]:
                    best = (score, n, t, extra)
        if best is None:
            return k
        _, n, t, extra = best
        k[n] = t
        total += extra


def choose_terms(calibrated: Graph, bits, x_value, max_terms: int = 3, budget: int | None = None,
                 target_ii: int | None = None, batch: int = 16, progress: bool = False,
                 fixed: dict[str, int] | None = None, h=None,
                 folds: list[Fold] | None = None) -> tuple[dict[str, int], list[TermOption]]:
    """Term counts per layer within ``budget`` adders (default: what 2 terms everywhere would cost), with the
    measured options. ``fixed``: layers whose count is given (e.g. the first layer at 8 bits).

    Nearest rounding (``h`` None): the damage is measured on ``x_value``. Rounding against calibration data:
    ``h`` the layers' Hessians of every calibration image (the costs are those of that final rounding) and
    ``folds`` the held-out measurements (:class:`Fold`; ``x_value`` is then unused)."""
    if max_terms < 1:
        raise IRError(f"--max-terms: expected at least 1, found {max_terms}")
    if h is not None and not folds:
        raise IRError("choose_terms: with weights rounded against calibration data (h), the damage must be "
                      "measured on held-out images: pass folds (images and the Hessians without them)")
    quantized = quantized_versions(calibrated, bits, max_terms, h, progress)
    costs = layer_costs(calibrated, bits, max_terms, target_ii, quantized)
    if h is None:
        damage = layer_damage(calibrated, bits, max_terms, x_value, batch, progress, quantized)
    else:
        damage = held_out_damage(calibrated, bits, max_terms, folds, batch, progress)
    names = [l.name for l in calibrated.layers if isinstance(l, (Conv2d, Linear))]
    if budget is None:
        budget = sum(costs[(n, min(2, max_terms))] for n in names)
    fixed = fixed or {}
    choices = {n: ((fixed[n],) if n in fixed else tuple(range(1, max_terms + 1))) for n in names}
    k = allocate(costs, damage, budget, choices)
    opts = [TermOption(n, t, costs[(n, t)], damage[(n, t)]) for n in names for t in range(1, max_terms + 1)]
    return k, opts
