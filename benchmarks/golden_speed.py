"""Golden model speed: the integer golden model (bit-exact) vs float torch on CPU, same network, same inputs,
same run; the golden model both ways (analysed once, ``ref.Golden``; the setup time is reported apart): its
default path (torch float32 kernels on digit planes of the weights
where that is provably exact, ``ref.conv2d_int``) and its all-NumPy path (``fast=False``), with outputs checked
equal.

    python benchmarks/golden_speed.py [--width 0.35] [--size 32] [--batch 100]
    python benchmarks/golden_speed.py --size 224 --width 1.0 --batch 8 [--weights mobilenet_v2_coral.pth] \\
        [--terms 3] --out golden_speed_mobilenet_v2_224.json

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


def best_of(fn, repeats=3):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.35)
    ap.add_argument("--size", type=int, default=32, help="32: the CIFAR-style net; 224: the ImageNet one")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--weights", type=Path, default=None, help="a torchvision MobileNetV2 state_dict (224 only)")
    ap.add_argument("--terms", type=int, default=1, help="signed powers of two per weight")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="golden_speed.json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cifar = args.size == 32
    model = mobilenet_v2(args.width, 10 if cifar else 1000, cifar=cifar).eval()
    if args.weights is not None:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    inp = Input(3, args.size, args.size, TensorType(8, True, -7))
    g = passes.import_torch(model, inp, "mnv2")
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(args.batch, 3, args.size, args.size))
    g = passes.calibrate_activations(g, record_activations(g, x[:8] * 2.0 ** -7, batch=8), 8)
    q = passes.quantize_weights(g, 5, args.terms)
    xt = torch.as_tensor(x * 2.0 ** -7, dtype=torch.float32)
    with torch.no_grad():
        t_torch = best_of(lambda: model(xt), args.repeats)
    t = time.perf_counter()
    gold = ref.Golden(q)  # bounds and weight planes, once per graph
    t_setup = time.perf_counter() - t
    t_gold = best_of(lambda: gold.run(x), args.repeats)
    t_numpy = best_of(lambda: ref.run(q, x, fast=False), 1)
    same = bool(np.array_equal(gold.run(x), ref.run(q, x, fast=False)))
    out = {"network": f"MobileNetV2-{args.width} {args.size}x{args.size}" + (" CIFAR-style" if cifar else ""),
           "weights": args.weights.name if args.weights else "random init", "terms": args.terms,
           "batch": args.batch, "torch_float_cpu_img_per_s": args.batch / t_torch,
           "golden_int_img_per_s": args.batch / t_gold, "golden_numpy_img_per_s": args.batch / t_numpy,
           "ratio_golden_over_torch": t_torch / t_gold, "ratio_numpy_golden_over_torch": t_torch / t_numpy,
           "speedup_over_numpy": t_numpy / t_gold, "golden_setup_s": t_setup,
           "torch_path": gold.plan is not None, "outputs_equal": same, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(),
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
