"""Golden model speed: integer NumPy (bit-exact) vs float torch on CPU, same network, same inputs, same run.

    python benchmarks/golden_speed.py [--width 0.35] [--batch 100]

Prints images/s for both and their ratio; writes benchmarks/results/golden_speed.json.
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
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = mobilenet_v2(args.width, 10, cifar=True).eval()
    inp = Input(3, 32, 32, TensorType(8, False, -8))
    g = passes.import_torch(model, inp, "mnv2")
    x = np.random.default_rng(0).integers(0, 256, size=(args.batch, 3, 32, 32))
    g = passes.calibrate_activations(g, record_activations(g, x[:32] * 2.0 ** -8), 8)
    q = passes.quantize_weights(g, 5)
    xt = torch.as_tensor(x * 2.0 ** -8, dtype=torch.float32)
    with torch.no_grad():
        t_torch = best_of(lambda: model(xt))
    t_gold = best_of(lambda: ref.run(q, x))
    out = {"network": f"MobileNetV2-{args.width} CIFAR-style 32x32", "batch": args.batch,
           "torch_float_cpu_img_per_s": args.batch / t_torch, "golden_int_img_per_s": args.batch / t_gold,
           "ratio_golden_over_torch": t_torch / t_gold, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine()}
    print(json.dumps(out, indent=2))
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "golden_speed.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
