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
