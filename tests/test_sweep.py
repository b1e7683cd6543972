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


def test_pareto_front_keeps_only_undominated_designs():
    from hashiflex.sweep import SweepPoint, pareto_front

    pts = [SweepPoint(b, s, acc, s, adders, False) for b, s, acc, adders in
           [(3, 0.0, 0.90, 100), (4, 0.0, 0.95, 200), (4, 0.5, 0.93, 150), (5, 0.0, 0.94, 300), (3, 0.5, 0.85, 100)]]
    front = pareto_front(pts)
    assert [(p.bits, p.sparsity) for p in front] == [(3, 0.0), (4, 0.5), (4, 0.0)]
