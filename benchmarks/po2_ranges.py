"""Per-layer vs per-output-channel Po2 exponent ranges on a real network: how many weights (and how much of the
weights' energy) each range zeroes at each code width. The range holds the largest exponent and the 2**(bits-1)
- 1 below it (:func:`hashiflex.quant.po2.exponent_range`); a weight whose rounded exponent falls below it
becomes zero.

    python benchmarks/po2_ranges.py [--weights mobilenet_v2_coral.pth] [--bits 3,4,5]

Writes benchmarks/results/po2_ranges.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def zeroed(w: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    from hashiflex.quant.po2 import exponent_range

    a = np.abs(w)
    e_hat = np.floor(np.log2(np.where(a > 0, a, 1.0)) + 0.5)
    nz = a > 0
    out = np.zeros_like(nz)
    groups = [np.s_[c] for c in range(len(w))] if per_channel else [np.s_[:]]
    for sl in groups:
        if nz[sl].any():
            lo, _ = exponent_range(e_hat[sl][nz[sl]].max(), e_hat[sl][nz[sl]].min(), bits)
            out[sl] = nz[sl] & (e_hat[sl] < lo)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "models/mobilenet_v2_coral/mobilenet_v2_coral.pth")
    ap.add_argument("--bits", default="3,4,5")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/po2_ranges.json")
    args = ap.parse_args()
    import torchvision

    from hashiflex import frontend
    from hashiflex.imagenet import input_type

    t0 = time.perf_counter()
    m = torchvision.models.mobilenet_v2()
    m.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    g = frontend.import_torch(m.eval(), input_type("inception"), name="mobilenet_v2")
    ws = [l.weight.reshape(len(l.weight), -1) for l in g.layers if getattr(l, "weight", None) is not None]
    total = int(sum((w != 0).sum() for w in ws))
    energy = float(sum((w ** 2).sum() for w in ws))
    rows = []
    for bits in [int(b) for b in args.bits.split(",")]:
        row = {"bits": bits}
        for scope, per_channel in (("layer", False), ("channel", True)):
            z = [zeroed(w, bits, per_channel) for w in ws]
            row[f"zeroed_{scope}"] = int(sum(d.sum() for d in z))
            row[f"zeroed_{scope}_fraction"] = row[f"zeroed_{scope}"] / total
            row[f"energy_lost_{scope}"] = float(sum((w[d] ** 2).sum() for w, d in zip(ws, z))) / energy
        rows.append(row)
        print(f"{bits}-bit codes: per-layer range zeroes {100 * row['zeroed_layer_fraction']:.2f} % of the weights "
              f"({100 * row['energy_lost_layer']:.3f} % of their energy), per-channel {100 * row['zeroed_channel_fraction']:.2f} % "
              f"({100 * row['energy_lost_channel']:.3f} %)")
    res = {"model": args.weights.name, "nonzero_weights": total, "rows": rows,
           "seconds": time.perf_counter() - t0, "command": "python benchmarks/po2_ranges.py --bits " + args.bits}
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
