"""Torch threads from the CPUs this process may really use.

``os.cpu_count()`` (and torch's default thread count) reports the host; a container, a Slurm job
or a taskset often gets fewer CPUs, and torch threads beyond those only wait on each other at
every kernel's barrier, which costs most where kernels are small (the engine's per-candidate
batches). See BENCHMARKS.md, "Engine reach", for the measurement under a competing load.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` reports the host; a container or a Slurm job often gets fewer, and torch
    threads beyond those only wait on each other.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    for path in (cgroup_root / "cpu.max",):  # cgroup v2: "<quota> <period>" or "max <period>"
        try:
            quota, period = path.read_text().split()[:2]
            if quota != "max":
                count = min(count, max(1, int(int(quota) // int(period))))
        except (OSError, ValueError):
            pass
    try:  # cgroup v1
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0:
            count = min(count, max(1, quota // period))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _quota_limited(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """Whether a cgroup quota or an affinity mask gives this process fewer CPUs than the host has."""
    return usable_cpus(cgroup_root) < (os.cpu_count() or 1)


_CEILING: int | None = None  # torch's thread count before the first call: the user's or torch's choice


def cap_torch_threads(own_load: float = 0.0) -> int:
    """Set torch's intra-op threads to the CPUs this process can get now; returns the count.

    The count is the usable CPUs (:func:`usable_cpus`), never more than torch used before the first
    call (a count set lower by ``OMP_NUM_THREADS``, ``torch.set_num_threads`` or the test suite is
    kept), and, on a machine shared without quotas, no more than the CPUs other processes leave
    idle (1-minute load average minus ``own_load``, this process's own share, e.g. its thread
    count when called between chains). Measured on 2 CPUs at load ~20: one thread ran the
    cross-step engine 13x faster than two (BENCHMARKS.md, "Engine reach").
    """
    global _CEILING
    if _CEILING is None:
        _CEILING = torch.get_num_threads()
    usable = usable_cpus()
    threads = min(_CEILING, usable)
    if not _quota_limited():
        try:
            others = max(0.0, os.getloadavg()[0] - own_load)
        except OSError:
            others = 0.0
        threads = max(1, min(threads, int(usable - others + 0.5)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
