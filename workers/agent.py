"""The node agent: runs the allocations placed on its node and reports their lives, through the agent API only.

One per machine. It holds its node credential and the API's address, nothing else (no
graph, no broker, no signing key): it starts a session for its node, beats every
HEARTBEAT_S, takes its node's work (run, stop) from a long poll and acknowledges each
item once handled, and reports each step; the API checks every report against the node
the allocation is placed on (controlplane/services/agents.py). A report is a guarded
move, so a work item handed out twice changes nothing twice. Processes themselves are
the process manager's (processes.py). When the API says another agent process took the
node (fenced) or refuses the credential (revoked), the agent kills what it runs and
stops: never two agents running one node's allocations.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import ControlPlaneError, Unavailable
from controlplane.domain.lifecycle import LIVE, State
from controlplane.domain.records import Exit
from controlplane.ports.agents import RUN, STOP
from workers.isolation import Reservation, Sandbox, SandboxConfig
from workers.isolation.cgroups import IsolationError
from workers.isolation.gpus import query_gpus
from workers.isolation.usage import UsageRecorder
from workers.link import ApiLink, Claimed, Fenced, Revoked
from workers.processes import ExecutableNotFound, Handle, ProcessManager

log = logging.getLogger(__name__)
T = TypeVar("T")
Key = tuple[str, int]
#: how long one long poll for work waits at the API
POLL_WAIT_S = 20.0

#: every report survives a restart of the API (each is idempotent)
_api_retry = retry(
    retry=retry_if_exception_type(Unavailable),
    wait=wait_exponential(multiplier=0.1, max=5),
    stop=stop_after_delay(300),
    reraise=True,
)


def with_retries(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return _api_retry(fn)(*args, **kwargs)


def _briefly(fn: Callable[..., T], *args: Any) -> T | None:
    """A last report on the way out: retried for a few seconds only (the next agent's start ends what it missed)."""
    try:
        return retry(retry=retry_if_exception_type(Unavailable), wait=wait_exponential(multiplier=0.1, max=1),
                     stop=stop_after_delay(5), reraise=True)(fn)(*args)
    except ControlPlaneError as exc:
        log.warning("could not report on the way out: %s", exc)
        return None


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


class NodeAgent:
    def __init__(
        self,
        link: ApiLink,
        *,
        node: str,
        work_dir: Path,
        api_url: str,
        heartbeat_s: float = 1.0,
        mirror_s: float = 5.0,
        labels: dict[str, str] | None = None,
        resources: dict[str, object] | None = None,
        clock: Callable[[], float] = wall_clock,
        isolation: SandboxConfig | None = None,
        usage_period_s: float = 10.0,
        concurrency: int = 16,
    ) -> None:
        self.link = link
        self.node = node
        #: the address its allocations are given (CONTROLPLANE_API_URL): the API this agent itself talks to
        self.api_url = api_url
        self.heartbeat_s = heartbeat_s
        self.mirror_s = mirror_s
        self.labels = labels or {}
        self.resources = resources or machine_resources()
        self.clock = clock
        self.concurrency = concurrency
        gpus = self.resources.get("gpus") or []
        self.sandbox = Sandbox(isolation or SandboxConfig(), node=node, data_dir=work_dir, gpus=gpus)  # type: ignore[arg-type]
        self.processes = ProcessManager(work_dir / "runs" / node, self._on_exit, self.sandbox)
        self.usage = UsageRecorder(self.processes, self._record_usage, period_s=usage_period_s)
        self._stop = threading.Event()
        self._shutting_down = False
        #: why the agent had to stop (fenced, revoked), or None
        self.failure: str | None = None
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="work")
        self._slots = threading.Semaphore(concurrency)
        self._done: list[str] = []
        self._done_lock = threading.Lock()
        self._acked = threading.Event()

    # --- life of the agent -------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """What it registers: the machine's resources, its labels, what it enforces."""
        return {**self.resources, "labels": self.labels, "isolation": self.sandbox.isolation}

    def start(self, *, replaces: str | None) -> dict[str, Any]:
        """Start the node's session at the API, which ends in the graph what a dead predecessor had started and
        registers the node; then end what that predecessor left on this machine (its cgroups). In that order, so an
        agent the API refuses (another node's name, a second agent, a revoked credential) touches nothing here."""
        answer = with_retries(self.link.start, spec=self.spec(), replaces=replaces)
        self.sandbox.recover()
        if answer.get("ended"):
            log.warning("node %s: %d allocations of the previous agent process ended", self.node, answer["ended"])
        return answer

    def start_heartbeat(self) -> None:
        """The heartbeat (session and lease at the API, never the graph), its low-rate mirror, usage, acks."""
        for name, target in (("heartbeat", self._beat), ("heartbeat-mirror", self._mirror), ("acks", self._ack_loop)):
            self._threads.append(threading.Thread(target=target, name=name, daemon=True))
        for t in self._threads:
            t.start()
        self.usage.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.link.heartbeat()
            except (Fenced, Revoked) as exc:
                self.fatal(exc)
            except Exception as exc:  # keep beating through an API restart
                log.warning("heartbeat failed: %s", exc)

    def _mirror(self) -> None:
        while not self._stop.wait(self.mirror_s):
            try:
                status = self.link.mirror()
                if status != "ready" and status != "draining":
                    # declared lost while we were away (or forgotten): come back, then drop what was replaced
                    self.link.register(spec=self.spec())
                    self.reconcile()
            except (Fenced, Revoked) as exc:
                self.fatal(exc)
            except Exception as exc:  # keep beating through an API or graph restart
                log.warning("heartbeat mirror failed: %s", exc)

    def fatal(self, exc: ControlPlaneError) -> None:
        """Fenced off or revoked: nothing this agent runs may go on (another agent runs the node, or none may)."""
        if self.failure is None:
            self.failure = str(exc)
            log.error("node %s: stopping, and killing every process it runs: %s", self.node, exc)
        self._stop.set()
        self._shutting_down = True
        self.processes.kill_all()

    @property
    def stopped(self) -> threading.Event:
        return self._stop

    def reconcile(self) -> list[Key]:
        """Stop local processes whose allocation incarnation was replaced or moved while this node was lost."""
        keys = self.processes.running()
        current = {a.key: a for a in with_retries(self.link.allocations, keys)} if keys else {}
        stale = []
        for key in keys:
            a = current.get(key)
            if a is None or State(a.state) not in LIVE:
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
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.failure is None:
            try:
                self.link.stop_session()
            except ControlPlaneError as exc:
                log.warning("could not end the session of node %s: %s", self.node, exc)
        self.link.close()

    # --- work ------------------------------------------------------------------------------
    def serve(self) -> None:
        """Take the node's work from the API until stopped: each item handled on a thread, acknowledged once done."""
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            free = 1  # as many items as threads are free now, at least one
            while free < self.concurrency and self._slots.acquire(blocking=False):
                free += 1
            try:
                items = self.link.take(wait_s=POLL_WAIT_S, limit=free)
            except (Fenced, Revoked) as exc:
                self.fatal(exc)
                items = []
            except ControlPlaneError as exc:
                log.warning("could not take work: %s", exc)
                self._stop.wait(1.0)
                items = []
            for _ in range(free - len(items)):
                self._slots.release()
            for item in items:
                self._pool.submit(self._handle, *item)

    def _handle(self, item_id: str, kind: str, keys: list[Key]) -> None:
        try:
            if kind == RUN:
                self.run(keys)
            elif kind == STOP:
                for allocation_id, incarnation in keys:
                    self.stop(allocation_id, incarnation)
            else:
                log.warning("unknown work item %s of kind %r: dropped", item_id, kind)
            with self._done_lock:
                self._done.append(item_id)
            self._acked.set()
        except (Fenced, Revoked) as exc:
            self.fatal(exc)
        except Exception:  # not acknowledged: handed out again after the visibility timeout
            log.exception("work item %s (%s) failed", item_id, kind)
        finally:
            self._slots.release()

    def _ack_loop(self) -> None:
        while not self._stop.is_set():
            self._acked.wait(1.0)
            self._acked.clear()
            with self._done_lock:
                done, self._done = self._done, []
            if not done:
                continue
            try:
                with_retries(self.link.ack, done)
            except (Fenced, Revoked) as exc:
                self.fatal(exc)
            except ControlPlaneError as exc:  # handed out again later: handling them twice changes nothing
                log.warning("could not acknowledge %d work items: %s", len(done), exc)

    def run(self, keys: Sequence[Key]) -> None:
        """Start the processes of these allocation incarnations (those still ours to start)."""
        claimed = with_retries(self.link.claim, keys)
        if not claimed:
            return
        futures = self.processes.start_many(
            [(c.key, list(c.argv), self._env(c)) for c in claimed],
            {c.key: Reservation(c.cpu, c.memory, c.gpu_ids) for c in claimed},
        )
        started: list[tuple[Key, int]] = []
        log_paths: dict[Key, str] = {}
        for c, fut in zip(claimed, futures, strict=True):
            try:
                handle = fut.result(timeout=60)
                started.append((c.key, handle.pid))
                log_paths[c.key] = os.path.abspath(handle.log_path)
            except (ExecutableNotFound, OSError, IsolationError) as exc:
                with_retries(self.link.failed_to_start, c.key, str(exc))
        grace = {c.key: c.grace_period_s for c in claimed}
        for key in with_retries(self.link.running, started, log_paths):
            # stopped while starting: the stop found no process yet, so ending it is ours
            self.processes.stop(key, grace_s=grace[key])

    def _env(self, c: Claimed) -> dict[str, str]:
        """Its whole environment: PATH, HOME (its working directory), LANG, its spec's env, these, its GPUs.
        Nothing of the agent's own: its credential stays in the agent."""
        own = {"CONTROLPLANE_API_URL": self.api_url, "CONTROLPLANE_TOKEN": c.token} if c.token else {}
        return self.sandbox.environment(c.key, spec_env=c.env, gpu_ids=c.gpu_ids, controlplane={
            "CONTROLPLANE_ALLOCATION_ID": c.id,
            "CONTROLPLANE_INCARNATION": str(c.incarnation),
            "CONTROLPLANE_NODE": self.node,
            "CONTROLPLANE_PARENT_ID": c.parent_id,
            **own,  # the API address, and its own token from the API
        })

    def _record_usage(self, batch: list[tuple[Key, dict[str, Any]]]) -> None:
        self.link.usage(batch)

    def stop(self, allocation_id: str, incarnation: int) -> None:
        found = with_retries(self.link.allocations, [(allocation_id, incarnation)])
        grace = found[0].grace_period_s if found else 10.0
        if found and found[0].stop_grace_s is not None:  # a drain's deadline
            grace = min(grace, found[0].stop_grace_s)
        if not self.processes.stop((allocation_id, incarnation), grace_s=grace):
            with_retries(self.link.stop_unstarted, (allocation_id, incarnation))

    def _on_exit(self, exits: list[tuple[Handle, int, str]]) -> None:
        if self.failure is not None:
            return  # fenced or revoked: the API takes no report of this agent any more
        if self._shutting_down:
            _briefly(self.link.gone, [h.key for h, _, _ in exits])
        else:
            with_retries(self.link.exited, [Exit(h.key, code, tail, h.outcome.failure, h.outcome.fields) for h, code, tail in exits])
