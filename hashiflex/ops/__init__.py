"""One definition per layer type: everything the flow knows about an op, in one place.

Each op module defines an :class:`OpDef` (and, for types added after the first five, the IR dataclass itself):
its shape, exponent and exact-bounds rule (``infer``), the bit-exact golden function in NumPy int64 (``golden``,
the spec) and in torch (``golden_torch``, proven exact by the annotated bounds), the fake-quant forward
(``fake``), its design.json fields (``to_json`` / ``from_json``) and its hardware cost (``hw``). Every pass
dispatches through :func:`op_of` / :func:`op_named`, which raise on an unknown type, so a layer type the flow
does not know never falls through silently.

Adding a layer type: a module here with its dataclass and its OpDef (registered with :func:`register`), its
import in this file, its design.json fields in ``export/schema.json``, and its Scala spec + module builder
(``chisel/src/main/scala/hashiflex/<Op>.scala``).
"""
from __future__ import annotations

from .base import (OPS, OpDef, Tensor, dot_bounds, op_named, op_of, register, requant_bounds, shift_in_range)
from .add import Add, AddOp
from .channel_select import ChannelSelect, ChannelSelectOp
from .concat import Concat, ConcatOp
from .conv2d import Conv2d, Conv2dOp
from .linear import Linear, LinearOp
from .lut import Lut, LutOp
from .max_pool import MaxPool2d, MaxPool2dOp
from .requant import Requant, RequantOp
from .sum_pool import SumPool, SumPoolOp

__all__ = ["OPS", "OpDef", "Tensor", "op_of", "op_named", "register", "dot_bounds", "requant_bounds",
           "shift_in_range", "Add", "ChannelSelect", "Concat", "Conv2d", "Linear", "Lut", "MaxPool2d", "Requant", "SumPool", "AddOp", "ChannelSelectOp",
           "ConcatOp", "Conv2dOp", "LinearOp", "LutOp", "MaxPool2dOp", "RequantOp", "SumPoolOp"]
