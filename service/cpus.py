"""The CPUs this process may use: its container's CPU limit (cgroup quota) and its CPU affinity.

ONNX Runtime sizes a session's thread pool from the machine's cores. In a container limited to 2 CPUs on a
32-core node that is 32 threads sharing 2 CPUs' worth of time per period, and the kernel throttles them all
(latency spikes of a whole period). ONNX Runtime does not look at the CPU affinity either: pinned to 2 of 16
cores (taskset, numactl, a cpuset), a session still gets 16 threads on those 2. `execution.intra_op_threads: 0`
therefore means "as many threads as the limit allows" when there is a limit, as many as the affinity mask
has CPUs when the process may run on fewer than the machine's, and ONNX Runtime's own choice otherwise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
"""Where cgroup v1 mounts the cpu controller (distributions differ)."""


@dataclass(frozen=True)
class CpuBudget:
    limit: float | None
    """CPUs' worth of time per period the cgroup allows (quota / period); None without a limit."""
    affinity: int
    """CPUs the process may run on (`os.sched_getaffinity`)."""
    machine: int | None = None
    """CPUs the machine has (`os.cpu_count`); None: as many as the affinity mask."""

    @property
    def pinned(self) -> bool:
        """The process may run on fewer CPUs than the machine has."""
        return self.machine is not None and self.affinity < self.machine

    @property
    def threads(self) -> int:
        """Threads for one intra-op pool: the limit rounded up, at most the CPUs in the affinity mask, at least
        1; without a limit, the CPUs in the affinity mask when it leaves some out, else 0 (ONNX Runtime
        decides: a thread per core)."""
        if self.limit is None:
            return max(1, self.affinity) if self.pinned else 0
        return max(1, min(math.ceil(self.limit), self.affinity))


def cpu_budget(root: Path = CGROUP_ROOT, affinity: int | None = None, machine: int | None = None) -> CpuBudget:
    """The budget of this process; `root` (the cgroup mount), `affinity` and `machine` can be given for tests."""
    if affinity is None:
        affinity = affinity_cpus()
        machine = machine or os.cpu_count()
    return CpuBudget(cgroup_cpu_limit(root), affinity, machine)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """quota / period from cgroup v2 `cpu.max` ("max 100000", "200000 100000") or, failing that, cgroup v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1: no limit). None when there is no limit or the files
    are missing or unreadable.

    The files are read at `root`, which is the container's own cgroup where the runtime gives it a cgroup
    namespace (the default for Docker and Kubernetes on cgroup v2) or bind-mounts it there (cgroup v1)."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period)
    for folder in _V1_FOLDERS:
        quota_us, period_us = _read(root / folder / "cpu.cfs_quota_us"), _read(root / folder / "cpu.cfs_period_us")
        if quota_us is not None and period_us is not None:
            return _ratio(quota_us, period_us)
    return None


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (taskset, cpuset); all of them where the platform cannot say."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max", or something unexpected
        return None
    return q / p if q > 0 and p > 0 else None
