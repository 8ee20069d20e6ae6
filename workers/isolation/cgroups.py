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
from collections.abc import Iterable
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
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


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


# --- discovery ---------------------------------------------------------------------------------
def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(fstype, mount point, root inside the hierarchy, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            lf, rf = left.split(), right.split()
            if rf and rf[0] in ("cgroup", "cgroup2"):
                out.append((rf[0], Path(lf[4]), lf[3], set(rf[2].split(",")) if len(rf) > 2 else set()))
    return out


def _own_paths() -> tuple[dict[frozenset[str], str], str | None]:
    """This process's cgroup in each v1 hierarchy (by its controllers) and in v2."""
    v1: dict[frozenset[str], str] = {}
    v2 = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if hid == "0" and not ctrls:
                v2 = path
            else:
                v1[frozenset(c for c in ctrls.split(",") if c)] = path
    return v1, v2


def _under(mount: Path, root: str, own: str, parent: str | None, instance: str) -> Path:
    rel = own[len(root):] if root != "/" and own.startswith(root) else own
    where = parent if parent is not None else rel.rstrip("/") + "/controlplane"
    return mount / where.strip("/") / instance


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value.strip()!r} to {path}: {exc.strerror}") from None


def _probe(base: Path, *, need: Iterable[str] = ()) -> None:
    """Create the base and a throwaway child in it; the child must have the files `need` names."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
    except OSError as exc:
        raise CgroupError(f"cannot create cgroups under {base}: {exc.strerror}") from None
    try:
        missing = [n for n in need if not (probe / n).exists()]
        if missing:
            raise CgroupError(f"{base} has no {', '.join(missing)}")
    finally:
        _rmdir(probe)


def _offered(mount: Path, wanted: Iterable[str]) -> bool:
    try:
        return set(wanted) <= set((mount / "cgroup.controllers").read_text().split())
    except OSError:
        return False


def _enable_v2(mount: Path, base: Path, wanted: Iterable[str]) -> set[str]:
    """Enable the wanted controllers from the root of the unified hierarchy down to `base`; returns those enabled."""
    try:
        available = set((mount / "cgroup.controllers").read_text().split())
    except OSError:
        return set()
    enabled = {c for c in wanted if c in available}
    if not enabled:
        return set()
    base.mkdir(parents=True, exist_ok=True)
    chain = [mount, *reversed([p for p in base.parents if p != mount and mount in p.parents]), base]
    for d in chain:
        have = set((d / "cgroup.subtree_control").read_text().split())
        for c in sorted(enabled - have):
            try:
                _write(d / "cgroup.subtree_control", f"+{c}")
            except CgroupError as exc:
                # a non-root cgroup with processes in it cannot hand controllers down (no internal processes)
                log.warning("cgroup v2: %s not available below %s (%s)", c, d, exc)
                enabled.discard(c)
    return enabled


def discover(*, instance: str, versions: Versions = "auto", parent: str | None = None, unused: Iterable[str] = ()) -> Layout:
    """The hierarchies this agent can use for limits and tracking, probed by creating a cgroup in each.

    `unused`: optional controllers not to use (devices on a node without GPUs: one hierarchy fewer per cgroup)."""
    instance = _SAFE.sub("_", instance)
    try:
        mounts = _mounts()
        own_v1, own_v2 = _own_paths()
    except OSError as exc:
        return Layout({}, None, reason=f"cannot read /proc/self: {exc.strerror}")
    if not mounts:
        return Layout({}, None, reason="no cgroup filesystem is mounted")
    by_controller: dict[str, Hierarchy] = {}
    tracker: Hierarchy | None = None
    reasons: list[str] = []
    if versions in ("auto", "v2"):
        for fstype, mount, root, _ in mounts:
            if fstype != "cgroup2" or own_v2 is None:
                continue
            base = _under(mount, root, own_v2, parent, instance)
            try:
                _probe(base, need=("cgroup.kill",))
                enabled = _enable_v2(mount, base, V2_WANTED)
                if parent is None and own_v2 != "/" and not set(V2_WANTED) <= enabled and _offered(mount, V2_WANTED):
                    # the agent's own cgroup holds processes, so it cannot hand controllers down (no internal
                    # processes in v2): beside it instead, at /controlplane, as the kubelet does with /kubepods
                    _rmdir(base, attempts=1)
                    base = _under(mount, root, "/", "/controlplane", instance)
                    _probe(base, need=("cgroup.kill",))
                    enabled = _enable_v2(mount, base, V2_WANTED)
            except (CgroupError, OSError) as exc:
                reasons.append(f"v2: {exc}")
                break
            h = Hierarchy(2, mount, frozenset(enabled), base)
            tracker = h
            for c in enabled:
                by_controller[c] = h
            break
    if versions in ("auto", "v1"):
        # with v2 tracking, the v1 freezer is not needed, and v2's cpu.stat counts cpu time as cpuacct would
        wanted = set(V1_WANTED) - ({"freezer", "cpuacct"} if tracker is not None else set()) - (set(unused) - set(REQUIRED))
        for fstype, mount, root, opts in mounts:
            ctrls = frozenset(c for c in opts if c in wanted) - set(by_controller)
            if fstype != "cgroup" or not ctrls:
                continue
            own = next((p for k, p in own_v1.items() if ctrls <= k), None)
            if own is None:
                continue
            base = _under(mount, root, own, parent, instance)
            try:
                _probe(base)
            except CgroupError as exc:
                reasons.append(f"v1 {'+'.join(sorted(ctrls))}: {exc}")
                continue
            h = Hierarchy(1, mount, ctrls, base)
            for c in ctrls:
                by_controller[c] = h
            if "freezer" in ctrls and tracker is None:
                tracker = h
    missing = [c for c in REQUIRED if c not in by_controller]
    if missing:
        reasons.append(f"no writable {', '.join(missing)} controller")
    if tracker is None:
        reasons.append("nothing to kill a cgroup with (no v2 cgroup.kill, no v1 freezer)")
    return Layout(by_controller, tracker, reason="; ".join(reasons))


# --- one allocation's cgroup -------------------------------------------------------------------
def _rmdir(path: Path, attempts: int = 50) -> bool:
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
                d.mkdir(exist_ok=True)
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
                _write(mem / "memory.max", str(limits.memory_bytes))
                if (mem / "memory.swap.max").exists():
                    _write(mem / "memory.swap.max", "0")
                _write(mem / "memory.oom.group", "1")
            else:
                _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (mem / "memory.memsw.limit_in_bytes").exists():  # absent without swap accounting
                    _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if cpu is not None:
            shares = max(2, limits.cpu_milli * 1024 // 1000)
            if v["cpu"] == 2:
                _write(cpu / "cpu.max", f"{quota if quota else 'max'} {CPU_PERIOD_US}")
                _write(cpu / "cpu.weight", str(max(1, min(10000, 1 + (shares - 2) * 9999 // 262142))))
            else:  # a new cgroup has the default period (100 ms) and no quota
                if quota:
                    _write(cpu / "cpu.cfs_quota_us", str(quota))
                _write(cpu / "cpu.shares", str(shares))
        if pids is not None:
            _write(pids / "pids.max", str(limits.pids_max))
        if dev is not None:
            for rule in limits.deny_devices:
                _write(dev / "devices.deny", f"{rule} rwm")

    def add(self, pid: int) -> None:
        """Move a process into every hierarchy of this cgroup (before it runs the allocation's code)."""
        for d in self.dirs.values():
            _write(d / "cgroup.procs", str(pid))

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
            _write(track / "cgroup.kill", "1")
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
                _write(freezer / "freezer.state", "THAWED")  # a frozen task dies only once thawed
            settle = time.monotonic() + 0.2
            while self.pids() and time.monotonic() < min(settle, deadline):
                time.sleep(0.005)
        return not self.pids()

    @staticmethod
    def _freeze(freezer: Path, deadline: float) -> None:
        _write(freezer / "freezer.state", "FROZEN")
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
            ok = _rmdir(d) and ok
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


def sweep(*, instance: str, parent: str | None, keep: Iterable[Path] = ()) -> int:
    """Kill and remove this instance's allocation cgroups in every hierarchy, whatever layout made them; returns
    how many still had processes. The fallback of a new agent, after the precise kill through its own layout.
    Base directories not in `keep` (those of hierarchies the agent no longer uses) are removed too."""
    kept = set(keep)
    instance = _SAFE.sub("_", instance)
    try:
        mounts = _mounts()
        own_v1, own_v2 = _own_paths()
    except OSError:
        return 0
    killed = 0
    for fstype, mount, root, opts in mounts:
        ctrls = frozenset(c for c in opts if c in V1_WANTED)
        own = own_v2 if fstype == "cgroup2" else next((p for k, p in own_v1.items() if ctrls and ctrls <= k), None)
        if own is None:
            continue
        base = _under(mount, root, own, parent, instance)
        if not base.is_dir():
            continue
        for d in [p for p in base.iterdir() if p.is_dir()]:
            procs = d / "cgroup.procs"
            pids = procs.read_text().split() if procs.exists() else []
            killed += bool(pids)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)
                pids = procs.read_text().split()
            _rmdir(d)
        if base not in kept and _rmdir(base, attempts=1):
            try:
                base.parent.rmdir()
            except OSError:
                pass
    return killed


def release(layout: Layout) -> None:
    """Remove this agent's (empty) base directories, and the shared parent when no other agent uses it."""
    for h in layout.hierarchies:
        if _rmdir(h.base, attempts=1):
            try:
                h.base.parent.rmdir()
            except OSError:
                pass


def cgroup_name(allocation_id: str, incarnation: int) -> str:
    return f"{_SAFE.sub('_', allocation_id)[:200]}.{incarnation}"
