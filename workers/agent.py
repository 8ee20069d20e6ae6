"""The node agent: registers its machine, heartbeats, runs the allocations placed on it, and reports their lives.

One per machine, inside the Celery worker process that consumes the node's own
queue (the tasks in tasks.py only call `run` and `stop` here). Every report is
a guarded move of the lifecycle table in one graph request for a batch, so a
redelivered task finds the precondition false and changes nothing. Processes
themselves are the process manager's (processes.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Unavailable
from controlplane.domain.lifecycle import (
    AGENT_RESTARTED,
    AGENT_STOPPED,
    CLAIM,
    LIVE,
    RUN,
    START_FAILED,
    STOPPED,
    State,
    exit_move,
)
from controlplane.domain.records import AllocationRecord, NodeRecord
from controlplane.domain.specs import NodeSpec, parse
from controlplane.domain.supervision import START_ERROR_PREFIX
from controlplane.domain.text import printable
from controlplane.ports.dispatch import Dispatcher, Key
from controlplane.ports.leases import NodeLeases
from controlplane.ports.store import Change, Hierarchy, Ledger, Topology
from workers.isolation import Reservation, Sandbox, SandboxConfig
from workers.isolation.cgroups import IsolationError
from workers.isolation.gpus import query_gpus
from workers.isolation.usage import UsageRecorder
from workers.processes import ExecutableNotFound, Handle, ProcessManager

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTPUT_TAIL_CHARS = 4096

#: every graph call of the agent survives a restart of the graph server (each call is idempotent)
_graph_retry = retry(
    retry=retry_if_exception_type(Unavailable),
    wait=wait_exponential(multiplier=0.1, max=5),
    stop=stop_after_delay(300),
    reraise=True,
)


def _g(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return _graph_retry(fn)(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class Exit:
    """A process that ended: its key, exit code and output tail; why it failed when the code does not say it
    (e.g. "oom_killed: memory limit ..."), and what was measured of it (usage_cpu_s, ...)."""

    key: Key
    exit_code: int
    output_tail: str
    failure: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


def describe_exit(code: int) -> str:
    return f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"


def machine_resources() -> dict[str, object]:
    """This machine's real cpu count, memory and (where nvidia-smi answers) GPUs."""
    cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory_mib = 1024
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_mib = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    gpus: list[dict[str, object]] = [
        {"model": g.model, "memory_mib": g.memory_mib, "uuid": g.uuid, "index": g.index} for g in query_gpus()
    ]
    return {"cpu_milli": cpu * 1000, "memory_mib": memory_mib, "gpus": gpus}


class AgentStore(Topology, Ledger, Hierarchy, Protocol):
    """What a node agent reads and writes: its node, and the allocations placed on it."""


class AgentReports:
    """What a node agent reports of the allocations placed on its node: guarded moves of the lifecycle table.

    No processes here (NodeAgent runs them), so tests can drive an allocation's life without one.
    """

    def __init__(self, store: AgentStore, *, node: str, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.node = node
        self.clock = clock

    def recover(self) -> list[Key]:
        """A fresh agent process runs nothing yet: what its node still shows as started died with the last agent.

        Started allocations become `lost` (their parents decide), stopping ones `stopped`. Without this, an
        agent restarted within the node's grace period would leave them `running` for ever.
        """
        now = self.clock()
        ended: list[Key] = []
        for state in (State.STARTING, State.RUNNING, State.STOPPING):
            after = None
            while True:
                page = self.store.list_allocations(after=after, limit=1000, state=state.value, node_id=self.node)
                results = self.store.transition_many(changes=[
                    Change(a.id, AGENT_RESTARTED, a.incarnation, {"process_exited": True}, failure="node agent restarted",
                           reason="node agent restarted", by=self.node)
                    for a in page if a.executor == "process"], now=now)  # native ones run in supervisors
                ended += [(r.allocation.id, r.allocation.incarnation) for r in results if r is not None and r.applied]
                if len(page) < 1000:
                    break
                after = page[-1].id
        return ended

    def claim(self, keys: Sequence[Key]) -> list[AllocationRecord]:
        """placed -> starting for each; returns those that are ours to start now.

        Not ours: already started (a redelivery), stopped first, a newer incarnation, another node.
        """
        changes = [Change(i, CLAIM, inc, {"agent": self.node}, reason="agent took it", by=self.node) for i, inc in keys]
        results = self.store.transition_many(changes=changes, now=self.clock())
        return [r.allocation for r in results if r is not None and r.applied and r.allocation.node_id == self.node]

    def running(self, started: Sequence[tuple[Key, int]], *, log_paths: Mapping[Key, str] | None = None) -> set[Key]:
        """starting -> running with the pid (and where its output goes); returns the keys that were stopped
        meanwhile (to be ended)."""
        now = self.clock()
        logs = log_paths or {}
        changes = [Change(i, RUN, inc, {"pid": pid, "started_at": now, "log_path": logs.get((i, inc))},
                          reason=f"pid {pid}", by=self.node)
                   for (i, inc), pid in started]
        results = self.store.transition_many(changes=changes, now=now)
        return {key for (key, _pid), r in zip(started, results, strict=True)
                if r is not None and not r.applied and r.allocation.state in (State.STOPPING, State.STOPPED)}

    def exited(self, exits: Sequence[Exit]) -> list[AllocationRecord]:
        """Processes ended: stopped if a stop was asked for, else succeeded (0) or failed.

        Returns the allocations that became terminal. A stopping parent whose process ended before its
        children keeps `stopping` (its exit is noted); the supervisor ends it once its subtree is terminal.
        """
        now = self.clock()

        def noted(e: Exit) -> dict[str, Any]:
            return {**e.fields, "exit_code": e.exit_code, "output_tail": printable(e.output_tail[-OUTPUT_TAIL_CHARS:]),
                    "finished_at": now}

        changes = [
            Change(e.key[0], exit_move(e.exit_code), e.key[1], noted(e), failure=e.failure or describe_exit(e.exit_code),
                   reason=e.failure or describe_exit(e.exit_code), by=self.node, leaf_only=True)
            for e in exits
        ]
        results = self.store.transition_many(changes=changes, now=now)
        ended = []
        for e, r in zip(exits, results, strict=True):
            if r is None:
                continue
            if r.applied:
                ended.append(r.allocation)
            elif r.allocation.state is State.STOPPING and r.allocation.incarnation == e.key[1]:
                self.store.set_fields(allocation_id=e.key[0], incarnation=e.key[1],
                                      fields={**noted(e), "process_exited": True})
        return ended

    def gone_with_agent(self, keys: Sequence[Key]) -> list[AllocationRecord]:
        """The agent was stopped on purpose and its processes with it: lost (their parents decide), not failed."""
        results = self.store.transition_many(changes=[
            Change(i, AGENT_STOPPED, inc, {"process_exited": True}, failure="node agent stopped",
                   reason="node agent stopped", by=self.node)
            for i, inc in keys], now=self.clock())
        return [r.allocation for r in results if r is not None and r.applied]

    def failed_to_start(self, key: Key, *, error: str) -> bool:
        [r] = self.store.transition_many(
            changes=[Change(key[0], START_FAILED, key[1], {"exit_code": -1},
                            failure=printable(START_ERROR_PREFIX + error)[:OUTPUT_TAIL_CHARS], reason="could not start", by=self.node)],
            now=self.clock(),
        )
        return bool(r and r.applied)

    def stop_unstarted(self, key: Key) -> bool:
        """A stop reached the agent while no process existed: stopping -> stopped with no process."""
        [r] = self.store.transition_many(
            changes=[Change(key[0], STOPPED, key[1], {"process_exited": True}, reason="no process to stop", by=self.node,
                            leaf_only=True)],
            now=self.clock(),
        )
        return bool(r and r.applied)


class NodeAgent:
    def __init__(
        self,
        store: AgentStore,
        dispatcher: Dispatcher,
        *,
        node: str,
        work_dir: Path,
        heartbeat_s: float = 1.0,
        leases: NodeLeases | None = None,
        mirror_s: float = 5.0,
        labels: dict[str, str] | None = None,
        resources: dict[str, object] | None = None,
        notify: Callable[[], None] | None = None,
        clock: Callable[[], float] = wall_clock,
        isolation: SandboxConfig | None = None,
        usage_period_s: float = 10.0,
        credentials: Callable[[str, int], dict[str, str]] | None = None,
    ) -> None:
        self.store = store
        #: the API address and token each started incarnation gets (controlplane.auth.bootstrap.AllocationCredentials)
        self.credentials = credentials
        #: rings the live-events doorbell after the agent changed the graph
        self.notify = notify or (lambda: None)
        self.node = node
        self.heartbeat_s = heartbeat_s
        #: liveness: renewed every heartbeat, on a connection of its own (the graph's heartbeat_at only mirrors it)
        self.leases = leases
        self.mirror_s = mirror_s if leases is not None else heartbeat_s
        self.labels = labels or {}
        self.resources = resources or machine_resources()
        self.dispatcher = dispatcher
        self.clock = clock
        self.reports = AgentReports(store, node=node, clock=clock)
        gpus = self.resources.get("gpus") or []
        self.sandbox = Sandbox(isolation or SandboxConfig(), node=node, data_dir=work_dir, gpus=gpus)  # type: ignore[arg-type]
        self.processes = ProcessManager(work_dir / "runs" / node, self._on_exit, self.sandbox)
        self.usage = UsageRecorder(self.processes, self._record_usage, period_s=usage_period_s)
        self._stop = threading.Event()
        self._shutting_down = False
        self._threads: list[threading.Thread] = []

    # --- life of the agent -------------------------------------------------------------
    def register(self) -> NodeRecord:
        spec = parse(NodeSpec, {"name": self.node, "labels": self.labels, **self.resources,
                                "isolation": self.sandbox.isolation}, field="node")
        return _g(self.store.register_node, spec=spec, now=self.clock())

    def recover(self) -> list[Key]:
        """End what the dead predecessor of this agent process had started (see AgentReports.recover):
        first every process it left (their cgroups), then the graph."""
        self.sandbox.recover()
        ended = _g(self.reports.recover)
        if ended:
            log.warning("node %s: %d allocations of the previous agent process ended", self.node, len(ended))
            self.dispatcher.terminated(keys=ended)
        return ended

    def start_heartbeat(self) -> None:
        """Two threads: the lease (liveness, never waits on the graph) and its mirror in the graph."""
        if self.leases is not None:
            self.leases.renew(node_id=self.node, now=self.clock())
            self._threads.append(threading.Thread(target=self._renew, name="lease", daemon=True))
        self._threads.append(threading.Thread(target=self._mirror, name="heartbeat-mirror", daemon=True))
        for t in self._threads:
            t.start()
        self.usage.start()

    def _renew(self) -> None:
        assert self.leases is not None
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.leases.renew(node_id=self.node, now=self.clock())
            except Exception as exc:  # keep renewing through a broker restart
                log.warning("lease renewal failed: %s", exc)

    def _mirror(self) -> None:
        while not self._stop.wait(self.mirror_s):
            try:
                status = self.store.heartbeat(node_id=self.node, now=self.clock())
                if status != "ready":
                    # declared lost while we were away (or never known): come back, then drop what was replaced
                    self.register()
                    self.reconcile()
            except Exception as exc:  # keep beating through a graph restart
                log.warning("heartbeat failed: %s", exc)

    def reconcile(self) -> list[Key]:
        """Stop local processes whose allocation incarnation was replaced or moved while this node was lost."""
        keys = self.processes.running()
        current = {a.id: a for a in _g(self.store.get_allocations, allocation_ids=[k[0] for k in keys])}
        stale = []
        for key in keys:
            a = current.get(key[0])
            if a is None or a.incarnation != key[1] or a.node_id != self.node or a.state not in LIVE:
                stale.append(key)
                self.processes.kill(key)
        if stale:
            log.warning("reconciled: killed %d replaced allocation processes", len(stale))
        return stale

    def shutdown(self) -> None:
        """A deliberate stop: its processes go with it, recorded `lost` with "node agent stopped" (as a machine that
        powers off), and their parents decide when a supervisor runs (at once, or on the next `controlplane up`)."""
        self._stop.set()
        self._shutting_down = True
        self.usage.stop()
        self.processes.kill_all()
        self.processes.close()

    # --- what the tasks call -----------------------------------------------------------
    def run(self, keys: list[Key]) -> None:
        """Start the processes of these allocation incarnations (those still ours to start)."""
        claimed = _g(self.reports.claim, keys)
        if not claimed:
            return
        futures = self.processes.start_many(
            [((r.id, r.incarnation), list(r.argv), self._env(r)) for r in claimed],
            {(r.id, r.incarnation): Reservation(r.cpu, r.memory, r.gpu_ids) for r in claimed},
        )
        started: list[tuple[Key, int]] = []
        log_paths: dict[Key, str] = {}
        for rec, fut in zip(claimed, futures, strict=True):
            try:
                handle = fut.result(timeout=60)
                started.append(((rec.id, rec.incarnation), handle.pid))
                log_paths[(rec.id, rec.incarnation)] = os.path.abspath(handle.log_path)
            except (ExecutableNotFound, OSError, IsolationError) as exc:
                if _g(self.reports.failed_to_start, (rec.id, rec.incarnation), error=str(exc)):
                    self.dispatcher.terminated(keys=[(rec.id, rec.incarnation)])
        self.notify()
        grace = {(r.id, r.incarnation): r.grace_period_s for r in claimed}
        for key in _g(self.reports.running, started, log_paths=log_paths):
            # stopped while starting: the stop found no process yet, so ending it is ours
            self.processes.stop(key, grace_s=grace[key])

    def _env(self, rec: AllocationRecord) -> dict[str, str]:
        """Its whole environment: PATH, HOME (its working directory), LANG, its spec's env, these, its GPUs."""
        return self.sandbox.environment((rec.id, rec.incarnation), spec_env=rec.env, gpu_ids=rec.gpu_ids, controlplane={
            "CONTROLPLANE_ALLOCATION_ID": rec.id,
            "CONTROLPLANE_INCARNATION": str(rec.incarnation),
            "CONTROLPLANE_NODE": self.node,
            "CONTROLPLANE_PARENT_ID": rec.parent_id,
            **(self.credentials(rec.id, rec.incarnation) if self.credentials else {}),  # API address, its own token
        })

    def _record_usage(self, key: Key, fields: dict[str, object]) -> None:
        self.store.set_fields(allocation_id=key[0], incarnation=key[1], fields={**fields, "usage_at": self.clock()})

    def stop(self, allocation_id: str, incarnation: int) -> None:
        rec = _g(self.store.get_allocation, allocation_id=allocation_id)
        grace = rec.grace_period_s if rec else 10.0
        if rec is not None and rec.extra.get("stop_grace_s") is not None:  # a drain's deadline
            grace = min(grace, float(rec.extra["stop_grace_s"]))
        if not self.processes.stop((allocation_id, incarnation), grace_s=grace):
            if _g(self.reports.stop_unstarted, (allocation_id, incarnation)):
                self.dispatcher.terminated(keys=[(allocation_id, incarnation)])

    def _on_exit(self, exits: list[tuple[Handle, int, str]]) -> None:
        if self._shutting_down:
            ended = _g(self.reports.gone_with_agent, [h.key for h, _, _ in exits])
        else:
            ended = _g(self.reports.exited, [Exit(h.key, code, tail, h.outcome.failure, h.outcome.fields)
                                             for h, code, tail in exits])
        self.notify()
        keys = [(a.id, a.incarnation) for a in ended]
        if keys:
            self.dispatcher.terminated(keys=keys)
