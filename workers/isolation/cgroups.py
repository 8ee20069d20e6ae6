"""Per-allocation cgroups, written through the kernel's own files: v2 where the unified hierarchy has a controller, v1 where only that is.

Why a module of our own rather than a library: the best kept Python cgroup library on PyPI, cgroupspy (0.2.3),
speaks v1 only; the others are v1-only too or unmaintained for years. None kills a whole cgroup, reads OOM kills
and peaks, or mixes versions per controller as machines in the "hybrid" layout need (this one: memory, cpu, pids
are v1 hierarchies, the unified v2 hierarchy has no controller but does have `cgroup.kill`). The files are a small,
stable kernel ABI, so the whole of it is this module.

Layout: in each hierarchy used, the agent's cgroups live under `<parent>/<instance>/<allocation>.<incarnation>`,
`<parent>` being the agent's own cgroup + `/controlplane` unless configured, so a host's limits on the agent still
cover what it runs and a new agent of the same node and data directory finds what the previous one left.

A `tracker` hierarchy is where a cgroup's processes are listed and killed: v2 (`cgroup.kill`, atomic against
forks) when usable, else the v1 freezer (freeze, SIGKILL every member, thaw: a frozen task cannot fork).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Versions = Literal["auto", "v1", "v2"]
#: what limits need; cpuacct and freezer are read/used when present
REQUIRED = ("memory", "cpu", "pids")
V1_WANTED = ("memory", "cpu", "cpuacct", "pids", "devices", "freezer")
V2_WANTED = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class IsolationError(Exception):
    """An allocation could not be confined as configured (so it does not start); the message says why."""


class CgroupError(IsolationError):
    """A cgroup could not be created, joined or configured; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int
    cpu_milli: int  # 0: no quota (lowest cpu weight instead)
    pids_max: int
    #: device numbers ("c 195:1") the allocation may not open (v1 devices controller)
    deny_devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stats:
    cpu_s: float = 0.0
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    oom_kills: int = 0
    throttled_periods: int = 0
    throttled_s: float = 0.0
    pids: int = 0
    pids_refused: int = 0  # forks refused at the pids limit


@dataclass(frozen=True, slots=True)
class Hierarchy:
    version: int
    mount: Path
    #: the controllers this agent uses in it
    controllers: frozenset[str]
    #: this agent's directory in it (allocation cgroups are its children)
    base: Path

    def __str__(self) -> str:
        return f"v{self.version}:{'+'.join(sorted(self.controllers)) or 'tracking'}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each controller lives, and where processes are tracked and killed. Empty `by_controller`: none."""

    by_controller: dict[str, Hierarchy]
    tracker: Hierarchy | None
    reason: str = ""  # why isolation is not available, when it is not

    @property
    def hierarchies(self) -> list[Hierarchy]:
        seen: dict[Path, Hierarchy] = {h.mount: h for h in self.by_controller.values()}
        if self.tracker is not None:
            seen.setdefault(self.tracker.mount, self.tracker)
        return list(seen.values())

    @property
    def usable(self) -> bool:
        return self.tracker is not None and all(c in self.by_controller for c in REQUIRED)

    def describe(self) -> str:
        if not self.usable:
            return f"none ({self.reason})"
        parts = [f"{c}=v{self.by_controller[c].version}" for c in sorted(self.by_controller)]
        kill = "cgroup.kill" if self.tracker and self.tracker.version == 2 else "freezer"
        return " ".join(parts) + f" kill={kill}"


def write_file(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value.strip()!r} to {path}: {exc.strerror}") from None


# --- one allocation's cgroup -------------------------------------------------------------------
def remove_dir(path: Path, attempts: int = 50) -> bool:
    for _ in range(attempts):
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", path, exc.strerror)
                return False
            time.sleep(0.02)
    log.warning("cgroup %s stays busy; left in place", path)
    return False


def _read_int(path: Path) -> int:
    try:
        raw = path.read_text().strip()
    except OSError:
        return 0
    return int(raw) if raw.lstrip("-").isdigit() else 0


def _read_keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
    except OSError:
        pass
    return out


@dataclass
class Cgroup:
    name: str
    layout: Layout
    dirs: dict[Path, Path] = field(default_factory=dict)  # hierarchy mount -> this cgroup's directory

    def _dir(self, controller: str) -> Path | None:
        h = self.layout.by_controller.get(controller)
        return self.dirs.get(h.mount) if h is not None else None

    @property
    def _track(self) -> Path:
        assert self.layout.tracker is not None
        return self.dirs[self.layout.tracker.mount]

    # --- setup -----------------------------------------------------------------------------
    def create(self, limits: Limits) -> Cgroup:
        try:
            for h in self.layout.hierarchies:
                d = h.base / self.name
                try:
                    d.mkdir(exist_ok=True)
                except FileNotFoundError:  # the base was removed by the watchdog of the agent before this one
                    d.mkdir(parents=True, exist_ok=True)
                self.dirs[h.mount] = d
            self._configure(limits)
        except (OSError, CgroupError) as exc:
            self.remove()
            raise exc if isinstance(exc, CgroupError) else CgroupError(f"cannot create cgroup {self.name}: {exc}") from None
        return self

    def _configure(self, limits: Limits) -> None:
        mem, cpu, pids, dev = self._dir("memory"), self._dir("cpu"), self._dir("pids"), self._dir("devices")
        v = {c: h.version for c, h in self.layout.by_controller.items()}
        quota = max(1000, limits.cpu_milli * CPU_PERIOD_US // 1000) if limits.cpu_milli > 0 else None
        if mem is not None:
            if v["memory"] == 2:
                write_file(mem / "memory.max", str(limits.memory_bytes))
                if (mem / "memory.swap.max").exists():
                    write_file(mem / "memory.swap.max", "0")
                write_file(mem / "memory.oom.group", "1")
            else:
                write_file(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (mem / "memory.memsw.limit_in_bytes").exists():  # absent without swap accounting
                    write_file(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if cpu is not None:
            shares = max(2, limits.cpu_milli * 1024 // 1000)
            if v["cpu"] == 2:
                write_file(cpu / "cpu.max", f"{quota if quota else 'max'} {CPU_PERIOD_US}")
                write_file(cpu / "cpu.weight", str(max(1, min(10000, 1 + (shares - 2) * 9999 // 262142))))
            else:  # a new cgroup has the default period (100 ms) and no quota
                if quota:
                    write_file(cpu / "cpu.cfs_quota_us", str(quota))
                write_file(cpu / "cpu.shares", str(shares))
        if pids is not None:
            write_file(pids / "pids.max", str(limits.pids_max))
        if dev is not None:
            for rule in limits.deny_devices:
                write_file(dev / "devices.deny", f"{rule} rwm")

    def add(self, pid: int) -> None:
        """Move a process into every hierarchy of this cgroup (before it runs the allocation's code)."""
        for d in self.dirs.values():
            write_file(d / "cgroup.procs", str(pid))

    # --- observing -------------------------------------------------------------------------
    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self._track / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def stats(self) -> Stats:
        v = {c: h.version for c, h in self.layout.by_controller.items()}
        mem, cpu, pids = self._dir("memory"), self._dir("cpu"), self._dir("pids")
        cpu_s, throttled, throttled_s = 0.0, 0, 0.0
        if cpu is not None and v["cpu"] == 2:
            st = _read_keyed(cpu / "cpu.stat")
            cpu_s, throttled, throttled_s = st.get("usage_usec", 0) / 1e6, st.get("nr_throttled", 0), st.get("throttled_usec", 0) / 1e6
        else:
            if cpu is not None:
                st = _read_keyed(cpu / "cpu.stat")
                throttled, throttled_s = st.get("nr_throttled", 0), st.get("throttled_time", 0) / 1e9
            acct = self._dir("cpuacct")
            if acct is not None:
                cpu_s = _read_int(acct / "cpuacct.usage") / 1e9
            elif self.layout.tracker is not None and self.layout.tracker.version == 2:
                cpu_s = _read_keyed(self._track / "cpu.stat").get("usage_usec", 0) / 1e6
        current = peak = ooms = 0
        if mem is not None and v["memory"] == 2:
            current, peak = _read_int(mem / "memory.current"), _read_int(mem / "memory.peak")
            ooms = _read_keyed(mem / "memory.events").get("oom_kill", 0)
        elif mem is not None:
            current, peak = _read_int(mem / "memory.usage_in_bytes"), _read_int(mem / "memory.max_usage_in_bytes")
            ooms = _read_keyed(mem / "memory.oom_control").get("oom_kill", 0)
        npids = refused = 0
        if pids is not None:
            npids, refused = _read_int(pids / "pids.current"), _read_keyed(pids / "pids.events").get("max", 0)
        return Stats(cpu_s, current, max(peak, current), ooms, throttled, throttled_s, npids, refused)

    # --- ending ----------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup, forks racing the kill included; True when it is empty."""
        if not self.dirs or self.layout.tracker is None:
            return True
        deadline = time.monotonic() + timeout_s
        track = self._track
        if self.layout.tracker.version == 2:
            if _read_keyed(track / "cgroup.events").get("populated", 1) == 0:
                return True  # the common end: its main process was all there was
            write_file(track / "cgroup.kill", "1")
            while time.monotonic() < deadline:
                if _read_keyed(track / "cgroup.events").get("populated", 0) == 0:
                    return True
                time.sleep(0.005)
            return False
        freezer = track if "freezer" in self.layout.tracker.controllers else None
        while time.monotonic() < deadline:
            if not self.pids():
                return True
            if freezer is not None:
                self._freeze(freezer, deadline)
            self.signal(signal.SIGKILL)
            if freezer is not None:
                write_file(freezer / "freezer.state", "THAWED")  # a frozen task dies only once thawed
            settle = time.monotonic() + 0.2
            while self.pids() and time.monotonic() < min(settle, deadline):
                time.sleep(0.005)
        return not self.pids()

    @staticmethod
    def _freeze(freezer: Path, deadline: float) -> None:
        write_file(freezer / "freezer.state", "FROZEN")
        while time.monotonic() < deadline:
            try:
                if freezer.joinpath("freezer.state").read_text().strip() == "FROZEN":
                    return
            except OSError:
                return
            time.sleep(0.002)

    def remove(self) -> bool:
        """Remove the (empty) cgroup from every hierarchy; a busy one is left and logged."""
        ok = True
        for d in self.dirs.values():
            ok = remove_dir(d) and ok
        return ok


def leftovers(layout: Layout) -> list[Cgroup]:
    """The allocation cgroups of this agent's base directories (what a previous agent process left)."""
    names: set[str] = set()
    for h in layout.hierarchies:
        try:
            names |= {p.name for p in h.base.iterdir() if p.is_dir() and not p.name.startswith(".")}
        except OSError:
            continue
    found = []
    for name in sorted(names):
        cg = Cgroup(name, layout)
        cg.dirs = {h.mount: h.base / name for h in layout.hierarchies if (h.base / name).is_dir()}
        found.append(cg)
    return found


def release(layout: Layout) -> None:
    """Remove this agent's (empty) base directories, and the shared parent when no other agent uses it."""
    for h in layout.hierarchies:
        if remove_dir(h.base, attempts=1):
            try:
                h.base.parent.rmdir()
            except OSError:
                pass


def cgroup_name(allocation_id: str, incarnation: int) -> str:
    return f"{UNSAFE_CHARS.sub('_', allocation_id)[:200]}.{incarnation}"
