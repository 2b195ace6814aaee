"""How many cores this process may use, and thread pools that share them fairly.

Hospital and cluster machines are shared. Two things made medxfer a bad neighbour:
OpenMP threads that busy-wait between parallel regions (they burn the core another
process needs; `medxfer train` beside a second copy ran 4.7x slower than alone on 2 cores,
and with the passive policy 1.7x, benchmarks/core_sharing.py), and pools sized from the
machine's cores rather than those the process may run on (CPU affinity, a cgroup quota in
a container or a batch job).

:func:`passive_defaults` runs when medxfer is imported: it asks OpenMP runtimes not yet
loaded to sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the environment
already says otherwise. :func:`use_threads` sizes torch's, OpenMP's and BLAS's pools.
No torch import here: the command line calls this before any heavy module is loaded.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

#: Environment variables that size the thread pools of the libraries medxfer loads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by this process's cgroup quota (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), None when there is no quota."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup quota
    (rounded up: a 1.5-CPU quota keeps 2 threads busy), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def passive_defaults() -> None:
    """Ask OpenMP runtimes that are not loaded yet to sleep, not spin, when idle; the
    environment's own setting wins (OMP_WAIT_POLICY=ACTIVE restores spinning)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def use_threads(threads: int | None = None) -> int:
    """Size the thread pools to ``threads`` (default: :func:`usable_cores`) and return it.

    Before torch or numpy is loaded this sets the environment their pools read (variables
    already set by the user are kept unless ``threads`` is given); for libraries already
    loaded it sets torch's pool and, through threadpoolctl, the BLAS and OpenMP pools.
    """
    n = threads or usable_cores()
    for var in THREAD_VARIABLES:
        if threads or var not in os.environ:
            os.environ[var] = str(n)
    if "torch" in sys.modules:
        import torch

        if threads or torch.get_num_threads() > n:
            torch.set_num_threads(n)
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # scikit-learn brings it; without it the variables above act
            return n
        threadpool_limits(limits=n)
    return n


def granted_threads() -> int:
    """The threads this process was given: torch's pool once torch is loaded (sized by
    ``--threads`` or :func:`use_threads`), else :func:`usable_cores`."""
    if "torch" in sys.modules:
        import torch

        return max(1, min(torch.get_num_threads(), usable_cores()))
    return usable_cores()


def worker_split(jobs: int, units: int) -> tuple[int, int]:
    """(worker processes, threads each) for ``units`` independent units of work:
    ``jobs`` workers (0: one per granted thread, :func:`granted_threads`), never more than
    the units, each with an equal share of the granted threads (at least 1)."""
    granted = granted_threads()
    n = granted if jobs <= 0 else jobs
    n = max(1, min(n, units))
    return n, max(1, granted // n)


def run_units(calls, jobs: int = 1):
    """Yield ``call()`` of each of ``calls``, in order: one after another in this process
    when :func:`worker_split` gives one worker, else in that many worker processes (joblib's
    loky; ``jobs`` 0: one per granted thread), each sized to its share of the cores before
    it runs. Each call must depend on its own arguments and seeds only, so the results are
    the serial run's. The calls travel by cloudpickle (``functools.partial`` of a function
    or a closure); large numpy arrays in them are memory-mapped, not copied, by joblib."""
    calls = list(calls)
    n, threads = worker_split(jobs, len(calls))
    if n == 1:
        for call in calls:
            yield call()
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=n, return_as="generator")(delayed(_in_worker)(call, threads)
                                                         for call in calls)


def _in_worker(call, threads: int):
    use_threads(threads)  # a worker process: its share of the cores
    return call()


def resumable_units(units, *, get, put, jobs: int = 1):
    """Yield ``(i, result)`` of each ``(key, call)`` of ``units``, in order: ``get(key)``
    (a result, or None) for the units an earlier, interrupted run finished, ``call()`` by
    :func:`run_units` for the others, each handed to ``put(key, result)`` as soon as it
    comes back, before it is yielded (what was computed is kept if the run stops)."""
    units = list(units)
    done = [get(key) for key, _ in units]
    missing = [i for i, d in enumerate(done) if d is None]
    results = run_units([units[i][1] for i in missing], jobs)
    for i, d in enumerate(done):
        if d is None:
            d = next(results)
            put(units[i][0], d)
        yield i, d
