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


def cap_torch_threads() -> int:
    """Lower torch's intra-op threads to :func:`usable_cpus` when it uses more; returns the count.

    Only lowers: a count already set lower (``OMP_NUM_THREADS``, ``torch.set_num_threads``, the
    test suite's one thread) is a choice and is kept.
    """
    threads = min(torch.get_num_threads(), usable_cpus())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
