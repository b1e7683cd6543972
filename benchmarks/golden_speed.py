"""Golden model speed: the integer golden model (bit-exact) vs float torch on CPU, same network, same images,
same run; the golden model both ways (analysed once, ``ref.Golden``; the setup time is reported apart): its
default path (torch float32 kernels on digit planes of the weights where that is provably exact, the planes of a
wide sum requantized in float32 exactly, ``ops.base.SplitAcc``) and its all-NumPy path (``fast=False``), with
outputs checked equal.

Both run the same ``--images`` images in chunks of each ``--batch`` size, timed in interleaved rounds (float,
golden, float, golden, ...; best round of ``--repeats``): on 2 cores the batch size moves both by up to 2x
(tensors past glibc's mmap threshold page-fault on every allocation), so the ratio is given per batch size and
best against best.

    python benchmarks/golden_speed.py [--width 0.35] [--size 32] [--batch 100]
    python benchmarks/golden_speed.py --size 224 --width 1.0 --batch 1,2,4,8 --images 16 \\
        [--weights mobilenet_v2_coral.pth] [--terms 3] --out golden_speed_mobilenet_v2_224.json

Prints images/s for each and the ratios; writes benchmarks/results/golden_speed*.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hashiflex import passes, ref
from hashiflex.ir import Input, TensorType
from hashiflex.models import mobilenet_v2
from hashiflex.quant.fakequant import record_activations


def interleaved(fns, repeats):
    """Best time of each function over ``repeats`` rounds, each round running every function once in turn."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.35)
    ap.add_argument("--size", type=int, default=32, help="32: the CIFAR-style net; 224: the ImageNet one")
    ap.add_argument("--batch", default="100", help="batch sizes, comma-separated")
    ap.add_argument("--images", type=int, default=None, help="images per round (default: the largest batch)")
    ap.add_argument("--weights", type=Path, default=None, help="a torchvision MobileNetV2 state_dict (224 only)")
    ap.add_argument("--terms", type=int, default=1, help="signed powers of two per weight")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="golden_speed.json")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    n = args.images or max(batches)
    torch.manual_seed(0)
    cifar = args.size == 32
    model = mobilenet_v2(args.width, 10 if cifar else 1000, cifar=cifar).eval()
    if args.weights is not None:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    inp = Input(3, args.size, args.size, TensorType(8, True, -7))
    g = passes.import_torch(model, inp, "mnv2")
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(n, 3, args.size, args.size))
    g = passes.calibrate_activations(g, record_activations(g, x[:8] * 2.0 ** -7, batch=8), 8)
    q = passes.quantize_weights(g, 5, args.terms)
    xt = torch.as_tensor(x * 2.0 ** -7, dtype=torch.float32)
    t = time.perf_counter()
    gold = ref.Golden(q)  # bounds and weight planes, once per graph
    t_setup = time.perf_counter() - t

    def chunks(fn, data, b):
        return lambda: [fn(data[i:i + b]) for i in range(0, n, b)]

    per_batch = []
    with torch.no_grad():
        for b in batches:
            t_torch, t_gold = interleaved([chunks(model, xt, b), chunks(gold.run, x, b)], args.repeats)
            per_batch.append({"batch": b, "torch_float_cpu_img_per_s": n / t_torch, "golden_int_img_per_s": n / t_gold,
                              "ratio_golden_over_torch": t_torch / t_gold})
            print(f"batch {b}: float torch {n / t_torch:.1f} img/s, golden {n / t_gold:.1f} img/s, "
                  f"ratio {t_torch / t_gold:.2f}", flush=True)
    b_np = max(batches)
    t_numpy = interleaved([chunks(lambda v: ref.run(q, v, fast=False), x, b_np)], 1)[0]
    same = bool(np.array_equal(gold.run(x), ref.run(q, x, fast=False)))
    best_t = max(r["torch_float_cpu_img_per_s"] for r in per_batch)
    best_g = max(r["golden_int_img_per_s"] for r in per_batch)
    out = {"network": f"MobileNetV2-{args.width} {args.size}x{args.size}" + (" CIFAR-style" if cifar else ""),
           "weights": args.weights.name if args.weights else "random init", "terms": args.terms, "images": n,
           "per_batch": per_batch, "torch_float_cpu_img_per_s": best_t, "golden_int_img_per_s": best_g,
           "ratio_golden_over_torch": best_g / best_t,
           "ratio_same_batch_min": min(r["ratio_golden_over_torch"] for r in per_batch),
           "golden_numpy_img_per_s": n / t_numpy, "numpy_batch": b_np,
           "ratio_numpy_golden_over_torch": n / t_numpy / best_t, "speedup_over_numpy": best_g / (n / t_numpy),
           "golden_setup_s": t_setup, "torch_path": gold.plan is not None, "outputs_equal": same,
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "command": "python benchmarks/golden_speed.py " + " ".join(argv if argv is not None else
                                                                    __import__("sys").argv[1:])}
    print(json.dumps(out, indent=2))
    if not same:
        raise SystemExit("the golden model's two paths differ")
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
