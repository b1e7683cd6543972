import csv

import pytest

from hashiflex import flow


@pytest.mark.slow
def test_sweep_writes_csv_and_plot(default_flow, tmp_path):
    work, _ = default_flow
    r = flow.step_sweep(work, [3, 5], [0.0, 0.5], out=tmp_path, progress=False)
    rows = list(csv.DictReader(open(r["csv"])))
    assert [(int(x["bits"]), float(x["sparsity"])) for x in rows] == [(3, 0.0), (3, 0.5), (5, 0.0), (5, 0.5)]
    for x in rows:  # pruning hits its target; fewer weights, fewer adders
        assert float(x["weight_sparsity"]) >= float(x["sparsity"]) - 1e-9
    assert int(rows[3]["adders"]) < int(rows[2]["adders"])
    assert (tmp_path / "sweep_digits_ft0.png").stat().st_size > 10_000
