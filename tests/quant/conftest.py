"""Fixtures shared by the quantization tests."""
import pytest
import torch


@pytest.fixture(scope="session")
def trained_mini():
    """A MobileNetV2-structured network (inverted residuals, depthwise, ReLU6, linear bottlenecks) trained on
    the digits in the test, imported and calibrated."""
    from hashiflex.data import digits
    from hashiflex.models import mobilenet_v2_mini
    from hashiflex.passes import calibrate_activations, import_torch
    from hashiflex.quant.fakequant import activation_ranges
    from hashiflex.train import train_float

    ds = digits()
    torch.manual_seed(0)
    m = mobilenet_v2_mini(width=0.5, num_classes=10, last_channel=64, cifar=True)
    m.features[2].conv[1][0].stride = (1, 1)
    c0 = m.features[0][0]
    m.features[0][0] = torch.nn.Conv2d(1, c0.out_channels, 3, 1, 1, bias=False)
    train_float(m, ds, epochs=15, lr=3e-3, progress=False, batch=64, optimizer="adam")
    g = import_torch(m.eval(), ds.input, name="mini")
    g = calibrate_activations(g, activation_ranges(g, ds.value(ds.x_train[:256])))
    return g, ds

