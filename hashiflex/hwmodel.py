"""The hardware model: pixel parallelism (proposed for a target II by the unroll pass, or given and checked
buildable), and per layer what the generator builds (adders, stages, beats), the II and the latency."""
from __future__ import annotations

import numpy as np

from .analysis import annotate
from .ir import Graph, IRError
from .ops import op_of
from .ops.base import LayerHw


def beat_fits(p: int, height: int, width: int) -> bool:
    """Whether ``p`` pixels per beat tile an ``height`` x ``width`` tensor without a beat straddling a row
    boundary: a divisor of the width (part of a row), or a whole number of rows that divides the height."""
    return p >= 1 and (width % p == 0 or (p % width == 0 and height % (p // width) == 0))


def beat_rule(height: int, width: int) -> str:
    return (f"a divisor of the width {width}, or a whole number of rows dividing the height {height} (a multiple "
            f"of {width}): a beat never straddles rows")


def pixel_parallelism(height: int, width: int, target_ii: int | None) -> int:
    """Pixels per beat for an ``height`` x ``width`` tensor to stream in at most ``target_ii`` beats.

    The smallest P >= ceil(pixels / target_ii) that tiles the tensor by rows (:func:`beat_fits`): a divisor of the
    width, or beyond one row k whole rows with k dividing the height (line buffers and column selection stay
    static either way); the whole tensor in one beat when nothing smaller meets the target. ``None``: one pixel
    per beat.
    """
    if target_ii is None:
        return 1
    if target_ii < 1:
        raise IRError(f"target_ii: expected a positive number of cycles per image, found {target_ii}")
    need = -(-height * width // target_ii)
    if need <= width:
        return next(d for d in range(max(1, need), width + 1) if width % d == 0)
    return width * next(k for k in range(-(-need // width), height + 1) if height % k == 0)


def choose_parallelism(g: Graph, target_ii: int | None) -> dict[str, int]:
    """The unroll pass: pixels per beat of every tensor ("input" and each layer's output) for ``target_ii``."""
    par = {"input": pixel_parallelism(g.input.height, g.input.width, target_ii)}
    for info in annotate(g, require_quantized=False):
        par[info.name] = pixel_parallelism(info.out_shape[1], info.out_shape[2], target_ii)
    return par


def check_parallelism(g: Graph, par: dict[str, int]) -> None:
    """Raise :class:`IRError` naming the design.json field unless ``par`` (pixels per beat of "input" and of every
    layer's output) is buildable: part of a row or whole rows of the tensor (:func:`beat_fits`: a beat never
    straddles rows), and the same as its inputs' for a layer that maps pixels one to one (requantize, add,
    concatenation, 1x1 stride-1 conv or pool). The generator applies the same rules (Design.scala)."""
    def divisor(field: str, name: str, h: int, w: int) -> int:
        p = par.get(name)
        if p is None:
            raise IRError(f"{field}: no parallelism given for {name!r}")
        if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or not beat_fits(int(p), h, w):
            raise IRError(f"{field}: expected {beat_rule(h, w)}, found {p!r}")
        return int(p)

    divisor("design.input.parallelism", "input", g.input.height, g.input.width)
    for k, (layer, info, srcs) in enumerate(zip(g.layers, annotate(g, require_quantized=False), g.sources())):
        field = f"design.layers[{k}].parallelism"
        p = divisor(field, layer.name, info.out_shape[1], info.out_shape[2])
        why = op_of(layer).keeps_parallelism(layer)
        for s in srcs if why else ():
            if par[s] != p:
                raise IRError(f"{field}: expected {par[s]} (the parallelism of {s!r}; {why}), found {p} "
                              f"(layer {layer.name!r})")


def parallelism(g: Graph, target_ii: int | None = None, par: dict[str, int] | None = None) -> dict[str, int]:
    """Pixels per beat of every tensor: ``par`` when given (any buildable choice, checked by
    :func:`check_parallelism`), else the unroll pass's proposal for ``target_ii`` (:func:`choose_parallelism`)."""
    if par is None:
        return choose_parallelism(g, target_ii)
    check_parallelism(g, par)
    return {k: int(v) for k, v in par.items()}


MAX_LEVELS_PER_STAGE = 64


def check_levels(g: Graph, levels: dict[str, int] | None) -> dict[str, int]:
    """Raise :class:`IRError` naming the design.json field unless ``levels`` (adder levels per register stage of
    some layers, overriding the design's default) names only layers with a tree to pipeline (conv2d, linear,
    max_pool2d) and values in [1, 64]. The generator applies the same rules (Design.scala)."""
    levels = dict(levels or {})
    index = {layer.name: k for k, layer in enumerate(g.layers)}
    for name, v in levels.items():
        if name not in index:
            raise IRError(f"levels_per_stage: no layer named {name!r} (layers: {', '.join(list(index)[:8])} ...)")
        k = index[name]
        field = f"design.layers[{k}].levels_per_stage"
        op = op_of(g.layers[k])
        if not op.staged:
            raise IRError(f"{field}: layer {name!r} ({op.op}) has no adder or comparator tree to pipeline; "
                          f"only conv2d, linear and max_pool2d take levels per stage")
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 1 <= v <= MAX_LEVELS_PER_STAGE:
            raise IRError(f"{field}: expected an integer in [1, {MAX_LEVELS_PER_STAGE}], found {v!r} "
                          f"(layer {name!r})")
    return {k: int(v) for k, v in levels.items()}


def hw_model(g: Graph, levels_per_stage: int, target_ii: int | None = None,
             par: dict[str, int] | None = None, levels: dict[str, int] | None = None) -> list[LayerHw]:
    """Per layer: adders (all pixel lanes), register stages, beats per image, parallelism (``par``, or proposed
    for ``target_ii``: :func:`parallelism`). ``levels``: adder levels per register stage of the layers that do not
    take the default ``levels_per_stage`` (:func:`check_levels`)."""
    infos = annotate(g)
    par = parallelism(g, target_ii, par)
    levels = check_levels(g, levels)
    hw = []
    for layer, info, srcs in zip(g.layers, infos, g.sources()):
        c, h, w = info.in_shape
        p_in, p_out = par[srcs[0]], par[layer.name]
        oc, oh, ow = info.out_shape
        beats = dict(beats_in=h * w // p_in, beats_out=oh * ow // p_out, parallelism=p_out)
        hw.append(op_of(layer).hw(layer, info, p_in, p_out, levels.get(layer.name, levels_per_stage), beats))
    return hw


def latency_stages(g: Graph, model: list[LayerHw]) -> int:
    """Register stages on the longest path from the input to the output."""
    depth = {"input": 0}
    for layer, srcs, m in zip(g.layers, g.sources(), model):
        depth[layer.name] = max(depth[s] for s in srcs) + m.stages
    return depth[g.layers[-1].name]


def initiation_interval(g: Graph, target_ii: int | None = None, par: dict[str, int] | None = None) -> int:
    """Cycles per image: the most stream beats per image of any tensor (each stream moves one beat a cycle), at
    the parallelism ``par`` or the one proposed for ``target_ii`` (:func:`parallelism`)."""
    par = parallelism(g, target_ii, par)
    shapes = [("input", (g.input.channels, g.input.height, g.input.width))]
    shapes += [(i.name, i.out_shape) for i in annotate(g, require_quantized=False)]
    return max(h * w // par[n] for n, (_, h, w) in shapes)
