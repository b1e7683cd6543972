"""Adders and planner time: hashiflex's adder-graph planner (hashiflex.adders) against da4ml (``da4ml.cmvm.solve``,
its defaults) on the same constant matrices, measured in one run.

Matrices: seeded random Po2 matrices (exponents -6..0, random signs, optionally 50 % zeros) and real layers of the
shared ImageNet MobileNetV2 (5-bit one-term Po2 of its weights, and one 3-term layer). Two-input adders only,
shifts free, bias adds excluded on both sides; both plans are checked to compute the matrix exactly (ours by
expanding every output, da4ml's by running its solution on random integer inputs).

    python benchmarks/adders_vs_da4ml.py [--weights ../shared/models/mobilenet_v2_coral/mobilenet_v2_coral.pth] \\
        [--da4ml-timeout 600] [--only NAME ...] [--out adders_vs_da4ml.json]

Writes benchmarks/results/adders_vs_da4ml.{json,png} (after every matrix, so a long run keeps what it measured).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import numpy as np

from hashiflex import adders

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "models" / "mobilenet_v2_coral" / \
    "mobilenet_v2_coral.pth"

RANDOM = [("16x16 dense", 16, 16, 0.0), ("64x64, 50 % zero", 64, 64, 0.5), ("144x24 dense", 144, 24, 0.0),
          ("384x64, 50 % zero", 384, 64, 0.5), ("576x96, 50 % zero", 576, 96, 0.5)]
# (name, state_dict key, terms): MobileNetV2's first conv (32 x 27 window), a 14x14 expand and a 7x7 project
REAL = [("MobileNetV2 conv 3x3 32x27", "features.0.0.weight", 1),
        ("MobileNetV2 pointwise 64->384", "features.8.conv.0.0.weight", 1),
        ("MobileNetV2 pointwise 576->160", "features.14.conv.2.weight", 1),
        ("MobileNetV2 pointwise 64->384, 3 terms", "features.8.conv.0.0.weight", 3)]


def po2_matrix(n_in: int, n_out: int, zero: float, seed: int) -> np.ndarray:
    """Integer (n_out, n_in): +-2**e, e in 0..6 (the exponents -6..0 scaled by 2**6), a fraction ``zero`` zeroed."""
    rng = np.random.default_rng(seed)
    w = rng.choice([-1, 1], size=(n_out, n_in)) << rng.integers(0, 7, size=(n_out, n_in))
    w[rng.random((n_out, n_in)) < zero] = 0
    return w.astype(np.int64)


def real_matrix(weights: Path, key: str, terms: int) -> np.ndarray:
    """A layer of the shared MobileNetV2 as the integer matrix (out, in*k*k) its 5-bit Po2 codes give."""
    import torch

    from hashiflex.quant.po2 import quantize_po2, quantize_po2_terms

    w = torch.load(weights, map_location="cpu", weights_only=True)[key].numpy().astype(np.float64)
    codes = quantize_po2(w, 5)[0][None] if terms == 1 else quantize_po2_terms(w, 5, terms)[0]
    v = (np.sign(codes) * (1 << np.maximum(np.abs(codes) - 1, 0)) * (codes != 0)).sum(axis=0)
    return v.reshape(v.shape[0], -1).astype(np.int64)


def _da4ml_job(w: np.ndarray, q) -> None:
    from da4ml.cmvm import solve

    t = time.perf_counter()
    p = solve(np.ascontiguousarray(w.T, dtype=np.float32))  # (in, out); the binary ignores strides
    dt = time.perf_counter() - t
    ops = [op for sol in p.solutions for op in sol.ops]
    x = np.random.default_rng(0).integers(-64, 64, size=(4, w.shape[1])).astype(np.float64)
    exact = bool(np.array_equal(np.stack([p(xi) for xi in x]), x @ w.T))
    q.put({"adders": sum(op.opcode in (0, 1) for op in ops), "seconds": dt, "exact": exact,
           "latency": float(p.latency[1]) if hasattr(p, "latency") else None})


def run_da4ml(w: np.ndarray, timeout: float) -> dict:
    """da4ml's solve with its defaults, in a child process stopped after ``timeout`` seconds."""
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_da4ml_job, args=(w, q))
    t = time.perf_counter()
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.terminate()
        p.join()
        return {"adders": None, "seconds": None, "timeout": timeout}
    r = q.get() if not q.empty() else {"adders": None, "seconds": None, "error": f"exit {p.exitcode}"}
    r["wall_seconds"] = time.perf_counter() - t
    return r


def run_da4ml_blocks(w: np.ndarray, blocks: int, timeout: float) -> dict:
    """da4ml on ``blocks`` contiguous input blocks of ``w``, each solved alone, plus the adders that sum each
    output's block results: da4ml's figure with sharing within blocks only, an upper bound of its full solve (the
    issue's way of getting a da4ml figure on a layer its full solve does not finish)."""
    edges = np.linspace(0, w.shape[1], blocks + 1).round().astype(int)
    parts = [run_da4ml(w[:, lo:hi], timeout) for lo, hi in zip(edges[:-1], edges[1:])]
    if any(p.get("adders") is None for p in parts):
        return {"adders": None, "blocks": blocks, "timeout": timeout}
    nonempty = np.stack([(w[:, lo:hi] != 0).any(1) for lo, hi in zip(edges[:-1], edges[1:])], 1).sum(1)
    return {"adders": sum(p["adders"] for p in parts) + int(np.maximum(nonempty - 1, 0).sum()), "blocks": blocks,
            "seconds": sum(p["seconds"] for p in parts), "exact": all(p["exact"] for p in parts),
            "latency": max(p["latency"] for p in parts) + int(np.ceil(np.log2(blocks)))}


def run_ours(w: np.ndarray, repeats: int = 5) -> dict:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        plan = adders.plan_matrix(w)
        ts.append(time.perf_counter() - t)
    exact = bool(np.array_equal(plan.weights().astype(np.int64), w))
    return {"adders": int(len(plan.sums)), "seconds": min(ts), "depth": plan.depth(), "exact": exact,
            "negative_roots": int(plan.roots[:, 2].sum())}


def naive(w: np.ndarray) -> int:
    """Every output summed on its own over its signed digits."""
    return adders.naive_adders(adders.matrix_terms(w)[0])


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["matrix"] for r in rows]
    x = np.arange(len(rows))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for off, key, label in ((-0.27, "naive", "each output alone"), (0, "hashiflex", "hashiflex"),
                            (0.27, "da4ml", "da4ml")):
        v = [(r[key] if key == "naive" else r[key]["adders"]) or 0 for r in rows]
        a1.bar(x + off, v, 0.27, label=label)
    a1.set_yscale("log")
    a1.set_ylabel("two-input adders")
    a1.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    a1.legend()
    ratio = [r["ratio_adders"] or np.nan for r in rows]
    speed = [r["speedup"] or np.nan for r in rows]
    a2.bar(x - 0.2, ratio, 0.4, label="adders hashiflex / da4ml")
    a2.axhline(1.0, color="k", lw=0.8)
    finite = [v for v in ratio if v == v]
    if finite:  # the ratios sit within a few percent of 1: show that range
        a2.set_ylim(min(finite) - 0.01, max(max(finite), 1.0) + 0.01)
    a2.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    a2.set_ylabel("adders ratio")
    a3 = a2.twinx()
    a3.bar(x + 0.2, speed, 0.4, color="tab:green", label="planner speed-up over da4ml")
    a3.set_yscale("log")
    a3.set_ylabel("time da4ml / hashiflex")
    a2.legend(loc="upper left", fontsize=8)
    a3.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=SHARED_WEIGHTS, help="torchvision MobileNetV2 state_dict")
    ap.add_argument("--da4ml-timeout", type=float, default=600.0, help="seconds per da4ml solve")
    ap.add_argument("--only", nargs="*", default=None,
                    help="matrix names (substrings) to run; the other rows of an existing --out are kept")
    ap.add_argument("--out", default="adders_vs_da4ml.json")
    ap.add_argument("--da4ml-blocks", type=int, default=0,
                    help="where da4ml's full solve times out, also solve it in this many input blocks (an upper "
                         "bound of its adders; the ratio is then against that bound and says so)")
    ap.add_argument("--reuse-da4ml", action="store_true",
                    help="take da4ml's figures from the existing --out where the matrix is the same (its SHA-1), "
                         "instead of solving again (da4ml is deterministic; its time is the earlier run's); an "
                         "earlier time-out is kept when its limit was at least --da4ml-timeout")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    adders.plan_matrix(np.array([[1, 2], [3, 1]]))  # compile (or load) the kernel once
    compile_s = time.perf_counter() - t
    mats = [(name, lambda n=n, o=o, z=z, k=k: po2_matrix(n, o, z, k))
            for k, (name, n, o, z) in enumerate(RANDOM)]
    if args.weights.exists():
        mats += [(name, lambda key=key, t=t: real_matrix(args.weights, key, t)) for name, key, t in REAL]
    else:
        print(f"{args.weights} not found: the real MobileNetV2 layers are skipped")
    all_mats = list(mats)
    if args.only:
        mats = [m for m in mats if any(s in m[0] for s in args.only)]
    RESULTS.mkdir(exist_ok=True)
    rows = []
    earlier = json.loads((RESULTS / args.out).read_text())["rows"] if (RESULTS / args.out).exists() else []
    kept = []  # with --only: the other matrices' rows of an earlier run of the same file are kept, in order
    if args.only and (RESULTS / args.out).exists():
        ran = {m[0] for m in mats}
        kept = [r for r in earlier if r["matrix"] not in ran]
    out = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
                      f"{mp.cpu_count()} cores)", "planner_compile_seconds": compile_s,
           "command": " ".join(["python benchmarks/adders_vs_da4ml.py"] + (argv if argv is not None else sys.argv[1:])),
           "rows": rows}
    print(f"{'matrix':<40} {'naive':>7} {'hashiflex':>9} {'da4ml':>7} {'ratio':>6} {'ours s':>8} {'da4ml s':>8}")
    for name, make in mats:
        w = make()
        sha = hashlib.sha1(np.ascontiguousarray(w, np.int64).tobytes() + str(w.shape).encode()).hexdigest()
        ours = run_ours(w)
        # a solution, or a time-out at a limit no shorter than this run's (it would time out again)
        old = next((r["da4ml"] for r in earlier if r.get("sha1") == sha and (
            r["da4ml"].get("adders") or (r["da4ml"].get("timeout") or 0) >= args.da4ml_timeout)), None)
        theirs = dict(old, reused=True) if args.reuse_da4ml and old else \
            dict(run_da4ml(w, args.da4ml_timeout), measured=time.strftime("%Y-%m-%d"))
        if args.da4ml_blocks > 1 and theirs.get("adders") is None and "timeout" in theirs:
            theirs["in_blocks"] = run_da4ml_blocks(w, args.da4ml_blocks, args.da4ml_timeout)
        if theirs.get("adders") is None and (theirs.get("in_blocks") or {}).get("adders"):
            theirs["adders_upper_bound"] = theirs["in_blocks"]["adders"]
        bound = theirs.get("adders") or theirs.get("adders_upper_bound")
        ratio = ours["adders"] / bound if bound else None
        speed = theirs["seconds"] / ours["seconds"] if theirs.get("seconds") else None
        rows.append({"matrix": name, "sha1": sha, "measured": time.strftime("%Y-%m-%d"), "shape": list(w.shape),
                     "nonzero": int(np.count_nonzero(w)), "naive": naive(w),
                     "hashiflex": ours, "da4ml": theirs, "ratio_adders": ratio, "speedup": speed})
        d = theirs.get("adders") or (f"<={theirs['adders_upper_bound']}" if theirs.get("adders_upper_bound") else None)
        print(f"{name:<40} {naive(w):>7} {ours['adders']:>9} {d if d is not None else '-':>7} "
              f"{ratio if ratio else float('nan'):>6.3f} {ours['seconds']:>8.3f} "
              f"{theirs['seconds'] if theirs.get('seconds') else float('nan'):>8.2f}"
              + ("" if ours["exact"] and theirs.get("exact", True) else "  NOT EXACT"))
        order = [m[0] for m in all_mats]
        out["rows"] = sorted(kept + rows, key=lambda r: order.index(r["matrix"]) if r["matrix"] in order else 99)
        (RESULTS / args.out).write_text(json.dumps(out, indent=1) + "\n")
        plot(out["rows"], RESULTS / Path(args.out).with_suffix(".png").name)
    return out


if __name__ == "__main__":
    main()
