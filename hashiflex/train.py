"""Training: float first, then Po2 quantization-aware training (straight-through estimator)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import Dataset
from .ir import Graph
from .quant.fakequant import FakeQuantNet


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int, desc: str,
         progress: bool = True) -> None:
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def train_float(model: nn.Module, ds: Dataset, epochs: int = 40, lr: float = 1e-2, seed: int = 0,
                progress: bool = True) -> nn.Module:
    seed_everything(seed)
    _fit(model, ds.value(ds.x_train), ds.y_train, epochs, lr, seed, "float training", progress)
    return model


def train_qat(g: Graph, ds: Dataset, wbits: int, epochs: int = 20, lr: float = 2e-3, seed: int = 0,
              progress: bool = True) -> Graph:
    """QAT on the calibrated float graph; returns the float graph with the fine-tuned latent weights."""
    seed_everything(seed)
    net = FakeQuantNet(g, wbits=wbits).float()
    _fit(net, ds.value(ds.x_train), ds.y_train, epochs, lr, seed, "Po2 QAT", progress)
    return net.to_graph()


@torch.no_grad()
def accuracy_torch(model: nn.Module, x_value: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    p = model(torch.as_tensor(x_value, dtype=torch.float32)).argmax(1).numpy()
    return float((p == y).mean())
