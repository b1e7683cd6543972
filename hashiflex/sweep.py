"""Sensitivity sweeps: accuracy (golden model) and hardware cost vs weight bits and sparsity."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import hwmodel, ref
from .quant import ptq
from .data import Dataset
from .ir import Graph
from .quant.prune import prune, weight_sparsity
from .train import train_qat


@dataclass(frozen=True)
class SweepPoint:
    bits: int
    sparsity: float
    accuracy: float
    weight_sparsity: float
    adders: int
    finetuned: bool


def sweep_point(g: Graph, ds: Dataset, bits: int, sparsity: float, finetune_epochs: int = 0, scope: str = "layer",
                levels_per_stage: int = 4, seed: int = 0) -> SweepPoint:
    """One point: magnitude-prune the calibrated float graph to ``sparsity``, Po2-quantize at ``bits``
    (optionally after ``finetune_epochs`` of QAT with the pruning schedule, seeded by ``seed`` so a point is the
    same wherever and in whatever order it runs), the golden model's test accuracy and the generator's adders."""
    import torch

    torch.manual_seed(seed)
    if finetune_epochs > 0:
        fg = train_qat(g, ds, bits, finetune_epochs, sparsity=sparsity, scope=scope, progress=False)
    else:
        fg = prune(g, sparsity, scope) if sparsity > 0 else g
    q = ptq.quantize_weights(fg, bits)
    acc = float((ref.run(q, ds.x_test).argmax(1) == ds.y_test).mean())
    adders = sum(h.adders for h in hwmodel.hw_model(q, levels_per_stage))
    return SweepPoint(bits, sparsity, acc, weight_sparsity(q), adders, finetune_epochs > 0)


def sweep(g: Graph, ds: Dataset, bits: list[int], sparsities: list[float], finetune_epochs: int = 0,
          scope: str = "layer", levels_per_stage: int = 4, progress: bool = True, address: str | None = None,
          jobs: int | None = None, cache: Path | None = None, seed: int = 0) -> list[SweepPoint]:
    """Every (bits, sparsity) point of the grid (:func:`sweep_point`), in grid order. The points are independent
    jobs fanned out on Ray (:func:`hashiflex.fanout.run_jobs`: local with ``jobs`` at once by default, a cluster
    by ``address``). With ``cache`` (a JSON-lines file), each point is written there as it finishes, keyed by the
    graph's and the dataset's content and the settings: a stopped sweep resumes, a finished one is read back."""
    import hashlib
    import json
    import pickle

    from .fanout import run_jobs

    for b in bits:
        if not isinstance(b, int) or not 2 <= b <= 8:
            raise ValueError(f"sweep: bits: expected integers from 2 to 8, found {b!r}")
    for sp in sparsities:
        if not 0.0 <= sp < 1.0:
            raise ValueError(f"sweep: sparsity: expected values in [0, 1), found {sp!r}")
    grid = [(b, s) for b in bits for s in sparsities]
    h = hashlib.sha256(pickle.dumps((g, ds.name, ds.input, ds.classes)))
    for arr in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(arr).tobytes())
    digest = h.hexdigest()[:16]

    def key(b, s):
        return json.dumps([digest, b, s, finetune_epochs, scope, levels_per_stage, seed])

    done: dict[str, SweepPoint] = {}
    if cache is not None and Path(cache).exists():
        for line in Path(cache).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = SweepPoint(**rec["point"])
    todo = [(b, s) for b, s in grid if key(b, s) not in done]
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
    args = [(b, s, finetune_epochs, scope, levels_per_stage, seed) for b, s in todo]
    for i, point in run_jobs(sweep_point, args, address=address, jobs=jobs, desc="sweep", progress=progress,
                             shared=(g, ds)):
        done[key(*todo[i])] = point
        if cache is not None:  # one line per finished point, appended whole
            with open(cache, "a") as f:
                f.write(json.dumps({"key": key(*todo[i]), "point": point.__dict__}) + "\n")
    return [done[key(b, s)] for b, s in grid]


def pareto_front(points: list[SweepPoint]) -> list[SweepPoint]:
    """The points no other point beats on both axes (at least as accurate with fewer adders, or more accurate
    with as few), sorted by adders: the designs worth building."""
    front = [p for p in points
             if not any((q.adders <= p.adders and q.accuracy > p.accuracy)
                        or (q.adders < p.adders and q.accuracy >= p.accuracy) for q in points)]
    return sorted(front, key=lambda p: (p.adders, p.accuracy))


def write_csv(points: list[SweepPoint], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bits", "sparsity", "accuracy", "weight_sparsity", "adders", "finetuned"])
        for p in points:
            w.writerow([p.bits, p.sparsity, f"{p.accuracy:.4f}", f"{p.weight_sparsity:.4f}", p.adders, p.finetuned])
    return path


def read_csv(path: Path) -> list[SweepPoint]:
    with open(path, newline="") as f:
        return [SweepPoint(int(r["bits"]), float(r["sparsity"]), float(r["accuracy"]), float(r["weight_sparsity"]),
                           int(r["adders"]), r["finetuned"] == "True") for r in csv.DictReader(f)]


def plot(points: list[SweepPoint], path: Path, title: str = "", float_accuracy: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for b in sorted({p.bits for p in points}):
        ps = sorted((p for p in points if p.bits == b), key=lambda p: p.sparsity)
        a1.plot([100 * p.sparsity for p in ps], [100 * p.accuracy for p in ps], "o-", label=f"{b}-bit Po2")
        a2.plot([p.adders for p in ps], [100 * p.accuracy for p in ps], "o-", label=f"{b}-bit Po2")
    front = pareto_front(points)
    a2.step([p.adders for p in front], [100 * p.accuracy for p in front], "k-", where="post", lw=1.5, alpha=0.6,
            label="Pareto front")
    for p in front:
        a2.annotate(f"{p.bits}b/{100 * p.sparsity:.0f}%", (p.adders, 100 * p.accuracy), fontsize=7,
                    xytext=(3, -9), textcoords="offset points")
    for ax in (a1, a2):
        if float_accuracy is not None:
            ax.axhline(100 * float_accuracy, color="k", ls="--", lw=1, label="float")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    a1.set_xlabel("target sparsity (%)")
    a2.set_xlabel("adders in the hardened pipeline")
    a2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
