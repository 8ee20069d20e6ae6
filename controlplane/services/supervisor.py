"""Supervisors at work: react to terminated allocations, decide, restart, stop subtrees.

The decision itself is the pure `decide()`; this module gathers the situation
from the graph and carries the decision out with guarded, idempotent store
calls. A decision is keyed by the failures it reacts to (child, incarnation,
as the `terminated` message reported them) and recorded once
(`record_decision`) with the parent's incarnation, so a redelivered
`terminated` carries out the recorded decision again instead of deciding
twice, and only while the parent incarnation that decided lives. Restarts
name the incarnation they replace, so a redelivered `restart` finds it
replaced and does nothing. Long waits
(backoff, a subtree still stopping) go through the dispatcher as delayed
tasks, never as sleeps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Conflict, ControlPlaneError, NoCapacity, NotFound, Unsatisfiable
from controlplane.domain.lifecycle import LIVE, RESTARTABLE, STOP, STOPPED, TERMINAL, State
from controlplane.domain.placement import NoRoom, waiting_for
from controlplane.domain.records import AllocationRecord, Event
from controlplane.domain.specs import parse
from controlplane.domain.supervision import (
    Child,
    Decision,
    Directive,
    Failure,
    Restart,
    RestartType,
    Situation,
    Strategy,
    SupervisionPolicy,
    classify,
    decide,
    policy_from_json,
    restart_type_of,
)
from controlplane.domain.text import Id, checked
from controlplane.domain.vocabulary import Label
from controlplane.ports.dispatch import Dispatcher, Key, RestartKey
from controlplane.ports.store import Change, CreateRefused, Hierarchy, History, Ledger, RestartItem, Topology
from controlplane.services.placement import Placer, demand_of

log = logging.getLogger(__name__)

RESTART_POLL_S = 0.25
#: a decided restart not carried out this long after its delay is picked up by the reconciler
RESTART_SLACK_S = 5.0
#: how soon a restart that found no node with room is tried again
WAIT_RETRY_S = 2.0
#: one_for_one restarts of one decision go out in waves this far apart (their jittered delays, bucketed)
RESTART_WAVE_S = 0.1


class SupervisorStore(Ledger, Hierarchy, History, Topology, Protocol):
    """What supervision reads and writes."""


@dataclass
class Hooks:
    """What orchestration code (native executors, jobs) hears after supervision has decided: no service holds another."""

    ended: list[Callable[[Sequence[AllocationRecord]], None]] = field(default_factory=list)
    watched: list[Callable[[dict[str, list[str]], Sequence[AllocationRecord]], None]] = field(default_factory=list)


class SupervisorService:
    def __init__(
        self,
        store: SupervisorStore,
        dispatcher: Dispatcher,
        placer: Placer,
        *,
        clock: Callable[[], float] = wall_clock,
        notify: Callable[[], None] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.placer = placer
        self.clock = clock
        self.notify = notify or (lambda: None)
        self.hooks = hooks or Hooks()

    # --- stopping: children first, deepest first ----------------------------------------
    def stop(self, root_id: str, *, include_root: bool = True, reason: str = "stop requested", by: str = "user") -> list[AllocationRecord]:
        """Stop the subtree: unstarted ones end at once, started ones go `stopping`; leaves get the signal first."""
        targets = self.store.subtree_to_stop(root_id=root_id, include_root=include_root)
        if not targets:
            return []
        now = self.clock()
        changes = [Change(t.allocation_id, STOP, t.incarnation, {"stop_requested_at": now}, reason=reason, by=by)
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
                    changes=[Change(a.id, STOPPED, a.incarnation, leaf_only=True, reason="subtree stopped", by="supervisor")],
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
        wanted = dict(keys)
        fetched = self.store.get_allocations(allocation_ids=list(wanted))
        #: what this message reports of each parent's children: the key of that parent's decision
        reported: dict[str, list[Key]] = {}
        for a in fetched:
            reported.setdefault(a.parent_id, []).append((a.id, wanted[a.id]))
        records = [a for a in fetched if a.state in TERMINAL and wanted.get(a.id) == a.incarnation]
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
            self.supervise(parent_id, children, reported=reported[parent_id])
        self.advance({a.parent_id for a in records})
        ended = self.store.get_allocations(allocation_ids=[a.id for a in records])
        for hook in self.hooks.ended:
            hook(ended)
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
            for hook in self.hooks.watched:
                hook(watchers, records)

    def supervise(
        self, parent_id: str, failed: Sequence[AllocationRecord], *, reported: Sequence[Key] | None = None
    ) -> Decision | None:
        """Decide once about these failures of the parent's children, and carry the decision out.

        `reported`: the (child, incarnation) pairs the message reported for this parent, the key of the
        decision (default: the failures). A redelivery after some of them were restarted reports the same
        pairs, so it finds the decision made for all of them, never a new one about the rest.
        """
        if all(a.state is State.SUCCEEDED and restart_type_of(a.extra.get("restart_type")) is not RestartType.PERMANENT
               for a in failed):
            return None  # normal exits of non-permanent children: nothing to decide, no siblings to read
        parent = self._parent(parent_id)
        if parent is None:
            return None
        is_node, policy_json, restart_log, incarnation = parent
        policy = policy_from_json(policy_json)
        siblings = self.children_of(parent_id)
        situation = Situation(
            parent_id=parent_id,
            parent_is_node=is_node,
            policy=policy,
            restart_log=restart_log,
            children=tuple(
                Child(c.id, i, c.state in LIVE, c.incarnation, restart_type_of(c.extra.get("restart_type")),
                      int(c.extra.get("backoff_level") or 0), c.extra.get("started_at"))
                for i, c in enumerate(siblings)
            ),
            failures=tuple(Failure(a.id, a.incarnation, classify(a.state.value, a.exit_code, a.error), a.exit_code, a.error)
                           for a in failed),
        )
        now = self.clock()
        decision = decide(situation, now)
        if decision.directive is None:
            return decision
        key = ",".join(sorted(f"{i}:{n}" for i, n in reported or [(a.id, a.incarnation) for a in failed]))
        event = Event(
            id=f"{parent_id}:decision:{hashlib.sha256(key.encode()).hexdigest()[:16]}", kind="decision",
            allocation_id=parent_id, at=now, incarnation=incarnation, reason=decision.reason, by=parent_id,
            data={"directive": decision.directive.value, "children": sorted(decision.per_child),
                  "restarts": [r.child_id for r in decision.restarts], "failures": key, "plan": _plan(decision)},
        )
        recorded, fresh = self.store.record_decision(
            parent_id=parent_id, event=event,
            restart_log=list(decision.restart_log) if decision.restarts else None,
            restart_at={r.child_id: now + r.delay_s + RESTART_SLACK_S for r in decision.restarts},
        )
        if not fresh:
            if recorded.incarnation != incarnation:
                log.info("decision %s was made by incarnation %s of %s, now ended; nothing to carry out",
                         recorded.id, recorded.incarnation, parent_id)
                return None
            log.info("decision %s was already made; carrying it out again", recorded.id)
            decision = _decision_of(recorded, decision)
        self.store.record_events(events=[Event(
            id=f"{a.id}:{a.incarnation}:decided", kind="decision", allocation_id=a.id, at=recorded.at, incarnation=a.incarnation,
            reason=f"{decision.per_child.get(a.id, decision.directive.value if decision.directive else '')}: {decision.reason}",
            by=parent_id, data={"directive": decision.per_child.get(a.id, decision.directive.value if decision.directive else "")},
        ) for a in failed])
        self._carry_out(parent_id, is_node, policy, decision, failed)
        return decision

    def _carry_out(self, parent_id: str, is_node: bool, policy: SupervisionPolicy, decision: Decision,
                   failed: Sequence[AllocationRecord]) -> None:
        """Every step is idempotent: carrying out a recorded decision again changes nothing twice."""
        for child_id in decision.stops:
            self.stop(child_id, include_root=True, reason=f"supervisor {parent_id}: stop", by=parent_id)
        if decision.escalate:
            self._escalate(parent_id, is_node, failed, decision.reason)
            return
        if decision.restarts:
            for r in decision.restarts:
                if r.was_live:
                    self.stop(r.child_id, include_root=True, reason=f"{policy.strategy.value} restart", by=parent_id)
            for countdown, wave in _waves(policy, decision.restarts):
                self.dispatcher.restart(
                    parent_id=parent_id,
                    items=[(r.child_id, r.from_incarnation, r.backoff_level) for r in wave],
                    reason=decision.reason,
                    countdown=countdown,
                )

    def _parent(self, parent_id: str) -> tuple[bool, str | None, tuple[float, ...], int | None] | None:
        """(is a node, its policy, its restart log, its incarnation), or None when it is not there to decide."""
        label = self.store.actor_label(actor_id=parent_id)
        if label == Label.NODE.value:
            node = self.store.get_node(node_id=parent_id)
            if node is None:
                return None
            return True, node.extra.get("supervision"), tuple(float(t) for t in node.extra.get("restart_log") or ()), None
        parent = self.store.get_allocation(allocation_id=parent_id)
        if parent is None or parent.state not in LIVE or parent.state is State.STOPPING:
            return None  # the parent is ending: its children are being stopped, nothing to restart
        return (False, parent.extra.get("supervision"), tuple(float(t) for t in parent.extra.get("restart_log") or ()),
                parent.incarnation)

    def children_of(self, parent_id: str) -> list[AllocationRecord]:
        """Every child, in creation order."""
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
    def restart(self, parent_id: str, items: Sequence[RestartKey], reason: str) -> list[AllocationRecord]:
        """Start new incarnations once their subtrees are terminal; re-schedules itself while they are not.

        Placed by the same path and constraints as the spawn. With no node to take them, they wait
        (one event per reason) and the reconciler tries again.
        """
        current = {a.id: a for a in self.store.get_allocations(allocation_ids=[i[0] for i in items])}
        todo: list[tuple[AllocationRecord, int]] = []
        for child_id, from_inc, level in items:
            a = current.get(child_id)
            if a is None or a.incarnation != from_inc:
                continue  # stale: already restarted
            if a.state not in RESTARTABLE and a.state not in LIVE:
                continue
            todo.append((a, level))
        if not todo:
            return []
        live = self.store.live_children(parent_ids=[a.id for a, _ in todo])
        if any(a.state in LIVE or live.get(a.id, 0) for a, _ in todo):
            for a, _ in todo:
                if a.state in LIVE or live.get(a.id, 0):
                    self.stop(a.id, include_root=a.state in LIVE, reason="restart: stopping first", by=parent_id)
            fixed = [(a.id, a.incarnation, level) for a, level in todo]
            self.dispatcher.restart(parent_id=parent_id, items=fixed, reason=reason, countdown=RESTART_POLL_S)
            return []
        origin = self._origin(parent_id)
        if origin is None:
            self._abandon_restart([a for a, _ in todo])  # the parent is gone: nothing to restart under it
            return []
        for _ in range(5):
            now = self.clock()
            try:
                placements = self.placer.place([demand_of(a) for a, _ in todo], origin, field="restart")
            except (NoCapacity, Unsatisfiable) as exc:  # no node now, or none could ever: a node may join
                self._wait(parent_id, [a for a, _ in todo], exc, now)
                return []
            restart_items = [
                RestartItem(a.id, a.incarnation, p.node_id, p.gpu_ids, a.cpu, a.memory, level)
                for (a, level), p in zip(todo, placements, strict=True)
            ]
            try:
                restarted = self.store.restart_allocations(
                    parent_id=parent_id, items=restart_items, restart_log=self._restart_log(parent_id),
                    reason=f"restart: {reason}", now=now,
                )
            except CreateRefused as refused:
                if refused.reason == CreateRefused.NO_CAPACITY:
                    continue  # lost a race for the room: place again
                if refused.reason != CreateRefused.STALE:
                    self._abandon_restart([a for a, _ in todo])  # the parent is gone or ending
                return []
            by_node: dict[str, list[Key]] = {}
            natives = [(r.id, r.incarnation) for r in restarted if r.executor == "native"]
            for r in restarted:
                if r.executor == "process":
                    by_node.setdefault(r.node_id, []).append((r.id, r.incarnation))
            for node_id, keys in by_node.items():
                self.dispatcher.run(node_id=node_id, items=keys)
            if natives:
                self.dispatcher.start_native(keys=natives)
            self.notify()
            return restarted
        return []

    def _wait(self, parent_id: str, waiting: Sequence[AllocationRecord], refused: ControlPlaneError, now: float) -> None:
        """No node can take them now: say what each waits for (the `waiting` property), one event per change of
        it (what stands in the way now, e.g. free cpu, is in the event, not in its identity), and try again
        later (the reconciler)."""
        detail = refused.detail if isinstance(refused, NoRoom) and refused.detail else refused.message
        events = []
        for a in waiting:
            why = f"waiting for {waiting_for(demand_of(a))}"
            self.store.set_fields(allocation_id=a.id, incarnation=a.incarnation,
                                  fields={"restart_at": now + WAIT_RETRY_S, "waiting": why})
            digest = hashlib.sha256(f"{why}|{refused.code.value}".encode()).hexdigest()[:12]
            events.append(Event(
                id=f"{a.id}:{a.incarnation}:waiting:{digest}", kind="waiting", allocation_id=a.id, at=now,
                incarnation=a.incarnation, reason=f"{why}: {detail}", by=parent_id,
                data={"code": refused.code.value, "field": refused.field},
            ))
        self.store.record_events(events=events)
        self.notify()

    def _abandon_restart(self, records: Sequence[AllocationRecord]) -> None:
        """A restart that can no longer happen is no longer due."""
        for a in records:
            self.store.set_fields(allocation_id=a.id, incarnation=a.incarnation, fields={"restart_at": None, "waiting": None})

    def _origin(self, parent_id: str) -> str | None:
        """The node RTTs are measured from: the parent's node (a Node parent is its own)."""
        if self.store.actor_label(actor_id=parent_id) == Label.NODE.value:
            return parent_id
        parent = self.store.get_allocation(allocation_id=parent_id)
        return parent.node_id if parent is not None else None

    def _restart_log(self, parent_id: str) -> list[float]:
        node = self.store.get_node(node_id=parent_id)
        if node is not None:
            return [float(t) for t in node.extra.get("restart_log") or []]
        parent = self.store.get_allocation(allocation_id=parent_id)
        if parent is None:
            raise NotFound(f"no parent {parent_id!r}", field="parent")
        return [float(t) for t in parent.extra.get("restart_log") or []]

    # --- policy -------------------------------------------------------------------------
    @checked(actor_id=Id("id"))
    def set_policy(self, actor_id: str, policy: SupervisionPolicy | dict[str, Any]) -> None:
        """Change how a node or a live allocation supervises its children."""
        parsed = parse(SupervisionPolicy, policy, field="policy")
        label = self.store.actor_label(actor_id=actor_id)
        if label not in (Label.NODE.value, Label.ALLOCATION.value):
            raise NotFound(f"no node or allocation {actor_id!r}", field="id")
        if label == Label.ALLOCATION.value:
            a = self.store.get_allocation(allocation_id=actor_id)
            if a is None:
                raise NotFound(f"no node or allocation {actor_id!r}", field="id")
            if a.state in TERMINAL or a.state is State.STOPPING:
                raise Conflict(f"allocation {actor_id} is {a.state.value}; its policy can no longer change", field="id")
        self.store.set_actor_fields(
            actor_id=actor_id,
            fields={"supervision": parsed.model_dump_json(), "child_policy": parsed.child_policy.value},
        )


def _waves(policy: SupervisionPolicy, restarts: Sequence[Restart]) -> list[tuple[float, list[Restart]]]:
    """When each restart goes out: one_for_one restarts spread by their own (jittered) delays, bucketed
    into waves so that a correlated failure neither restarts everything at one instant nor sends a message
    per child; a group strategy restarts its set together, in order, after the longest delay."""
    if policy.strategy is not Strategy.ONE_FOR_ONE:
        return [(max(r.delay_s for r in restarts), list(restarts))]
    waves: dict[int, list[Restart]] = {}
    for r in restarts:
        waves.setdefault(math.ceil(round(r.delay_s / RESTART_WAVE_S, 6)), []).append(r)
    return [(max(r.delay_s for r in wave), wave) for _, wave in sorted(waves.items())]


def _plan(decision: Decision) -> str:
    """What carrying the decision out needs, as stored text (graph properties hold no nested values)."""
    return json.dumps({
        "stops": list(decision.stops),
        "escalate": decision.escalate,
        "restarts": [[r.child_id, r.from_incarnation, r.delay_s, r.backoff_level, r.was_live] for r in decision.restarts],
    })


def _decision_of(recorded: Event, fallback: Decision) -> Decision:
    """The decision recorded by an earlier delivery of the same failures."""
    try:
        plan = json.loads(str(recorded.data["plan"]))
        restarts = tuple(Restart(str(c), int(f), float(d), int(lv), bool(w)) for c, f, d, lv, w in plan["restarts"])
        directive = Directive(str(recorded.data["directive"]))
    except (KeyError, ValueError, TypeError):
        log.warning("decision %s has no readable plan; using the one decided now", recorded.id)
        return fallback
    return Decision(directive, recorded.reason or fallback.reason, restarts=restarts, stops=tuple(plan["stops"]),
                    escalate=bool(plan["escalate"]), per_child=fallback.per_child)
