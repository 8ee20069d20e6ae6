"""Supervisors at work: react to terminated allocations, decide, restart, stop subtrees, reap lost nodes.

The decision itself is the pure `decide()`; this module gathers the situation
from the graph and carries the decision out with guarded, idempotent store
calls, so a redelivered task or a second supervisor changes nothing twice.
Long waits (backoff, a subtree still stopping) go through the dispatcher as
delayed tasks, never as sleeps.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import NotFound
from controlplane.domain.lifecycle import LIVE, RESTARTABLE, TERMINAL, State
from controlplane.domain.placement import Demand, place
from controlplane.domain.errors import NoCapacity
from controlplane.domain.records import AllocationRecord, Event
from controlplane.domain.resources import Resources
from controlplane.domain.supervision import (
    Child,
    Decision,
    Failure,
    RestartType,
    Situation,
    classify,
    decide,
    policy_from_json,
    restart_type_of,
)
from graph_schema.store import Change, CreateRefused, GraphStore, RestartItem
from graph_schema.vocabulary import Label

log = logging.getLogger(__name__)

Key = tuple[str, int]
RESTART_POLL_S = 0.25
STOP_MOVES = {State.PENDING: State.STOPPED, State.PLACED: State.STOPPED, State.STARTING: State.STOPPING, State.RUNNING: State.STOPPING}


class ControlDispatcher(Protocol):
    """How supervisors hand work on: signals to node agents, and (delayed) tasks to supervisors."""

    def run(self, *, node_id: str, items: Sequence[tuple[str, int]]) -> None: ...

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None: ...

    def terminated(self, *, keys: Sequence[Key]) -> None: ...

    def restart(self, *, parent_id: str, items: Sequence[tuple[str, int, int]], reason: str, countdown: float) -> None: ...

    def start_native(self, *, keys: Sequence[Key]) -> None:
        """Start native allocations (their executors run in supervisor workers)."""


class SupervisorService:
    def __init__(
        self,
        store: GraphStore,
        dispatcher: ControlDispatcher,
        *,
        clock: Callable[[], float] = wall_clock,
        notify: Callable[[], None] | None = None,
        on_ended: Callable[[Sequence[AllocationRecord]], None] | None = None,
        on_watched: Callable[[dict[str, list[str]], Sequence[AllocationRecord]], None] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.notify = notify or (lambda: None)
        #: hooks for orchestration code (native executors), after supervision has decided
        self.on_ended = on_ended or (lambda records: None)
        self.on_watched = on_watched or (lambda watchers, targets: None)

    # --- stopping: children first, deepest first ----------------------------------------
    def stop(self, root_id: str, *, include_root: bool = True, reason: str = "stop requested", by: str = "user") -> list[AllocationRecord]:
        """Stop the subtree: unstarted ones end at once, started ones go `stopping`; leaves get the signal first."""
        targets = self.store.subtree_to_stop(root_id=root_id, include_root=include_root)
        if not targets:
            return []
        now = self.clock()
        changes = [Change(t.allocation_id, STOP_MOVES, t.incarnation, {"stop_requested_at": now}, reason=reason, by=by)
                   for t in targets if t.state is not State.STOPPING]
        results = self.store.transition_many(changes=changes, now=now)
        changed = [r.allocation for r in results if r is not None and r.applied]
        ended = [(a.id, a.incarnation) for a in changed if a.state in TERMINAL]
        if ended:
            self.dispatcher.terminated(keys=ended)
        self.advance([t.allocation_id for t in targets])
        self.notify()
        return changed

    def advance(self, allocation_ids: Iterable[str]) -> None:
        """Stopping allocations whose children are all terminal: signal their process, or end them."""
        ids = list(dict.fromkeys(allocation_ids))
        if not ids:
            return
        live = self.store.live_children(parent_ids=ids)
        ready = [a for a in self.store.get_allocations(allocation_ids=[i for i in ids if live.get(i, 0) == 0])
                 if a.state is State.STOPPING]
        finished: list[Key] = []
        now = self.clock()
        for a in ready:
            if a.executor != "process" or a.pid is None or a.extra.get("process_exited"):
                r = self.store.transition_many(
                    changes=[Change(a.id, {State.STOPPING: State.STOPPED}, a.incarnation, leaf_only=True,
                                    reason="subtree stopped", by="supervisor")],
                    now=now,
                )[0]
                if r is not None and r.applied:
                    finished.append((a.id, a.incarnation))
            else:
                self.dispatcher.stop(node_id=a.node_id, allocation_id=a.id, incarnation=a.incarnation)
        if finished:
            self.dispatcher.terminated(keys=finished)

    # --- reacting to terminations -------------------------------------------------------
    def on_terminated(self, keys: Sequence[Key]) -> None:
        """Allocations reached a terminal state: watchers, child policy, parents' decisions, stops in progress."""
        records = [a for a in self.store.get_allocations(allocation_ids=[k[0] for k in keys]) if a.state in TERMINAL]
        wanted = dict(keys)
        records = [a for a in records if wanted.get(a.id) == a.incarnation]
        if not records:
            return
        now = self.clock()
        self.notify_watchers(records, now)
        with_children = self.store.live_children(parent_ids=[a.id for a in records if a.extra.get("child_policy") != "abandon"])
        for a in records:
            if a.extra.get("child_policy") == "abandon":
                self.store.mark_orphans(parent_id=a.id, now=now)
            elif with_children.get(a.id):
                self.stop(a.id, include_root=False, reason=f"parent {a.id} {a.state.value}", by=a.id)
        by_parent: dict[str, list[AllocationRecord]] = {}
        for a in records:
            if a.state is not State.STOPPED:  # a stop asked for is not a failure to supervise
                by_parent.setdefault(a.parent_id, []).append(a)
        for parent_id, children in by_parent.items():
            self.supervise(parent_id, children)
        self.advance({a.parent_id for a in records})
        self.on_ended(self.store.get_allocations(allocation_ids=[a.id for a in records]))
        self.notify()

    def notify_watchers(self, records: Sequence[AllocationRecord], now: float) -> None:
        watchers = self.store.watchers(target_ids=[a.id for a in records])
        events = [
            Event(id=f"{w}:terminated:{a.id}:{a.incarnation}", kind="terminated", allocation_id=w, at=now,
                  incarnation=a.incarnation, to_state=a.state.value, reason=f"watched {a.id} {a.state.value}",
                  by=a.id, data={"target": a.id})
            for a in records for w in watchers.get(a.id, [])
        ]
        self.store.record_events(events=events)
        if watchers:
            self.on_watched(watchers, records)

    def supervise(self, parent_id: str, failed: Sequence[AllocationRecord]) -> Decision | None:
        if all(a.state is State.SUCCEEDED and restart_type_of(a.extra.get("restart_type")) is not RestartType.PERMANENT
               for a in failed):
            return None  # normal exits of non-permanent children: nothing to decide, no siblings to read
        label = self.store.actor_label(actor_id=parent_id)
        if label == Label.NODE.value:
            node = self.store.get_node(node_id=parent_id)
            if node is None:
                return None
            policy_json, log_ = node.extra.get("supervision"), node.extra.get("restart_log")
        else:
            parent = self.store.get_allocation(allocation_id=parent_id)
            if parent is None or parent.state not in LIVE or parent.state is State.STOPPING:
                return None  # the parent is ending: its children are being stopped, nothing to restart
            policy_json, log_ = parent.extra.get("supervision"), parent.extra.get("restart_log")
        policy = policy_from_json(policy_json)
        siblings = self._children(parent_id)
        situation = Situation(
            parent_id=parent_id,
            parent_is_node=label == Label.NODE.value,
            policy=policy,
            restart_log=tuple(float(t) for t in (log_ or ())),
            children=tuple(
                Child(c.id, i, c.state in LIVE, c.incarnation, restart_type_of(c.extra.get("restart_type")),
                      int(c.extra.get("backoff_level") or 0), c.extra.get("started_at"))
                for i, c in enumerate(siblings)
            ),
            failures=tuple(Failure(a.id, a.incarnation, classify(a.state.value, a.exit_code, a.error), a.exit_code, a.error) for a in failed),
        )
        now = self.clock()
        decision = decide(situation, now)
        if decision.directive is None:
            return decision
        decision_id = hashlib.sha256(
            ",".join(sorted(f"{a.id}:{a.incarnation}" for a in failed)).encode()
        ).hexdigest()[:16]
        self.store.record_events(events=[Event(
            id=f"{parent_id}:decision:{decision_id}", kind="decision", allocation_id=parent_id, at=now,
            reason=decision.reason, by=parent_id,
            data={"directive": decision.directive.value, "children": sorted(decision.per_child),
                  "restarts": [r.child_id for r in decision.restarts]},
        )] + [Event(
            id=f"{a.id}:{a.incarnation}:decided", kind="decision", allocation_id=a.id, at=now, incarnation=a.incarnation,
            reason=f"{decision.per_child.get(a.id, decision.directive.value)}: {decision.reason}", by=parent_id,
            data={"directive": decision.per_child.get(a.id, decision.directive.value)},
        ) for a in failed])
        for child_id in decision.stops:
            self.stop(child_id, include_root=True, reason=f"supervisor {parent_id}: stop", by=parent_id)
        if decision.escalate:
            self._escalate(parent_id, label == Label.NODE.value, failed, decision.reason)
            return decision
        if decision.restarts:
            self.store.set_actor_fields(actor_id=parent_id, fields={"restart_log": list(decision.restart_log)})
            for r in decision.restarts:
                self.store.set_fields(allocation_id=r.child_id, incarnation=None,
                                      fields={"restart_at": now + r.delay_s})
                if r.was_live:
                    self.stop(r.child_id, include_root=True, reason=f"{policy.strategy.value} restart", by=parent_id)
            self.dispatcher.restart(
                parent_id=parent_id,
                items=[(r.child_id, r.from_incarnation if not r.was_live else -1, r.backoff_level) for r in decision.restarts],
                reason=decision.reason,
                countdown=max(r.delay_s for r in decision.restarts),
            )
        return decision

    def children_of(self, parent_id: str) -> list[AllocationRecord]:
        return self._children(parent_id)

    def _children(self, parent_id: str) -> list[AllocationRecord]:
        out: list[AllocationRecord] = []
        after = None
        while True:
            page = self.store.children(parent_id=parent_id, after=after, limit=1000)
            out.extend(page)
            if len(page) < 1000:
                break
            after = page[-1].id
        return sorted(out, key=lambda a: (a.created_at, a.extra.get("seq", 0), a.id))

    def _escalate(self, parent_id: str, parent_is_node: bool, failed: Sequence[AllocationRecord], reason: str) -> None:
        if parent_is_node:
            # The top of the hierarchy: stop what is below the failed children and report.
            for a in failed:
                self.stop(a.id, include_root=True, reason=f"escalated to node {parent_id}: {reason}", by=parent_id)
            self.store.record_events(events=[Event(
                id=f"{parent_id}:escalated:{a.id}:{a.incarnation}", kind="escalated", allocation_id=a.id,
                at=self.clock(), incarnation=a.incarnation, reason=f"failure reported at node {parent_id}: {reason}",
                by=parent_id, data={"node": parent_id},
            ) for a in failed])
            return
        parent = self.store.set_fields(allocation_id=parent_id, incarnation=None, fields={"escalated": reason})
        if parent is not None:
            self.stop(parent_id, include_root=True, reason=f"escalated: {reason}", by=parent_id)

    # --- restarting ---------------------------------------------------------------------
    def restart(self, parent_id: str, items: Sequence[tuple[str, int, int]], reason: str, attempt: int = 0) -> list[AllocationRecord]:
        """Start new incarnations once their subtrees are terminal; re-schedules itself while they are not."""
        current = {a.id: a for a in self.store.get_allocations(allocation_ids=[i[0] for i in items])}
        todo: list[tuple[AllocationRecord, int]] = []
        for child_id, from_inc, level in items:
            a = current.get(child_id)
            if a is None or (from_inc != -1 and a.incarnation != from_inc):
                continue  # stale: already restarted
            if a.state not in RESTARTABLE and a.state not in LIVE:
                continue
            todo.append((a, level))
        if not todo:
            return []
        waiting = [a for a, _ in todo if a.state in LIVE]
        live = self.store.live_children(parent_ids=[a.id for a, _ in todo])
        if waiting or any(live.get(a.id, 0) for a, _ in todo):
            for a, _ in todo:
                if a.state in LIVE or live.get(a.id, 0):
                    self.stop(a.id, include_root=a.state in LIVE, reason="restart: stopping first", by=parent_id)
            fixed = [(a.id, a.incarnation if a.state in TERMINAL else -1, level) for a, level in todo]
            self.dispatcher.restart(parent_id=parent_id, items=fixed, reason=reason, countdown=RESTART_POLL_S)
            return []
        now = self.clock()
        for tries in range(5):
            snapshot = self.store.node_capacities()
            try:
                placements = place(
                    [Demand(Resources(a.cpu, a.memory, a.gpus, a.gpu_model), prefer_node_id=a.node_id) for a, _ in todo],
                    snapshot, field="restart",
                )
            except NoCapacity:
                log.warning("no capacity to restart %s under %s; the reconciler retries", [a.id for a, _ in todo], parent_id)
                return []
            restart_items = [
                RestartItem(a.id, a.incarnation, p.node_id, p.gpu_ids, a.cpu, a.memory, level)
                for (a, level), p in zip(todo, placements)
            ]
            parent_log = self._restart_log(parent_id)
            try:
                restarted = self.store.restart_allocations(
                    parent_id=parent_id, items=restart_items, restart_log=parent_log, reason=f"restart: {reason}", now=now
                )
            except CreateRefused as refused:
                if refused.reason == CreateRefused.NO_CAPACITY:
                    continue
                return []  # parent gone or ending, or a stale incarnation: nothing to do
            by_node: dict[str, list[tuple[str, int]]] = {}
            for r in restarted:
                if r.executor == "process":
                    by_node.setdefault(r.node_id, []).append((r.id, r.incarnation))
            for node_id, keys in by_node.items():
                self.dispatcher.run(node_id=node_id, items=keys)
            self.notify()
            return restarted
        return []

    def _restart_log(self, parent_id: str) -> list[float]:
        node = self.store.get_node(node_id=parent_id)
        if node is not None:
            return [float(t) for t in node.extra.get("restart_log") or []]
        parent = self.store.get_allocation(allocation_id=parent_id)
        if parent is None:
            raise NotFound(f"no parent {parent_id!r}", field="parent")
        return [float(t) for t in parent.extra.get("restart_log") or []]

    # --- node loss ----------------------------------------------------------------------
    def reap(self, *, grace_s: float) -> dict[str, int]:
        """Declare nodes whose heartbeat is older than grace lost; their allocations' parents decide once each."""
        now = self.clock()
        reaped: dict[str, int] = {}
        for node_id in self.store.stale_nodes(heartbeat_before=now - grace_s):
            lost = self.store.mark_node_lost(node_id=node_id, heartbeat_before=now - grace_s, now=now)
            if lost is None:
                continue
            reaped[node_id] = len(lost)
            log.warning("node %s lost (no heartbeat for %.1fs): %d allocations lost", node_id, grace_s, len(lost))
            if lost:
                self.on_terminated([(a.id, a.incarnation) for a in lost])
        return reaped

    # --- reconciling: converge what a lost message or a dead worker left behind ---------
    def reconcile(self, *, placed_deadline_s: float, starting_deadline_s: float, stopping_slack_s: float = 30.0,
                  restart_slack_s: float = 5.0, limit: int = 1000) -> dict[str, int]:
        now = self.clock()
        done = {"redispatched": 0, "start_lost": 0, "stops": 0, "restarts": 0}
        placed = self.store.stuck(states=[State.PLACED], updated_before=now - placed_deadline_s, limit=limit)
        by_node: dict[str, list[Key]] = {}
        for a in placed:
            if a.executor == "process":
                by_node.setdefault(a.node_id, []).append((a.id, a.incarnation))
        for node_id, keys in by_node.items():
            self.dispatcher.run(node_id=node_id, items=keys)
            done["redispatched"] += len(keys)
        starting = self.store.stuck(states=[State.STARTING], updated_before=now - starting_deadline_s, limit=limit)
        if starting:
            results = self.store.transition_many(changes=[
                Change(a.id, {State.STARTING: State.FAILED}, a.incarnation, {"exit_code": -1},
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
            self.advance([a.id for a in stopping])
            done["stops"] = len(stopping)
        due = self.store.due_restarts(before=now - restart_slack_s, limit=limit)
        grouped: dict[str, list[tuple[str, int, int]]] = {}
        for parent_id, child_id, inc in due:
            a = self.store.get_allocation(allocation_id=child_id)
            level = int(a.extra.get("backoff_level") or 0) + 1 if a else 1
            grouped.setdefault(parent_id, []).append((child_id, inc, level))
        for parent_id, items in grouped.items():
            self.restart(parent_id, items, "reconciler: restart was due")
            done["restarts"] += len(items)
        return done
