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


# Random designs for the generator and co-simulation tests, elaborated in one Mill run (one JVM start).
RANDOM_DESIGN_SEEDS = [11, 23, 37, 41]


@pytest.fixture(scope="session")
def elaborated(work_root):
    """[(graph, design, hw_params, rtl_dir)] for RANDOM_DESIGN_SEEDS (with levels_per_stage 1..4)."""
    from hashiflex import hw
    from hashiflex.export import design_from_graph, write_design
    from tests.helpers import random_graph

    out = []
    jobs = []
    for i, seed in enumerate(RANDOM_DESIGN_SEEDS):
        g = random_graph(seed, max_c=3, max_hw=6, head=bool(i % 2), name=f"rand{seed}")
        d = design_from_graph(g, levels_per_stage=1 + i % 4)
        base = work_root / "random" / f"rand{seed}"
        write_design(d, base / "design.json", tables=bool(i % 2))  # half of them through binary tables
        jobs.append((base / "design.json", base / "rtl"))
        out.append((g, d, base / "rtl"))
    params = hw.elaborate_many(jobs, quiet=True)
    return [(g, d, p, rtl) for (g, d, rtl), p in zip(out, params)]
