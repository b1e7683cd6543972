import subprocess
import sys

import pytest

from hashiflex.cli import main

STEPS = ["train", "quantize", "fidelity", "export", "elaborate", "cosim", "sweep", "report", "finetune", "netlist", "demo",
         "evaluate", "synth", "layerwise"]


@pytest.mark.parametrize("step", STEPS)
def test_every_step_has_help(step, capsys):
    with pytest.raises(SystemExit) as e:
        main([step, "--help"])
    assert e.value.code == 0
    assert "--work" in capsys.readouterr().out


def test_vectors_has_help(capsys):  # the one step without a work folder: it writes test vectors where it is told
    with pytest.raises(SystemExit) as e:
        main(["vectors", "--help"])
    assert e.value.code == 0 and "golden model's output beats" in capsys.readouterr().out


def test_module_entry_point_lists_the_steps():
    out = subprocess.run([sys.executable, "-m", "hashiflex", "--help"], capture_output=True, text=True, check=True)
    for step in STEPS:
        assert step in out.stdout


def test_layerwise_fails_on_mismatches_only(tmp_path, monkeypatch, capsys):
    from hashiflex import flow

    def row(layer, mismatched, differ):
        return {"layer": layer, "op": "conv2d", "mismatched_values": mismatched, "values": 10, "modules_differ": differ,
                "cycles_per_image": 4.0, "ii_cycles_per_image": 4, "build_s": 1.0}

    def fake(rows):
        return lambda *a, **k: {"layers": rows, "skipped": [], "layers_verified": len(rows),
                                "mismatched_values": sum(r["mismatched_values"] for r in rows),
                                "modules_differ": sorted({m for r in rows for m in r["modules_differ"]})}

    # a module simulated as the full design holds it (its text differs from the cut-out's) is not a failure
    monkeypatch.setattr(flow, "step_layerwise", fake([row("a", 0, ["WindowGen_x"]), row("b", 0, [])]))
    assert main(["layerwise", "--work", str(tmp_path), "--no-progress"]) == 0
    assert "2 layers, 0 mismatched values" in capsys.readouterr().out
    monkeypatch.setattr(flow, "step_layerwise", fake([row("a", 0, []), row("b", 3, [])]))
    assert main(["layerwise", "--work", str(tmp_path), "--no-progress"]) == 1


def test_missing_artifact_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--work", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().err


def test_bad_design_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "design.json").write_text('{"format": "hashiflex.design", "version": 1}')
    assert main(["elaborate", "--work", str(tmp_path)]) == 1
    assert "error: design: 'name' is a required property" in capsys.readouterr().err


@pytest.mark.parametrize("tensor, value, message", [
    ("conv1.weight", float("nan"), "layer 'conv1': field 'weight': expected finite values, found 1 of 144 not finite "
                                   "(NaN at index [3, 0, 1, 1])"),
    ("fc.bias", float("nan"), "layer 'fc': field 'bias': expected finite values, found 1 of 10 not finite "
                              "(NaN at index [3])"),
])
def test_a_nan_in_the_trained_weights_is_named_by_the_cli_and_nothing_is_written(tmp_path, capsys, tensor, value,
                                                                                  message):
    import torch

    from hashiflex import flow

    flow.step_train(tmp_path, flow.Config(epochs=1), progress=False)
    ck = torch.load(tmp_path / "float.pt", weights_only=False)
    t = ck["state_dict"][tensor]
    t[(3, 0, 1, 1)[:t.dim()]] = value
    torch.save(ck, tmp_path / "float.pt")
    assert main(["quantize", "--work", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "po2.pkl").exists()


@pytest.fixture(scope="module")
def pretrained_files(tmp_path_factory):
    """A torchvision MobileNetV2 state_dict (random init, BN statistics set so it is not trivial) and a small
    ImageNet-style folder of 3 classes of a 1000-line classes file."""
    import torch
    from torchvision.models import mobilenet_v2

    from tests.test_imagenet import make_folder

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    m = mobilenet_v2().eval()
    torch.save(m.state_dict(), root / "weights.pth")
    classes = [f"n{k:08d}" for k in range(1000)]
    make_folder(root / "data", [classes[5], classes[500], classes[999]], per_class=1, size=(60, 70), classes=classes)
    return root


@pytest.mark.slow
def test_the_pretrained_path_quantizes_and_evaluates_a_users_weights_and_folder(pretrained_files, tmp_path, capsys):
    import json

    work = tmp_path / "w"
    assert main(["quantize", "--work", str(work), "--init", str(pretrained_files / "weights.pth"), "--calib-data",
                 str(pretrained_files / "data"), "--calib-images", "1", "--terms", "2", "--padding", "tf",
                 "--distill-epochs", "1", "--distill-images", "2", "--act-range", "mse", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["terms"].values()) == {2} and out["adders"] > 0
    from hashiflex.flow import load_quantized
    from hashiflex.ir import Conv2d

    q, meta = load_quantized(work)
    assert meta["distill"]["images"] == 2 and meta["distill"]["steps"] == 1 and len(out["distill_loss"]) == 1
    assert meta["config"]["rounding"] == "reconstruct"  # the default: rounded against the calibration image
    assert meta["config"]["act_range"] == "mse"
    assert not (work / "distill.ck").exists()
    for g in (q, meta["float_graph"]):  # TF 'SAME': the stride-2 convs on even maps pad only below and right
        pads = {l.pads for l in g.layers if isinstance(l, Conv2d) and l.stride == 2}
        assert pads == {(0, 1, 0, 1)}, pads
    assert main(["evaluate", "--work", str(work), "--data", str(pretrained_files / "data"), "--json",
                 str(work / "ev.json"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    # past the calibration image and the two distillation images
    assert "1 images of" in text and "(from image 2)" in text and "golden" in text
    r = json.loads((work / "ev.json").read_text())
    assert r["images"] == 1 and r["golden_equals_fake_quant"] is True
    assert set(r["models"]) == {"float", "fake_quant", "golden"}
    for m in r["models"].values():
        assert 0 <= m["top1"] <= m["top5"] <= 1


@pytest.mark.slow
def test_auto_terms_on_the_pretrained_path_fit_the_budget_with_the_sensitivity_held_out(pretrained_files, tmp_path,
                                                                                        capsys):
    import json

    from hashiflex.flow import load_quantized

    work = tmp_path / "w"
    assert main(["quantize", "--work", str(work), "--init", str(pretrained_files / "weights.pth"), "--calib-data",
                 str(pretrained_files / "data"), "--calib-images", "3", "--terms", "auto", "--max-terms", "2",
                 "--adder-budget", "2000000", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    q, meta = load_quantized(work)
    opts = {(o["layer"], o["terms"]): o for o in meta["term_options"]}
    names = [l.name for l in q.layers if getattr(l, "q", None) is not None]
    assert set(opts) == {(n, k) for n in names for k in (1, 2)}
    assert out["terms"] == {l.name: l.q.terms for l in q.layers if getattr(l, "q", None) is not None}
    # within the budget (the costs are those of the final rounding), between one term and two everywhere
    assert sum(opts[(n, 1)]["adders"] for n in names) <= 2_000_000 < sum(opts[(n, 2)]["adders"] for n in names)
    assert sum(opts[(n, k)]["adders"] for n, k in out["terms"].items()) <= 2_000_000
    assert set(out["terms"].values()) == {1, 2}
    assert all(opts[(n, k)]["damage"] >= 0 for n, k in opts)


def test_the_pretrained_path_refuses_bad_arguments_clearly(pretrained_files, tmp_path, capsys):
    w = str(tmp_path / "w")
    data = str(pretrained_files / "data")
    assert main(["quantize", "--work", w, "--init", str(pretrained_files / "weights.pth")]) == 1
    assert "needs both --init WEIGHTS.pth and --calib-data DIR" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    import torch

    torch.save({"features.0.0.weight": torch.zeros(1)}, bad)
    assert main(["quantize", "--work", w, "--init", str(bad), "--calib-data", data]) == 1
    assert "not a torchvision mobilenet_v2 state_dict" in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--init", str(pretrained_files / "weights.pth"), "--calib-data", data,
                 "--arch", "resnet18"]) == 1
    assert "--arch: expected one of mobilenet_v2" in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--init", str(pretrained_files / "weights.pth"), "--calib-data", data,
                 "--preprocess", "torchvision"]) == 1
    assert "mean/std normalisation is not an exact fixed-point input" in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--init", str(pretrained_files / "weights.pth"), "--calib-data", data,
                 "--terms", "many"]) == 1
    assert "--terms: expected 1, 2, 3, 4 or 'auto', found 'many'" in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--init", str(pretrained_files / "weights.pth"), "--calib-data", data,
                 "--terms", "auto", "--calib-images", "1", "--no-progress"]) == 1
    assert ("--terms auto with --rounding reconstruct: needs at least 2 calibration images (the sensitivity is "
            "measured on images the rounding has not seen), found 1") in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--init", str(pretrained_files / "weights.pth"), "--calib-data", data,
                 "--sparsity", "0.5", "--prune-method", "obs", "--prune-scope", "global", "--no-progress"]) == 1
    assert ("--prune-method obs: prunes each layer by its own fraction (--prune-scope layer), found --prune-scope "
            "'global'") in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--sparsity", "0.5", "--prune-method", "obs"]) == 1  # the QAT path
    assert "--prune-method obs: the pretrained path's one-shot pruning" in capsys.readouterr().err
    assert main(["quantize", "--work", w, "--keep-depthwise"]) == 1
    assert "--keep-depthwise: the pretrained path's one-shot pruning" in capsys.readouterr().err
    assert not (tmp_path / "w" / "po2.pkl").exists()


@pytest.mark.slow
def test_the_pretrained_path_prunes_by_the_output_error_and_keeps_the_pruned_weights_zero(pretrained_files, tmp_path,
                                                                                         capsys):
    import json

    from hashiflex.flow import load_quantized

    work = tmp_path / "w"
    assert main(["quantize", "--work", str(work), "--init", str(pretrained_files / "weights.pth"), "--calib-data",
                 str(pretrained_files / "data"), "--calib-images", "2", "--terms", "2", "--sparsity", "0.5",
                 "--prune-method", "obs", "--keep-depthwise", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    q, meta = load_quantized(work)
    layers = [l for l in q.layers if getattr(l, "q", None) is not None]
    for i, b in enumerate(layers):
        zeros = float((b.q.int_weights() == 0).mean())
        if i in (0, len(layers) - 1) or b.depthwise:  # the first and last layer and the depthwise stay dense
            assert zeros < 0.5, (b.name, zeros)
        else:  # each layer its own half (a dense layer block by block of 128 inputs), nearest-rounding zeros beside
            assert zeros >= 0.49, (b.name, zeros)
    assert out["weight_sparsity"] == meta["weight_sparsity"] > 0.3
    assert meta["config"]["prune_method"] == "obs" and meta["config"]["keep_depthwise"] is True
