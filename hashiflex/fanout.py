"""Many independent jobs fanned out on Ray: on this machine by default, on a cluster by address.

Per-module synthesis (:mod:`hashiflex.report.modsynth`), per-layer verification and sweeps are many jobs that
share nothing; :func:`run_jobs` runs them as Ray tasks (one CPU each), yields every result as soon as it is done
(so the caller can cache it, and a stopped run resumes from what it kept) and shows the progress. A job is a
plain module-level function of picklable arguments; on a cluster each node needs hashiflex installed (the job's
code and any files it reads, such as the ASAP7 Liberty, come from the package).

    hashiflex synth --work build                        # local Ray, one job per core
    ray start --head                                    # or a cluster: `ray start --address HEAD:6379` on each node
    hashiflex synth --work build --address auto         # then the same command on the head node

Jobs whose memory differs by orders of magnitude (a 3 K-cell requantizer and a 57 M-cell lane in one synthesis
run) say what each needs (``memory``): Ray then starts a job only on a node with that much memory unreserved, so
large jobs wait for each other instead of running the node out of memory, and small ones fill the gaps. A job that
needs more than the largest node has could never start: it is reported before anything runs (:class:`Oversize`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Oversize:
    """A job that needs more memory than any node of the cluster has: not run."""
    need_bytes: int
    largest_node_bytes: int

    def __str__(self) -> str:
        return (f"needs {self.need_bytes / 2**30:.1f} GiB, the largest node has "
                f"{self.largest_node_bytes / 2**30:.1f} GiB for jobs")


def largest_node_memory() -> int:
    """The memory Ray schedules on the largest live node of the cluster it is connected to (bytes)."""
    import ray

    return int(max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0))


def run_jobs(fn: Callable, args: Sequence[tuple], *, address: str | None = None, jobs: int | None = None,
             desc: str = "jobs", progress: bool = True, shared: tuple = (), memory: Sequence[int] | None = None,
             oversize: str = "raise") -> Iterator[tuple[int, object]]:
    """Run ``fn(*shared, *args[i])`` for every i as Ray tasks; yield ``(i, result)`` in completion order.
    ``shared``: arguments every job takes (a graph, a dataset), put in Ray's object store once.

    ``address``: a running Ray cluster ("auto", or "HOST:PORT"); None starts a local one with ``jobs`` CPUs
    (default: all cores) and stops it at the end. A failing job raises its error here, naming the job's index;
    the results already yielded stay with the caller.

    ``memory``: bytes each job needs (Ray's ``memory`` resource: jobs on a node never reserve more than it has).
    A job needing more than the largest node has: ``oversize="raise"`` raises ValueError naming every such job
    before any job runs; ``"skip"`` runs the others and yields ``(i, Oversize(...))`` for it first."""
    from tqdm.auto import tqdm

    if not args:
        return
    if oversize not in ("raise", "skip"):
        raise ValueError(f"oversize must be 'raise' or 'skip', not {oversize!r}")
    if memory is not None and len(memory) != len(args):
        raise ValueError(f"{desc}: {len(memory)} memory figures for {len(args)} jobs")
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
        run = list(range(len(args)))
        too_large: dict[int, Oversize] = {}
        if memory is not None:
            largest = largest_node_memory()
            too_large = {i: Oversize(int(memory[i]), largest) for i in run if memory[i] > largest}
            if too_large and oversize == "raise":
                raise ValueError(f"{desc}: {len(too_large)} job(s) need more memory than any node has: "
                                 + "; ".join(f"job {i} {o}" for i, o in list(too_large.items())[:10]))
            run = [i for i in run if i not in too_large]
        common = [ray.put(v) for v in shared] if run else []
        refs = {(task.options(memory=max(int(memory[i]), 1)) if memory is not None else task)
                .remote(*common, *args[i]): i for i in run}
        pending = list(refs)
        with tqdm(total=len(args), desc=desc, disable=not progress) as bar:
            for i, o in too_large.items():
                bar.update()
                yield i, o
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
