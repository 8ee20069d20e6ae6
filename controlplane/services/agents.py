"""What a node agent may ask of the control plane: node restriction, as Kubernetes' NodeRestriction admission does it.

Every call names the node its credential is for (the API takes it from the credential,
never from the request), and touches only that Node, its GPUs and the process
allocations placed on it:

- starting an agent process registers the node under the credential's identity (a node
  bound to another identity is refused), after ending what the dead predecessor left;
- each report (claim, running, exited, failed to start, stopped with no process, gone
  with the agent, usage) is guarded by the reporting node inside the same graph request,
  and a report about another node's allocation changes nothing, is refused (Forbidden,
  naming it) and recorded: an event on that allocation (kind `refused`, `by` the node)
  and an audit log line;
- the allocations it may read are the ones placed on it;
- a claimed allocation gets its own token from the API (`issue_token`): agents hold no
  signing key, so an agent elsewhere cannot mint credentials for anything else.

Sessions, liveness and the work list are the API's (ports/agents.py), checked before
any of this runs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Forbidden
from controlplane.domain.records import AllocationRecord, Event, Exit, NodeRecord
from controlplane.domain.specs import NodeSpec, parse
from controlplane.ports.dispatch import Dispatcher, Key
from controlplane.services.reports import AgentReports, AgentStore

audit = logging.getLogger("controlplane.audit")

#: refusals recorded as events per reporting node per minute; past that only the audit log has them
REFUSAL_EVENTS_PER_MINUTE = 30


class AgentService:
    def __init__(
        self,
        store: AgentStore,
        dispatcher: Dispatcher,
        *,
        issue_token: Callable[[str, int], str] | None = None,
        notify: Callable[[], None] | None = None,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        #: (allocation id, incarnation) -> the token that incarnation runs with (None: allocations get none)
        self.issue_token = issue_token
        self.notify = notify or (lambda: None)
        self.clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    # --- identity ----------------------------------------------------------------------------
    def bound_elsewhere(self, node_id: str, identity: str) -> bool:
        """Whether the node exists and is bound to another identity (the name is taken)."""
        node = self.store.get_node(node_id=node_id)
        bound = node.extra.get("identity") if node is not None else None
        return bound is not None and bound != identity

    def _check_identity(self, node_id: str, identity: str, what: str) -> None:
        if self.bound_elsewhere(node_id, identity):
            self.refuse_node(node_id, by=node_id, what=what,
                             why=f"node {node_id} belongs to another identity (another node credential registered it)")

    def start(self, node_id: str, identity: str, spec: Mapping[str, Any]) -> tuple[NodeRecord, list[Key]]:
        """A fresh agent process of the node: end what its dead predecessor had started, then register."""
        node_spec = parse(NodeSpec, {**spec, "name": node_id}, field="node")
        self._check_identity(node_id, identity, "start an agent")
        ended = AgentReports(self.store, node=node_id, clock=self.clock).recover()
        if ended:
            audit.warning("node %s: %d allocations of the previous agent process ended", node_id, len(ended))
            self.dispatcher.terminated(keys=ended)
        return self._register(node_spec, identity), ended

    def register(self, node_id: str, identity: str, spec: Mapping[str, Any]) -> NodeRecord:
        """The node came back (declared lost while its agent was away): register it again, nothing ended."""
        node_spec = parse(NodeSpec, {**spec, "name": node_id}, field="node")
        self._check_identity(node_id, identity, "register")
        return self._register(node_spec, identity)

    def _register(self, spec: NodeSpec, identity: str) -> NodeRecord:
        record = self.store.register_node(spec=spec, now=self.clock(), identity=identity)
        if record is None:  # bound to another identity between the check and the write
            self.refuse_node(spec.name, by=spec.name, what="register", why=f"node {spec.name} belongs to another identity")
        assert record is not None
        self.notify()
        return record

    def mirror(self, node_id: str) -> str | None:
        """The lease's low-rate mirror in the graph (heartbeat_at); returns the node's status (None: no such node)."""
        return self.store.heartbeat(node_id=node_id, now=self.clock())

    # --- reports -----------------------------------------------------------------------------
    def claim(self, node_id: str, keys: Sequence[Key]) -> list[tuple[AllocationRecord, str | None]]:
        """placed -> starting for those placed on this node; each with the token its process runs with."""
        reports = AgentReports(self.store, node=node_id, clock=self.clock)
        claimed = reports.claim(keys)
        self.notify()
        out = [(r, self.issue_token(r.id, r.incarnation) if self.issue_token else None) for r in claimed]
        self._refused(node_id, "claim", reports)
        return out

    def running(self, node_id: str, started: Sequence[tuple[Key, int]], log_paths: Mapping[Key, str]) -> set[Key]:
        reports = AgentReports(self.store, node=node_id, clock=self.clock)
        stopped = reports.running(started, log_paths=log_paths)
        self.notify()
        self._refused(node_id, "report running for", reports)
        return stopped

    def exited(self, node_id: str, exits: Sequence[Exit]) -> None:
        reports = AgentReports(self.store, node=node_id, clock=self.clock)
        self._ended(reports.exited(exits))
        self._refused(node_id, "report exited for", reports)

    def gone(self, node_id: str, keys: Sequence[Key]) -> None:
        reports = AgentReports(self.store, node=node_id, clock=self.clock)
        self._ended(reports.gone_with_agent(keys))
        self._refused(node_id, "report agent stopped for", reports)

    def failed_to_start(self, node_id: str, key: Key, error: str) -> None:
        reports = AgentReports(self.store, node=node_id, clock=self.clock)
        if reports.failed_to_start(key, error=error):
            self.dispatcher.terminated(keys=[key])
            self.notify()
        self._refused(node_id, "report failed to start for", reports)

    def stop_unstarted(self, node_id: str, key: Key) -> None:
        reports = AgentReports(self.store, node=node_id, clock=self.clock)
        if reports.stop_unstarted(key):
            self.dispatcher.terminated(keys=[key])
            self.notify()
        self._refused(node_id, "report stopped for", reports)

    def usage(self, node_id: str, usage: Sequence[tuple[Key, dict[str, Any]]]) -> None:
        """Measured usage of live allocations placed on this node (one write each, as the agent measured them)."""
        mine = {(a.id, a.incarnation) for a in self.allocations(node_id, [k for k, _ in usage], what="report usage of")}
        now = self.clock()
        for key, fields in usage:
            if key in mine:
                self.store.set_fields(allocation_id=key[0], incarnation=key[1], fields={**fields, "usage_at": now})

    def allocations(self, node_id: str, keys: Sequence[Key], *, what: str = "read") -> list[AllocationRecord]:
        """The current records of these incarnations when they are placed on this node. An incarnation replaced
        since (restarted elsewhere while this node was away) is left out; asking for an incarnation placed on
        another node is refused."""
        found = {a.id: a for a in self.store.get_allocations(allocation_ids=list(dict.fromkeys(k[0] for k in keys)))}
        mine: list[AllocationRecord] = []
        foreign: list[tuple[Key, str]] = []
        for allocation_id, incarnation in dict.fromkeys(keys):
            a = found.get(allocation_id)
            if a is None or a.incarnation != incarnation:
                continue
            if a.node_id == node_id and a.executor == "process":
                mine.append(a)
            else:
                foreign.append(((a.id, a.incarnation), a.node_id))
        if foreign:
            self._refuse_all(node_id, what, foreign)
        return mine

    def _ended(self, ended: Sequence[AllocationRecord]) -> None:
        self.notify()
        keys = [(a.id, a.incarnation) for a in ended]
        if keys:
            self.dispatcher.terminated(keys=keys)

    # --- refusals ----------------------------------------------------------------------------
    def _refused(self, node_id: str, what: str, reports: AgentReports) -> None:
        if reports.refused:
            self._refuse_all(node_id, what, reports.refused)

    def _refuse_all(self, node_id: str, what: str, refused: Sequence[tuple[Key, str]]) -> None:
        now = self.clock()
        events = []
        for (allocation_id, incarnation), placed in refused:
            reason = f"refused: node {node_id} may not {what} allocation {allocation_id} (placed on node {placed})"
            audit.warning("refused node:%s: %s %s#%d (placed on node %s)", node_id, what, allocation_id, incarnation, placed)
            if self._may_record(node_id, now):
                events.append(self._event(allocation_id, reason, node_id, now, incarnation=incarnation))
        if events:
            self.store.record_events(events=events)
        names = ", ".join(f"{i}#{n} (placed on {p})" for (i, n), p in refused[:5])
        raise Forbidden(f"node:{node_id} may not {what} allocations not placed on it: {names}"
                        + (f" and {len(refused) - 5} more" if len(refused) > 5 else ""), field="node")

    def refuse_node(self, node_id: str, *, by: str, what: str, why: str) -> None:
        """A request of node `by`'s credential about node `node_id` (another node, or a name it does not hold)."""
        now = self.clock()
        audit.warning("refused node:%s: %s node %s (%s)", by, what, node_id, why)
        if self._may_record(by, now) and self.store.get_node(node_id=node_id) is not None:
            self.store.record_events(events=[self._event(node_id, f"refused: node {by} may not {what} node {node_id}: {why}",
                                                         by, now, kind_of="node")])
        raise Forbidden(f"node:{by} may not {what} node {node_id}: {why}", field="node")

    def _may_record(self, node_id: str, now: float) -> bool:
        """A flood of refused reports must not flood the graph: a few events a minute per node, the rest in the log."""
        with self._lock:
            recent = self._recent.setdefault(node_id, deque())
            while recent and recent[0] < time.monotonic() - 60:
                recent.popleft()
            if len(recent) >= REFUSAL_EVENTS_PER_MINUTE:
                return False
            recent.append(time.monotonic())
            return True

    @staticmethod
    def _event(target: str, reason: str, by: str, now: float, *, incarnation: int | None = None,
               kind_of: str = "allocation") -> Event:
        return Event(id=f"{target}:refused:{uuid.uuid4().hex[:16]}", kind="refused", allocation_id=target, at=now,
                     incarnation=incarnation, reason=reason, by=f"node:{by}", data={"about": kind_of},
                     tick=time.time_ns())
