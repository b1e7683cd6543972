"""Training: float first, then Po2 quantization-aware training (straight-through estimator)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import Dataset
from .ir import Graph
from .quant.fakequant import FakeQuantNet
from .quant.prune import apply_masks, magnitude_masks, sparsity_schedule


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int, desc: str,
         progress: bool = True, on_epoch=None, checkpoint: Path | None = None, batch: int = 64,
         optimizer: str = "adam", augment: bool = False, weight_decay: float = 0.0) -> None:
    """Adam + cosine schedule. ``on_epoch(epoch)`` runs before each epoch (pruning masks). With ``checkpoint``,
    the state is saved after every epoch and a run resumes from it (same seed, same result)."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    first = 0
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        first = ck["epoch"] + 1
    model.train()
    for epoch in tqdm(range(first, epochs), desc=desc, disable=not progress, leave=False, initial=first, total=epochs):
        if on_epoch is not None:
            on_epoch(epoch)
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            xb = _augment(xt[idx], gen) if augment else xt[idx]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
        if checkpoint is not None:
            tmp = Path(checkpoint).with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "epoch": epoch}, tmp)
            tmp.replace(checkpoint)
    model.eval()


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, per image."""
    n, _, h, w = x.shape
    xp = nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


def train_float(model: nn.Module, ds: Dataset, epochs: int = 40, lr: float = 1e-2, seed: int = 0,
                progress: bool = True, **fit) -> nn.Module:
    """Train the float model (``fit``: batch, optimizer, augment, weight_decay, checkpoint)."""
    seed_everything(seed)
    _fit(model, ds.value(ds.x_train), ds.y_train, epochs, lr, seed, "float training", progress, **fit)
    return model


def train_qat(g: Graph, ds: Dataset, wbits: int | dict[str, int], epochs: int = 20, lr: float = 2e-3, seed: int = 0,
              progress: bool = True, sparsity: float = 0.0, scope: str = "global", exclude: tuple[str, ...] = (),
              prune_epochs: int | None = None, checkpoint: Path | None = None, **fit) -> Graph:
    """QAT on the calibrated float graph; returns the float graph with the fine-tuned latent weights.

    With ``sparsity`` > 0, magnitude pruning follows the gradual schedule over the first ``prune_epochs``
    (default: 3/4 of the epochs), masks recomputed from the latent weights each epoch; pruned weights are zero
    in the returned graph.
    """
    seed_everything(seed)
    net = FakeQuantNet(g, wbits=wbits).float()
    ramp = prune_epochs if prune_epochs is not None else max(1, (3 * epochs) // 4)

    def update_masks(epoch: int) -> None:
        if sparsity <= 0:
            return
        s = sparsity_schedule(sparsity, epoch + 1, ramp)
        masks = magnitude_masks(net.to_graph(), s, scope, exclude)
        net.masks = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in masks.items()}

    _fit(net, ds.value(ds.x_train), ds.y_train, epochs, lr, seed, "Po2 QAT", progress, update_masks, checkpoint,
         **fit)
    out = net.to_graph()
    if sparsity > 0:
        out = apply_masks(out, magnitude_masks(out, sparsity, scope, exclude) if not net.masks else
                          {k: v.double().numpy() for k, v in net.masks.items()})
    return out


@torch.no_grad()
def accuracy_torch(model: nn.Module, x_value: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    model.eval()
    p = np.concatenate([model(torch.as_tensor(x_value[i:i + batch], dtype=torch.float32)).argmax(1).numpy()
                        for i in range(0, len(x_value), batch)])
    return float((p == y).mean())
