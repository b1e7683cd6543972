"""Golden vectors for the generator's own specs (ScalaTest/ChiselSim): small designs covering every layer type
and the unroll, with input beats and the output beats the golden model says the RTL must produce.

``hashiflex vectors DIR`` (``make vectors``) writes ``DIR/<case>/design.json`` and ``DIR/<case>/vectors.json``;
``chisel/src/test/scala/hashiflex/GoldenVectorSpec.scala`` streams them through the elaborated pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import ref
from .export import design_from_graph, write_design
from .ir import Add, Conv2d, Graph, Input, Linear, Po2Weights, Requant, SumPool, TensorType
from .ops import ChannelSelect, Concat, Lut, MaxPool2d
from .analysis import annotate
from .sim.stream import from_beats, to_beats


class _Builder:
    """Appends layers with random Po2 codes; requant exponents follow the accumulator so values stay in range."""

    def __init__(self, name: str, input: Input, seed: int):
        self.g = Graph(name, input, [])
        self.rng = np.random.default_rng(seed)
        self.exp = {"input": input.type.exp}
        self.last = "input"

    def _codes(self, shape, bits: int, sparsity: float, terms: int = 1) -> np.ndarray:
        m = (1 << (bits - 1)) - 1
        shape = (terms,) + tuple(shape) if terms > 1 else tuple(shape)
        codes = self.rng.integers(-m, m + 1, size=shape)
        codes[self.rng.random(shape) < sparsity] = 0
        return codes

    def _add(self, layer, exp: int) -> str:
        self.g.layers.append(layer)
        self.exp[layer.name] = exp
        self.last = layer.name
        return layer.name

    def conv(self, name, c_in, c_out, k, stride=1, padding=0, groups=1, bits=4, e_min=-2, sparsity=0.3, terms=1,
             src=None):
        """``src``: the tensor it reads (default: the last layer)."""
        shape = (c_out, c_in // groups, k, k)
        codes = self._codes(shape, bits, sparsity, terms)
        bias = self.rng.integers(-20, 21, size=c_out)
        return self._add(Conv2d(name, np.zeros(shape), np.zeros(c_out), stride, padding,
                                Po2Weights(codes, e_min, bits, terms), bias.astype(np.int64), groups=groups, src=src),
                         self.exp[src or self.last] + e_min)

    def linear(self, name, n_in, n_out, bits=4, e_min=-3, terms=1):
        codes = self._codes((n_out, n_in), bits, 0.2, terms)
        bias = self.rng.integers(-50, 51, size=n_out)
        return self._add(Linear(name, np.zeros((n_out, n_in)), np.zeros(n_out), Po2Weights(codes, e_min, bits, terms),
                                bias.astype(np.int64)), self.exp[self.last] + e_min)

    def requant(self, name, act, bits=6, headroom=3):
        """Shift right by ``headroom`` bits (enough to exercise rounding and clamping)."""
        exp = self.exp[self.last] + headroom
        return self._add(Requant(name, act, TensorType(bits, act == "none", exp)), exp)

    def add(self, name, skip, bits=7, shortcut_first=False):
        """``last + skip``; ``shortcut_first``: ``skip + last`` (src = the shortcut, as torch.fx writes x + f(x))."""
        exp = min(self.exp[self.last], self.exp[skip]) + 1
        t = TensorType(bits, True, exp)
        layer = Add(name, skip=self.last, out=t, src=skip) if shortcut_first else Add(name, skip=skip, out=t)
        return self._add(layer, exp)

    def pool(self, name):
        return self._add(SumPool(name), self.exp[self.last])

    def max_pool(self, name, k, stride, padding=0):
        return self._add(MaxPool2d(name, k, stride, padding), self.exp[self.last])

    def lut(self, name, act, bits=6, signed=True, headroom=-2):
        """An activation table to ``bits`` at the input's exponent + ``headroom``."""
        exp = self.exp[self.last] + headroom
        return self._add(Lut(name, act, TensorType(bits, signed, exp)), exp)

    def select(self, name, channels):
        return self._add(ChannelSelect(name, tuple(channels)), self.exp[self.last])

    def concat(self, name, first, *rest):
        """``first`` and ``rest`` along channels, each aligned to the finest exponent."""
        exp = min(self.exp[n] for n in (first, *rest))
        return self._add(Concat(name, tuple(rest), src=first), exp)


def cases() -> dict[str, tuple[Graph, int | None]]:
    """name -> (graph, target_ii). Together they cover conv kxk (stride 1/2, padding on every side or per side),
    depthwise, pointwise,
    requant (ReLU, ReLU6, none), residual add (fork + skip FIFO), global sum pool, max pool, concatenation,
    lookup-table activations, channel selection, linear, pixel parallelism (in != out across a strided window, several pixels per beat) and multi-term weights."""
    out = {}
    # an inverted residual block, unrolled to 2 pixels per beat on a 6x6 map
    b = _Builder("vec_block", Input(3, 6, 6, TensorType(5, False, -4)), seed=1)
    b.conv("expand", 3, 6, 1)
    b.requant("expand_act", "relu6", bits=6, headroom=2)
    b.conv("dw", 6, 6, 3, padding=1, groups=6)
    b.requant("dw_act", "relu", bits=6, headroom=2)
    b.conv("project", 6, 3, 1)
    b.requant("project_q", "none", bits=6, headroom=2)
    b.add("residual", "input")
    out["block_par2"] = (b.g, 18)
    # strided convs change the parallelism between input and output; a pooled linear head
    b = _Builder("vec_head", Input(2, 8, 8, TensorType(4, True, -3)), seed=2)
    b.conv("conv", 2, 4, 3, stride=2, padding=1)
    b.requant("conv_act", "relu", bits=5, headroom=3)
    b.conv("dw", 4, 4, 3, stride=2, padding=1, groups=4)
    b.requant("dw_act", "none", bits=6, headroom=2)
    b.pool("pool")
    b.linear("fc", 4, 5)
    out["strided_head_par4"] = (b.g, 16)
    # the same kind of block one pixel per beat, unpadded 3x3 and a residual around a dense conv
    b = _Builder("vec_serial", Input(2, 5, 4, TensorType(3, False, -2)), seed=3)
    first = b.conv("conv0", 2, 3, 3)
    b.requant("act0", "relu", bits=4, headroom=2)
    b.conv("conv1", 3, 3, 3, padding=1, sparsity=0.6)
    b.requant("act1", "none", bits=5, headroom=3)
    b.add("res", first, shortcut_first=True)
    out["serial"] = (b.g, None)
    # multi-term weights (each weight a sum of 2 or 3 signed powers of two): dense, depthwise and linear trees
    # whose slots repeat an input with different shifts and signs
    b = _Builder("vec_terms", Input(2, 5, 5, TensorType(4, True, -3)), seed=4)
    b.conv("conv", 2, 4, 3, padding=1, terms=2, sparsity=0.2)
    b.requant("conv_act", "relu", bits=5, headroom=4)
    b.conv("dw", 4, 4, 3, padding=1, groups=4, terms=3, sparsity=0.4)
    b.requant("dw_act", "none", bits=6, headroom=4)
    b.pool("pool")
    b.linear("fc", 4, 3, terms=2)
    out["multi_term"] = (b.g, None)
    # TensorFlow 'SAME' padding (a Coral MobileNetV2 stem): stride-2 windows padded only below and right, at 2
    # output pixels per beat, then a depthwise conv padded above and left only
    b = _Builder("vec_tf_pad", Input(2, 8, 8, TensorType(4, True, -3)), seed=5)
    b.conv("stem", 2, 3, 3, stride=2, padding=(0, 1, 0, 1))
    b.requant("stem_act", "relu6", bits=5, headroom=3)
    b.conv("dw", 3, 3, 3, stride=2, padding=(0, 1, 0, 1), groups=3, terms=2)
    b.requant("dw_act", "relu", bits=5, headroom=3)
    b.conv("dw2", 3, 3, 3, padding=(2, 0, 1, 1), groups=3)
    b.requant("dw2_act", "none", bits=6, headroom=3)
    out["tf_pad"] = (b.g, 8)
    # SqueezeNet's Fire module (1x1 and 3x3 expands concatenated, at different exponents) between max pools: a
    # ceil-mode 3x3/2 pool padded below and right, a pointwise one, 2 pixels per beat
    b = _Builder("vec_fire", Input(2, 8, 8, TensorType(4, True, -3)), seed=6)
    b.max_pool("pool0", 3, 2, (1, 2, 1, 2))
    b.conv("squeeze", 2, 2, 1)
    sq = b.requant("squeeze_act", "relu", bits=4, headroom=2)
    b.conv("expand1", 2, 3, 1)
    e1 = b.requant("expand1_act", "relu", bits=5, headroom=2)
    b.conv("expand3", 2, 2, 3, padding=1, src=sq)
    e3 = b.requant("expand3_act", "relu", bits=5, headroom=4)
    b.concat("cat", e1, e3)
    b.max_pool("pool1", 1, 1)
    out["fire_pools"] = (b.g, 8)
    # activations as lookup tables (MobileNetV3's Hardswish, EfficientNet's SiLU, a sigmoid) and a channel
    # selection at 2 pixels per beat
    b = _Builder("vec_luts", Input(2, 6, 6, TensorType(4, True, -3)), seed=7)
    b.conv("conv", 2, 3, 3, padding=1)
    b.requant("conv_q", "none", bits=6, headroom=3)
    b.lut("hswish", "hardswish", bits=6, signed=True, headroom=0)
    b.select("shuffle", (2, 0, 1, 1))  # a permutation with a repeat: wiring
    b.conv("pw", 4, 2, 1)
    b.requant("pw_q", "none", bits=5, headroom=3)
    b.lut("silu", "silu", bits=5, signed=True, headroom=-1)
    b.lut("sigmoid", "sigmoid", bits=4, signed=False, headroom=-2)
    out["luts"] = (b.g, 18)
    for g, _ in out.values():
        annotate(g)
    return out


def write_vectors(root: str | Path, images: int = 4, seed: int = 0) -> list[Path]:
    """Write every case's design.json and vectors.json under ``root``; returns the case folders."""
    root = Path(root)
    dirs = []
    rng = np.random.default_rng(seed)
    for name, (g, target_ii) in cases().items():
        d = design_from_graph(g, levels_per_stage=2, target_ii=target_ii)
        folder = root / name
        write_design(d, folder / "design.json")
        lo, hi = g.input.range
        x = rng.integers(lo, hi + 1, size=(images, g.input.channels, g.input.height, g.input.width))
        x[0] = hi  # the extremes
        if images > 1:
            x[1] = lo
        y = ref.run(g, x)
        last = d["layers"][-1]
        oc, oh, ow = last["out_shape"]
        vec = {"images": images,
               "in_beats": to_beats(x, d["input"]["parallelism"], d["input"]["bits"]).tolist(),
               "out_beats": to_beats(y.reshape(images, oc, oh, ow), last["parallelism"], last["out_width"]).tolist(),
               "ii_cycles_per_image": d["hardware"]["ii_cycles_per_image"]}
        # the contract both ways: decoding the beats gives the golden outputs back
        back = from_beats(np.asarray(vec["out_beats"]), (oc, oh, ow), last["parallelism"], last["out_width"],
                          last["out_signed"])
        assert np.array_equal(back.reshape(images, -1), y)
        (folder / "vectors.json").write_text(json.dumps(vec) + "\n")
        dirs.append(folder)
    return dirs
