"""The frontend: a torch model traced with torch.fx onto the IR (``import_torch``), and the graph rewrites that
belong to importing: TF 'SAME' re-padding (``same_padding``) and requantize points (``insert_requant_points``)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .analysis import annotate
from .ir import Add, Conv2d, Graph, Input, IRError, Linear, Requant, SumPool
from .ops import ChannelSelect, Concat, Lut, MaxPool2d
from .ops.channel_select import shuffle_permutation
from .ops.base import check_finite


def import_torch(model, input: Input, name: str = "net") -> Graph:
    """Trace ``model`` with torch.fx and map it onto the IR.

    Supported: Conv2d (square kernel; groups=1 or depthwise), BatchNorm2d right after a conv (folded into it),
    ReLU/ReLU6 (requantize points), residual ``+``, AdaptiveAvgPool2d(1) / adaptive_avg_pool2d(x, 1) (an exact
    sum pool whose 1/N is folded into the following Linear), Flatten, Dropout, Identity, Linear. A conv or
    linear layer not followed by an activation gets a signed requantize point, except the network's output.
    Anything else raises :class:`IRError` naming the module and the op.
    """
    import operator

    import torch
    import torch.fx as fx
    import torch.nn as nn
    import torch.nn.functional as F

    from .quant.fold import fold_bn

    model = model.eval()
    for mname, m in model.named_modules():  # fx traces forward() only: a hook would silently drop out of the IR
        hooks = [kind for kind, d in (("forward pre-hook", m._forward_pre_hooks), ("forward hook", m._forward_hooks))
                 if d]
        if hooks:
            raise IRError(f"module {mname or '<root>'!r} ({type(m).__name__}): has a {' and a '.join(hooks)}, which "
                          "torch.fx does not trace (the imported network would differ); remove it and express its "
                          "effect as a module (e.g. nn.ZeroPad2d for TF-style padding)")
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    layers: list = []
    by_name: dict = {}
    produced: dict = {}          # fx node -> IR layer name producing its value
    shape = {"input": (input.channels, input.height, input.width)}
    pool_n: dict[str, int] = {}  # sum-pool layer -> pixels whose 1/N the next Linear absorbs

    pads: dict = {}              # fx node of a zero pad -> (IR name it pads, (top, bottom, left, right))

    def produced_by(arg, where):
        if isinstance(arg, fx.Node) and arg in pads:
            raise IRError(f"{where}: reads the zero padding {arg.name!r}; a ZeroPad2d / F.pad is supported only "
                          "directly before a Conv2d (it becomes the conv's padding)")
        if not isinstance(arg, fx.Node) or arg not in produced:
            raise IRError(f"{where}: input {arg} is not a tensor the IR produced")
        return produced[arg]

    def src_of(node, where):
        return produced_by(node.args[0], where)

    def add_pad(node, arg, lrtb, where):
        """A zero pad (F.pad order: left, right, top, bottom) waits for the Conv2d it feeds."""
        lrtb = tuple(lrtb)
        if len(lrtb) != 4 or not all(isinstance(v, int) and v >= 0 for v in lrtb):
            raise IRError(f"{where}: expected 4 non-negative pads (left, right, top, bottom) of H and W, found "
                          f"{list(lrtb)}")
        l, r, t, b = lrtb
        if isinstance(arg, fx.Node) and arg in pads:  # a pad of a pad: the sum
            src, (t0, b0, l0, r0) = pads[arg]
            t, b, l, r = t + t0, b + b0, l + l0, r + r0
        else:
            src = produced_by(arg, where)
        pads[node] = (src, (t, b, l, r))

    def conv_padding(m, where):
        """nn.Conv2d's padding as (top, bottom, left, right); 'same' pads k-1 in all, the extra one after."""
        k = m.kernel_size[0]
        if m.padding == "valid":
            return (0, 0, 0, 0)
        if m.padding == "same":
            return ((k - 1) // 2, k - 1 - (k - 1) // 2) * 2
        if not isinstance(m.padding, tuple) or len(m.padding) != 2:
            raise IRError(f"{where}: expected numeric zero padding, found {m.padding!r}")
        ph, pw = m.padding
        return (ph, ph, pw, pw)

    def add(layer, out_shape, node):
        layers.append(layer)
        by_name[layer.name] = layer
        shape[layer.name] = out_shape
        produced[node] = layer.name

    def users(node):
        return list(node.users)

    calls: dict[str, int] = {}   # module target -> call sites seen so far

    def layer_name(target: str) -> str:
        """A module called more than once (a stateless ReLU reused in a block, say) gets one IR layer per call
        site: the first keeps the module's name, later ones ``<name>_1``, ``<name>_2``, ... (never a name in use)."""
        k = calls.get(target, 0)
        name = target if k == 0 else f"{target}_{k}"
        while name in by_name or (k and name in modules):
            k += 1
            name = f"{target}_{k}"
        calls[target] = k + 1
        return name

    def _pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    def add_max_pool(node, src, kernel, stride, padding, dilation, ceil_mode, return_indices, where):
        k, s_, p, d = (_pair(v) for v in (kernel, stride if stride not in (None, ()) else kernel, padding,
                                          dilation))
        if k[0] != k[1] or s_[0] != s_[1]:
            raise IRError(f"{where}: expected a square kernel and stride, found {list(k)}/{list(s_)}")
        if d != (1, 1) or return_indices:
            raise IRError(f"{where}: expected dilation=1, return_indices=False, found dilation={list(d)}, "
                          f"return_indices={return_indices}")
        c, h, w = shape[src]
        pads = [p[0], p[0], p[1], p[1]]
        if ceil_mode:  # torch's ceil mode is extra padding below and right (padding never wins a maximum)
            for i, (n, pi) in enumerate(((h, p[0]), (w, p[1]))):
                out = -(-(n + 2 * pi - k[0]) // s_[0]) + 1
                if (out - 1) * s_[0] >= n + pi:  # the last window must start inside the image or the left padding
                    out -= 1
                pads[2 * i + 1] += max(0, (out - 1) * s_[0] + k[0] - (n + 2 * pi))
        pool = MaxPool2d(layer_name(node.target) if node.op == "call_module" else node.name, k[0], s_[0],
                         tuple(pads), src=src)
        if not pool.fits(h, w):
            raise IRError(f"{where}: kernel {pool.kernel}, stride {pool.stride}, padding {pool.padding} do not fit "
                          f"{h}x{w}")
        add(pool, (c, *pool.out_hw(h, w)), node)

    def add_global_pool(node, src, name):
        """An average over all pixels: an exact sum pool whose 1/N the next Linear absorbs."""
        c, h, w = shape[src]
        add(SumPool(name, src=src), (c, 1, 1), node)
        pool_n[name] = h * w

    def add_mean(node, args, kwargs, where):
        dims = kwargs.get("dim", args[0] if args else None)
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        extra = {k: v for k, v in kwargs.items() if k not in ("dim", "keepdim")}
        if sorted(d % 4 for d in dims if isinstance(d, int)) != [2, 3] or len(dims) != 2 or extra or len(args) > 2:
            raise IRError(f"{where}: a mean is supported over H and W (dim=(2, 3), a global average pool), found "
                          f"dim={list(dims)}{', ' + str(extra) if extra else ''}")
        add_global_pool(node, src_of(node, where), node.name)

    def check_flatten(node, start_at: int, where):
        """torch.flatten(x, 1) / x.flatten(1): one vector per image (the IR's vectors are already flat)."""
        args = dict(zip(("input", "start_dim", "end_dim"), node.args), **node.kwargs)
        if (args.get("start_dim", start_at), args.get("end_dim", -1)) != (1, -1):
            raise IRError(f"{where}: expected a flatten from dim 1 (one vector per image), found start_dim="
                          f"{args.get('start_dim', start_at)}, end_dim={args.get('end_dim', -1)}")

    def in_module(node) -> str:
        """", in module 'features.1.block.1' (SqueezeExcitation)": the innermost module a function call ran in."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        path, cls = list(stack.values())[-1]
        return f", in module {path!r} ({getattr(cls, '__name__', cls)})"

    def unsupported_hint(name) -> str:
        name = str(name)
        if name in ("mul", "mul_"):
            return (": an elementwise product of two activations (squeeze-excitation) needs real multipliers, "
                    "which a shift-add datapath does not have (frontend.without_squeeze_excitation removes the "
                    "blocks, then the rest imports: another network, to fine-tune)")
        if name in ("permute",):
            return ": a permute is supported only as ShuffleNet's channel shuffle (view, transpose, view)"
        return ""

    # shape queries (x.size(), x.shape, their items and arithmetic) and their values ("batch" for the batch size),
    # channel-shuffle views in flight (fx node -> (IR name, groups, channels per group, transposed)), and chunks /
    # splits along channels (fx node -> (IR name, [(start, stop), ...]))
    sizes: dict = {}
    views: dict = {}
    chunks: dict = {}
    BATCH = "batch"

    def size_value(a, where):
        if isinstance(a, int):
            return a
        if isinstance(a, fx.Node) and a in sizes:
            return sizes[a]
        raise IRError(f"{where}: expected a size (an integer or a shape query), found {a}")

    def shape_query(node, x, dim, where):
        c, h, w = shape[produced_by(x, where)]
        full = (BATCH, c, h, w)
        sizes[node] = full if dim is None else full[dim]

    def size_arith(node, where):
        a, b = (size_value(v, where) for v in node.args[:2])
        if node.target is operator.getitem:
            sizes[node] = a[b]
        elif BATCH in (a, b):
            sizes[node] = BATCH
        else:
            sizes[node] = node.target(a, b)

    def add_chunks(node, x, pieces, dim, where, sections=None):
        """x.chunk(n, 1) / torch.split(x, size or sizes, 1): channel ranges, each taken by an item below."""
        if dim not in (1, -3):
            raise IRError(f"{where}: a chunk or split is supported along channels (dim=1), found dim={dim}")
        src = produced_by(x, where)
        c = shape[src][0]
        if sections is None:  # chunk: ceil(c / n) each, the last what is left
            size = -(-c // pieces)
            sections = [size] * (c // size) + ([c % size] if c % size else [])
        elif isinstance(sections, int):
            sections = [sections] * (c // sections) + ([c % sections] if c % sections else [])
        if sum(sections) != c:
            raise IRError(f"{where}: sections {list(sections)} do not add up to the {c} channels")
        starts = np.cumsum([0, *sections])
        chunks[node] = (src, [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])])

    def add_view(node, x, vals, where):
        """A flatten to (batch, -1), or the views of ShuffleNet's channel shuffle: (batch, groups, C / groups, H,
        W), transposed (1, 2), back to (batch, C, H, W): a channel permutation."""
        if x in views:
            src, g, per, transposed = views[x]
            c, h, w = shape[src]
            if len(vals) == 4 and vals[2:] == (h, w) and vals[1] in (-1, c):
                if transposed:
                    add(ChannelSelect(node.name, shuffle_permutation(c, g), src=src), (c, h, w), node)
                else:
                    produced[node] = src  # grouped and back: the same tensor
                return
        else:
            src = produced_by(x, where)
            c, h, w = shape[src]
            if len(vals) == 2 and vals[1] in (-1, c * h * w):
                produced[node] = src
                return
            if len(vals) == 5 and tuple(vals[3:]) == (h, w) and isinstance(vals[1], int) and vals[1] > 0 \
                    and vals[1] * vals[2] == c:
                views[node] = (src, vals[1], vals[2], False)
                return
        raise IRError(f"{where}: only a flatten to (batch, -1) or a channel shuffle's views are supported, found "
                      f"shape {list(vals)}")

    def add_transpose(node, x, d0, d1, where):
        if x not in views or {d0, d1} != {1, 2}:
            raise IRError(f"{where}: a transpose is supported only inside a channel shuffle (dims 1 and 2 of a "
                          f"(batch, groups, C / groups, H, W) view), found dims ({d0}, {d1})")
        src, g, per, transposed = views[x]
        views[node] = (src, g, per, not transposed)
    # activations other than ReLU: exact lookup tables on the quantized input (ops/lut.py)
    lut_modules = {nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
                   nn.Tanh: "tanh", nn.GELU: "gelu"}
    lut_functions = {F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", F.silu: "silu",
                     torch.sigmoid: "sigmoid", torch.tanh: "tanh", F.gelu: "gelu"}

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            produced[node] = "input"
            continue
        if node.op == "output":
            continue
        if node.op == "call_module":
            m = modules[node.target]
            where = f"module {node.target!r} ({type(m).__name__})"
            if isinstance(m, nn.ConstantPad2d):  # nn.ZeroPad2d too
                if m.value != 0:
                    raise IRError(f"{where}: expected zero padding, found value {m.value}")
                add_pad(node, node.args[0], m.padding, where)
                continue
            if isinstance(m, nn.Conv2d) and node.args and node.args[0] in pads:
                src = pads[node.args[0]][0]
            else:
                src = src_of(node, where)
            c, h, w = shape[src]
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size
                if k[0] != k[1] or m.stride[0] != m.stride[1]:
                    raise IRError(f"{where}: expected square kernel and stride, found {k}/{m.stride}")
                if m.dilation != (1, 1) or m.padding_mode != "zeros":
                    raise IRError(f"{where}: expected dilation=1 and zero padding, found dilation={m.dilation}, "
                                  f"padding_mode={m.padding_mode!r}")
                if m.groups != 1 and not (m.groups == m.in_channels == m.out_channels):
                    raise IRError(f"{where}: expected groups=1 or depthwise (groups=in=out), found groups={m.groups}")
                padding = conv_padding(m, where)
                if node.args[0] in pads:  # fold a preceding zero pad into the conv's own padding
                    padding = tuple(a + b for a, b in zip(padding, pads[node.args[0]][1]))
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
                conv = Conv2d(layer_name(node.target), m.weight.detach().double().numpy().copy(), bias.copy(),
                              stride=m.stride[0], padding=padding, groups=m.groups, src=src)
                if not conv.fits(h, w):
                    raise IRError(f"{where}: kernel {conv.kernel}, stride {conv.stride}, padding {conv.padding} do "
                                  f"not fit {h}x{w}")
                add(conv, (conv.out_channels, *conv.out_hw(h, w)), node)
            elif isinstance(m, nn.BatchNorm2d):
                conv = by_name.get(src)
                if not isinstance(conv, Conv2d) or len(users(node.args[0])) != 1:
                    raise IRError(f"{where}: BatchNorm2d must directly follow a Conv2d it alone reads (to be folded)")
                conv.weight, conv.bias = fold_bn(conv.weight, conv.bias, m.weight.detach().double().numpy(),
                                                 m.bias.detach().double().numpy(),
                                                 m.running_mean.double().numpy(), m.running_var.double().numpy(),
                                                 m.eps)
                produced[node] = src
            elif isinstance(m, (nn.ReLU, nn.ReLU6)) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0, 6)):
                add(Requant(layer_name(node.target), "relu" if isinstance(m, nn.ReLU) else "relu6", src=src), (c, h, w),
                    node)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                if m.output_size not in (1, (1, 1)):
                    raise IRError(f"{where}: expected output_size 1 (global pool), found {m.output_size}")
                add_global_pool(node, src, layer_name(node.target))
            elif type(m) in lut_modules:
                if isinstance(m, nn.GELU) and m.approximate != "none":
                    raise IRError(f"{where}: expected GELU(approximate='none'), found approximate={m.approximate!r}")
                add(Lut(layer_name(node.target), lut_modules[type(m)], src=src), (c, h, w), node)
            elif isinstance(m, nn.MaxPool2d):
                add_max_pool(node, src, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                             m.return_indices, where)
            elif isinstance(m, nn.AvgPool2d):
                k, s_, p = (_pair(v) for v in (m.kernel_size, m.stride if m.stride is not None else m.kernel_size,
                                               m.padding))
                if k != (h, w) or p != (0, 0):
                    raise IRError(f"{where}: an average pool is supported over the whole {h}x{w} map (a global pool "
                                  f"before a Linear), found kernel {list(k)}, padding {list(p)}")
                add_global_pool(node, src, m.__class__.__name__)
            elif isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity)):
                if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
                    raise IRError(f"{where}: expected Flatten(start_dim=1) (one vector per image), found start_dim="
                                  f"{m.start_dim}, end_dim={m.end_dim}")
                produced[node] = src
            elif isinstance(m, nn.Linear):
                weight = m.weight.detach().double().numpy().copy()
                if src in pool_n:  # fold the average's 1/N: sum pool then (W / N)
                    weight = weight / pool_n.pop(src)
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
                add(Linear(layer_name(node.target), weight, bias.copy(), src=src), (m.out_features, 1, 1), node)
            else:
                raise IRError(f"{where}: op {type(m).__name__} is not supported by the hardware"
                              f"{unsupported_hint(type(m).__name__.lower())}")
        elif node.op == "call_function":
            fname = getattr(node.target, "__name__", str(node.target))
            where = f"node {node.name!r} (function {fname}{in_module(node)})"
            if node.target in (operator.add, torch.add):
                a, b = node.args[:2]
                if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or len(node.args) > 2 or node.kwargs:
                    raise IRError(f"{where}: only the sum of two tensors is supported")
                sa, sb = produced[a], produced[b]
                add(Add(node.name, skip=sb, src=sa), shape[sa], node)
            elif node.target in (torch.flatten,):
                check_flatten(node, 1, where)
                produced[node] = src_of(node, where)
            elif node.target is F.max_pool2d:
                args = dict(zip(("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                 "return_indices"), node.args), **node.kwargs)
                add_max_pool(node, produced_by(args["input"], where), args["kernel_size"], args.get("stride"),
                             args.get("padding", 0), args.get("dilation", 1), args.get("ceil_mode", False),
                             args.get("return_indices", False), where)
            elif node.target in lut_functions:
                src = src_of(node, where)
                if node.target is F.gelu and node.kwargs.get("approximate", "none") != "none":
                    raise IRError(f"{where}: expected approximate='none', found {node.kwargs['approximate']!r}")
                add(Lut(node.name, lut_functions[node.target], src=src), shape[src], node)
            elif node.target is torch.cat:
                args = dict(zip(("tensors", "dim"), node.args), **node.kwargs)
                if args.get("dim", 0) not in (1, -3):
                    raise IRError(f"{where}: a concatenation is supported along channels (dim=1), found dim="
                                  f"{args.get('dim', 0)}")
                names = [produced_by(a, where) for a in args["tensors"]]
                if len({shape[n][1:] for n in names}) != 1:
                    raise IRError(f"{where}: expected operands of one height x width, found "
                                  f"{[list(shape[n][1:]) for n in names]}")
                if len(names) == 1:
                    produced[node] = names[0]
                else:
                    add(Concat(node.name, tuple(names[1:]), src=names[0]),
                        (sum(shape[n][0] for n in names), *shape[names[0]][1:]), node)
            elif node.target is torch.mean:
                add_mean(node, node.args[1:], node.kwargs, where)
            elif node.target in (F.relu, torch.relu, F.relu6):
                src = src_of(node, where)
                add(Requant(node.name, "relu6" if node.target is F.relu6 else "relu", src=src), shape[src], node)
            elif node.target is F.adaptive_avg_pool2d:
                src = src_of(node, where)
                size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
                if size not in (1, (1, 1), [1, 1]):
                    raise IRError(f"{where}: expected output_size 1 (global pool), found {size}")
                c, h, w = shape[src]
                add_global_pool(node, src, node.name)
            elif node.target in (F.pad, getattr(torch._C._nn, "pad", F.pad)):
                args = dict(zip(("input", "pad", "mode", "value"), node.args), **node.kwargs)
                mode, value = args.get("mode", "constant"), args.get("value", None)
                if mode != "constant" or value not in (None, 0, 0.0):
                    raise IRError(f"{where}: expected zero padding (mode 'constant', value 0), found mode {mode!r}, "
                                  f"value {value}")
                pad = tuple(args.get("pad", ()))
                if len(pad) == 2:
                    pad = pad + (0, 0)
                add_pad(node, args.get("input"), pad, where)
            elif node.target is F.dropout:
                produced[node] = src_of(node, where)
            elif node.target is getattr and node.args[1:] == ("shape",):
                shape_query(node, node.args[0], None, where)
            elif node.target in (operator.getitem, operator.floordiv, operator.mul, operator.sub) \
                    and any(a in sizes for a in node.args):
                size_arith(node, where)  # x.shape[0], C // groups: shape queries feeding a view/reshape
            elif node.target is operator.getitem and node.args[0] in chunks:
                src, ranges = chunks[node.args[0]]
                a, b = ranges[node.args[1]]
                add(ChannelSelect(node.name, tuple(range(a, b)), src=src), (b - a, *shape[src][1:]), node)
            elif node.target is torch.transpose:
                add_transpose(node, *node.args[:3], where)
            elif node.target in (torch.chunk, torch.split):
                args = dict(zip(("input", "n", "dim"), node.args), **node.kwargs)
                n = args.get("n", args.get("chunks", args.get("split_size_or_sections")))
                if node.target is torch.chunk:
                    add_chunks(node, args["input"], n, args.get("dim", 0), where)
                else:
                    add_chunks(node, args["input"], None, args.get("dim", 0), where, sections=n)
            else:
                raise IRError(f"{where}: op {fname} is not supported by the hardware{unsupported_hint(fname)}")
        elif node.op == "call_method":
            where = f"node {node.name!r} (method .{node.target}())"
            if node.target == "size":  # a shape query feeding a view/reshape: no tensor
                shape_query(node, node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"),
                            where)
            elif node.target == "contiguous":
                x = node.args[0]
                if x in views:
                    views[node] = views[x]
                else:
                    produced[node] = produced_by(x, where)
            elif node.target == "transpose":
                add_transpose(node, *node.args[:3], where)
            elif node.target in ("chunk", "split"):
                args = dict(zip(("self", "n", "dim"), node.args), **node.kwargs)
                n = args.get("n", args.get("chunks", args.get("split_size")))
                if node.target == "chunk":
                    add_chunks(node, args["self"], n, args.get("dim", 0), where)
                else:
                    add_chunks(node, args["self"], None, args.get("dim", 0), where, sections=n)
            elif node.target == "flatten":
                check_flatten(node, 0, where)
                produced[node] = src_of(node, where)
            elif node.target in ("view", "reshape"):
                shape_args = node.args[1:]
                if len(shape_args) == 1 and isinstance(shape_args[0], (tuple, list)):
                    shape_args = tuple(shape_args[0])
                add_view(node, node.args[0], tuple(size_value(a, where) for a in shape_args), where)
            elif node.target == "mean":
                add_mean(node, node.args[1:], node.kwargs, where)
            elif node.target in ("sigmoid", "tanh"):  # x.sigmoid(), x.tanh()
                src = src_of(node, where)
                add(Lut(node.name, node.target, src=src), shape[src], node)
            else:
                raise IRError(f"{where}: op {node.target} is not supported by the hardware"
                              f"{unsupported_hint(node.target)}")
        else:
            raise IRError(f"node {node.name!r}: op {node.op} {getattr(node.target, '__name__', node.target)} "
                          f"is not supported by the hardware")
    for pool, n in list(pool_n.items()):  # a network that ends in its average pool (SqueezeNet)
        if _fold_terminal_average(layers, pool, n):
            pool_n.pop(pool)
    if pool_n:
        raise IRError(f"global average pool {next(iter(pool_n))!r} must be followed by a Linear layer, or end the "
                      "network right after a conv and a ReLU (its 1/N is folded into that layer)")
    for layer in layers:  # after BN folding: a NaN/Inf must not reach the quantizer as a silent zero
        if isinstance(layer, (Conv2d, Linear)):
            check_finite(layer.weight, f"layer {layer.name!r}: field 'weight'")
            check_finite(layer.bias, f"layer {layer.name!r}: field 'bias'")
    g = insert_requant_points(Graph(name, input, layers))
    annotate(g, require_quantized=False)  # shape check
    return g


def without_squeeze_excitation(model):
    """(a copy of ``model`` with every squeeze-excitation block (torchvision's ``SqueezeExcitation``) replaced by
    ``nn.Identity``, the names of the blocks removed). A block scales each channel by a product of two activations,
    which needs real multipliers: :func:`import_torch` refuses it, naming the block; without the blocks the rest of
    the network (MobileNetV3's Hardswish and Hardsigmoid as lookup tables) imports. It is another network: its
    accuracy is the float model's without them until it is fine-tuned (``hashiflex.finetune``)."""
    import copy

    import torch.nn as nn
    from torchvision.ops.misc import SqueezeExcitation

    out = copy.deepcopy(model)
    removed = []
    for parent_name, parent in list(out.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, SqueezeExcitation):
                setattr(parent, child_name, nn.Identity())
                removed.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return out, removed


def _fold_terminal_average(layers: list, pool: str, n: int) -> bool:
    """An average pool that ends the network right after conv -> ReLU: relu(z) / n = relu(z / n) (n > 0), so the
    1/n goes into the conv's weights and bias and the pool stays an exact sum. False when the pattern differs."""
    names = [l.name for l in layers]
    if names[-1] != pool:
        return False
    readers: dict[str, int] = {}
    prev = "input"
    for l in layers:
        for s in (l.src or prev, *getattr(l, "extra", ())):
            readers[s] = readers.get(s, 0) + 1
        prev = l.name
    by = dict(zip(names, layers))
    act = by.get(layers[-1].src or names[-2])
    if not isinstance(act, Requant) or act.act != "relu" or readers.get(act.name) != 1:
        return False
    conv = by.get(act.src or names[names.index(act.name) - 1])
    if not isinstance(conv, (Conv2d, Linear)) or readers.get(conv.name) != 1:
        return False
    conv.weight, conv.bias = conv.weight / n, conv.bias / n
    return True


PADDING_STYLES = ("torch", "tf")


def same_padding(g: Graph, style: str) -> Graph:
    """Re-pad every conv as a framework does: "torch" keeps the imported padding; "tf" gives TensorFlow's 'SAME'
    padding (out = ceil(in / stride); the odd pixel of the total padding goes below and right), the padding a
    network trained in TensorFlow (a Coral or TF-Hub MobileNet, say) needs to keep its accuracy. Every layer's
    output shape must stay as it is, otherwise the layers after it would no longer fit: that raises."""
    if style not in PADDING_STYLES:
        raise IRError(f"padding style {style!r}: expected one of {', '.join(PADDING_STYLES)}")
    if style == "torch":
        return g
    infos = {i.name: i for i in annotate(g, require_quantized=False)}
    out = g.copy()
    for i, layer in enumerate(out.layers):
        if not isinstance(layer, Conv2d):
            continue
        _, h, w = infos[layer.name].in_shape
        pads = []
        for n in (h, w):
            total = max((-(-n // layer.stride) - 1) * layer.stride + layer.kernel - n, 0)
            pads += [total // 2, total - total // 2]
        tf = out.layers[i] = replace(layer, padding=tuple(pads))  # symmetric padding stays one integer
        if tf.out_hw(h, w) != layer.out_hw(h, w):
            raise IRError(f"layer {layer.name!r}: TF 'SAME' padding {tf.padding} gives a "
                          f"{'x'.join(map(str, tf.out_hw(h, w)))} output, but the network was built with "
                          f"{'x'.join(map(str, layer.out_hw(h, w)))}; import it with its own padding "
                          "(--padding torch)")
    return out


def insert_requant_points(g: Graph) -> Graph:
    """Give every conv/linear whose output feeds anything but an activation a signed requantize point
    (a linear bottleneck in MobileNetV2, for example), so activations stay narrow fixed point.
    The network's output (logits) stays an exact accumulator."""
    sources = g.sources()
    readers: dict[str, list] = {}
    for layer, srcs in zip(g.layers, sources):
        for s in srcs:
            readers.setdefault(s, []).append(layer)
    out = Graph(g.name, g.input, [])
    rename: dict[str, str] = {}
    last = g.layers[-1].name
    for layer, srcs in zip(g.layers, sources):
        layer = replace(layer)
        # re-point reads of layers that got a requant point
        if layer.src is not None or srcs[0] in rename:
            layer.src = rename.get(srcs[0], srcs[0])
        if isinstance(layer, Add):
            layer.skip = rename.get(layer.skip, layer.skip)
            layer.src = rename.get(srcs[0], srcs[0])
        if isinstance(layer, Concat):
            layer.rest = tuple(rename.get(r, r) for r in layer.rest)
            layer.src = rename.get(srcs[0], srcs[0])
        out.layers.append(layer)
        if isinstance(layer, (Conv2d, Linear)) and layer.name != last:
            rs = readers.get(layer.name, [])
            if not rs or not all(isinstance(r, Requant) for r in rs):
                q = Requant(f"{layer.name}.q", "none", src=layer.name)
                out.layers.append(q)
                rename[layer.name] = q.name
    return out
