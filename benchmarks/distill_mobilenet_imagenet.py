"""Distillation fine-tuning of a Po2 MobileNetV2-1.0-224 (real pretrained weights) on real ImageNet images: top-1
before (post-training rounding) and after fine-tuning the Po2 weights to match the float model's outputs.

Calibrates (and, unless ``--distill-data`` names other images, distills) on the first ``--calib`` images of the
folder (sorted order; no labels used) and reports on the next ``--images``. Each configuration (``--configs``: "1" one term everywhere, "2", ..., optionally with
pruning as "1@0.5", or "json:auto 2x" for the per-layer terms of that point in ``--terms-from``) reports top-1/top-5 of the fake-quant model (equal to the integer golden model exactly, which
this script checks on ``--golden-images`` images) and the top-1 agreement with the float model, before and
after, the distillation loss per epoch and the adders. The baseline is the float model on the same images, run
in the same script. Results: benchmarks/results/distill_mobilenet_imagenet.json.

    python benchmarks/distill_mobilenet_imagenet.py [--padding tf] [--calib 64] [--images 436] [--epochs 8]
        [--configs 1,1@0.5] [--lr 1e-4] [--batch 16]
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
    ap.add_argument("--padding", choices=["torch", "tf"], default="tf")
    ap.add_argument("--calib", type=int, default=64, help="calibration and distillation images (the first ones)")
    ap.add_argument("--images", type=int, default=436, help="report images after them")
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--edge-bits", type=int, default=8)
    ap.add_argument("--configs", default="1,1@0.5", help="terms per weight everywhere, or json:<point name>, "
                    "[@ sparsity], comma-separated")
    ap.add_argument("--terms-from", type=Path, default=ROOT / "benchmarks/results/po2_mobilenet_imagenet_tf.json",
                    help="po2_mobilenet_imagenet.py results, for configs 'json:<point name>' (its per-layer terms)")
    ap.add_argument("--distill-data", type=Path, default=None,
                    help="images to distill on (an ImageFolder or an .npz of uint8 NHWC images such as "
                    "../shared/data/cifar10/cifar10_train.npz, resized; default: the calibration images)")
    ap.add_argument("--distill-images", type=int, default=None, help="the first N of --distill-data")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--golden-images", type=int, default=16)
    ap.add_argument("--rounding", choices=["nearest", "reconstruct"], default="nearest",
                    help="the final Po2 rounding, before and after: nearest, or against the calibration images (as "
                    "hashiflex quantize does by default)")
    ap.add_argument("--act-range", choices=["max", "mse"], default="max")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/distill_mobilenet_imagenet.json")
    args = ap.parse_args()

    from hashiflex import ref
    from hashiflex.flow import Config, calibrated_pretrained, calibration_hessians
    from hashiflex.imagenet import ImageFolder, image_source
    from hashiflex.passes import hw_model, quantize_weights
    from hashiflex.quant.distill import distill
    from hashiflex.quant.fakequant import FakeQuantNet
    from hashiflex.quant.prune import prune
    from hashiflex.quant.reconstruct import reconstruct

    t0 = time.perf_counter()
    cfg = Config(dataset="imagefolder", data_root=str(args.data), arch="mobilenet_v2", init=str(args.weights),
                 padding=args.padding, calib_images=args.calib, weight_bits=args.bits, edge_bits=args.edge_bits,
                 act_range=args.act_range)
    g, calib, bits = calibrated_pretrained(cfg)
    h = calibration_hessians(g, calib, cfg)[0] if args.rounding == "reconstruct" else None

    def quantize(graph, terms):
        q = quantize_weights(graph, bits, terms)
        return q if h is None else reconstruct(graph, q, h=h)
    inp = g.input
    names = list(bits)
    x_rep, y_rep = ImageFolder(args.data, start=args.calib, limit=args.images).arrays()
    distill_data = calib if args.distill_data is None else image_source(args.distill_data, limit=args.distill_images)
    x_val = x_rep * 2.0 ** inp.type.exp

    def logits(net, dtype):
        out = []
        with torch.no_grad():
            for i in range(0, len(x_val), 8):
                out.append(net(torch.as_tensor(x_val[i:i + 8], dtype=dtype)).double().numpy())
        return np.concatenate(out)

    def topk(lg, k):
        return float((np.argsort(-lg, 1, kind="stable")[:, :k] == y_rep[:, None]).any(1).mean())

    f_logits = logits(FakeQuantNet(g, quantize=False).float().eval(), torch.float32)
    f_top1 = f_logits.argmax(1)

    def point(q):
        lg = logits(FakeQuantNet(q).double().eval(), torch.float64)
        n = min(args.golden_images, len(x_rep))
        exact = bool(np.array_equal(ref.run(q, x_rep[:n]), lg[:n] / 2.0 ** ref.output_exp(q)))
        if not exact:
            raise SystemExit("the golden model and fake-quant differ: the ladder is broken")
        return {"top1": topk(lg, 1), "top5": topk(lg, 5), "agreement": float((lg.argmax(1) == f_top1).mean()),
                "golden_images_checked": n, "golden_equals_fake_quant": exact}

    res = {"model": args.weights.name, "data": args.data.name, "padding": args.padding, "bits": args.bits,
           "edge_bits": args.edge_bits, "calibration_images": len(calib),
           "distillation_images": {"count": len(distill_data), "source": str(args.distill_data or "calibration")},
           "report_images": {"count": len(y_rep), "first": args.calib, "selection": "sorted ImageFolder order"},
           "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "rounding": args.rounding,
           "act_range": args.act_range,
           "float": {"top1": topk(f_logits, 1), "top5": topk(f_logits, 5)}, "points": [],
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "command": f"python benchmarks/distill_mobilenet_imagenet.py --padding {args.padding} --calib "
                      f"{args.calib} --images {args.images} --epochs {args.epochs} --configs {args.configs} "
                      f"--lr {args.lr} --batch {args.batch} --rounding {args.rounding} --act-range {args.act_range} "
                      f"--out {args.out.name}" + (f" --terms-from {args.terms_from.name}" if "json:" in args.configs else "")
                      + (f" --distill-data {args.distill_data} --distill-images {args.distill_images}"
                         if args.distill_data else "")}
    print(f"float: top-1 {100 * res['float']['top1']:.2f} % on {len(y_rep)} images")
    for spec in args.configs.split(","):
        k, _, sp = spec.partition("@")
        sparsity = float(sp or 0)
        if k.startswith("json:"):  # per-layer terms of a point of po2_mobilenet_imagenet.py's results
            point_name = k[5:]
            src = json.loads(args.terms_from.read_text())
            terms = next(p["terms"] for p in src["points"] if p["name"] == point_name)
        else:
            terms = int(k)
        t = time.perf_counter()
        start = prune(g, sparsity, "layer", exclude=(names[0], names[-1])) if sparsity else g
        before = quantize(start, terms)
        p = {"config": spec, "terms": terms, "sparsity": sparsity, "adders": int(sum(m.adders for m in hw_model(before, 4)
                                                                    if m.op in ("conv2d", "linear")))}
        p["ptq"] = point(before)
        print(f"{spec}: PTQ top-1 {100 * p['ptq']['top1']:.2f} %", flush=True)
        r = distill(start, distill_data, bits, terms, epochs=args.epochs, lr=args.lr, batch=args.batch, teacher=g)
        after = quantize(r.graph, terms)
        p["distilled"] = point(after)
        p["distill_loss"], p["distill_steps"] = r.loss, r.steps
        p["adders_after"] = int(sum(m.adders for m in hw_model(after, 4) if m.op in ("conv2d", "linear")))
        p["seconds"] = time.perf_counter() - t
        res["points"].append(p)
        print(f"{spec}: distilled top-1 {100 * p['distilled']['top1']:.2f} % (agree "
              f"{100 * p['distilled']['agreement']:.1f} %), loss {[round(v, 3) for v in r.loss]}, "
              f"{p['seconds']:.0f} s", flush=True)
        res["seconds"] = time.perf_counter() - t0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")  # after every point: a partial run keeps its results
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
