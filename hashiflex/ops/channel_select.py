"""channel_select: output channel j is input channel ``channels[j]``: a slice (``x[:, a:b]``), a chunk or split
along channels, or ShuffleNet's channel shuffle (view - transpose - view). Wiring only; values, exponent and
bounds pass through. Generator side: ChannelSelect.scala (no logic: the beat's lanes rewired)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import IRError
from ..numfmt import width_for
from . import base
from .base import Inferred, LayerHw, Tensor


@dataclass
class ChannelSelect:
    name: str
    channels: tuple[int, ...]      # the input channel of each output channel
    src: str | None = None

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 0:
            raise IRError(f"layer {self.name!r}: field 'channels': expected input channel indices (>= 0), found "
                          f"{list(self.channels)[:8]}")


class ChannelSelectOp(base.OpDef):
    op = "channel_select"
    layer_type = ChannelSelect

    def channels_read(self, layer, ins, live):
        read = np.zeros(ins[0].shape[0], dtype=bool)
        read[np.asarray(layer.channels)[live]] = True
        return [read]

    def keeps_parallelism(self, layer):
        return "a channel selection is wiring, pixel for pixel"

    def infer(self, layer, ins, require_quantized):
        x = ins[0]
        c = x.shape[0]
        if max(layer.channels) >= c:
            raise IRError(f"layer {layer.name!r}: field 'channels': expected indices below the {c} input channels, "
                          f"found {max(layer.channels)}")
        return Inferred(Tensor((len(layer.channels), *x.shape[1:]), x.exp, x.bounds, x.vector))

    def golden(self, layer, info, xs, exps):
        return xs[0][:, list(layer.channels)]

    def golden_torch(self, layer, info, xs, exps, plan):
        return xs[0][:, list(layer.channels)]

    def fake(self, layer, xs, exps, net):
        return xs[0][:, list(layer.channels)], exps[0]

    def to_json(self, layer, info, srcs):
        return {"channels": list(layer.channels)}

    def from_json(self, l, where):
        return ChannelSelect(l["name"], tuple(l["channels"]), src=l["src"])

    def hw(self, layer, info, p_in, p_out, levels_per_stage, beats):
        return LayerHw(layer.name, self.op, width_for(*info.out_bounds)[0], 0, 0, **beats)


def shuffle_permutation(channels: int, groups: int) -> tuple[int, ...]:
    """ShuffleNet's channel shuffle: view (groups, channels / groups), transpose, flatten. Output channel j is
    input channel (j % groups) * (channels / groups) + j // groups."""
    per = channels // groups
    return tuple(int((j % groups) * per + j // groups) for j in np.arange(channels))


base.register(ChannelSelectOp())
