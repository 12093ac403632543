"""How many CPUs this process may really use, and the Gunicorn worker count that follows.

`os.cpu_count()` is the host's: a container limited to 1 CPU on a 32-core host would start 65
workers. The budget is the smaller of the CPUs the process may run on (`sched_getaffinity`: cpusets,
`taskset`, Kubernetes' static CPU manager) and its cgroup's CPU quota (v2 `cpu.max`, v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`: `docker run --cpus`, Kubernetes CPU limits, ECS task
CPU), the quota rounded up to whole CPUs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

# Past this, more workers only cost memory (~65-110 MiB each, DEPLOYMENT.md "Scaling"): scale out.
MAX_WORKERS = 17


@dataclass(frozen=True)
class CpuBudget:
    cpus: int
    reason: str  # what limited it, for the start-up log line

    def workers(self) -> int:
        """Gunicorn's rule of thumb, 2 x CPUs + 1, at most MAX_WORKERS."""
        return min(2 * self.cpus + 1, MAX_WORKERS)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _own_cgroup_dirs(proc_cgroup: Path, controller: Optional[str]) -> list[str]:
    """This process's cgroup paths from /proc/self/cgroup: the v2 line (`0::/path`) when
    `controller` is None, else the v1 line whose controllers include it."""
    text = _read(proc_cgroup) or ""
    paths = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if (controller is None and controllers == "") or \
                (controller is not None and controller in controllers.split(",")):
            paths.append(path.strip("/"))
    return paths


def _with_ancestors(base: Path, relative: str) -> Iterable[Path]:
    # A limit set on a parent cgroup binds its children too; inside a container's cgroup
    # namespace the mount's root is the container's own cgroup.
    parts = [p for p in relative.split("/") if p]
    for depth in range(len(parts), -1, -1):
        yield base.joinpath(*parts[:depth])


def _v2_quota(root: Path, proc_cgroup: Path) -> Optional[float]:
    quotas = []
    for relative in _own_cgroup_dirs(proc_cgroup, None) or [""]:
        for directory in _with_ancestors(root, relative):
            fields = (_read(directory / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    quota, period = int(fields[0]), int(fields[1])
                except ValueError:
                    continue
                if quota > 0 and period > 0:
                    quotas.append(quota / period)
    return min(quotas) if quotas else None


def _v1_quota(root: Path, proc_cgroup: Path) -> Optional[float]:
    quotas = []
    relatives = _own_cgroup_dirs(proc_cgroup, "cpu") or [""]
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / mount
        for relative in relatives + [""]:
            for directory in _with_ancestors(base, relative):
                quota, period = (_read(directory / "cpu.cfs_quota_us"),
                                 _read(directory / "cpu.cfs_period_us"))
                try:
                    q, p = int(quota or ""), int(period or "")
                except ValueError:
                    continue
                if q > 0 and p > 0:  # -1: no quota
                    quotas.append(q / p)
    return min(quotas) if quotas else None


def cpu_budget(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup",
               affinity: Optional[set[int]] = None) -> CpuBudget:
    """The CPUs this process may use: the affinity mask, lowered by a cgroup quota if one is set.
    `cgroup_root`, `proc_cgroup` and `affinity` are there so tests can give their own."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    allowed = max(len(affinity), 1)
    root, proc = Path(cgroup_root), Path(proc_cgroup)
    quota = _v2_quota(root, proc)
    version = "v2 cpu.max"
    if quota is None:
        quota, version = _v1_quota(root, proc), "v1 cpu.cfs_quota_us"
    if quota is not None and math.ceil(quota) < allowed:
        return CpuBudget(math.ceil(quota), f"cgroup {version} quota of {quota:g} CPUs "
                                           f"(of {allowed} CPUs in the affinity mask)")
    detail = f", cgroup quota {quota:g} CPUs" if quota is not None else ", no cgroup CPU quota"
    return CpuBudget(allowed, f"{allowed} CPUs in the affinity mask{detail}")
