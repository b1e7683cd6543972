"""Datasets. The embedded default is scikit-learn's bundled 8x8 digits (no download)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Input, TensorType


@dataclass(frozen=True)
class Dataset:
    """Integer images (N, C, H, W) in the input's fixed-point type, labels, and that type."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input: Input
    classes: int

    def value(self, x_int: np.ndarray) -> np.ndarray:
        """Float value of integer images: x * 2**exp."""
        return x_int.astype(np.float64) * 2.0 ** self.input.type.exp


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn digits: 1797 images 8x8, pixels 0..16 -> unsigned 5-bit integers with scale 2**-4."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.int64).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", xtr, ytr, xte, yte, Input(1, 8, 8, TensorType(5, False, -4)), 10)


DATASETS = {"digits": digits}


def cifar10(data_root: str | None = None, download: bool = False, train_limit: int | None = None,
            test_limit: int | None = None) -> Dataset:
    """CIFAR-10 as unsigned 8-bit integers with scale 2**-8 (value = pixel / 256), NCHW.

    Reads ``cifar10_train.npz`` / ``cifar10_test.npz`` (arrays ``x`` uint8 NHWC, ``y``) from ``data_root``;
    with ``download=True`` and no npz files there, fetches the dataset with torchvision's downloader into
    ``data_root`` and writes the npz files (a user's machine; tests never download).
    """
    from pathlib import Path

    root = Path(data_root or "data/cifar10")
    files = {s: root / f"cifar10_{s}.npz" for s in ("train", "test")}
    if not all(f.exists() for f in files.values()):
        if not download:
            raise FileNotFoundError(f"{root}: expected cifar10_train.npz and cifar10_test.npz "
                                    "(pass download=True / --download to fetch CIFAR-10 with torchvision)")
        from torchvision.datasets import CIFAR10

        root.mkdir(parents=True, exist_ok=True)
        for split, f in files.items():
            d = CIFAR10(str(root / "torchvision"), train=split == "train", download=True)
            np.savez_compressed(f, x=np.asarray(d.data, dtype=np.uint8), y=np.asarray(d.targets, dtype=np.uint8))
    arrays = {}
    for split, f in files.items():
        d = np.load(f)
        x, y = d["x"], d["y"]
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8:
            raise ValueError(f"{f}: field 'x': expected uint8 (N, 32, 32, 3), found {x.dtype} {x.shape}")
        lim = train_limit if split == "train" else test_limit
        if lim is not None and lim < len(x):  # a seeded random subset (the files may be sorted by class)
            idx = np.sort(np.random.default_rng(0).permutation(len(x))[:lim])
            x, y = x[idx], y[idx]
        arrays[split] = (x.transpose(0, 3, 1, 2).astype(np.int64), y.astype(np.int64))
    return Dataset("cifar10", *arrays["train"], *arrays["test"], Input(3, 32, 32, TensorType(8, False, -8)), 10)


def image_folder(path: str, size: int = 224, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet-style folders (class/xxx.jpg) via torchvision's ImageFolder for evaluation: resize + center crop
    to ``size``, as unsigned 8-bit integers NCHW (scale 2**-8), with labels."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size),
                             transforms.PILToTensor()])
    ds = datasets.ImageFolder(path, transform=tf)
    n = len(ds) if limit is None else min(limit, len(ds))
    xs, ys = zip(*(ds[i] for i in range(n)))
    return np.stack([x.numpy() for x in xs]).astype(np.int64), np.asarray(ys, dtype=np.int64)


DATASETS["cifar10"] = cifar10
