"""The reaper and the reconciler: converge what a lost node, a lost message or a dead worker left behind.

Run by the one leading scheduler. The reaper declares nodes lost (one guarded
statement per node) and hands their allocations to supervision as one
correlated failure per parent. It reads liveness from node leases, never from
the graph's write path, and it does not trust its own blindness: when it cannot
read the leases, or when more than a set share of the watched nodes fell silent at
once (the fault is then more likely on the control plane's side, as Kubernetes' node
lifecycle controller assumes), it declares nothing and says so, and afterwards gives
every node a whole grace period to renew before it judges again. The reconciler
re-dispatches allocations stuck in `placed`, fails those stuck in `starting`, finishes stops whose agent is
gone, and carries out restarts that were decided but never happened (or that
wait for a node with room).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Unavailable
from controlplane.domain.lifecycle import START_LOST, State
from controlplane.domain.records import Event
from controlplane.ports.dispatch import Dispatcher, Key, RestartKey
from controlplane.ports.leases import NodeLeases
from controlplane.ports.store import Change, Hierarchy, History, Ledger, Repair, Topology
from controlplane.services.supervisor import SupervisorService

log = logging.getLogger(__name__)


#: more than this share of the watched nodes silent at once: the reaper holds off (Kubernetes' threshold)
MAX_SILENT_SHARE = 0.55
#: one hold-off event per node in this many seconds
HOLD_OFF_EVENT_S = 60.0


class RepairStore(Repair, Ledger, Hierarchy, History, Topology, Protocol):
    """What the reaper and the reconciler read and write."""


class RepairService:
    def __init__(
        self, store: RepairStore, supervisor: SupervisorService, dispatcher: Dispatcher, leases: NodeLeases, *,
        clock: Callable[[], float] = wall_clock, max_silent_share: float = MAX_SILENT_SHARE,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.dispatcher = dispatcher
        self.leases = leases
        self.clock = clock
        self.max_silent_share = max_silent_share
        #: since when the reaper has read the leases without a gap (from the start: a first read is sight)
        self._seeing_since = float("-inf")

    def reap(self, *, grace_s: float) -> dict[str, int]:
        """Declare nodes whose lease lapsed more than grace ago lost; their allocations' parents decide once each.

        Declares nothing (and records why) when the leases cannot be read, or could not be less than grace ago, or
        too many nodes went silent at once.
        """
        now = self.clock()
        watched = self.store.watched_nodes()
        try:
            silent = self.leases.silent(node_ids=watched, now=now, grace_s=grace_s)
        except Unavailable as exc:
            log.warning("reaper holds off: it cannot see the node leases (%s)", exc)
            self._seeing_since = float("inf")
            return {}
        if len(silent) > 1 and len(silent) > self.max_silent_share * len(watched):
            self._hold_off(silent, len(watched), now)
            self._seeing_since = float("inf")  # most nodes at once: as blind as an unreadable store
            return {}
        if self._seeing_since == float("inf"):
            self._seeing_since = now
        if now - self._seeing_since < grace_s:
            # the lease store was out of reach (a failover, a restart) or most nodes could not renew: a lapse means
            # nothing until every node has had a whole grace period to renew again
            if silent:
                log.warning("reaper holds off: the leases are back for %.1fs of %.1fs; %d silent nodes wait",
                            now - self._seeing_since, grace_s, len(silent))
            return {}
        reaped: dict[str, int] = {}
        for node_id in silent:
            lost = self.store.mark_node_lost(node_id=node_id, heartbeat_before=now - grace_s, now=now)
            if lost is None:
                continue
            reaped[node_id] = len(lost)
            log.warning("node %s lost (no heartbeat for %.1fs): %d allocations lost", node_id, grace_s, len(lost))
            if lost:
                self.supervisor.on_terminated([(a.id, a.incarnation) for a in lost])
        return reaped

    def lost_sight(self) -> None:
        """The caller could not look for a while (it was not leading, its tick failed): the next look is the first
        after blindness, and judges nothing until every node has had a grace period to renew."""
        self._seeing_since = float("inf")

    def _hold_off(self, silent: list[str], watched: int, now: float) -> None:
        why = (f"reaper holds off: {len(silent)} of {watched} nodes went silent at once (more than "
               f"{self.max_silent_share:.0%}); the fault is more likely the control plane's own, so none is declared lost")
        log.warning("%s: %s", why, ", ".join(silent))
        bucket = int(now // HOLD_OFF_EVENT_S)
        self.store.record_events(events=[
            Event(id=f"{n}:reaper-holds-off:{bucket}", kind="reaper", allocation_id=n, at=now, reason=why, by="reaper",
                  data={"silent": len(silent), "watched": watched})
            for n in silent
        ])

    def reconcile(self, *, placed_deadline_s: float, starting_deadline_s: float, stopping_slack_s: float = 30.0,
                  limit: int = 1000) -> dict[str, int]:
        now = self.clock()
        done = {"redispatched": 0, "start_lost": 0, "stops": 0, "restarts": 0}
        placed = self.store.stuck(states=[State.PLACED], updated_before=now - placed_deadline_s, limit=limit)
        by_node: dict[str, list[Key]] = {}
        natives: list[Key] = []
        for a in placed:
            if a.executor == "process":
                by_node.setdefault(a.node_id, []).append((a.id, a.incarnation))
            else:
                natives.append((a.id, a.incarnation))
        for node_id, keys in by_node.items():
            self.dispatcher.run(node_id=node_id, items=keys)
            done["redispatched"] += len(keys)
        if natives:
            self.dispatcher.start_native(keys=natives)
            done["redispatched"] += len(natives)
        starting = self.store.stuck(states=[State.STARTING], updated_before=now - starting_deadline_s, limit=limit)
        if starting:
            results = self.store.transition_many(changes=[
                Change(a.id, START_LOST, a.incarnation, {"exit_code": -1},
                       failure="could not start: the node agent never reported the process", reason="start lost", by="reconciler")
                for a in starting], now=now)
            ended = [(r.allocation.id, r.allocation.incarnation) for r in results if r is not None and r.applied]
            done["start_lost"] = len(ended)
            if ended:
                self.dispatcher.terminated(keys=ended)
        stopping = self.store.stuck(states=[State.STOPPING], updated_before=now - stopping_slack_s, limit=limit)
        for a in stopping:
            node = self.store.get_node(node_id=a.node_id)
            if node is None or node.status != "ready":
                self.store.set_fields(allocation_id=a.id, incarnation=a.incarnation, fields={"process_exited": True})
        if stopping:
            self.supervisor.advance([a.id for a in stopping])
            done["stops"] = len(stopping)
        grouped: dict[str, list[RestartKey]] = {}
        due = self.store.due_restarts(before=now, limit=limit)
        records = {a.id: a for a in self.store.get_allocations(allocation_ids=[child for _, child, _ in due])}
        for parent_id, child_id, inc in due:
            record = records.get(child_id)
            level = int(record.extra.get("backoff_level") or 0) + 1 if record else 1
            grouped.setdefault(parent_id, []).append((child_id, inc, level))
        for parent_id, items in grouped.items():
            self.supervisor.restart(parent_id, items, "reconciler: restart was due")
            done["restarts"] += len(items)
        return done
