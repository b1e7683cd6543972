"""Which layers of a pretrained MobileNetV2-1.0-224 survive one-shot pruning: float top-1 after pruning the
depthwise convs only, everything but them, or both, by magnitude or by the output error on calibration images
(quant.prune.obs_prune), at each sparsity. No Po2 here: the pruning alone (reconstruct_pruned_imagenet.py adds the
Po2 rounding).

Calibrates on the first ``--calib`` images of the folder (sorted order, labels unused), reports top-1 and top-1
agreement with the unpruned float model on the next ``--images``. The first and last layer stay dense throughout.
Results: benchmarks/results/prune_sensitivity_imagenet.json.

    python benchmarks/prune_sensitivity_imagenet.py [--sparsity 0.3,0.5] [--images 200]
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
    add_imagenet_args(ap, images=200)
    ap.add_argument("--sparsity", default="0.3,0.5")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prune_sensitivity_imagenet.json")
    args = ap.parse_args()

    from hashiflex.flow import Config, calibrated_pretrained
    from hashiflex.imagenet import ImageFolder, value_batches
    from hashiflex.quant.fakequant import FakeQuantNet
    from hashiflex.quant.prune import dense_layers, obs_prune, prune, weight_sparsity
    from hashiflex.quant.reconstruct import hessians

    t0 = time.perf_counter()
    g, calib, _ = calibrated_pretrained(Config(
        dataset="imagefolder", data_root=str(args.data), arch="mobilenet_v2", init=str(args.weights),
        padding=args.padding, calib_images=args.calib), progress=False)
    h = hessians(g, value_batches(calib, 8), progress=True)
    x, y = ImageFolder(args.data, start=args.calib, limit=args.images).arrays()
    xv = x * 2.0 ** g.input.type.exp

    def logits(graph):
        net = FakeQuantNet(graph, quantize=False).float().eval()
        with torch.no_grad():
            return np.concatenate([net(torch.as_tensor(xv[i:i + 8], dtype=torch.float32)).numpy()
                                   for i in range(0, len(xv), 8)])

    f = logits(g).argmax(1)
    edges = dense_layers(g)
    dw = tuple(n for n in dense_layers(g, keep_depthwise=True) if n not in edges)
    others = tuple(l.name for l in g.layers if hasattr(l, "weight") and l.name not in dw + edges)
    modes = {"depthwise only": edges + others, "all but depthwise": edges + dw, "all": edges}
    points = [{"name": "float", "top1": float((f == y).mean()), "agreement": 1.0}]
    print(f"float: top-1 {100 * points[0]['top1']:.2f} %")
    for s in [float(v) for v in args.sparsity.split(",")]:
        for mode, exclude in modes.items():
            for method in ("magnitude", "obs"):
                p = obs_prune(g, h, s, exclude=exclude) if method == "obs" else prune(g, s, "layer", exclude=exclude)
                lg = logits(p).argmax(1)
                pt = {"name": f"{s:g} {mode}, {method}", "sparsity": s, "pruned": mode, "method": method,
                      "top1": float((lg == y).mean()), "agreement": float((lg == f).mean()),
                      "weight_sparsity": weight_sparsity(p)}
                points.append(pt)
                print(f"{pt['name']:>36}: top-1 {100 * pt['top1']:.2f} %  agree {100 * pt['agreement']:.1f} %  "
                      f"zero weights {100 * pt['weight_sparsity']:.1f} %", flush=True)
    res = {"model": args.weights.name, "data": args.data.name, "calibration_images": len(calib),
           "report_images": {"count": len(y), "first": args.calib, "selection": "sorted ImageFolder order"},
           "padding": args.padding, "depthwise_weights": int(sum(l.weight.size for l in g.layers if l.name in dw)),
           "weights": int(sum(l.weight.size for l in g.layers if hasattr(l, "weight"))),
           "points": points, "seconds": time.perf_counter() - t0,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "command": f"python benchmarks/prune_sensitivity_imagenet.py --sparsity {args.sparsity} --calib "
                      f"{args.calib} --images {args.images} --padding {args.padding}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
