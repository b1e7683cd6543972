import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def work_root() -> Path:
    """Test artifacts under build/tests (kept between runs: the flow reuses unchanged steps)."""
    d = ROOT / "build" / "tests"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def default_flow(work_root):
    """The embedded default run end to end (train -> cosim on the whole digits test split)."""
    from hashiflex import flow

    work = work_root / "default"
    r = flow.demo(work, progress=False, netlist=False)
    return work, r


def require_tool(name: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: run `make deps`")


# Random designs for the generator and co-simulation tests, elaborated in one Mill run (one JVM start):
# chains one pixel per beat, and DAGs (depthwise, residual adds) unrolled to a target II.
RANDOM_DESIGN_SEEDS = [11, 23, 37, 41]
DAG_DESIGNS = [(2, 9), (4, 4), (0, None)]  # (seed, target_ii)
MULTI_TERM_DESIGNS = [(5, None), (6, 4)]  # (seed, target_ii): DAGs whose weights have 1 to 3 terms
PADDED_DESIGNS = [(2, 3), (5, None)]  # (seed, target_ii): DAGs whose convs pad each side on its own (TF 'SAME', ZeroPad2d)
POOL_DESIGNS = [(1, None), (2, 3), (9, None)]  # (seed, target_ii): DAGs with max pools (kernel 1-3, stride 1-2, padding)
CONCAT_DESIGNS = [(2, 3), (12, 2)]  # (seed, target_ii): DAGs with channel concatenations (and max pools)
LUT_DESIGNS = [(2, None), (4, 3)]  # (seed, target_ii): DAGs with activation lookup tables (and concatenations)
SELECT_DESIGNS = [(2, 3), (9, None)]  # (seed, target_ii): DAGs with channel selections (shuffles, repeats)


@pytest.fixture(scope="session")
def elaborated(work_root):
    """[(graph, design, hw_params, rtl_dir)] for RANDOM_DESIGN_SEEDS (levels_per_stage 1..4), then DAG_DESIGNS,
    then MULTI_TERM_DESIGNS, then PADDED_DESIGNS, then POOL_DESIGNS, then CONCAT_DESIGNS, then LUT_DESIGNS,
    then SELECT_DESIGNS."""
    from hashiflex import hw
    from hashiflex.export import design_from_graph, write_design
    from tests.helpers import random_graph

    out = []
    jobs = []
    specs = [(seed, None, False, bool(i % 2)) for i, seed in enumerate(RANDOM_DESIGN_SEEDS)]
    specs += [(seed, target, True, None) for seed, target in DAG_DESIGNS]
    specs += [(seed, target, 3, None) for seed, target in MULTI_TERM_DESIGNS]
    specs += [(seed, target, "pad", None) for seed, target in PADDED_DESIGNS]
    specs += [(seed, target, "pool", None) for seed, target in POOL_DESIGNS]
    specs += [(seed, target, "cat", None) for seed, target in CONCAT_DESIGNS]
    specs += [(seed, target, "lut", None) for seed, target in LUT_DESIGNS]
    specs += [(seed, target, "sel", None) for seed, target in SELECT_DESIGNS]
    for i, (seed, target, dag, head) in enumerate(specs):
        name = f"{'terms' if dag == 3 else dag if dag in ('pad', 'pool', 'cat', 'lut', 'sel') else 'dag' if dag else 'rand'}{seed}"
        if dag == "sel":
            g = random_graph(seed, max_c=4, max_hw=6, convs=3, dag=True, name=name, select=True, concat=True)
        elif dag == "lut":
            g = random_graph(seed, max_c=3, max_hw=6, convs=3, dag=True, name=name, lut=True, concat=True)
        elif dag in ("pool", "cat"):
            g = random_graph(seed, max_c=3, max_hw=7, convs=3, dag=True, name=name, max_pool=True,
                             concat=dag == "cat")
        elif dag:
            g = random_graph(seed, max_c=3, max_hw=6, convs=3, dag=True, name=name, max_terms=3 if dag == 3 else 1,
                             asym_pad=dag == "pad")
        else:
            g = random_graph(seed, max_c=3, max_hw=6, head=head, name=name)
        d = design_from_graph(g, levels_per_stage=1 + i % 4, target_ii=target)
        base = work_root / "random" / name
        write_design(d, base / "design.json", tables=bool(i % 2))  # half of them through binary tables
        jobs.append((base / "design.json", base / "rtl"))
        out.append((g, d, base / "rtl"))
    params = hw.elaborate_many(jobs, quiet=True)
    return [(g, d, p, rtl) for (g, d, rtl), p in zip(out, params)]
