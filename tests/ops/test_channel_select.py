"""channel_select: golden == NumPy indexing, ShuffleNet's shuffle permutation, and the import of chunk, split and
the channel shuffle (view, transpose, view)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from hashiflex import ref
from hashiflex.export import design_from_graph, validate_design
from hashiflex.export.design import DesignValidationError
from hashiflex.ir import Graph, Input, IRError, TensorType
from hashiflex.ops import ChannelSelect
from hashiflex.ops.channel_select import shuffle_permutation
from hashiflex.passes import annotate, import_torch
from hashiflex.quant.fakequant import fake_quant_int_outputs
from tests.helpers import import_and_quantize, random_inputs


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.data(), st.integers(0, 2 ** 32 - 1))
def test_golden_is_numpy_indexing(c, hw, data, seed):
    chans = data.draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=8))
    g = Graph("sel", Input(c, hw, hw, TensorType(5, True, -2)), [ChannelSelect("s", chans)])
    info = annotate(g)[0]
    assert info.out_shape == (len(chans), hw, hw) and info.out_bounds == g.input.type.range
    x = random_inputs(g, 3, seed)
    want = x[:, chans].reshape(3, -1)
    assert np.array_equal(ref.run(g, x, fast=False), want)
    assert np.array_equal(ref.run(g, x), want)
    assert np.array_equal(fake_quant_int_outputs(g, x, info.out_exp), want)


def test_the_shuffle_permutation_is_torchs():
    x = torch.arange(12.0).reshape(1, 12, 1, 1)
    for groups in (2, 3, 4):
        y = torch.transpose(x.view(1, groups, 12 // groups, 1, 1), 1, 2).contiguous().view(1, 12, 1, 1)
        assert y.flatten().long().tolist() == list(shuffle_permutation(12, groups))


def test_a_channel_out_of_range_is_refused():
    g = Graph("sel", Input(3, 2, 2, TensorType(5, True, -2)), [ChannelSelect("s", (0, 3))])
    with pytest.raises(IRError, match=r"layer 's': field 'channels': expected indices below the 3 input channels, "
                                      r"found 3"):
        annotate(g)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2's unit in all its spellings: chunk, split, cat, and the shuffle of torchvision's channel_shuffle."""
    def __init__(self):
        super().__init__()
        self.b = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1, groups=2))

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        x = torch.cat((x1, self.b(x2)), dim=1)
        b, c, h, w = x.size()
        x = torch.transpose(x.view(b, 2, c // 2, h, w), 1, 2).contiguous().view(b, -1, h, w)
        y1, y2 = torch.split(x, [1, 3], dim=1)
        return torch.cat([y2, y1], 1)


def test_import_of_chunk_split_and_shuffle_computes_what_torch_computes():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), ShuffleBlock(), nn.Conv2d(4, 2, 1), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(2, 3))
    _, q = import_and_quantize(m, Input(3, 4, 4, TensorType(8, False, -8)))
    sels = [l for l in q.layers if isinstance(l, ChannelSelect)]
    assert [len(s.channels) for s in sels] == [2, 2, 4, 1, 3]  # chunk x2, shuffle, split x2
    assert shuffle_permutation(4, 2) in [s.channels for s in sels]
    d = design_from_graph(q)
    k = next(i for i, l in enumerate(d["layers"]) if l["op"] == "channel_select")
    assert isinstance(validate_design(d).layers[k], ChannelSelect)
    d["layers"][k]["channels"][0] = 9
    with pytest.raises(DesignValidationError, match=rf"layer '{d['layers'][k]['name']}': field 'channels': expected "
                                                    r"indices below the \d+ input channels, found 9"):
        validate_design(d)


def test_a_transpose_that_is_not_a_shuffle_is_refused():
    class T(nn.Module):
        def forward(self, x):
            return torch.transpose(x, 2, 3)

    with pytest.raises(IRError, match=r"a transpose is supported only inside a channel shuffle"):
        import_torch(T(), Input(2, 4, 4, TensorType(8, False, -8)))
