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
    # every point was kept as it finished (Ray jobs): a second run reads them back, a stopped one resumes
    cache = tmp_path / "sweep_digits_ft0.points.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 4
    again = flow.step_sweep(work, [3, 5], [0.0, 0.5], out=tmp_path, progress=False)
    assert again["points"] == r["points"] and cache.read_text().splitlines() == lines
    cache.write_text("\n".join(lines[1:]) + "\n")  # one point lost: only it runs again
    resumed = flow.step_sweep(work, [3, 5], [0.0, 0.5], out=tmp_path, progress=False, jobs=1)
    assert resumed["points"] == r["points"] and len(cache.read_text().splitlines()) == 4


def test_a_sweep_refuses_bad_grid_values():
    from hashiflex.data import digits
    from hashiflex.ir import Graph, Input, TensorType
    from hashiflex.sweep import sweep

    g, ds = Graph("g", Input(1, 8, 8, TensorType(5, False, -4))), digits()
    with pytest.raises(ValueError, match="sweep: bits: expected integers from 2 to 8, found 1"):
        sweep(g, ds, [1], [0.0])
    with pytest.raises(ValueError, match=r"sweep: sparsity: expected values in \[0, 1\), found 1.0"):
        sweep(g, ds, [4], [1.0])


def test_pareto_front_keeps_only_undominated_designs():
    from hashiflex.sweep import SweepPoint, pareto_front

    pts = [SweepPoint(b, s, acc, s, adders, False) for b, s, acc, adders in
           [(3, 0.0, 0.90, 100), (4, 0.0, 0.95, 200), (4, 0.5, 0.93, 150), (5, 0.0, 0.94, 300), (3, 0.5, 0.85, 100)]]
    front = pareto_front(pts)
    assert [(p.bits, p.sparsity) for p in front] == [(3, 0.0), (4, 0.5), (4, 0.0)]
