"""Which cgroup hierarchies an agent can use, found by reading /proc/self and probing: v2 per controller where the
unified hierarchy has it enabled, v1 where only that is; and the sweep a new agent makes of what an old one left.

Split from cgroups.py (which works on one allocation's cgroup) because finding the hierarchies is the part
that differs from host to host: mount points and roots from mountinfo, the agent's own cgroup in each, the v2
rule that a cgroup holding processes cannot hand controllers down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from workers.isolation.cgroups import (
    REQUIRED,
    UNSAFE_CHARS,
    V1_WANTED,
    V2_WANTED,
    Cgroup,
    CgroupError,
    Hierarchy,
    Layout,
    Versions,
    remove_dir,
    write_file,
)

log = logging.getLogger(__name__)

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


def _probe(base: Path, *, need: Iterable[str] = ()) -> None:
    """Create the base and a throwaway child in it; the child must have the files `need` names."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".probe-{os.getpid()}"
        try:
            probe.mkdir(exist_ok=True)
        except FileNotFoundError:  # removed meanwhile by the watchdog of a dead agent of this instance
            probe.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CgroupError(f"cannot create cgroups under {base}: {exc.strerror}") from None
    try:
        missing = [n for n in need if not (probe / n).exists()]
        if missing:
            raise CgroupError(f"{base} has no {', '.join(missing)}")
    finally:
        remove_dir(probe)


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
                write_file(d / "cgroup.subtree_control", f"+{c}")
            except CgroupError as exc:
                # a non-root cgroup with processes in it cannot hand controllers down (no internal processes)
                log.warning("cgroup v2: %s not available below %s (%s)", c, d, exc)
                enabled.discard(c)
    return enabled


def discover(*, instance: str, versions: Versions = "auto", parent: str | None = None, unused: Iterable[str] = ()) -> Layout:
    """The hierarchies this agent can use for limits and tracking, probed by creating a cgroup in each.

    `unused`: optional controllers not to use (devices on a node without GPUs: one hierarchy fewer per cgroup)."""
    instance = UNSAFE_CHARS.sub("_", instance)
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
                    remove_dir(base, attempts=1)
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


def sweep(*, instance: str, parent: str | None, keep: Iterable[Path] | None = ()) -> int:
    """Kill and remove this instance's allocation cgroups in every hierarchy, whatever layout made them; returns
    how many still had processes. Each is killed through its v2 directory (`cgroup.kill`) when it has one, else
    frozen and killed through its v1 freezer, else by SIGKILL until empty. Base directories not in `keep`
    (hierarchies no longer used) are removed too; `keep=None` keeps them all."""
    kept = None if keep is None else set(keep)
    instance = UNSAFE_CHARS.sub("_", instance)
    try:
        mounts = _mounts()
        own_v1, own_v2 = _own_paths()
    except OSError:
        return 0
    bases: list[tuple[int, str, Path]] = []  # (order, kind, base): v2 first, then the freezer, then the rest
    for fstype, mount, root, opts in mounts:
        ctrls = frozenset(c for c in opts if c in V1_WANTED)
        own = own_v2 if fstype == "cgroup2" else next((p for k, p in own_v1.items() if ctrls and ctrls <= k), None)
        if own is None:
            continue
        base = _under(mount, root, own, parent, instance)
        if base.is_dir():
            kind = "v2" if fstype == "cgroup2" else "freezer" if "freezer" in ctrls else "v1"
            bases.append(({"v2": 0, "freezer": 1, "v1": 2}[kind], kind, base))
    bases.sort(key=lambda b: b[0])
    killed: set[str] = set()
    for _, kind, base in bases:
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            if (d / "cgroup.procs").exists() and (d / "cgroup.procs").read_text().split():
                killed.add(d.name)
                _kill_dir(d, kind)
            remove_dir(d)
    for _, _, base in bases:
        if kept is not None and base not in kept and remove_dir(base, attempts=1):
            try:
                base.parent.rmdir()
            except OSError:
                pass
    return len(killed)


def _kill_dir(d: Path, kind: str) -> None:
    h = Hierarchy(2 if kind == "v2" else 1, d.parent.parent, frozenset({"freezer"} if kind == "freezer" else ()), d.parent)
    cg = Cgroup(d.name, Layout({}, h), dirs={h.mount: d})
    if not cg.kill(timeout_s=5.0):
        log.warning("processes survive in %s", d)
