import subprocess
import sys

import pytest

from hashiflex.cli import main

STEPS = ["train", "quantize", "fidelity", "export", "elaborate", "cosim", "sweep", "report", "finetune", "netlist", "demo"]


@pytest.mark.parametrize("step", STEPS)
def test_every_step_has_help(step, capsys):
    with pytest.raises(SystemExit) as e:
        main([step, "--help"])
    assert e.value.code == 0
    assert "--work" in capsys.readouterr().out


def test_module_entry_point_lists_the_steps():
    out = subprocess.run([sys.executable, "-m", "hashiflex", "--help"], capture_output=True, text=True, check=True)
    for step in STEPS:
        assert step in out.stdout


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
