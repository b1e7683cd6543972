"""Fine-tuning after tape-out: the hardened backbone is frozen (its Po2 weights are wires), only the NPU head is
retrained on new data or new labels, quantized, loaded into the *running* co-simulation through the load port
(no re-elaboration), and verified bit for bit against the golden model with the new head.

The flow (``hashiflex finetune``, notebook 04): export the network with its classification layer on the NPU
(``WORK/npu/design.json``), elaborate it once (``WORK/npu/rtl``), boot the simulation with the trained head,
measure the new task before, train the head on the backbone's exact integer features, load, measure after.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import hw, npu, ref
from .export import load_design, npu_design, write_design


# ------------------------------------------------------------------------------------------------ tasks
def _shift(x: np.ndarray, rng) -> np.ndarray:
    """The camera moved: every image one pixel right and down (zeros come in)."""
    y = np.roll(x, (1, 1), axis=(2, 3))
    y[:, :, 0, :] = 0
    y[:, :, :, 0] = 0
    return y


def _noise(x: np.ndarray, rng) -> np.ndarray:
    """A noisier sensor: a uniform offset of 0..6 codes on every pixel."""
    return x + rng.integers(0, 7, size=x.shape)


def _blur(x: np.ndarray, rng) -> np.ndarray:
    """A defocused lens: a 5-point blur, brightened."""
    k = x.astype(np.float64)
    y = (k + np.roll(k, 1, 3) + np.roll(k, -1, 3) + np.roll(k, 1, 2) + np.roll(k, -1, 2)) / 5
    return np.round(1.5 * y).astype(np.int64)


def _invert(x: np.ndarray, rng) -> np.ndarray:
    """Dark ink on light paper instead of light on dark (the data's own maximum minus the pixel)."""
    return x.max() - x


TASKS = {"shift": _shift, "noise": _noise, "blur": _blur, "invert": _invert, "none": lambda x, rng: x}


@dataclass
class Task:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int


def make_task(ds, name: str = "shift", labels: list[int] | None = None, seed: int = 0) -> Task:
    """The new deployment data: ``ds``'s images through the TASKS transform ``name`` (clipped to the input range),
    labels optionally remapped (``labels[old] = new``: relabelled or merged classes)."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, found {name!r}")
    rng = np.random.default_rng(seed)
    lo, hi = ds.input.type.range
    xtr = np.clip(TASKS[name](ds.x_train, rng), lo, hi)
    xte = np.clip(TASKS[name](ds.x_test, rng), lo, hi)
    ytr, yte, classes = ds.y_train, ds.y_test, ds.classes
    if labels is not None:
        m = np.asarray(labels, dtype=np.int64)
        if m.shape != (ds.classes,) or m.min() < 0:
            raise ValueError(f"labels: expected {ds.classes} non-negative class numbers (one per old class), "
                             f"found {list(labels)}")
        ytr, yte, classes = m[ytr], m[yte], int(m.max()) + 1
    return Task(name + ("+relabel" if labels is not None else ""), xtr, ytr, xte, yte, classes)


# ------------------------------------------------------------------------------------------------ training
def train_head(features: np.ndarray, y: np.ndarray, in_exp: int, classes: int,
               init: tuple[np.ndarray, np.ndarray] | None = None, epochs: int = 300, lr: float = 1e-2,
               seed: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A float linear head on the backbone's exact integer features (value = feature * 2**in_exp), full-batch
    Adam with cross-entropy; ``init`` (weight, bias) starts from the current head when the classes match."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    lin = torch.nn.Linear(features.shape[1], classes).double()
    if init is not None and init[0].shape == (classes, features.shape[1]):
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(init[0], dtype=torch.float64))
            lin.bias.copy_(torch.as_tensor(init[1], dtype=torch.float64))
    x = torch.as_tensor(features * 2.0 ** in_exp, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.int64)
    opt = torch.optim.Adam(lin.parameters(), lr)
    for _ in tqdm(range(epochs), desc="fine-tune head", disable=not progress, leave=False):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x), t).backward()
        opt.step()
    return lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()


# ------------------------------------------------------------------------------------------------ steps
NPU_DIR = "npu"


def step_npu_export(work: Path, capacity: int | None = None, top_k: int = 1, weight_bits: int = 8,
                    bias_bits: int = 24, out_bits: int = 16) -> dict:
    """WORK/npu/design.json: the quantized network of WORK/po2.pkl with its classification layer on the NPU,
    sized for the backbone's II; the boot head is the trained layer quantized to ``weight_bits`` integers."""
    from .flow import Config, _ds, load_quantized

    g, meta = load_quantized(work)
    cfg = Config(**meta["config"])
    ds = _ds(cfg)
    d = npu_design(g, cfg.levels_per_stage, cfg.target_ii, ds.x_train[:1024], capacity, weight_bits, bias_bits,
                       out_bits, top_k)
    write_design(d, work / NPU_DIR / "design.json")
    c = d["npu"]
    return {"design": str(work / NPU_DIR / "design.json"), "lanes": c["lanes"], "width": c["width"],
            "npu_cycles_per_image": c["cycles_per_image"], "ii_cycles_per_image": d["hardware"]["ii_cycles_per_image"]}


def step_npu_elaborate(work: Path) -> dict:
    d, g = load_design(work / NPU_DIR / "design.json")
    params = hw.elaborate(work / NPU_DIR / "design.json", work / NPU_DIR / "rtl")
    hw.check_design_hw(d, g, params)
    return params


def prepare(work: Path, capacity: int | None = None, top_k: int = 1, weight_bits: int = 8) -> dict:
    """Export and elaborate the NPU design of WORK, each redone only when its inputs changed."""
    from .flow import _PKG, _cached, _digest

    root = _PKG.parent
    opts = dict(capacity=capacity, top_k=top_k, weight_bits=weight_bits)
    r, _ = _cached(work, "npu_export", _digest(opts, work / "po2.pkl", _PKG / "npu.py", _PKG / "export"),
                   [work / NPU_DIR / "design.json"], lambda: step_npu_export(work, **opts))
    rtl = work / NPU_DIR / "rtl"
    p, _ = _cached(work, "npu_elaborate", _digest(work / NPU_DIR / "design.json", root / "chisel", root / "build.sc"),
                   [rtl / "hw_params.json"], lambda: _summary(step_npu_elaborate(work)))
    return r | p


def _summary(p: dict) -> dict:
    return {"top": p["top"], "adders": p["adders"], "npu_module": p["npu"]["module"], "macs": p["npu"]["macs"],
            "npu_memory_bits": p["npu"]["memory_bits"]}


def _evaluate(sim, g, cfg, head, x, y) -> dict:
    res = sim.run(x, progress=False)
    logits, top = npu.golden(g, cfg, head, x)
    return {"rtl_accuracy": float((res.topk[:, 0] == y).mean()), "golden_accuracy": float((top[:, 0] == y).mean()),
            "mismatches": npu.mismatches(res.outputs, res.topk, logits, top), "images": int(len(x)), "tag": int(head.tag),
            "cycles_per_image": res.cycles_per_image}


def finetune(work: Path = Path("build"), task: str = "shift", labels: list[int] | None = None, epochs: int = 300,
             lr: float = 1e-2, limit: int | None = None, capacity: int | None = None, top_k: int = 1,
             weight_bits: int = 8, progress: bool = True, sim=None) -> dict:
    """The whole fine-tune loop on WORK (a finished ``hashiflex demo``/``quantize``): NPU design, one
    simulation, accuracy of the new task before, head retrained and quantized, loaded into the running
    simulation, verified, accuracy after. Writes WORK/finetune/{finetune.json, head.json, head.bin}.

    ``sim``: an already running StreamSim of WORK/npu/rtl to load into (the notebook keeps one)."""
    from tqdm.auto import tqdm

    from .flow import Config, _ds, load_quantized
    from .analysis import annotate
    from .sim import StreamSim

    work = Path(work)
    t0 = time.perf_counter()
    steps = tqdm(total=6, desc="fine-tune", disable=not progress)
    _, meta = load_quantized(work)
    prep = prepare(work, capacity, top_k, weight_bits)
    steps.update()
    d, g = load_design(work / NPU_DIR / "design.json")
    cfg, boot = npu.from_design(d)
    ds = _ds(Config(**meta["config"]))
    t = make_task(ds, task, labels)
    if t.classes > cfg.capacity:
        raise ValueError(f"task {t.name!r} has {t.classes} classes, but the NPU was built for at most "
                         f"{cfg.capacity} (re-export it with a larger capacity: hashiflex finetune --capacity N)")
    x, y = t.x_test[:limit], t.y_test[:limit]
    rtl = work / NPU_DIR / "rtl"
    if sim is None:
        sim = StreamSim(rtl, hw.read_hw_params(rtl), d)
    status = sim.load(npu.encode(boot, cfg))
    if status != npu.Status.OK:
        raise RuntimeError(f"NPU load port refused the boot head: {status.name}")
    steps.update()
    before = _evaluate(sim, g, cfg, boot, x, y)
    steps.update()
    # train on the backbone's exact integer features: what the NPU will see
    feats = ref.run(g, t.x_train)
    in_exp = annotate(g)[-1].out_exp
    w_init = boot.weights * 2.0 ** boot.w_exp
    b_init = boot.bias * 2.0 ** (in_exp + boot.w_exp)
    w, b = train_head(feats, t.y_train, in_exp, t.classes, (w_init, b_init), epochs, lr, progress=progress)
    float_acc = float(((ref.run(g, x) * 2.0 ** in_exp @ w.T + b).argmax(1) == y).mean())
    head = npu.quantize_head(w, b, in_exp, cfg, feats, tag=boot.tag + 1)
    steps.update()
    words = npu.encode(head, cfg)
    load_status = sim.load(words)
    if load_status != npu.Status.OK:
        raise RuntimeError(f"NPU load port refused the fine-tuned head: {load_status.name}")
    steps.update()
    after = _evaluate(sim, g, cfg, head, x, y)
    steps.update()
    steps.close()
    out_dir = work / "finetune"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "head.json").write_text(json.dumps(head.to_json()) + "\n")
    words.astype("<u4").tofile(out_dir / "head.bin")
    hardened = work / "rtl" / "hw_params.json"
    r = {"task": t.name, "classes": t.classes, "epochs": epochs, "npu": {**cfg.to_json(), "macs": cfg.macs},
         "ii_cycles_per_image": d["hardware"]["ii_cycles_per_image"], "prepare": prep,
         "before": before, "after": after, "float_head_accuracy": float_acc, "load_status": load_status.name,
         "load_words": int(len(words)), "tag": sim.status()[1], "seconds": time.perf_counter() - t0}
    if hardened.exists():  # the paper's other configuration, for comparison
        p = json.loads(hardened.read_text())
        r["fully_hardened"] = {"adders": p["adders"], "ii_cycles_per_image": p["ii_cycles_per_image"]}
    (out_dir / "finetune.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    return r


def format_finetune(r: dict) -> str:
    b, a, n = r["before"], r["after"], r["npu"]
    rows = [
        ("task", f"{r['task']} ({r['classes']} classes, {b['images']} test images)"),
        ("NPU", f"{n['lanes']} lanes x {n['width']} inputs = {n['macs']} MACs, {n['weight_bits']}-bit weights, "
                f"{n['cycles_per_image']} cycles/image"),
        ("design II (max of backbone, NPU)", f"{r['ii_cycles_per_image']} cycles/image"),
        ("accuracy before (RTL / golden)", f"{100 * b['rtl_accuracy']:.2f} % / {100 * b['golden_accuracy']:.2f} %"),
        ("accuracy after (RTL / golden)", f"{100 * a['rtl_accuracy']:.2f} % / {100 * a['golden_accuracy']:.2f} %"),
        ("float head after fine-tuning", f"{100 * r['float_head_accuracy']:.2f} %"),
        ("RTL vs golden mismatches (before, after)", f"{b['mismatches']}, {a['mismatches']}"),
        ("load", f"{r['load_words']} words, status {r['load_status']}, active tag {r['tag']}"),
        ("cycles per image measured (after)", f"{a['cycles_per_image']:.1f}"),
    ]
    if "fully_hardened" in r:
        h = r["fully_hardened"]
        rows.append(("fully hardened: adders, II", f"{h['adders']}, {h['ii_cycles_per_image']} cycles/image"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


__all__ = ["TASKS", "Task", "make_task", "train_head", "finetune", "format_finetune", "prepare",
           "step_npu_export", "step_npu_elaborate"]
