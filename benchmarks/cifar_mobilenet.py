"""MobileNetV2 on CIFAR-10: float training, Po2 QAT, optional pruning; accuracy via the integer golden model.

    python benchmarks/cifar_mobilenet.py --data-root ../shared/data/cifar10 --width 0.35 --epochs 2 --qat-epochs 1

Writes benchmarks/results/cifar_mobilenet_v2_w<width>_<bits>b_s<sparsity>.json with the exact command, epochs,
times and accuracies (float torch, Po2 golden model). The paper-level figure (width 1.0, >= 93.5 % FP32) needs
~200 GPU epochs; on a 2-core CPU a short run of a narrow network is what can be measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hashiflex import passes, ref
from hashiflex.data import cifar10
from hashiflex.models import mobilenet_v2
from hashiflex.quant.fakequant import record_activations
from hashiflex.quant.prune import weight_sparsity
from hashiflex.train import accuracy_torch, seed_everything, train_float, train_qat

RESULTS = Path(__file__).resolve().parent / "results"


def golden_accuracy(q, x, y, batch=250):
    pred = np.concatenate([ref.run(q, x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="data/cifar10")
    ap.add_argument("--download", action="store_true", help="fetch CIFAR-10 with torchvision if missing")
    ap.add_argument("--width", type=float, default=0.35)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--edge-bits", type=int, default=8, help="first and last layer weight bits")
    ap.add_argument("--sparsity", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=0.05, help="float training (SGD, cosine)")
    ap.add_argument("--qat-lr", type=float, default=1e-4, help="QAT (Adam; SGD at lr/10 diverged here)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--work", default="build/cifar")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ds = cifar10(args.data_root, args.download, args.train_limit, args.test_limit)
    seed_everything(0)
    model = mobilenet_v2(args.width, 10, cifar=True)
    t0 = time.perf_counter()
    fit = dict(batch=128, optimizer="sgd", augment=True, weight_decay=4e-5)
    train_float(model, ds, args.epochs, args.lr, 0, checkpoint=work / "float.ck", **fit)
    t_float = time.perf_counter() - t0
    acc_float = accuracy_torch(model, ds.value(ds.x_test), ds.y_test)
    g = passes.import_torch(model, ds.input, "mnv2_cifar")
    g = passes.calibrate_activations(g, record_activations(g, ds.value(ds.x_train[:512])), 8)
    convs = [l.name for l in g.layers if hasattr(l, "weight")]
    bits = {n: (args.edge_bits if n in (convs[0], convs[-1]) else args.bits) for n in convs}
    ptq = passes.quantize_weights(g, bits)
    t0 = time.perf_counter()
    acc_ptq = golden_accuracy(ptq, ds.x_test, ds.y_test)
    t_golden = time.perf_counter() - t0
    t0 = time.perf_counter()
    qfit = dict(fit, optimizer="adam", weight_decay=0.0)
    g = train_qat(g, ds, bits, args.qat_epochs, args.qat_lr, 0, sparsity=args.sparsity,
                  exclude=(convs[0], convs[-1]), checkpoint=work / f"qat_s{args.sparsity}.ck", **qfit)
    t_qat = time.perf_counter() - t0
    q = passes.quantize_weights(g, bits)
    acc_po2 = golden_accuracy(q, ds.x_test, ds.y_test)
    out = {
        "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
        "network": f"MobileNetV2-{args.width} CIFAR-style (first conv and first stride-2 block at stride 1)",
        "train_images": int(len(ds.x_train)), "test_images": int(len(ds.x_test)),
        "float_epochs": args.epochs, "qat_epochs": args.qat_epochs, "weight_bits": args.bits,
        "edge_bits": args.edge_bits, "sparsity_target": args.sparsity, "sparsity_po2": weight_sparsity(q),
        "float_accuracy": acc_float, "po2_ptq_accuracy": acc_ptq, "po2_qat_accuracy": acc_po2,
        "seconds_float_training": t_float, "seconds_qat": t_qat,
        "golden_images_per_second": len(ds.x_test) / t_golden, "threads": args.threads,
        "machine": "2-core CPU (no GPU in this session)",
    }
    name = f"cifar_mobilenet_v2_w{args.width}_{args.bits}b_s{args.sparsity}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
