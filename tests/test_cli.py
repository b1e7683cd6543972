import subprocess
import sys

import pytest

from hashiflex.cli import main

STEPS = ["train", "quantize", "export", "elaborate", "cosim", "sweep", "report", "finetune", "netlist", "demo"]


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
