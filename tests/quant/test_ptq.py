"""Post-training quantization passes: activation scales chosen by the error they cause."""
import numpy as np
import pytest

from hashiflex import ref
from hashiflex.ir import IRError


def test_scales_chosen_by_error_clip_rare_outliers_and_keep_the_ladder_exact(trained_mini):
    from hashiflex.flow import Config, layer_bits
    from hashiflex.passes import quantize_weights
    from hashiflex.quant.fakequant import activation_errors, fake_quant_int_outputs
    from hashiflex.quant.ptq import choose_activation_exps

    g, ds = trained_mini
    x = ds.value(ds.x_train[:256])
    err = activation_errors(g, x, candidates=4)
    m = choose_activation_exps(g, err)
    lowered = 0
    for a, b in zip(g.layers, m.layers):
        if a.name in err:
            j = a.out.exp - b.out.exp
            assert 0 <= j < 4 and err[a.name][j] == err[a.name].min()
            assert err[a.name][j] <= err[a.name][0]
            lowered += j > 0
        else:
            assert a == b
    assert lowered > 0  # a trained network's activations have tails: some scale is worth lowering
    total = sum(err[k].min() for k in err)
    assert total < sum(err[k][0] for k in err)
    # the chosen types run through the whole ladder: golden == fake-quant exactly
    q = quantize_weights(m, layer_bits(m, Config(weight_bits=5, edge_bits=8)), 2)
    assert np.array_equal(fake_quant_int_outputs(q, ds.x_test[:64], ref.output_exp(q)), ref.run(q, ds.x_test[:64]))


def test_choosing_scales_by_error_names_what_is_missing(trained_mini):
    from hashiflex.quant.ptq import choose_activation_exps

    g, _ = trained_mini
    name = next(l.name for l in g.layers if hasattr(l, "out") and l.out is not None)
    with pytest.raises(IRError, match=rf"layer '{name}': no activation errors measured"):
        choose_activation_exps(g, {})
    errors = {l.name: np.zeros(2) for l in g.layers if hasattr(l, "out") and l.out is not None}
    errors[name] = np.array([1.0, np.nan])
    with pytest.raises(IRError, match=rf"layer '{name}': activation errors: expected finite values"):
        choose_activation_exps(g, errors)
