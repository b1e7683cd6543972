"""Random quantized graphs for property tests (shapes, strides, exponents, sparsity, signedness)."""
from __future__ import annotations

import numpy as np

from hashiflex.ir import Add, Conv2d, Graph, Input, Linear, Po2Weights, Requant, SumPool, TensorType
from hashiflex.ops import ChannelSelect, Concat, Lut, MaxPool2d
from hashiflex.ops.channel_select import shuffle_permutation
from hashiflex.ops.lut import FUNCTIONS
from hashiflex.passes import annotate


def random_graph(seed: int, max_c: int = 4, max_hw: int = 7, convs: int | None = None, head: bool | None = None,
                 name: str = "rand", dag: bool = False, max_terms: int = 1, asym_pad: bool = False,
                 max_pool: bool = False, concat: bool = False, lut: bool = False, select: bool = False) -> Graph:
    """A random quantized chain: conv -> requant (x convs) [-> sum_pool -> linear].

    ``max_terms`` > 1: each conv/linear layer gets 1 to ``max_terms`` signed powers of two per weight (drawn from
    a second stream, so the graph is otherwise the one ``max_terms=1`` gives).

    ``dag``: convs may also be depthwise, and a conv block that keeps its input's shape may get a residual add
    around it (so tensors fan out to two readers).

    ``asym_pad``: each conv gets its own padding per side (top, bottom, left, right), as TF 'SAME' and ZeroPad2d
    give (a shape-preserving conv keeps k-1 in all per axis), drawn from a third stream.

    ``max_pool``: after each conv block a max pool (kernel 1-3, stride 1-2, padding per side below the kernel)
    follows with probability 0.7, drawn from a fourth stream.

    ``concat``: a conv block that keeps its input's height and width may get its input concatenated to its output
    along channels (DenseNet style, either order, the exponents aligned), drawn from a fifth stream.

    ``lut``: after each conv block's requantize an activation lookup table (Hardswish, SiLU, Sigmoid, ...) to a
    random output type follows with probability 0.6, drawn from a sixth stream.

    ``select``: a conv block's output may go through a channel selection (ShuffleNet's shuffle when the channels
    pair up, else a random choice of channels, repeats allowed), drawn from a seventh stream.
    """
    rng = np.random.default_rng(seed)
    trng = np.random.default_rng([seed, 1])
    prng = np.random.default_rng([seed, 2])
    mrng = np.random.default_rng([seed, 3])
    crng = np.random.default_rng([seed, 4])
    lrng = np.random.default_rng([seed, 5])
    srng = np.random.default_rng([seed, 6])

    def weights(codes, e_min, bits):
        k = int(trng.integers(1, max_terms + 1))
        if k == 1:
            return Po2Weights(codes, e_min, bits)
        m = (1 << (bits - 1)) - 1
        more = trng.integers(-m, m + 1, size=(k - 1,) + codes.shape) * (trng.random((k - 1,) + codes.shape) < 0.6)
        return Po2Weights(np.concatenate([codes[None], more]), e_min, bits, k)

    c = int(rng.integers(1, max_c + 1))
    h = int(rng.integers(3, max_hw + 1))
    w = int(rng.integers(3, max_hw + 1))
    signed = bool(rng.integers(0, 2))
    in_t = TensorType(int(rng.integers(2, 7)), signed, int(rng.integers(-6, 1)))
    g = Graph(name, Input(c, h, w, in_t), [])
    exp = in_t.exp
    n_conv = int(rng.integers(1, 3)) if convs is None else convs
    for i in range(n_conv):
        shape_in = (c, h, w)
        k = int(rng.choice([1, 3]))
        s = int(rng.choice([1, 2]))
        p = int(rng.integers(0, k // 2 + 1))
        if h + 2 * p < k or w + 2 * p < k:
            p = k // 2
        o = int(rng.integers(1, max_c + 1))
        groups = 1
        if dag and rng.random() < 0.4:
            groups = o = c
        if dag and rng.random() < 0.5:   # shape-preserving, so a residual can go around it
            k, s = int(rng.choice([1, 3])), 1
            p, o = k // 2, c
        block_in, block_exp = (g.layers[-1].name if g.layers else "input"), exp
        if asym_pad:
            keep = (c, h, w) == shape_in and s == 1 and (o == c) and 2 * p == k - 1
            if keep:  # shape-preserving: k - 1 in all per axis, split at random
                top, left = (int(v) for v in prng.integers(0, k, size=2))
                pads = (top, k - 1 - top, left, k - 1 - left)
            else:
                pads = tuple(int(v) for v in prng.integers(0, k, size=4))
                if h + pads[0] + pads[1] < k or w + pads[2] + pads[3] < k:
                    pads = (p,) * 4
            p = pads
        bits = int(rng.integers(2, 6))
        m = (1 << (bits - 1)) - 1
        codes = rng.integers(-m, m + 1, size=(o, c // groups, k, k))
        codes[rng.random(codes.shape) < rng.uniform(0, 0.8)] = 0   # sparsity
        e_min = int(rng.integers(-6, 2))
        bias = rng.integers(-40, 41, size=o) * (rng.random(o) < 0.7)
        g.layers.append(Conv2d(f"conv{i}", np.zeros(codes.shape), np.zeros(o), s, p, weights(codes, e_min, bits),
                               bias.astype(np.int64), groups=groups))
        acc_exp = exp + e_min
        act = str(rng.choice(["relu", "relu6", "none"]))
        out_bits = int(rng.integers(2, 9))
        out_exp = acc_exp + int(rng.integers(-1, 6))
        g.layers.append(Requant(f"act{i}", act, TensorType(out_bits, act == "none", out_exp)))
        exp = out_exp
        c, (h, w) = o, g.layers[-2].out_hw(h, w)
        if lut and lrng.random() < 0.6:
            act = str(lrng.choice(sorted(FUNCTIONS)))
            exp = exp + int(lrng.integers(-3, 2))
            g.layers.append(Lut(f"lut{i}", act, TensorType(int(lrng.integers(2, 9)), FUNCTIONS[act][1], exp)))
        if dag and (c, h, w) == shape_in and rng.random() < 0.7:
            add_exp = min(exp, block_exp) + int(rng.integers(0, 4))
            t = TensorType(int(rng.integers(2, 9)), True, add_exp)
            if rng.random() < 0.5:  # the shortcut as the first operand, as torch.fx writes x + f(x)
                g.layers.append(Add(f"add{i}", skip=g.layers[-1].name, out=t, src=block_in))
            else:
                g.layers.append(Add(f"add{i}", skip=block_in, out=t))
            exp = add_exp
        if concat and (h, w) == shape_in[1:] and crng.random() < 0.7:
            out_name = g.layers[-1].name
            first, second = (out_name, block_in) if crng.random() < 0.5 else (block_in, out_name)
            g.layers.append(Concat(f"cat{i}", (second,), src=first))
            exp = min(exp, block_exp)
            c = c + shape_in[0]
        if select and srng.random() < 0.7:
            if c % 2 == 0 and srng.random() < 0.5:
                chans = shuffle_permutation(c, 2)
            else:
                chans = tuple(int(v) for v in srng.integers(0, c, size=int(srng.integers(1, c + 2))))
            g.layers.append(ChannelSelect(f"sel{i}", chans))
            c = len(chans)
        if max_pool and mrng.random() < 0.7:
            k = int(mrng.integers(1, 4))
            pool = None
            for _ in range(20):
                pads = tuple(int(v) for v in mrng.integers(0, k, size=4))
                cand = MaxPool2d(f"pool{i}", k, int(mrng.integers(1, 3)), pads)
                if cand.fits(h, w):
                    pool = cand
                    break
            if pool is not None:
                g.layers.append(pool)
                h, w = pool.out_hw(h, w)
    if head if head is not None else rng.integers(0, 2):
        g.layers.append(SumPool("pool"))
        classes = int(rng.integers(2, 6))
        bits = int(rng.integers(2, 6))
        m = (1 << (bits - 1)) - 1
        codes = rng.integers(-m, m + 1, size=(classes, c))
        g.layers.append(Linear("fc", np.zeros(codes.shape), np.zeros(classes), weights(codes, int(rng.integers(-4, 2)), bits),
                               rng.integers(-100, 101, size=classes).astype(np.int64)))
    annotate(g)
    return g


def random_inputs(g: Graph, n: int, seed: int) -> np.ndarray:
    """Random integer inputs over the whole input range, with the extremes included."""
    rng = np.random.default_rng(seed)
    lo, hi = g.input.type.range
    shape = (n, g.input.channels, g.input.height, g.input.width)
    x = rng.integers(lo, hi + 1, size=shape)
    if n >= 2:
        x[0] = lo
        x[1] = hi
    return x


def float_agreement(g, ds):
    """A function: a quantized version of ``g`` -> its golden model's top-1 agreement with ``g``'s float model on
    the test split of ``ds``."""
    import torch

    from hashiflex import ref
    from hashiflex.quant.fakequant import FakeQuantNet

    with torch.no_grad():
        f = FakeQuantNet(g, quantize=False).double().eval()(torch.as_tensor(ds.value(ds.x_test))).numpy()
    return lambda q: float((ref.run(q, ds.x_test).argmax(1) == f.argmax(1)).mean())


def random_parallelism(g: Graph, seed: int) -> dict[str, int]:
    """A random buildable unroll of ``g`` (not the unroll pass's): every tensor a random divisor of its width or a
    whole number of its rows,
    equal across each group of tensors that a pixel-for-pixel layer ties together (requant, add, concatenation,
    1x1 stride-1 conv or pool)."""
    from hashiflex.ops import op_of

    rng = np.random.default_rng(seed)
    infos = annotate(g, require_quantized=False)
    width = {"input": g.input.width} | {i.name: i.out_shape[2] for i in infos}
    height = {"input": g.input.height} | {i.name: i.out_shape[1] for i in infos}
    parent = {n: n for n in width}

    def root(n):
        while parent[n] != n:
            n = parent[n]
        return n

    for layer, srcs in zip(g.layers, g.sources()):
        if op_of(layer).keeps_parallelism(layer):
            for s in srcs:
                parent[root(s)] = root(layer.name)
    pick = {}
    for n, w in width.items():
        r = root(n)
        if r not in pick:
            h = height[n]  # part of a row, or whole rows (a beat never straddles rows)
            pick[r] = int(rng.choice([d for d in range(1, w + 1) if w % d == 0] +
                                     [w * k for k in range(2, h + 1) if h % k == 0]))
    return {n: pick[root(n)] for n in width}


def import_and_quantize(model, inp: Input, seed: int = 0, bits: int = 5, calib: int = 8, name: str = "net"):
    """The user's path on a torch model, each rung checked: import (the float IR computes what torch computes),
    calibrate on ``calib`` random images, Po2-quantize to ``bits``; golden == fake-quant on 4 more, bit for bit.
    Returns (the calibrated float graph, the quantized graph)."""
    import torch

    from hashiflex import ref
    from hashiflex.passes import calibrate_activations, import_torch, quantize_weights
    from hashiflex.quant.fakequant import FakeQuantNet, fake_quant_int_outputs, record_activations

    model = model.eval()
    g = import_torch(model, inp, name)
    x = torch.rand(2, inp.channels, inp.height, inp.width, dtype=torch.float64)
    assert torch.allclose(FakeQuantNet(g, quantize=False).double()(x), model.double()(x), rtol=1e-9, atol=1e-9)
    model.float()
    rng = np.random.default_rng(seed)
    lo, hi = inp.type.range
    shape = (inp.channels, inp.height, inp.width)
    g = calibrate_activations(g, record_activations(g, rng.integers(lo, hi + 1, (calib, *shape)) * 2.0 ** inp.type.exp),
                              8)
    q = quantize_weights(g, bits)
    xi = rng.integers(lo, hi + 1, (4, *shape))
    assert np.array_equal(ref.run(q, xi), fake_quant_int_outputs(q, xi, ref.output_exp(q)))
    return g, q


def random_levels(g: Graph, seed: int) -> dict[str, int]:
    """Random adder levels per stage (1-5) for a random half of the layers with a tree (conv2d, linear,
    max_pool2d); the others keep the design's default."""
    from hashiflex.ops import op_of

    rng = np.random.default_rng(seed + 1)
    return {l.name: int(rng.integers(1, 6)) for l in g.layers if op_of(l).staged and rng.random() < 0.5}
