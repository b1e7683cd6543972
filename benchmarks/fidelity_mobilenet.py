"""Where a real pretrained MobileNetV2 loses its accuracy through one-term Po2: the per-layer fidelity report.

Loads a torchvision MobileNetV2-1.0-224 state_dict (default: ../shared/models/mobilenet_v2_coral, BN folded,
inputs (x-128)/128), takes real ImageNet images from an ImageFolder (default: ../shared/data/imagenet-dev),
calibrates on the first N, quantizes the weights to one-term Po2 (5 bits, 8 for the first and last layer) and
reports, on the next M images: SQNR/cosine at every requantize point (errors accumulate) and, for each conv/linear
layer alone, the output's SQNR and top-1 agreement with the float network. Results:
benchmarks/results/fidelity_mobilenet_v2.json (+ .png).

    python benchmarks/fidelity_mobilenet.py [--calib 16] [--images 16] [--bits 5]
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


def load_images(folder: Path, n: int, size: int = 224) -> np.ndarray:
    """n images (sorted by class folder), central 87.5 % crop, bilinear resize, (x - 128) / 128 in float64."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, read_image

    files = sorted(p for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.iterdir()))[:n]
    out = []
    for f in files:
        x = read_image(str(f), ImageReadMode.RGB).float()
        _, h, w = x.shape
        ch, cw = int(round(h * 0.875)), int(round(w * 0.875))
        x = x[:, (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        out.append(((torch.round(x.clamp(0, 255)) - 128) / 128).double().numpy())
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "models/mobilenet_v2_coral/mobilenet_v2_coral.pth")
    ap.add_argument("--data", type=Path, default=SHARED / "data/imagenet-dev")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--edge-bits", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fidelity_mobilenet_v2.json")
    args = ap.parse_args()

    from torchvision.models import mobilenet_v2

    from hashiflex.flow import Config, layer_bits
    from hashiflex.ir import Input, TensorType
    from hashiflex.passes import calibrate_activations, import_torch, quantize_weights
    from hashiflex.quant.fakequant import activation_ranges
    from hashiflex.quant.fidelity import format_fidelity, layer_fidelity, weight_sensitivity

    t0 = time.perf_counter()
    model = mobilenet_v2()
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    x = load_images(args.data, args.calib + args.images)
    calib, test = x[:args.calib], x[args.calib:]
    g = import_torch(model.eval(), Input(3, 224, 224, TensorType(8, True, -7)), name="mobilenet_v2")
    g = calibrate_activations(g, activation_ranges(g, calib, batch=4, progress=True))
    q = quantize_weights(g, layer_bits(g, Config(weight_bits=args.bits, edge_bits=args.edge_bits)))
    from hashiflex.quant.biascorr import bias_correction

    through = layer_fidelity(g, q, test, batch=4, progress=True)
    corrected = layer_fidelity(g, bias_correction(g, q, calib, batch=4), test, batch=4, progress=True)[-1]
    alone = weight_sensitivity(g, q, test, batch=4, progress=True)
    print(format_fidelity(through, "through the network"))
    print(format_fidelity(alone, "one layer's weights Po2 at a time"))
    print(f"with bias correction: output SQNR {corrected.sqnr_db:.2f} dB, top-1 agreement "
          f"{100 * corrected.agreement:.1f} %")
    worst = sorted(alone, key=lambda r: r.sqnr_db)[:5]
    res = {"model": str(args.weights.name), "images": {"calibration": args.calib, "report": args.images,
                                                       "folder": str(args.data.name)},
           "bits": args.bits, "edge_bits": args.edge_bits, "padding": "torchvision (symmetric)",
           "seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "command": f"python benchmarks/fidelity_mobilenet.py --calib {args.calib} --images {args.images} "
                      f"--bits {args.bits}",
           "worst_alone": [r.layer for r in worst],
           "output_with_bias_correction": corrected.to_json(),
           "through": [r.to_json() for r in through], "alone": [r.to_json() for r in alone]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(12, 7), constrained_layout=True)
    ax[0].plot([r.sqnr_db for r in through], marker=".")
    ax[0].set_ylabel("SQNR dB (through)")
    ax[0].set_title(f"MobileNetV2-1.0-224, one-term {args.bits}-bit Po2 vs float, {args.images} ImageNet images")
    colors = ["tab:red" if getattr(q.layer(r.layer), "groups", 1) > 1 else "tab:blue" for r in alone]
    ax[1].bar(range(len(alone)), [r.sqnr_db for r in alone], color=colors)
    ax[1].set_ylabel("output SQNR dB (layer alone)")
    ax[1].set_xlabel("conv/linear layer (red: depthwise)")
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
