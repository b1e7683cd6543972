"""Running Yosys (hashiflex.report.area): a process's exit status, errors and peak memory come back."""
import sys

from hashiflex.report.area import run_measured


def test_a_process_peak_memory_is_measured_with_its_status_and_errors():
    mib = 300
    code = (f"import sys; b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "sys.stderr.write('done'); sys.exit(3)")
    rc, err, peak = run_measured([sys.executable, "-c", code])
    assert rc == 3 and err == "done"
    assert mib * 2**20 <= peak < (mib + 200) * 2**20  # the buffer, plus the interpreter
    rc, _, small = run_measured([sys.executable, "-c", "pass"])
    assert rc == 0 and small < peak - (mib - 50) * 2**20  # a process's own peak, not its parent's or a sibling's


def test_a_command_that_cannot_start_is_named():
    import pytest

    with pytest.raises(RuntimeError, match="no-such-tool-here could not be started: .*No such file"):
        run_measured(["no-such-tool-here", "-q"])
