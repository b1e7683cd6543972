"""Jobs fanned out on Ray (hashiflex.fanout): results in completion order, each job's memory reserved, a job no
node can hold reported before anything runs."""
import pytest

from hashiflex.fanout import Oversize, largest_node_memory, run_jobs


def _square(x: int) -> int:
    return x * x


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_every_job_runs_once_and_is_yielded_with_its_index(local_ray):
    got = dict(run_jobs(_square, [(i,) for i in range(7)], progress=False))
    assert got == {i: i * i for i in range(7)}


def test_jobs_that_reserve_memory_run_and_one_larger_than_any_node_is_reported_not_run(local_ray):
    largest = largest_node_memory()
    assert largest > 0
    # two jobs reserving 60 % of the node each can never run at once; they still both run
    memory = [int(0.6 * largest), int(0.6 * largest), 2 * largest, 1]
    got = dict(run_jobs(_square, [(i,) for i in range(4)], progress=False, memory=memory, oversize="skip"))
    assert {i: got[i] for i in (0, 1, 3)} == {0: 0, 1: 1, 3: 9}
    assert got[2] == Oversize(2 * largest, largest)
    assert str(got[2]) == f"needs {2 * largest / 2**30:.1f} GiB, the largest node has {largest / 2**30:.1f} GiB for jobs"


def test_by_default_a_job_too_large_for_every_node_stops_the_run_before_any_job_runs(local_ray, tmp_path):
    largest = largest_node_memory()
    with pytest.raises(ValueError, match=r"squares: 1 job\(s\) need more memory than any node has: job 1 needs "):
        list(run_jobs(_square, [(1,), (2,)], progress=False, memory=[1, largest + 2**30], desc="squares"))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="squares: 1 memory figures for 2 jobs"):
        list(run_jobs(_square, [(1,), (2,)], memory=[1], desc="squares"))
    with pytest.raises(ValueError, match="oversize must be 'raise' or 'skip', not 'drop'"):
        list(run_jobs(_square, [(1,)], oversize="drop"))
