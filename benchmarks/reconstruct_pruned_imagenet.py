"""Pruning + Po2 of a real pretrained MobileNetV2-1.0-224, with the remaining weights rounded to nearest or against
calibration data (quant.reconstruct: each pruned weight's and each rounding's error is fed onto the weights still
to be rounded, so the survivors compensate for the pruned ones). Pruned by magnitude or by the output error on
the calibration images (``--prune-method obs``: quant.prune.obs_prune, as SparseGPT); the pruned float network is
reported too.

Calibrates on the first ``--calib`` images of the folder (sorted order, labels unused), reports on the next
``--images``; top-1/top-5 and top-1 agreement with float of the fake-quant model (float64, equal to the golden
model exactly: checked on ``--golden-images`` images per point). Results: benchmarks/results/<out>.json.

    python benchmarks/reconstruct_pruned_imagenet.py [--padding tf] [--sparsity 0.5] [--terms 1,2,3]
        [--prune-method magnitude,obs]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from imagenet_args import add_imagenet_args

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_imagenet_args(ap, images=436)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--terms", default="1,2,3")
    ap.add_argument("--prune-method", default="magnitude", help="comma-separated: magnitude, obs")
    ap.add_argument("--keep-depthwise", action="store_true", help="depthwise convs stay dense")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--edge-bits", type=int, default=8)
    ap.add_argument("--golden-images", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/reconstruct_pruned_imagenet.json")
    args = ap.parse_args()

    from hashiflex import ref
    from hashiflex.flow import Config, calibrated_pretrained
    from hashiflex.imagenet import ImageFolder, value_batches
    from hashiflex.passes import quantize_weights
    from hashiflex.quant.fakequant import FakeQuantNet
    from hashiflex.quant.prune import dense_layers, obs_prune, prune, weight_sparsity
    from hashiflex.quant.reconstruct import hessians, reconstruct

    t0 = time.perf_counter()
    g, calib, bits = calibrated_pretrained(Config(
        dataset="imagefolder", data_root=str(args.data), arch="mobilenet_v2", init=str(args.weights),
        padding=args.padding, calib_images=args.calib, weight_bits=args.bits, edge_bits=args.edge_bits), progress=False)
    inp = g.input
    h = hessians(g, value_batches(calib, 8), progress=True)  # the unpruned float network's layer inputs
    x_rep, y_rep = ImageFolder(args.data, start=args.calib, limit=args.images).arrays()
    x_val = x_rep * 2.0 ** inp.type.exp

    def logits(net, dtype):
        with torch.no_grad():
            return np.concatenate([net(torch.as_tensor(x_val[i:i + 8], dtype=dtype)).double().numpy()
                                   for i in range(0, len(x_val), 8)])

    def topk(lg, k):
        return float((np.argsort(-lg, 1, kind="stable")[:, :k] == y_rep[:, None]).any(1).mean())

    f = logits(FakeQuantNet(g, quantize=False).float().eval(), torch.float32)
    points = [{"name": "float", "top1": topk(f, 1), "top5": topk(f, 5), "agreement": 1.0}]
    print(f"float: top-1 {100 * points[0]['top1']:.2f} %")
    methods = args.prune_method.split(",") if args.sparsity else ["none"]
    for method in methods:
        t = time.perf_counter()
        ex = dense_layers(g, args.keep_depthwise)
        if method == "obs":
            pg = obs_prune(g, h, args.sparsity, exclude=ex, progress=True)
        elif method in ("magnitude", "none"):
            pg = prune(g, args.sparsity, "layer", exclude=ex) if args.sparsity else g
        else:
            raise SystemExit(f"--prune-method: expected magnitude or obs, found {method!r}")
        t_prune = time.perf_counter() - t
        tag = "" if method == "none" else f"{method}-pruned, "
        if args.sparsity:
            lg = logits(FakeQuantNet(pg, quantize=False).float().eval(), torch.float32)
            p = {"name": f"{tag}float", "prune_method": method, "top1": topk(lg, 1), "top5": topk(lg, 5),
                 "agreement": float((lg.argmax(1) == f.argmax(1)).mean()), "weight_sparsity": weight_sparsity(pg),
                 "prune_seconds": t_prune}
            points.append(p)
            print(f"{p['name']:>36}: top-1 {100 * p['top1']:.2f} %  agree {100 * p['agreement']:.1f} %  "
                  f"({t_prune:.0f} s to prune)")
        for k in [int(v) for v in args.terms.split(",")]:
            near = quantize_weights(pg, bits, k)
            rec = reconstruct(pg, near, h=h, dense=g if args.sparsity else None)  # survivors compensate the pruned
            for rounding, q in (("nearest", near), ("reconstruct", rec)):
                t = time.perf_counter()
                lg = logits(FakeQuantNet(q).double().eval(), torch.float64)
                n = min(args.golden_images, len(x_rep))
                exact = bool(np.array_equal(ref.run(q, x_rep[:n]), lg[:n] / 2.0 ** ref.output_exp(q)))
                p = {"name": f"{tag}{k} term{'s' * (k > 1)}, {rounding}", "prune_method": method, "terms": k,
                     "rounding": rounding, "top1": topk(lg, 1), "top5": topk(lg, 5),
                     "agreement": float((lg.argmax(1) == f.argmax(1)).mean()),
                     "weight_sparsity": weight_sparsity(q), "golden_equals_fake_quant": exact,
                     "seconds": time.perf_counter() - t}
                points.append(p)
                print(f"{p['name']:>36}: top-1 {100 * p['top1']:.2f} %  top-5 {100 * p['top5']:.2f} %  agree "
                      f"{100 * p['agreement']:.1f} %  zero weights {100 * p['weight_sparsity']:.1f} %  "
                      f"golden==fq {exact}")
                if not exact:
                    raise SystemExit(f"{p['name']}: the golden model and fake-quant differ: the ladder is broken")
    res = {"model": args.weights.name, "data": args.data.name, "calibration_images": len(calib),
           "report_images": {"count": len(x_rep), "first": args.calib, "selection": "sorted ImageFolder order"},
           "padding": args.padding, "bits": args.bits, "edge_bits": args.edge_bits, "sparsity": args.sparsity,
           "prune_scope": "layer (first and last layer dense" + (", depthwise dense)" if args.keep_depthwise else ")"), "prune_methods": methods, "points": points,
           "seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "command": f"python benchmarks/reconstruct_pruned_imagenet.py --padding {args.padding} --sparsity "
                      f"{args.sparsity} --terms {args.terms} --prune-method {args.prune_method}"
                      f"{' --keep-depthwise' * args.keep_depthwise} --calib {args.calib} "
                      f"--images {args.images} "
                      f"--out {args.out.name}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
