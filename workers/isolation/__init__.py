"""Isolation of allocation processes on a node: cgroups, users, working directories, devices, bounded logs.

The process manager (workers/processes.py) forks through `Sandbox.start`; the node agent reports what the
sandbox enforces on its Node and what it measured on each allocation.
"""

from __future__ import annotations

from controlplane.settings import Settings
from workers.isolation.sandbox import Confinement, Outcome, Reservation, Sandbox, SandboxConfig


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The isolation part of the one settings object."""
    return SandboxConfig(
        mode=settings.isolation,
        cgroup_versions=settings.isolation_cgroup_versions,
        cgroup_parent=settings.isolation_cgroup_parent,
        user=settings.isolation_user,
        uid_base=settings.isolation_uid_base,
        uid_count=settings.isolation_uid_count,
        claims_dir=settings.isolation_claims_dir,
        work_root=settings.isolation_work_root,
        keep_workdir=settings.isolation_keep_workdir,
        pids_max=settings.isolation_pids_max,
        min_memory_mib=settings.isolation_min_memory_mib,
        log_max_bytes=settings.log_max_bytes,
        log_backups=settings.log_backups,
    )


__all__ = ["Confinement", "Outcome", "Reservation", "Sandbox", "SandboxConfig", "sandbox_config"]
