"""Per-layer term counts: the allocation respects its budget, and a trained MobileNetV2-structured network that
one-term Po2 PTQ damages keeps its accuracy with terms chosen by sensitivity (the regression test of the
pretrained-network collapse, runnable without ImageNet)."""
import numpy as np
import pytest

from hashiflex.ir import IRError
from hashiflex.quant.terms import allocate
from tests.helpers import float_agreement


def _toy():
    costs = {("a", 1): 10, ("a", 2): 20, ("a", 3): 30, ("b", 1): 100, ("b", 2): 200, ("b", 3): 300}
    damage = {("a", 1): 5.0, ("a", 2): 1.0, ("a", 3): 0.5, ("b", 1): 2.0, ("b", 2): 0.2, ("b", 3): 0.1}
    return costs, damage, {"a": (1, 2, 3), "b": (1, 2, 3)}


def test_allocation_fits_the_budget_and_more_budget_never_hurts():
    costs, damage, choices = _toy()
    last = None
    for budget in range(110, 331, 10):
        k = allocate(costs, damage, budget, choices)
        assert sum(costs[(n, t)] for n, t in k.items()) <= budget
        total = sum(damage[(n, t)] for n, t in k.items())
        assert last is None or total <= last + 1e-12
        last = total
    # the cheap, sensitive layer is upgraded first
    assert allocate(costs, damage, 120, choices) == {"a": 2, "b": 1}
    assert allocate(costs, damage, 10 ** 6, choices) == {"a": 3, "b": 3}
    fewest = costs[("a", 1)] + costs[("b", 1)]  # what the start (one term each) costs
    with pytest.raises(IRError, match=rf"--adder-budget 50: the fewest terms allowed already need {fewest} adders"):
        allocate(costs, damage, 50, choices)
    assert allocate(costs, damage, 1000, {"a": (2,), "b": (1, 2)}) == {"a": 2, "b": 2}


@pytest.mark.slow
def test_terms_chosen_by_sensitivity_keep_a_trained_network_that_one_term_po2_damages(trained_mini):
    from hashiflex import ref
    from hashiflex.export import design_from_graph, validate_design
    from hashiflex.flow import Config, layer_bits
    from hashiflex.passes import hw_model, quantize_weights
    from hashiflex.quant.fakequant import fake_quant_int_outputs
    from hashiflex.quant.terms import choose_terms

    g, ds = trained_mini
    bits = layer_bits(g, Config(weight_bits=4, edge_bits=8))
    agreement = float_agreement(g, ds)

    def adders(q):
        return sum(m.adders for m in hw_model(q, 4) if m.op in ("conv2d", "linear"))

    one, two = quantize_weights(g, bits, 1), quantize_weights(g, bits, 2)
    terms, opts = choose_terms(g, bits, ds.value(ds.x_train[:64]), max_terms=3)  # budget: 2 terms everywhere
    auto = quantize_weights(g, bits, terms)
    assert adders(auto) <= adders(two)
    assert {o.layer for o in opts} == set(terms) and all(o.adders > 0 for o in opts)
    # the figure this guards: float agreement of the golden model, auto terms against the one-term rule
    a_one, a_auto = agreement(one), agreement(auto)
    assert a_auto >= 0.95, (a_one, a_auto, terms)
    assert a_auto > a_one
    # the ladder holds with mixed terms, and design.json carries them through validation
    assert np.array_equal(fake_quant_int_outputs(auto, ds.x_test, ref.output_exp(auto)), ref.run(auto, ds.x_test))
    d = design_from_graph(auto)
    assert [l["weights"]["terms"] for l in d["layers"] if "weights" in l] == list(terms.values())
    back = validate_design(d)
    assert np.array_equal(ref.run(back, ds.x_test[:32]), ref.run(auto, ds.x_test[:32]))


def _wide_linear(seed: int):
    """A layer with more inputs (64) than calibration samples (8 per fold): rounding against those samples fits
    them, which a damage measured on them cannot see."""
    import torch

    from hashiflex.ir import Input, TensorType
    from hashiflex.passes import calibrate_activations, import_torch
    from hashiflex.quant.fakequant import activation_ranges

    torch.manual_seed(seed)
    g = import_torch(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                     Input(64, 1, 1, TensorType(8, True, -5)))
    rng = np.random.default_rng(seed)

    def images(n):
        return np.clip(np.round(rng.normal(size=(n, 64, 1, 1)) * 32), -128, 127) * 2.0 ** -5

    x, fresh = images(16), images(64)
    return calibrate_activations(g, activation_ranges(g, x)), x, fresh


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_damage_of_reconstructed_weights_is_measured_on_images_they_were_not_rounded_against(seed):
    from hashiflex.quant.reconstruct import hessians
    from hashiflex.quant.terms import Fold, held_out_damage, layer_damage, quantized_versions, sum_hessians

    g, x, fresh = _wide_linear(seed)
    a, b = hessians(g, x[:8]), hessians(g, x[8:])
    h = sum_hessians(a, b)
    whole = hessians(g, x)
    assert all(torch_allclose(h[n], whole[n]) for n in whole)  # Hessians add up over images
    bits = {"1": 5}
    final = quantized_versions(g, bits, 2, h)
    in_sample = layer_damage(g, bits, 2, x[:8], quantized=final)
    held_out = held_out_damage(g, bits, 2, [Fold(x[:8], b), Fold(x[8:], a)])
    truth = layer_damage(g, bits, 2, fresh, quantized=final)  # what the final rounding does on new images
    for key in truth:
        assert in_sample[key] < truth[key] / 5, (key, in_sample[key], truth[key])   # the bias this removes
        assert truth[key] / 3 < held_out[key] < 3 * truth[key], (key, held_out[key], truth[key])


def test_term_choice_with_rounded_weights_needs_held_out_images_and_hessians_of_the_same_layers():
    from hashiflex.quant.reconstruct import hessians
    from hashiflex.quant.terms import choose_terms, sum_hessians

    g, x, _ = _wide_linear(0)
    h = hessians(g, x)
    with pytest.raises(IRError, match="the damage must be measured on held-out images: pass folds"):
        choose_terms(g, {"1": 5}, x, max_terms=2, h=h)
    with pytest.raises(IRError, match=r"sum_hessians: the parts hold different layers \(\['1'\]\)"):
        sum_hessians(h, {})


def torch_allclose(a, b) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-12, atol=1e-12))
