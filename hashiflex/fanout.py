"""Many independent jobs fanned out on Ray: on this machine by default, on a cluster by address.

Per-module synthesis (:mod:`hashiflex.report.modsynth`), per-layer verification and sweeps are many jobs that
share nothing; :func:`run_jobs` runs them as Ray tasks (one CPU each), yields every result as soon as it is done
(so the caller can cache it, and a stopped run resumes from what it kept) and shows the progress. A job is a
plain module-level function of picklable arguments; on a cluster each node needs hashiflex installed (the job's
code and any files it reads, such as the ASAP7 Liberty, come from the package).

    hashiflex synth --work build                        # local Ray, one job per core
    ray start --head                                    # or a cluster: `ray start --address HEAD:6379` on each node
    hashiflex synth --work build --address auto         # then the same command on the head node
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence


def run_jobs(fn: Callable, args: Sequence[tuple], *, address: str | None = None, jobs: int | None = None,
             desc: str = "jobs", progress: bool = True, shared: tuple = ()) -> Iterator[tuple[int, object]]:
    """Run ``fn(*shared, *args[i])`` for every i as Ray tasks; yield ``(i, result)`` in completion order.
    ``shared``: arguments every job takes (a graph, a dataset), put in Ray's object store once.

    ``address``: a running Ray cluster ("auto", or "HOST:PORT"); None starts a local one with ``jobs`` CPUs
    (default: all cores) and stops it at the end. A failing job raises its error here, naming the job's index;
    the results already yielded stay with the caller."""
    from tqdm.auto import tqdm

    if not args:
        return
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if address is None:
            ray.init(num_cpus=jobs or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(fn)
        common = [ray.put(v) for v in shared]
        refs = {task.remote(*common, *a): i for i, a in enumerate(args)}
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = refs[ref]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        raise RuntimeError(f"{desc}: job {i} failed: {e.cause if e.cause else e}") from None
                    bar.update()
                    yield i, result
    finally:
        if started:
            ray.shutdown()
