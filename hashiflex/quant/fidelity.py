"""Per-layer fidelity of a quantized network against its float original: where a network loses its accuracy.

Two views, both over calibration images streamed in batches (running sums only, nothing stored per image):

* **through the network** (:func:`layer_fidelity`): the float network and the fake-quant Po2 network side by side;
  at every requantize point and residual add (and the output), the signal-to-quantization-noise ratio
  ``SQNR = 10 log10(sum f^2 / sum (f - q)^2)`` and the cosine of the two activations. Errors accumulate, so the
  layer where SQNR drops is where the damage starts.
* **one layer at a time** (:func:`weight_sensitivity`): the float network with only layer L's weights replaced by
  their Po2 values (and its bias by the quantized bias); the output's SQNR and top-1 agreement with the float
  network. This isolates what each layer's weight rounding costs, the input to choosing per-layer precision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..ir import Conv2d, Graph, IRError, Linear
from ..ops import op_of
from .fakequant import FakeQuantNet


@dataclass(frozen=True)
class Fidelity:
    layer: str
    sqnr_db: float        # inf when identical
    cosine: float
    agreement: float | None = None  # top-1 agreement with the float network (output rows only)

    def to_json(self) -> dict:
        return asdict(self)


class _Acc:
    """Running sums for SQNR and cosine of two activations."""

    def __init__(self):
        self.ff = self.ee = self.qq = self.fq = 0.0

    def add(self, f: torch.Tensor, q: torch.Tensor) -> None:
        f, q = f.double(), q.double()
        self.ff += float((f * f).sum())
        self.qq += float((q * q).sum())
        self.fq += float((f * q).sum())
        self.ee += float(((f - q) ** 2).sum())

    def result(self, name: str, agreement: float | None = None) -> Fidelity:
        sqnr = float("inf") if self.ee == 0 else (10 * np.log10(self.ff / self.ee) if self.ff > 0 else float("-inf"))
        den = np.sqrt(self.ff * self.qq)
        cos = 1.0 if den == 0 and self.ee == 0 else (self.fq / den if den > 0 else 0.0)
        return Fidelity(name, float(sqnr), float(cos), agreement)


def _check_pair(float_g: Graph, quant_g: Graph) -> None:
    a, b = [l.name for l in float_g.layers], [l.name for l in quant_g.layers]
    if a != b:
        diff = next(i for i, (x, y) in enumerate(zip(a + [None], b + [None])) if x != y)
        raise IRError(f"fidelity: the float and quantized graphs differ at layer {diff} "
                      f"({a[diff] if diff < len(a) else None!r} vs {b[diff] if diff < len(b) else None!r})")
    if not quant_g.quantized:
        raise IRError("fidelity: the second graph is not quantized (run calibrate_activations and quantize_weights)")


def _batches(x_value: np.ndarray, batch: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(x_value), batch), desc=desc, disable=not progress, leave=False):
        yield torch.as_tensor(x_value[i:i + batch], dtype=torch.float64)


@torch.no_grad()
def layer_fidelity(float_g: Graph, quant_g: Graph, x_value: np.ndarray, batch: int = 256,
                   progress: bool = False) -> list[Fidelity]:
    """SQNR and cosine of every requantize point / residual add and of the output, float vs Po2 fake-quant, on
    float images ``x_value`` (the value domain the float network takes; they are not rounded to the input
    format, so the input's own quantization is part of what the first layer loses)."""
    _check_pair(float_g, quant_g)
    fnet = FakeQuantNet(float_g, quantize=False).double().eval()
    qnet = FakeQuantNet(quant_g).double().eval()
    fnet.record = qnet.record = True
    points = [l.name for l in float_g.layers if op_of(l).calibrated]
    accs = {n: _Acc() for n in points}
    out, agree, n = _Acc(), 0, 0
    step = 2.0 ** quant_g.input.type.exp
    lo, hi = quant_g.input.type.range
    for x in _batches(x_value, batch, progress, "fidelity"):
        fy = fnet(x)
        qy = qnet(torch.clamp(torch.floor(x / step + 0.5), lo, hi) * step)  # the input as the hardware sees it
        for name in points:
            accs[name].add(fnet.recorded[name], qnet.recorded[name])
        out.add(fy, qy)
        agree += int((fy.argmax(1) == qy.argmax(1)).sum())
        n += len(x)
    return [accs[p].result(p) for p in points] + [out.result("output", agree / max(n, 1))]


@torch.no_grad()
def weight_sensitivity(float_g: Graph, quant_g: Graph, x_value: np.ndarray, batch: int = 256,
                       progress: bool = False) -> list[Fidelity]:
    """For each conv/linear layer L alone: the float network with L's weights and bias replaced by their
    quantized values; SQNR, cosine and top-1 agreement of the output against the float network."""
    _check_pair(float_g, quant_g)
    ref_net = FakeQuantNet(float_g, quantize=False).double().eval()
    xs = list(_batches(x_value, batch, False, ""))
    ref_out = [ref_net(x) for x in xs]
    from tqdm.auto import tqdm

    from ..analysis import annotate

    acc_exps = {info.name: info.acc_exp for info in annotate(quant_g)}
    results = []
    weight_layers = [(i, l) for i, l in enumerate(quant_g.layers) if isinstance(l, (Conv2d, Linear))]
    for i, layer in tqdm(weight_layers, desc="sensitivity", disable=not progress, leave=False):
        acc_exp = acc_exps[layer.name]
        g = float_g.copy()
        g.layers[i] = replace(g.layers[i], weight=layer.q.float_weights(),
                              bias=layer.bias_int.astype(np.float64) * 2.0 ** acc_exp)
        net = FakeQuantNet(g, quantize=False).double().eval()
        acc, agree, n = _Acc(), 0, 0
        for x, fy in zip(xs, ref_out):
            y = net(x)
            acc.add(fy, y)
            agree += int((fy.argmax(1) == y.argmax(1)).sum())
            n += len(x)
        results.append(acc.result(layer.name, agree / max(n, 1)))
    return results


def format_fidelity(rows: list[Fidelity], title: str) -> str:
    worst = min((r for r in rows if r.layer != "output"), key=lambda r: r.sqnr_db, default=None)
    lines = [title, f"{'layer':<40} {'SQNR dB':>9} {'cosine':>8} {'top-1 agree':>12}"]
    for r in rows:
        mark = "  <- lowest" if worst is not None and r is worst else ""
        agree = f"{100 * r.agreement:11.2f}%" if r.agreement is not None else f"{'':>12}"
        lines.append(f"{r.layer:<40} {r.sqnr_db:9.2f} {r.cosine:8.4f} {agree}{mark}")
    return "\n".join(lines)
