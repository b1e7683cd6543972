"""Torch MobileNetV2 inference throughput: the GPU baseline the paper compares against (and the CPU).

    python benchmarks/gpu_baseline.py [--width 1.0] [--size 224] [--batches 1,32,256,1024]

On a CUDA GPU it tries fp16 and bf16, channels_last, with and without torch.compile, over a batch sweep, and
reports the best images/s; on CPU it measures fp32 (and channels_last). Writes
benchmarks/results/gpu_baseline_<device>.json, which `hashiflex report` compares against (it says which file).
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from hashiflex.models import mobilenet_v2


def measure(model, x, seconds: float = 2.0) -> float:
    """Images/s, after warm-up, timing whole batches until ``seconds`` passed."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += 1
        sync()
    return n * x.shape[0] / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    batches = [int(b) for b in (args.batches or ("1,32,256,1024" if cuda else "1,16,64")).split(",")]
    base = mobilenet_v2(args.width, 1000).eval().to(dev)
    dtypes = [torch.float16, torch.bfloat16] if cuda else [torch.float32]
    results = []
    for dtype in dtypes:
        for cl in (False, True):
            m = base.to(dtype=dtype, memory_format=torch.channels_last if cl else torch.contiguous_format)
            variants = [("eager", m)]
            if cuda and not args.no_compile:
                variants.append(("compile", torch.compile(m)))
            for mode, mm in variants:
                for b in batches:
                    x = torch.randn(b, 3, args.size, args.size, device=dev, dtype=dtype)
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    try:
                        ips = measure(mm, x, args.seconds)
                    except RuntimeError as e:  # out of memory for a large batch
                        ips = None
                        print(f"skip {dtype} cl={cl} {mode} b={b}: {str(e)[:80]}")
                    results.append({"dtype": str(dtype).replace("torch.", ""), "channels_last": cl, "mode": mode,
                                    "batch": b, "images_per_second": ips})
                    print(results[-1])
    ok = [r for r in results if r["images_per_second"]]
    best = max(ok, key=lambda r: r["images_per_second"])
    name = torch.cuda.get_device_name() if cuda else "cpu"
    out = {"device": name, "network": f"MobileNetV2-{args.width} {args.size}x{args.size}",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "best": best,
           "best_images_per_second": best["images_per_second"], "all": results}
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    f = res / f"gpu_baseline_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_').lower()}.json"
    f.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("device", "network", "best_images_per_second")}, indent=2), "->", f)


if __name__ == "__main__":
    main()
