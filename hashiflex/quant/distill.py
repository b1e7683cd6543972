"""Distillation fine-tuning of the Po2 network: the fake-quant model (the student: Po2 weights, quantized
activations, straight-through gradients) learns the float model's (the teacher's) output distribution on
unlabelled images, so that one-term or pruned weights recover what post-training rounding lost.

No labels are used, so any folder of the user's images works (training on a few labelled images overfits them;
matching the teacher's soft outputs does much less). The loss is the KL divergence between the teacher's and the
student's softmax at a temperature T (times T^2, Hinton et al.). Images are flipped left-right at random.

It scales with torch DDP: launched under ``torchrun --nproc-per-node N`` (or with a process group already
initialised), each process trains on its share of every batch and the gradients are averaged, so N processes
compute what one does on the whole batch. Only the latent float weights change; the returned graph is the float
graph with those weights, to be quantized by :func:`hashiflex.passes.quantize_weights` as before.
"""
from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Conv2d, Graph, IRError, Linear
from .fakequant import FakeQuantNet


@dataclass
class DistillResult:
    graph: Graph                                      # the float graph with the fine-tuned latent weights
    loss: list[float] = field(default_factory=list)   # mean KL per epoch
    steps: int = 0
    world_size: int = 1
    rank: int = 0


def _world() -> tuple[int, int]:
    """(rank, world size); initialises the process group when torchrun started several processes."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distill(g: Graph, data, wbits: int | dict[str, int], terms: int | dict[str, int] | None = None,
            epochs: int = 2, lr: float = 1e-4, batch: int = 16, temperature: float = 1.0, seed: int = 0,
            exp: int | None = None, flip: bool = True, keep_zeros: bool = True, teacher: Graph | None = None,
            progress: bool = True, checkpoint: Path | None = None) -> DistillResult:
    """Fine-tune ``g``'s (calibrated float graph) latent weights so its Po2 model (``wbits``, ``terms`` per layer)
    matches the float model's outputs on ``data``. ``teacher``: the float graph to match (default ``g``; the
    unpruned network when ``g`` is pruned).

    ``data``: a torch Dataset of (integer image, anything) pairs (:class:`hashiflex.imagenet.ImageFolder`, say);
    images are scaled by ``2**exp`` (default: the graph's input exponent). ``batch`` is the global batch (split
    across DDP processes). ``keep_zeros``: weights that are zero (pruned) stay zero. With ``checkpoint``, the
    state is saved after every epoch and a run resumes from it.
    """
    from torch.utils.data import DataLoader, DistributedSampler
    from tqdm.auto import tqdm

    if epochs < 0 or lr <= 0 or batch < 1 or temperature <= 0:
        raise ValueError(f"distill: expected epochs >= 0, lr > 0, batch >= 1, temperature > 0, found epochs "
                         f"{epochs}, lr {lr}, batch {batch}, temperature {temperature}")
    if len(data) == 0:
        raise ValueError("distill: no images to distill on")
    rank, world = _world()
    if batch % world:
        raise ValueError(f"distill: batch {batch} does not split evenly over {world} processes")
    exp = g.input.type.exp if exp is None else exp
    torch.manual_seed(seed)
    teacher = FakeQuantNet(teacher if teacher is not None else g, quantize=False).float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = FakeQuantNet(g, wbits=wbits, terms=terms).float()
    if keep_zeros:
        student.masks = {l.name: torch.as_tensor(l.weight != 0, dtype=torch.float32)
                         for l in g.layers if isinstance(l, (Conv2d, Linear)) and not np.all(l.weight != 0)}
    model = student
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student)
    # one process too draws through DistributedSampler: global batch i is then the same images for any count
    sampler = DistributedSampler(data, world, rank, shuffle=True, seed=seed, drop_last=False)
    loader = DataLoader(data, batch_size=batch // world, sampler=sampler)
    steps_per_epoch = len(loader)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    flip_gen = torch.Generator().manual_seed(seed * 1000 + rank + 1)
    res = DistillResult(g, world_size=world, rank=rank)
    first = 0
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch.load(checkpoint, weights_only=False)
        student.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        flip_gen.set_state(ck["flip_gen"])
        first, res.loss, res.steps = ck["epoch"] + 1, ck["loss"], ck["steps"]
    t2 = temperature * temperature
    student.train()
    bar = tqdm(total=epochs * steps_per_epoch, initial=first * steps_per_epoch, desc="distill",
               disable=not progress or rank != 0, leave=False)
    for epoch in range(first, epochs):
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for xb, _ in loader:
            x = xb.to(torch.float32) * 2.0 ** exp
            if flip:
                m = torch.rand(len(x), generator=flip_gen) < 0.5
                x[m] = x[m].flip(-1)
            with torch.no_grad():
                t = F.log_softmax(teacher(x) / temperature, dim=1)
            s = F.log_softmax(model(x) / temperature, dim=1)
            loss = F.kl_div(s, t, log_target=True, reduction="batchmean") * t2
            if not math.isfinite(loss.item()):
                raise IRError(f"distill: the loss is {loss.item()} at epoch {epoch}, step {res.steps} (lower --lr)")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, count, res.steps = total + loss.item() * len(x), count + len(x), res.steps + 1
            bar.update()
            bar.set_postfix(kl=f"{loss.item():.4f}")
        res.loss.append(total / max(1, count))
        if checkpoint is not None and rank == 0:
            tmp = Path(checkpoint).with_suffix(".tmp")
            torch.save({"model": student.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "flip_gen": flip_gen.get_state(), "epoch": epoch,
                        "loss": res.loss, "steps": res.steps}, tmp)
            tmp.replace(checkpoint)
    bar.close()
    if model is not student:
        # DDP's reducer holds the process group and sits in reference cycles: release it now, not at a garbage
        # collection that may run after the caller destroyed the group (gloo then aborts the process)
        del model
        gc.collect()
    student.eval()
    res.graph = student.to_graph()
    if keep_zeros:  # the mask multiplies the latent weights in the forward pass: write the zeros back
        for layer in res.graph.layers:
            if layer.name in student.masks:
                layer.weight = layer.weight * student.masks[layer.name].double().numpy()
    return res
