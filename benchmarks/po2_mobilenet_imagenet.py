"""Po2 post-training quantization of a real pretrained MobileNetV2-1.0-224 on real ImageNet images: accuracy
against the float model vs adders, for one-term, multi-term and per-layer ("auto") term counts.

Calibrates on the first ``--calib`` images of the folder (sorted order; no labels used) and reports on the rest.
Each point: top-1/top-5 of the fake-quant model (float64; equal to the integer golden model exactly, which this
script checks on the golden images of every point, and runs on all report images for ``--golden`` points), the
top-1 agreement with the float model, and the adders of the design from the generator's adder-graph plan (one
pixel per beat). Results: benchmarks/results/po2_mobilenet_imagenet.json and the accuracy-vs-adders plot (.png).

    python benchmarks/po2_mobilenet_imagenet.py [--padding torch|tf] [--calib 64] [--images 436]
        [--budgets 1.25,1.5,1.75,2,2.5] [--max-terms 3] [--fixed 1,2,3] [--rounding nearest|reconstruct]
        [--act-range max|mse] [--out FILE.json]

``--rounding reconstruct`` rounds each layer's weights against its inputs on the calibration images
(:mod:`hashiflex.quant.reconstruct`, what ``hashiflex quantize`` does by default); the per-layer sensitivity of
the auto points is then measured with that rounding too, on calibration images the rounding did not see (two
folds of 16, :func:`hashiflex.flow.calibration_hessians`).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "models/mobilenet_v2_coral/mobilenet_v2_coral.pth")
    ap.add_argument("--data", type=Path, default=SHARED / "data/imagenet-dev")
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--images", type=int, default=436, help="report images after the calibration ones")
    ap.add_argument("--padding", choices=["torch", "tf"], default="torch",
                    help="conv padding: torchvision's, or TensorFlow 'SAME' (what the Coral weights were trained with)")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--edge-bits", type=int, default=8)
    ap.add_argument("--max-terms", type=int, default=3)
    ap.add_argument("--budgets", default="1.25,1.5,1.75,2,2.5",
                    help="auto points: adder budgets as multiples of the one-term design's adders")
    ap.add_argument("--fixed", default=None, help="the same-terms-everywhere points to run (default: 1..max-terms)")
    ap.add_argument("--rounding", choices=["nearest", "reconstruct"], default="nearest")
    ap.add_argument("--act-range", choices=["max", "mse"], default="max",
                    help="activation scales: covering the calibration maximum, or by squared error")
    ap.add_argument("--damage", choices=["held-out", "in-sample"], default="held-out",
                    help="with --rounding reconstruct: the term sensitivity measured on calibration images the "
                    "rounding did not see (what hashiflex quantize does), or on 16 it was fitted to (the old "
                    "measure, for comparison)")
    ap.add_argument("--golden-images", type=int, default=32, help="images the golden model runs on at each point")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/po2_mobilenet_imagenet.json")
    args = ap.parse_args()

    from tqdm.auto import tqdm

    from hashiflex import ref
    from hashiflex.flow import Config, calibrated_pretrained, calibration_hessians
    from hashiflex.imagenet import ImageFolder
    from hashiflex.passes import hw_model, quantize_weights
    from hashiflex.quant.fakequant import FakeQuantNet
    from hashiflex.quant.reconstruct import reconstruct
    from hashiflex.quant.terms import allocate, held_out_damage, layer_costs, layer_damage, quantized_versions

    t0 = time.perf_counter()
    cfg = Config(dataset="imagefolder", data_root=str(args.data), arch="mobilenet_v2", init=str(args.weights),
                 padding=args.padding, calib_images=args.calib, weight_bits=args.bits, edge_bits=args.edge_bits,
                 act_range=args.act_range)
    g, calib, bits = calibrated_pretrained(cfg)
    inp = g.input
    report = ImageFolder(args.data, start=args.calib, limit=args.images)
    x_rep, y_rep = report.arrays()
    x_val = x_rep * 2.0 ** inp.type.exp
    print(f"calibrated on {len(calib)} images, reporting on {len(report)} ({time.perf_counter() - t0:.0f} s)")

    def logits(net, dtype, xs):
        out = []
        with torch.no_grad():
            for i in range(0, len(xs), 8):
                out.append(net(torch.as_tensor(xs[i:i + 8], dtype=dtype)).double().numpy())
        return np.concatenate(out)

    def topk(lg, k):
        return float((np.argsort(-lg, 1, kind="stable")[:, :k] == y_rep[:, None]).any(1).mean())

    f_logits = logits(FakeQuantNet(g, quantize=False).float().eval(), torch.float32, x_val)
    f_top1 = f_logits.argmax(1)
    points = [{"name": "float", "top1": topk(f_logits, 1), "top5": topk(f_logits, 5), "agreement": 1.0,
               "adders": None}]
    print(f"float: top-1 {100 * points[0]['top1']:.2f} %")

    t = time.perf_counter()
    h = folds = None  # reconstruct: the Hessians of every calibration image, and two held-out folds for the damage
    if args.rounding == "reconstruct":
        h, folds = calibration_hessians(g, calib, cfg, held_out=True, progress=True)
    t_h = time.perf_counter() - t

    def quantize(terms):
        q = quantize_weights(g, bits, terms)
        return q if h is None else reconstruct(g, q, h=h)

    t = time.perf_counter()
    versions = quantized_versions(g, bits, args.max_terms, h, progress=True)
    costs = layer_costs(g, bits, args.max_terms, quantized=versions)
    if folds is None or args.damage == "in-sample":  # the damage on the first 16 calibration images
        x_sens = calib.arrays()[0][:16] * 2.0 ** inp.type.exp
        damage = layer_damage(g, bits, args.max_terms, x_sens, progress=True, quantized=versions)
    else:  # measured on calibration images the rounding did not see (hashiflex.quant.terms.Fold)
        damage = held_out_damage(g, bits, args.max_terms, folds, progress=True)
    t_sens = time.perf_counter() - t
    names = [l.name for l in g.layers if hasattr(l, "weight")]
    one = sum(costs[(n, 1)] for n in names)

    fixed = [int(v) for v in args.fixed.split(",")] if args.fixed else range(1, args.max_terms + 1)
    configs = [(f"{k} term{'s' * (k > 1)}", {n: k for n in names}) for k in fixed]
    choices = {n: tuple(range(1, args.max_terms + 1)) for n in names}
    for b in [float(v) for v in args.budgets.split(",")]:
        configs.append((f"auto {b:g}x", allocate(costs, damage, int(b * one), choices)))

    for name, terms in tqdm(configs, desc="points"):
        t = time.perf_counter()
        q = quantize(terms)
        qnet = FakeQuantNet(q).double().eval()
        lg = logits(qnet, torch.float64, x_val)
        n_gold = min(args.golden_images, len(x_rep))
        gold = ref.run(q, x_rep[:n_gold])
        exact = bool(np.array_equal(gold, lg[:n_gold] / 2.0 ** ref.output_exp(q)))
        adders = int(sum(m.adders for m in hw_model(q, 4) if m.op in ("conv2d", "linear")))
        k = np.array([terms[n] for n in names])
        p = {"name": name, "top1": topk(lg, 1), "top5": topk(lg, 5), "agreement": float((lg.argmax(1) == f_top1).mean()),
             "adders": adders, "adders_vs_one_term": adders / one, "golden_images_checked": n_gold,
             "golden_equals_fake_quant": exact, "terms_histogram": {str(v): int((k == v).sum()) for v in range(1, 5)},
             "terms": terms, "seconds": time.perf_counter() - t}
        points.append(p)
        print(f"{name:>12}: top-1 {100 * p['top1']:.2f} %  top-5 {100 * p['top5']:.2f} %  agree "
              f"{100 * p['agreement']:.1f} %  adders {adders:,} ({adders / one:.2f}x)  golden==fq {exact}")
        if not exact:
            raise SystemExit(f"{name}: the golden model and fake-quant differ: the ladder is broken")

    res = {"model": args.weights.name, "data": args.data.name, "calibration_images": len(calib),
           "report_images": {"count": len(report), "first": args.calib, "selection": "sorted ImageFolder order"},
           "bits": args.bits, "edge_bits": args.edge_bits, "padding": {"torch": "torchvision (symmetric)", "tf": "TF 'SAME'"}[args.padding],
           "preprocess": "inception (x-128)/128", "sensitivity_seconds": t_sens,
           "rounding": args.rounding, "act_range": args.act_range, "damage": args.damage, "hessian_seconds": t_h,
           "seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "command": f"python benchmarks/po2_mobilenet_imagenet.py --padding {args.padding} --calib {args.calib} "
                      f"--images {args.images} "
                      f"--budgets {args.budgets} --max-terms {args.max_terms}"
                      + (f" --fixed {args.fixed}" if args.fixed else "") + f" --rounding {args.rounding}"
                      + f" --act-range {args.act_range} --damage {args.damage}"
                      + f" --out {args.out.name}",
           "one_term_adders": one, "points": points,
           "options": [{"layer": n, "terms": t, "adders": costs[(n, t)], "damage": damage[(n, t)]}
                       for n in names for t in range(1, args.max_terms + 1)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    fixed = [p for p in points[1:] if not p["name"].startswith("auto")]
    auto = [p for p in points[1:] if p["name"].startswith("auto")]
    ax.plot([p["adders"] / 1e6 for p in fixed], [100 * p["top1"] for p in fixed], "o-", label="same terms everywhere")
    ax.plot([p["adders"] / 1e6 for p in auto], [100 * p["top1"] for p in auto], "s-", label="auto (per layer)")
    for p in fixed + auto:
        ax.annotate(p["name"], (p["adders"] / 1e6, 100 * p["top1"]), fontsize=8, xytext=(3, -10),
                    textcoords="offset points")
    ax.axhline(100 * points[0]["top1"], color="k", ls="--", lw=1, label="float")
    ax.axhline(100 * points[0]["top1"] - 1, color="gray", ls=":", lw=1, label="float - 1 point")
    ax.set_xlabel("adders (millions, generator's plan, 1 pixel per beat)")
    ax.set_ylabel(f"top-1 % ({len(report)} ImageNet images)")
    ax.set_title(f"MobileNetV2-1.0-224 Po2 PTQ, {args.bits}-bit codes ({args.edge_bits} first/last), "
                 f"{args.padding} padding, {args.rounding} rounding")
    ax.legend()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
