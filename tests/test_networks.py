"""The CNNs users bring, from torchvision's own code: each imports and quantizes (golden == fake-quant, bit for
bit); a reduced ResNet and a reduced ShuffleNetV2 (torchvision's ResNet and BasicBlock, narrower and on a small input) runs bit-exact
in RTL. Networks the hardware cannot build are refused with a message that says why."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from hashiflex import ref
from hashiflex.export import design_from_graph, validate_design
from hashiflex.ir import Add, Input, IRError, TensorType
from hashiflex.ops import MaxPool2d
from hashiflex.passes import import_torch
from hashiflex.quant.fakequant import fake_quant_int_outputs
from tests.conftest import require_tool
from tests.helpers import import_and_quantize
from tests.test_mobilenet import _randomize_bn

IN32 = Input(3, 32, 32, TensorType(8, False, -8))


def _quantized(model, inp, seed=0):
    return import_and_quantize(model, inp, seed, name=type(model).__name__.lower())[1]


@pytest.mark.parametrize("arch", ["resnet18", "mnasnet0_5", "squeezenet1_0", "shufflenet_v2_x0_5"])
def test_torchvision_networks_import_and_quantize_bit_exact(arch):
    torch.manual_seed(0)
    model = _randomize_bn(getattr(torchvision.models, arch)(weights=None, num_classes=10))
    q = _quantized(model, IN32)
    x = np.random.default_rng(1).integers(0, 256, size=(3, 3, 32, 32))
    gold = ref.run(q, x)
    assert np.array_equal(gold, fake_quant_int_outputs(q, x, ref.output_exp(q)))
    assert np.array_equal(gold, ref.run(q, x, fast=False))
    assert np.abs(gold).max() > 0


@pytest.mark.parametrize("arch, why", [
    # their Hardswish / SiLU import as lookup tables; the squeeze-excitation product is refused, naming its block
    ("mobilenet_v3_small", r"node 'mul' \(function mul, in module 'features\.1\.block\.1' \(SqueezeExcitation\)\): "
                           r"op mul is not supported by the hardware: .* needs real multipliers"),
    ("efficientnet_b0", r"node 'mul' \(function mul, in module '.*' \(SqueezeExcitation\)\): .* real multipliers"),
])
def test_networks_the_hardware_cannot_build_yet_are_refused_with_the_reason(arch, why):
    with pytest.raises(IRError, match=why):
        import_torch(getattr(torchvision.models, arch)(weights=None), IN32)


def test_mobilenet_v3_imports_without_its_squeeze_excitation_blocks_and_says_which_it_removed():
    """The refusal names the way out; without the blocks the rest of MobileNetV3 imports (Hardswish and
    Hardsigmoid as lookup tables) and the model it came from keeps its blocks."""
    from torchvision.ops.misc import SqueezeExcitation

    from hashiflex.frontend import without_squeeze_excitation
    from hashiflex.ops import Lut

    model = torchvision.models.mobilenet_v3_small(weights=None)
    with pytest.raises(IRError, match=r"frontend.without_squeeze_excitation removes the blocks"):
        import_torch(model, IN32)
    stripped, removed = without_squeeze_excitation(model)
    blocks = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    assert removed == blocks and len(blocks) == 9 and removed[0] == "features.1.block.1"
    assert not any(isinstance(m, SqueezeExcitation) for m in stripped.modules())
    assert sum(isinstance(m, SqueezeExcitation) for m in model.modules()) == 9  # a copy: the model is unchanged
    g = import_torch(stripped, IN32)
    assert any(isinstance(l, Lut) for l in g.layers)
    assert without_squeeze_excitation(torchvision.models.resnet18(weights=None))[1] == []


def _runs_bit_exact_in_rtl(q, tmp_path, target_ii, images, seed, validate=False):
    """design.json (3 adder levels per stage) -> generator (hw_params checked) -> Verilator: RTL == golden on
    ``images`` random images, at the modelled II."""
    from hashiflex import hw
    from hashiflex.export import write_design
    from hashiflex.passes import initiation_interval
    from hashiflex.sim import StreamSim

    require_tool("verilator")
    d = design_from_graph(q, levels_per_stage=3, target_ii=target_ii)
    if validate:
        validate_design(d)  # design.json re-derives every field of it
    write_design(d, tmp_path / "design.json")
    params = hw.elaborate(tmp_path / "design.json", tmp_path / "rtl", quiet=True)
    hw.check_design_hw(d, q, params)
    x = np.random.default_rng(seed).integers(0, 256, size=(images, 3, 32, 32))
    res = StreamSim(tmp_path / "rtl", params, d).run(x, progress=False)
    assert np.array_equal(res.outputs, ref.run(q, x))
    assert res.cycles_per_image == initiation_interval(q, target_ii) == params["ii_cycles_per_image"]


def reduced_resnet(widths=(8, 8, 16, 16), classes=10) -> nn.Module:
    """torchvision's ResNet (its forward, _make_layer and BasicBlock, unchanged) at reduced widths: one block per
    stage, stem 7x7/2 conv + 3x3/2 max pool, downsampling 1x1/2 convs on the shortcut."""
    from torchvision.models.resnet import BasicBlock, ResNet

    m = ResNet.__new__(ResNet)
    nn.Module.__init__(m)
    m._norm_layer, m.inplanes, m.dilation, m.groups, m.base_width = nn.BatchNorm2d, widths[0], 1, 1, 64
    m.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    m.bn1, m.relu, m.maxpool = nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
    m.layer1 = m._make_layer(BasicBlock, widths[0], 1)
    m.layer2 = m._make_layer(BasicBlock, widths[1], 1, stride=2)
    m.layer3 = m._make_layer(BasicBlock, widths[2], 1, stride=2)
    m.layer4 = m._make_layer(BasicBlock, widths[3], 1, stride=2)
    m.avgpool, m.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(widths[3], classes)
    return m


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.mill
@pytest.mark.parametrize("target_ii", [None, 64])
def test_reduced_resnet_runs_bit_exact_in_rtl(tmp_path, target_ii):
    torch.manual_seed(3)
    q = _quantized(_randomize_bn(reduced_resnet()), IN32, seed=3)
    assert sum(isinstance(l, MaxPool2d) for l in q.layers) == 1 and sum(isinstance(l, Add) for l in q.layers) == 4
    _runs_bit_exact_in_rtl(q, tmp_path, target_ii, images=3, seed=4, validate=True)


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.mill
def test_reduced_shufflenet_runs_bit_exact_in_rtl(tmp_path):
    """torchvision's ShuffleNetV2 (its own code) at widths 8-64 on 32x32: chunks, concatenations and channel
    shuffles, a max pool and a global mean, through the generator and Verilator."""
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    from hashiflex.ops import ChannelSelect

    torch.manual_seed(5)
    q = _quantized(_randomize_bn(ShuffleNetV2([1, 1, 1], [8, 16, 32, 48, 64], num_classes=10)), IN32, seed=5)
    assert sum(isinstance(l, ChannelSelect) for l in q.layers) >= 3
    _runs_bit_exact_in_rtl(q, tmp_path, 64, images=3, seed=6)


def reduced_squeezenet(classes=10) -> nn.Module:
    """SqueezeNet 1.1's layout from torchvision's own Fire module, at widths 4-32: stem conv, ceil-mode max pools,
    Fire modules (concatenated expands), and the classifier's conv -> ReLU -> average pool ending the network."""
    from torchvision.models.squeezenet import Fire

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(8, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16, 16),
        nn.Dropout(0.5), nn.Conv2d(32, classes, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten())


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.mill
def test_reduced_squeezenet_runs_bit_exact_in_rtl(tmp_path):
    from hashiflex.ops import Concat

    torch.manual_seed(7)
    q = _quantized(reduced_squeezenet(), IN32, seed=7)
    assert sum(isinstance(l, Concat) for l in q.layers) == 3 and sum(isinstance(l, MaxPool2d) for l in q.layers) == 2
    _runs_bit_exact_in_rtl(q, tmp_path, 64, images=3, seed=8)


def reduced_mobilenet_v3(classes=10) -> nn.Module:
    """torchvision's MobileNetV3 (its forward, blocks and head) with three inverted-residual blocks at widths 8-24:
    Hardswish in the stem, the blocks and the classifier, a 5x5 depthwise, a residual add; its one
    squeeze-excitation block removed (:func:`hashiflex.frontend.without_squeeze_excitation`)."""
    from functools import partial

    from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

    from hashiflex.frontend import without_squeeze_excitation

    cfg = partial(InvertedResidualConfig, width_mult=1.0)
    blocks = [cfg(8, 3, 8, 8, True, "RE", 2, 1), cfg(8, 5, 24, 16, False, "HS", 2, 1),
              cfg(16, 3, 32, 16, False, "HS", 1, 1)]
    model, removed = without_squeeze_excitation(MobileNetV3(blocks, last_channel=24, num_classes=classes))
    assert removed == ["features.1.block.1"]
    return model


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.mill
def test_reduced_mobilenet_v3_without_squeeze_excitation_runs_bit_exact_in_rtl(tmp_path):
    from hashiflex.ops import Lut

    torch.manual_seed(5)
    q = _quantized(_randomize_bn(reduced_mobilenet_v3()), IN32, seed=5)
    assert sum(isinstance(l, Lut) for l in q.layers) >= 4 and any(isinstance(l, Add) for l in q.layers)
    _runs_bit_exact_in_rtl(q, tmp_path, 64, images=3, seed=6)


def reduced_mnasnet(classes=10) -> nn.Module:
    """torchvision's MNASNet (its forward, its stem and first three inverted-residual stacks at alpha 0.1) with the
    1280-wide head conv narrowed to 48, so the RTL stays small: depthwise 3x3 and 5x5, residual adds, the mean."""
    from torchvision.models.mnasnet import MNASNet

    m = MNASNet(0.1, num_classes=classes)
    stacks = list(m.layers[:11])  # the stem and the first three stacks (3x3 and 5x5 depthwise, residual adds)
    head_in = stacks[-1][-1].layers[-1].num_features
    m.layers = nn.Sequential(*stacks, nn.Conv2d(head_in, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
    m.classifier[1] = nn.Linear(48, classes)
    return m


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.mill
def test_reduced_mnasnet_runs_bit_exact_in_rtl(tmp_path):
    from hashiflex.ir import Conv2d

    torch.manual_seed(9)
    q = _quantized(_randomize_bn(reduced_mnasnet()), IN32, seed=9)
    assert {l.kernel for l in q.layers if isinstance(l, Conv2d) and l.depthwise} == {3, 5}
    assert any(isinstance(l, Add) for l in q.layers)
    _runs_bit_exact_in_rtl(q, tmp_path, None, images=2, seed=10)