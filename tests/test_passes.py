import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hashiflex import adders
from hashiflex.data import digits
from hashiflex.ir import Conv2d, Input, IRError, Linear, Requant, SumPool, TensorType
from hashiflex.models import DigitsCNN
from hashiflex.passes import (annotate, calibrate_activations, hw_model, import_torch, initiation_interval,
                              quantize_weights, shared_adder_graph)
from hashiflex.quant.fakequant import record_activations

INP = Input(1, 8, 8, TensorType(5, False, -4))


def test_import_maps_the_default_cnn_and_folds_the_pool_average():
    m = DigitsCNN(4, 6)
    g = import_torch(m, INP)
    assert [type(l) for l in g.layers] == [Conv2d, Requant, Conv2d, Requant, SumPool, Linear]
    assert g.layers[2].stride == 2 and g.layers[2].padding == 1
    # the average's 1/16 (4x4 pixels) is folded into the linear weights
    assert np.allclose(g.layers[5].weight, m.fc.weight.detach().double().numpy() / 16)


def test_unsupported_op_names_the_module_and_the_op():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(IRError, match=r"module '1' \(Softmax\): op Softmax is not supported by the hardware"):
        import_torch(m, INP)
    with pytest.raises(IRError, match=r"module '0' \(Conv2d\): expected groups=1 or depthwise"):
        import_torch(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), Input(4, 8, 8, INP.type))
    with pytest.raises(IRError, match=r"node 'mul' \(function mul\): op mul is not supported.*real multipliers"):
        import_torch(_Scale(), INP)


class _Scale(nn.Module):
    def forward(self, x):
        return x * 2


def test_shape_mismatch_names_the_layer():
    m = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(IRError, match=r"layer '0': field 'in_channels': expected 1, found 3"):
        import_torch(m, INP)


def test_calibration_covers_the_observed_maximum():
    ds = digits()
    g = import_torch(DigitsCNN(4, 6), ds.input)
    acts = record_activations(g, ds.value(ds.x_train[:200]))
    cg = calibrate_activations(g, acts, 8)
    for layer in cg.layers:
        if isinstance(layer, Requant):
            m = acts[layer.name].max()
            assert m <= 255 * 2.0 ** layer.out.exp
            assert m > 255 * 2.0 ** (layer.out.exp - 1)


def test_quantize_needs_calibration_first():
    g = import_torch(DigitsCNN(2, 2), INP)
    with pytest.raises(IRError, match="calibrate activations"):
        quantize_weights(g, 5)


def test_adder_count_folds_signs_and_skips_zeros():
    codes = np.array([[1, -2, 0, 3], [0, 0, 0, 0], [-1, -1, 0, 0], [-1, 0, 0, 0]])
    bias = np.array([0, 5, 0, 0])
    # ch0: 3 terms -> 2 adders; ch1: bias only -> 0; ch2: -(x0 + x1) -> 1 + 1 negation; ch3: -x0 -> negation
    ag = shared_adder_graph(codes, bias, share=False)
    assert (ag.adders, ag.unshared, ag.depth) == (2 + 0 + 2 + 1, 5, 3)  # 2 pair levels + the negation level
    # planned: the same (nothing repeats); a root is negative only where every term is (ch2, ch3)
    ag = shared_adder_graph(codes, bias)
    assert (ag.adders, ag.depth) == (5, 3)
    assert ag.plan.roots[:, 2].tolist() == [0, 0, 1, 1]


def test_sharing_builds_equal_subtrees_once_up_to_shift_and_sign():
    # x0 + 2 x1 (codes 1, 2), 4 x0 + 8 x1 (3, 4) and -2 x0 - 4 x1 (-2, -3) are one subtree, shifted and negated
    codes = np.array([[1, 2, 1, 0], [3, 4, 0, 0], [-2, -3, 0, 1]])
    bias = np.array([0, 0, 7])
    ag = shared_adder_graph(codes, bias)
    # unshared: ch0 2 + ch1 1 + ch2 2 + bias 1 = 6 (plus no negation); shared: the pair (x0, x1) once
    assert ag.unshared == 6
    assert ag.adders == 6 - 2
    # depthwise channels read disjoint inputs: nothing to share
    dw = np.array([[[[1, 2]]], [[[1, 2]]]])
    assert shared_adder_graph(dw, np.zeros(2), depthwise=True).adders == 2


def test_multi_term_weights_are_planned_in_signed_digits_and_shared():
    a, b, c = (4, -2, 1), (3, -2, 1), (2, 1, 4)  # three terms each: 8 - 2 + 1 = 7, 4 - 2 + 1 = 3, 2 + 1 + 8 = 11
    codes = np.array([[[a[t], b[t]], [a[t], c[t]]] for t in range(3)])  # (terms, out 2, in 2): ch0 7, 3; ch1 7, 11
    ag = shared_adder_graph(codes, np.zeros(2, dtype=np.int64), terms=3)
    assert np.array_equal(ag.plan.weights().astype(np.int64), [[7, 3], [7, 11]])
    # in signed digits 7 = 8 - 1, 3 = 4 - 1, 11 = 16 - 4 - 1: 7 x0 and 3 x1 (11 x1 = 4 (3 x1) - x1) are built once;
    # ch0 = 7 x0 + 3 x1, ch1 = 7 x0 + (3 x1 << 2) - x1: 2 + 1 + 2 adders, against 5 + 5 summing every code
    assert (ag.adders, ag.unshared) == (5, 10)
    assert ag.depth <= adders.min_depth(5) + adders.DEPTH_SLACK


def test_hw_model_ii_is_the_largest_stream():
    from tests.helpers import random_graph

    g = random_graph(3, convs=2, head=True)
    infos = annotate(g)
    assert initiation_interval(g) == max(i.in_shape[1] * i.in_shape[2] for i in infos)
    assert [h.name for h in hw_model(g, 2)] == [l.name for l in g.layers]


def test_pixel_parallelism_is_the_smallest_row_tiling_meeting_the_target():
    from hashiflex.passes import pixel_parallelism

    assert pixel_parallelism(224, 224, None) == 1
    assert pixel_parallelism(224, 224, 826) == 112      # ceil(50176/826) = 61 -> next divisor of 224
    assert pixel_parallelism(112, 112, 826) == 16       # 16 -> 784 beats <= 826
    assert pixel_parallelism(7, 7, 826) == 1
    assert pixel_parallelism(6, 6, 4) == 12             # needs 9 > a row: two whole rows (2 divides 6), II 3
    assert pixel_parallelism(5, 6, 4) == 30             # needs 8: whole rows must divide 5, so all five
    assert pixel_parallelism(224, 224, 112) == 448      # two rows per beat: the paper-beating II 112
    assert pixel_parallelism(224, 224, 60) == 896       # ceil(50176/60) = 837 -> 4 rows (896 pixels)
    with pytest.raises(IRError, match="target_ii: expected a positive number"):
        pixel_parallelism(4, 4, 0)


def test_initiation_interval_meets_the_target_on_mobilenet_shapes():
    from hashiflex.models import mobilenet_v2

    g = import_torch(mobilenet_v2(0.35, 10).eval(), Input(3, 224, 224, TensorType(8, False, -8)))
    assert initiation_interval(g) == 224 * 224
    for target in (250, 826, 3136):
        ii = initiation_interval(g, target)
        assert ii <= target


@pytest.mark.parametrize("lo,hi,bits", [(0, 0, 1), (23, 23, 6), (-1, 0, 1), (-2, 1, 2), (-10, -3, 5), (0, 127, 8),
                                        (-128, 127, 8), (-129, 0, 9), (5, 6, 4)])
def test_signed_width_of_an_interval(lo, hi, bits):
    from hashiflex.ops.weighted import sint_width as _sint_width

    assert _sint_width(lo, hi) == bits
    assert all(-(1 << (bits - 1)) <= v < (1 << (bits - 1)) for v in (lo, hi))
    if bits > 1:  # minimal: one bit fewer does not hold both ends
        assert not all(-(1 << (bits - 2)) <= v < (1 << (bits - 2)) for v in (lo, hi))


# ------------------------------------------------------------------------------------------ bad input
class _Small(nn.Module):
    """conv -> ReLU -> (pool) -> linear; ``pool=False`` gives a linear layer reading the 8x8 map."""

    def __init__(self, pool: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool else nn.Identity()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2 if pool else 2 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


_IN = Input(1, 8, 8, TensorType(5, False, -4))


@pytest.mark.parametrize("where, value, message", [
    ("conv.weight", float("nan"), r"layer 'conv': field 'weight': expected finite values, found 1 of 18 not finite "
                                  r"\(NaN at index \[1, 0, 2, 0\]\)"),
    ("conv.bias", float("inf"), r"layer 'conv': field 'bias': expected finite values, found 1 of 2 not finite "
                                r"\(\+Inf at index \[1\]\)"),
    ("fc.weight", -float("inf"), r"layer 'fc': field 'weight': .*\(-Inf at index \[1, 0\]\)"),
])
def test_a_nan_or_inf_parameter_is_refused_naming_the_layer_and_the_tensor(where, value, message):
    import torch

    m = _Small()
    with torch.no_grad():
        t = m.get_parameter(where)
        t[(1, 0, 2, 0)[:t.dim()]] = value
    with pytest.raises(IRError, match=message):
        import_torch(m, _IN)
    # the API path that skips the importer: quantize_weights refuses it too (no code 0, no NumPy warning)
    g = import_torch(_Small(), _IN)
    g = calibrate_activations(g, record_activations(g, np.random.default_rng(0).random((4, 1, 8, 8))))
    layer = g.layer(where.split(".")[0])
    arr = layer.weight if where.endswith("weight") else layer.bias
    arr[(1, 0, 2, 0)[:arr.ndim]] = value
    with pytest.raises(IRError, match=message):
        quantize_weights(g, 5)


def test_nan_calibration_activations_are_refused_naming_the_layer():
    g = import_torch(_Small(), _IN)
    acts = record_activations(g, np.random.default_rng(0).random((4, 1, 8, 8)))
    name = next(iter(acts))
    acts[name] = acts[name].copy()
    acts[name].flat[3] = np.nan
    with pytest.raises(IRError, match=rf"layer '{name}': calibration activations: expected finite values"):
        calibrate_activations(g, acts)


def test_a_linear_layer_reading_a_map_is_refused_as_the_generator_would():
    with pytest.raises(IRError, match=r"layer 'fc': field 'src': a linear layer reads a vector \(one pixel\), found "
                                      r"the 8x8 map of 'relu'"):
        import_torch(_Small(pool=False), _IN)


def test_a_grouped_conv_that_is_not_depthwise_is_refused():
    from hashiflex.ir import Graph

    g = Graph("g", Input(4, 8, 8, TensorType(5, False, -4)),
              [Conv2d("conv", np.zeros((8, 2, 3, 3)), np.zeros(8), 1, 1, groups=2)])  # 2 groups of 2 inputs
    with pytest.raises(IRError, match=r"layer 'conv': field 'groups': expected 1 or 4 \(depthwise: groups = in = "
                                      r"out channels\), found 2"):
        annotate(g, require_quantized=False)


class _Reused(nn.Module):
    """ResNet's idiom: one stateless ReLU module called at two sites."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        return self.fc(self.flat(self.pool(x)))


def test_a_module_called_twice_imports_as_one_layer_per_call_site():
    import torch

    from hashiflex import ref
    from hashiflex.quant.fakequant import FakeQuantNet, fake_quant_int_outputs

    m = _Reused().eval()
    g = import_torch(m, _IN)
    names = [l.name for l in g.layers]
    assert names.count("relu") == 1 and "relu_1" in names
    assert [l.act for l in g.layers if isinstance(l, Requant) and l.name.startswith("relu")] == ["relu", "relu"]
    # the imported graph computes what the module does (float), and quantizes bit-exact through the ladder
    x = np.random.default_rng(1).random((6, 1, 8, 8))
    with torch.no_grad():
        want = m(torch.tensor(x, dtype=torch.float32)).double().numpy()
    with torch.no_grad():
        have = FakeQuantNet(g, quantize=False).double().eval()(torch.tensor(x)).numpy()
    assert np.allclose(have, want, atol=1e-5)
    q = quantize_weights(calibrate_activations(g, record_activations(g, x)), 5)
    xi = np.round(x * 16).astype(np.int64)
    assert np.array_equal(ref.run(q, xi), fake_quant_int_outputs(q, xi, ref.output_exp(q)))


@pytest.mark.parametrize("kind", ["pre", "post"])
def test_a_module_with_hooks_is_refused_naming_it(kind):
    m = _Small()
    if kind == "pre":  # the usual way to add TF 'SAME' padding to a torchvision model
        m.conv.register_forward_pre_hook(lambda mod, args: (F.pad(args[0], (0, 1, 0, 1)),))
        want = r"module 'conv' \(Conv2d\): has a forward pre-hook, which torch.fx does not trace"
    else:
        m.relu.register_forward_hook(lambda mod, args, out: out * 2)
        want = r"module 'relu' \(ReLU\): has a forward hook, which torch.fx does not trace"
    with pytest.raises(IRError, match=want):
        import_torch(m, _IN)


class _TfPadded(nn.Module):
    """A network ported from TensorFlow: explicit zero pads before valid convs, in every spelling."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))          # (left, right, top, bottom)
        self.conv1 = nn.Conv2d(1, 3, 3, stride=2)
        self.conv2 = nn.Conv2d(3, 3, 3, padding="same")
        self.conv3 = nn.Conv2d(3, 2, 3, stride=2, padding=(1, 0))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = self.relu(self.conv1(self.pad(x)))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(F.pad(F.pad(x, (1, 0)), (0, 0, 0, 2))))  # a pad of a pad sums
        return self.fc(torch.flatten(self.pool(x), 1))


def test_zero_pads_fold_into_the_conv_they_feed_and_compute_what_torch_does():
    from hashiflex import ref
    from hashiflex.quant.fakequant import FakeQuantNet, fake_quant_int_outputs

    m = _TfPadded().eval()
    g = import_torch(m, _IN)
    convs = {l.name: l for l in g.layers if isinstance(l, Conv2d)}
    assert convs["conv1"].pads == (0, 1, 0, 1)
    assert convs["conv2"].padding == 1                  # 'same' on a 3x3: one on every side, stays an integer
    assert convs["conv3"].pads == (1, 3, 1, 0)          # (1, 0) of its own + left 1, bottom 2
    assert [i.out_shape for i in annotate(g, require_quantized=False) if i.name in convs] == [
        (3, 4, 4), (3, 4, 4), (2, 3, 2)]
    x = np.random.default_rng(2).random((5, 1, 8, 8))
    with torch.no_grad():
        want = m(torch.tensor(x, dtype=torch.float32)).double().numpy()
        have = FakeQuantNet(g, quantize=False).double().eval()(torch.tensor(x)).numpy()
    assert np.allclose(have, want, atol=1e-5)
    q = quantize_weights(calibrate_activations(g, record_activations(g, x)), 5)
    xi = np.round(x * 16).astype(np.int64)
    assert np.array_equal(ref.run(q, xi), fake_quant_int_outputs(q, xi, ref.output_exp(q)))


class _PadThenRelu(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.pad, self.relu = pad, nn.ReLU()

    def forward(self, x):
        return self.relu(self.pad(x))


def test_a_pad_not_feeding_a_conv_or_not_zero_is_refused_naming_it():
    with pytest.raises(IRError, match=r"module 'relu' \(ReLU\): reads the zero padding 'pad'; a ZeroPad2d / F.pad is "
                                      r"supported only directly before a Conv2d"):
        import_torch(_PadThenRelu(nn.ZeroPad2d(1)), _IN)
    with pytest.raises(IRError, match=r"module 'pad' \(ConstantPad2d\): expected zero padding, found value 1.5"):
        import_torch(_PadThenRelu(nn.ConstantPad2d(1, 1.5)), _IN)
    with pytest.raises(IRError, match=r"module 'pad' \(ZeroPad2d\): expected 4 non-negative pads \(left, right, top, "
                                      r"bottom\) of H and W, found \[-1, -1, -1, -1\]"):
        import_torch(_PadThenRelu(nn.ZeroPad2d(-1)), _IN)


def test_tf_same_padding_pads_the_odd_pixel_below_and_right_and_keeps_every_shape():
    from hashiflex.passes import same_padding

    m = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1),
                      nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    g = import_torch(m, Input(1, 8, 7, INP.type))
    tf = same_padding(g, "tf")
    pads = [l.pads for l in tf.layers if isinstance(l, Conv2d)]
    # 8x7 stride 2 -> 4x4: rows pad 1 in all (0 above, 1 below), columns 2 (1, 1); then 4x4 stride 1 keeps (1, 1);
    # 4x4 stride 2 -> 2x2: 1 in all, below and right; a 1x1 needs none
    assert pads == [(0, 1, 1, 1), (1, 1, 1, 1), (0, 1, 0, 1), (0, 0, 0, 0)]
    assert [i.out_shape for i in annotate(tf, require_quantized=False)] == [
        i.out_shape for i in annotate(g, require_quantized=False)]
    assert [l.pads for l in g.layers if isinstance(l, Conv2d)][0] == (1, 1, 1, 1)  # the input graph is unchanged
    assert same_padding(g, "torch") is g
    with pytest.raises(IRError, match=r"padding style 'keras': expected one of torch, tf"):
        same_padding(g, "keras")
    valid = import_torch(nn.Sequential(nn.Conv2d(1, 2, 3)), INP)  # 'VALID' in TF terms: 'SAME' changes its shape
    with pytest.raises(IRError, match=r"layer '0': TF 'SAME' padding 1 gives a 8x8 output, but the network was built "
                                      r"with 6x6; import it with its own padding \(--padding torch\)"):
        same_padding(valid, "tf")


def test_conv_padding_must_be_an_integer_or_four_sides():
    with pytest.raises(IRError, match=r"layer 'c': field 'padding': expected an integer or \[top, bottom, left, "
                                      r"right\] of 4 integers >= 0, found \[1, 2\]"):
        Conv2d("c", np.zeros((1, 1, 3, 3)), np.zeros(1), padding=(1, 2))
    assert Conv2d("c", np.zeros((1, 1, 3, 3)), np.zeros(1), padding=[2, 2, 2, 2]).padding == 2
