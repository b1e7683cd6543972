"""The arguments the ImageNet benchmarks share: the pretrained MobileNetV2 and the images (../shared by default),
how many images to calibrate on (the first ones, sorted order) and to report on (the next ones), and the padding."""
from __future__ import annotations

import argparse
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def add_imagenet_args(ap: argparse.ArgumentParser, images: int = 436) -> None:
    ap.add_argument("--weights", type=Path, default=SHARED / "models/mobilenet_v2_coral/mobilenet_v2_coral.pth")
    ap.add_argument("--data", type=Path, default=SHARED / "data/imagenet-dev")
    ap.add_argument("--calib", type=int, default=64, help="calibration images (the first ones)")
    ap.add_argument("--images", type=int, default=images, help="report images after them (default: %(default)s)")
    ap.add_argument("--padding", choices=["torch", "tf"], default="tf")
