"""Where and how an allocation's process runs: its cgroup, user, working directory, environment, devices and log.

The process manager forks; this module decides what it forks and confines it. With cgroups each process starts as

    [setpriv --reuid=U --regid=U --clear-groups --no-new-privs --pdeathsig KILL --] /bin/sh -c GATE argv...

(setpriv when it runs as a user of its own) with stdin a pipe: the gate, a POSIX shell, waits on it while the
agent writes the pid into every cgroup of the allocation (`Confinement.admit`, off the forking thread: the
kernel makes a move between cgroups wait for an RCU grace period), and only then execs the allocation's argv.
So not one instruction of the allocation's code, nor any process it forks, runs outside its cgroup; no
`preexec_fn` runs in the forked child (unsafe in a threaded agent); a failure to join a cgroup is an error in
the agent, reported as "could not start", never a half-confined process. no_new_privs is also set on the
forking thread, whose children inherit it, and the agent's watchdog (watchdog.py) kills every cgroup of the
agent the moment the agent dies. Without cgroups: `setpriv ... -- argv`, no gate, no watchdog.

Why not CLONE_INTO_CGROUP: Python's subprocess does not offer it, and v1 hierarchies do not have it. Why
setpriv and not subprocess's `user=`: that turns off vfork, and a fork of the agent's address space costs
more than the exec of setpriv.

A stop ends everything in the cgroup; a finished process's leftovers (background jobs, daemons) are killed
when its main process exits, since its reservation ends with it. What the kernel counted (OOM kills, peak
memory, cpu time, throttling, refused forks) becomes the exit's report.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from controlplane.domain.supervision import OOM_KILLED
from workers.isolation import cgroups, discovery
from workers.isolation.gpus import NVIDIA_MAJOR, GpuDevice, devices_of
from workers.isolation.logs import LogPump, RotatingLog
from workers.isolation.users import Identity, UserPolicy, set_no_new_privs, setpriv_args

log = logging.getLogger(__name__)

Key = tuple[str, int]
Mode = Literal["auto", "cgroup", "none"]
KeepWorkdir = Literal["never", "failed", "always"]
GATE = 'read -r _ || exit 125; unset PWD; exec "$@" </dev/null'  # sh exports PWD: not the allocation's
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """What Settings says about isolation (see controlplane/settings.py for each field's meaning)."""

    mode: Mode = "auto"
    cgroup_versions: cgroups.Versions = "auto"
    cgroup_parent: str | None = None
    user: str = "auto"
    uid_base: int = 200_000
    uid_count: int = 60_000
    claims_dir: Path = Path("/run/controlplane/uids")
    work_root: Path | None = None
    keep_workdir: KeepWorkdir = "never"
    pids_max: int = 1024
    min_memory_mib: int = 8
    log_max_bytes: int = 8 * MIB
    log_backups: int = 2


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the graph reserved for one incarnation."""

    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the exit report adds: a failure reason of its own (oom_killed) and measured usage."""

    failure: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


def usage_fields(stats: cgroups.Stats) -> dict[str, Any]:
    """Measured usage as recorded on the allocation's vertex, in the units of its reservation (MiB, seconds)."""
    return {
        "usage_cpu_s": round(stats.cpu_s, 3),
        "usage_memory_mib": round(stats.memory_bytes / MIB, 2),
        "usage_memory_peak_mib": round(stats.memory_peak_bytes / MIB, 2),
        "usage_throttled_s": round(stats.throttled_s, 3),
        "usage_throttled_periods": stats.throttled_periods,
        "usage_pids": stats.pids,
    }


def allocation_env(
    *, path: str, home: str, lang: str, spec_env: Mapping[str, str], controlplane: Mapping[str, str],
    gpus: Sequence[GpuDevice] | None,
) -> dict[str, str]:
    """The whole environment of an allocation: nothing of the agent's beyond PATH and LANG.

    Its spec's env may override PATH, HOME and LANG; the CONTROLPLANE_* variables and the GPU visibility
    (when the node has GPUs) are the agent's to say and come last.
    """
    env = {"PATH": path, "HOME": home, "LANG": lang, **spec_env, **controlplane}
    if gpus is not None:
        ids = ",".join(g.visible_id for g in gpus)
        env["CUDA_VISIBLE_DEVICES"] = ids
        env["NVIDIA_VISIBLE_DEVICES"] = ids or "void"
    return env


def searchable_path(path: str) -> str:
    """The entries of PATH another user can reach (no /root/...): an allocation's user resolves commands there."""
    def ok(d: str) -> bool:
        p = Path(d)
        try:
            return p.is_absolute() and p.is_dir() and all(os.stat(a).st_mode & 0o001 for a in [p, *p.parents])
        except OSError:
            return False
    return ":".join(d for d in path.split(":") if ok(d)) or os.defpath


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything an incarnation needs before its process exists."""

    key: Key
    identity: Identity
    workdir: Path
    cgroup: cgroups.Cgroup | None
    limits: cgroups.Limits

    def discard(self, sandbox: Sandbox) -> None:
        """It will not run (it could not start): undo what `prepare` did."""
        if self.cgroup is not None:
            self.cgroup.kill()
            self.cgroup.remove()
        sandbox.users.release(self.identity)
        sandbox.dispose_workdir(self.workdir, failed=False)


class Confinement:
    """One running incarnation: its process and everything that confines it; `finish` undoes all of it."""

    def __init__(self, sandbox: Sandbox, key: Key, proc: subprocess.Popen[bytes], cgroup: cgroups.Cgroup | None,
                 identity: Identity, workdir: Path, drained: threading.Event, memory_bytes: int, gate: int | None = None) -> None:
        self.sandbox, self.key, self.proc, self.cgroup = sandbox, key, proc, cgroup
        self._gate = gate  # the write end of the pipe its gate waits on
        self.identity, self.workdir, self.drained = identity, workdir, drained
        self.memory_bytes = memory_bytes
        self._last = (time.monotonic(), 0.0)  # (monotonic time, cpu s) of the last sample
        self.finished = False

    @property
    def admitted(self) -> bool:
        return self._gate is None

    def admit(self) -> None:
        """Move the process into its cgroup, then let it run its argv. Writing cgroup.procs waits for an RCU grace
        period (the kernel's cgroup_threadgroup_rwsem), so it is done off the forking thread, several at a time."""
        if self._gate is None:
            return
        try:
            assert self.cgroup is not None
            self.cgroup.add(self.proc.pid)
            os.write(self._gate, b"go\n")
        finally:
            os.close(self._gate)
            self._gate = None

    def signal(self, sig: int) -> None:
        """SIGKILL: every process in the cgroup; other signals: the process group (a graceful stop)."""
        if self.finished:
            return  # its exit was handled: the cgroup is gone, the pid may be another process's
        if sig == signal.SIGKILL and self.cgroup is not None:
            try:
                self.cgroup.kill()
            except cgroups.CgroupError as exc:  # removed meanwhile by its exit
                log.info("%s: %s", self.key, exc)
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def usage(self) -> dict[str, Any] | None:
        """Measured usage now, with the average cpu since the last sample in millicores (as `cpu` is reserved)."""
        if self.cgroup is None or self.finished:
            return None
        stats = self.cgroup.stats()
        now = time.monotonic()
        fields = usage_fields(stats)
        if now > self._last[0]:
            fields["usage_cpu_milli"] = int(round((stats.cpu_s - self._last[1]) / (now - self._last[0]) * 1000))
        self._last = (now, stats.cpu_s)
        return fields

    def finish(self, exit_code: int, *, stop_requested: bool) -> Outcome:
        """The main process has exited: kill what it left, read what the kernel counted, clean up."""
        stats = None
        self.finished = True
        emptied = True
        if self.cgroup is not None:
            emptied = self.cgroup.kill()
            if not emptied:
                log.warning("%s: processes survive in cgroup %s; its uid stays claimed", self.key, self.cgroup.name)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self.drained.wait(timeout=2.0):
            log.warning("%s: output pipe still open after the process ended", self.key)
        if self.cgroup is not None:
            stats = self.cgroup.stats()  # after the kill: the final cpu time; peak and OOM kills stay counted
            self.cgroup.remove()
        if emptied:
            self.sandbox.users.release(self.identity)
        self.sandbox.dispose_workdir(self.workdir, failed=exit_code != 0 and not stop_requested)
        if stats is None:
            return Outcome()
        fields = usage_fields(stats)
        del fields["usage_pids"]  # none now; the count refused at the limit follows
        failure = None
        if stats.oom_kills and exit_code != 0 and not stop_requested:
            failure = (f"{OOM_KILLED}: memory limit {self.memory_bytes / MIB:g} MiB, peak {stats.memory_peak_bytes / MIB:.1f} MiB"
                       f" ({stats.oom_kills} process{'es' if stats.oom_kills > 1 else ''} killed)")
            fields["oom_kills"] = stats.oom_kills
        if stats.pids_refused:
            fields["pids_refused"] = stats.pids_refused
        return Outcome(failure, fields)


class Sandbox:
    """The isolation of one node agent: built once at start, it says what it can enforce (`isolation`)."""

    def __init__(self, config: SandboxConfig, *, node: str, data_dir: Path, gpus: Sequence[dict[str, object]] = ()) -> None:
        self.config = config
        self.node = node
        self.instance = f"{node}-{hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]}"
        self.setpriv = shutil.which("setpriv")
        self.users = UserPolicy(config.user, owner=self.instance, claims_dir=config.claims_dir,
                                uid_base=config.uid_base, uid_count=config.uid_count)
        self.gpus = devices_of(node, list(gpus))
        self.layout = (discovery.discover(instance=self.instance, versions=config.cgroup_versions, parent=config.cgroup_parent,
                                        unused=() if self.gpus else ("devices",))  # no GPU to hide: no devices cgroup
                       if config.mode != "none" else cgroups.Layout({}, None, reason="isolation is off (ISOLATION=none)"))
        if config.mode == "cgroup" and not self.layout.usable:
            raise RuntimeError(f"ISOLATION=cgroup but cgroups cannot be used here: {self.layout.reason}")
        if self.users.switches_user and self.setpriv is None:
            raise RuntimeError("running allocations as their own users needs util-linux setpriv on PATH")
        root = config.work_root or (Path("/var/lib/controlplane/work") if self.users.switches_user else data_dir / "work")
        self.work_root = root / self.instance
        for d in (root, self.work_root):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o711)  # others may pass through to their own directory, never list it
        agent_path = os.environ.get("PATH", os.defpath)
        self.path = searchable_path(agent_path) if self.users.switches_user else agent_path
        self.pump = LogPump()
        self._closed = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_pipe = -1
        if self.layout.usable:
            r, self._watchdog_pipe = os.pipe()
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "workers.isolation.watchdog", self.instance, config.cgroup_parent or ""],
                stdin=r, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
            os.close(r)

    # --- what the agent reports --------------------------------------------------------------
    @property
    def isolation(self) -> Literal["cgroup", "none"]:
        return "cgroup" if self.layout.usable else "none"

    def describe(self) -> str:
        limits = f"cgroups {self.layout.describe()}" if self.layout.usable else f"no resource limits: {self.layout.reason}"
        return f"{limits}; runs as {self.users.describe()}; work dirs in {self.work_root}"

    # --- per allocation ----------------------------------------------------------------------
    def workdir(self, key: Key) -> Path:
        return self.work_root / cgroups.cgroup_name(*key)

    def environment(self, key: Key, *, spec_env: Mapping[str, str], controlplane: Mapping[str, str],
                    gpu_ids: Sequence[str]) -> dict[str, str]:
        claimed = [self.gpus[g] for g in gpu_ids if g in self.gpus]
        return allocation_env(
            path=self.path, home=str(self.workdir(key)), lang=os.environ.get("LANG", "C.UTF-8"),
            spec_env=spec_env, controlplane=controlplane, gpus=claimed if (self.gpus or gpu_ids) else None,
        )

    def _limits(self, r: Reservation) -> cgroups.Limits:
        claimed = set(r.gpu_ids)
        deny = tuple(f"c {NVIDIA_MAJOR}:{g.minor}" for gid, g in sorted(self.gpus.items()) if gid not in claimed)
        memory = max(r.memory_mib, self.config.min_memory_mib) * MIB
        return cgroups.Limits(memory_bytes=memory, cpu_milli=r.cpu_milli, pids_max=self.config.pids_max, deny_devices=deny)

    def prepare(self, key: Key, reservation: Reservation) -> Prepared:
        """Its user, working directory and configured cgroup; done in the caller's thread, off the forking thread."""
        identity = self.users.acquire(f"{key[0]}.{key[1]}")
        workdir = self.workdir(key)
        limits = self._limits(reservation)
        cgroup: cgroups.Cgroup | None = None
        try:
            if self.layout.usable:
                cgroup = cgroups.Cgroup(cgroups.cgroup_name(*key), self.layout).create(limits)
            workdir.mkdir(mode=0o700, exist_ok=True)
            os.chown(workdir, identity.uid, identity.gid)
        except BaseException:
            Prepared(key, identity, workdir, cgroup, limits).discard(self)
            raise
        return Prepared(key, identity, workdir, cgroup, limits)

    def launch(self, prepared: Prepared, argv: list[str], env: dict[str, str], log_path: Path) -> Confinement:
        """Fork argv, held at its gate until `Confinement.admit` (none to pass without a cgroup).

        Once forked, whatever happens to the process ends in its exit and `finish`, which undoes `prepare`."""
        cgroup = prepared.cgroup
        try:
            if cgroup is not None:
                set_no_new_privs()  # on this (forking) thread, once: its children inherit it
                # another user through setpriv, not subprocess's user=: that disables vfork, and a fork of the
                # agent's whole address space costs more than the exec of setpriv
                switch = (setpriv_args(self.setpriv, prepared.identity, switch=True)
                          if self.users.switches_user and self.setpriv else [])  # no setpriv: refused at start
                command = [*switch, "/bin/sh", "-c", GATE, "controlplane-gate", *argv]
            else:
                command = [*(setpriv_args(self.setpriv, prepared.identity, switch=self.users.switches_user)
                             if self.setpriv else []), *argv]
            gate_r, gate_w = os.pipe() if cgroup is not None else (subprocess.DEVNULL, -1)
            out_r, out_w = os.pipe()
            try:
                proc = subprocess.Popen(command, stdin=gate_r, stdout=out_w, stderr=subprocess.STDOUT, env=env,
                                        cwd=prepared.workdir, start_new_session=True, close_fds=True)
            except BaseException:
                for fd in (gate_r, gate_w, out_r, out_w):
                    if fd >= 0:
                        os.close(fd)
                raise
            os.close(out_w)
            if cgroup is not None:
                os.close(gate_r)
        except BaseException:
            prepared.discard(self)
            raise
        drained = self.pump.add(out_r, RotatingLog(log_path, max_bytes=self.config.log_max_bytes, backups=self.config.log_backups))
        return Confinement(self, prepared.key, proc, cgroup, prepared.identity, prepared.workdir, drained,
                           prepared.limits.memory_bytes, gate=gate_w if cgroup is not None else None)

    def dispose_workdir(self, workdir: Path, *, failed: bool) -> None:
        keep = self.config.keep_workdir == "always" or (self.config.keep_workdir == "failed" and failed)
        try:
            if keep:
                # sealed: the next holder of this uid must not read it
                os.chown(workdir, os.geteuid(), os.getegid())
                os.chmod(workdir, 0o700)
            else:
                try:
                    workdir.rmdir()  # most are empty: a single syscall
                except OSError:
                    shutil.rmtree(workdir, ignore_errors=True)
        except OSError as exc:
            log.warning("cannot dispose of %s: %s", workdir, exc)

    # --- the agent's own life ----------------------------------------------------------------
    def recover(self) -> int:
        """A new agent process: kill and remove every cgroup the previous one left, give back its uids and directories."""
        killed = 0
        for cg in cgroups.leftovers(self.layout) if self.layout.usable else []:
            if cg.pids():
                killed += 1
            cg.kill()
            cg.remove()
        # and whatever other hierarchies the last agent used (another ISOLATION_* setting, GPUs it had)
        killed += discovery.sweep(instance=self.instance, parent=self.config.cgroup_parent,
                                keep=[h.base for h in self.layout.hierarchies])
        released = self.users.release_owned()
        for d in self.work_root.iterdir():
            if d.is_dir():
                self.dispose_workdir(d, failed=True)  # its allocation is lost: a failure
        if killed or released:
            log.warning("node %s: killed %d allocation cgroups and released %d uids of the previous agent process",
                        self.node, killed, released)
        return killed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pump.close()
        if self._watchdog is not None:
            os.close(self._watchdog_pipe)  # it sweeps what is left (nothing, after a clean shutdown) and exits
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("the cgroup watchdog did not exit within 10 s of the agent's close; killed")
                self._watchdog.kill()
                self._watchdog.wait()
        if self.layout.usable:
            cgroups.release(self.layout)
        try:
            self.work_root.rmdir()  # only when empty: kept directories stay
        except OSError:
            pass
