"""GremlinStore's supervision methods: restarts, subtree stops, orphans, node loss, watches, events.

The Gremlin counterpart of the supervision part of cypher/statements.py. Kept apart
from store.py to keep each module short; the rules of writes.py hold here too (one
traversal per state change, precondition inside, one result back, values as
arguments).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Operator, P, Scope

from controlplane.domain.lifecycle import ACCEPTS_CHILDREN, LIVE, NODE_LOST, RESTARTABLE, State
from controlplane.domain.records import AllocationRecord, Event
from controlplane.domain.vocabulary import CLEARED_ON_RESTART
from controlplane.ports.store import CreateRefused, RestartItem, ToStop, node_demands
from graph_schema.gremlin.remote import props_of, value
from graph_schema.gremlin.steps import (
    ACTORS,
    CLAIMS,
    EV,
    GPU_OWNER,
    PARENT_OF,
    RUNS_ON,
    WATCHES,
    A,
    G,
    N,
    add,
    event_here,
    having,
    new_vertex,
    set_props,
    subtract,
)
from graph_schema.gremlin.writes import fits

if TYPE_CHECKING:
    from graph_schema.gremlin.remote import Remote

_ACCEPTS = sorted(s.value for s in ACCEPTS_CHILDREN)
_LIVE = sorted(s.value for s in LIVE)
_RESTARTABLE = sorted(s.value for s in RESTARTABLE)
_NODE_LOST_FROM = sorted(s.value for s in NODE_LOST.steps)
_STALE_OK = ["ready", "draining"]


def _allocation(m: Any) -> AllocationRecord:
    return AllocationRecord.from_props(props_of(m))


class SupervisionMixin:
    _remote: Remote

    def restart_allocations(
        self, *, parent_id: str, items: Sequence[RestartItem], restart_log: Sequence[float], reason: str, now: float
    ) -> list[AllocationRecord]:
        if not items:
            return []
        ordered = node_demands(items)
        log = [float(t) for t in restart_log]
        tick = time.time_ns()
        r = self._remote.one(lambda g: _restart(g, parent_id, items, ordered, log, reason, now, tick))
        if r["outcome"] == "restarted":
            return [_allocation(m) for m in r["allocations"]]
        if r["outcome"] == "parent_missing":
            raise CreateRefused(CreateRefused.PARENT_MISSING, parent_id)
        if r["outcome"] == "parent_not_live":
            raise CreateRefused(CreateRefused.PARENT_NOT_LIVE, f"{parent_id} is {r['parent_state']}")
        if r["outcome"] == "stale":
            current = {m["id"]: props_of(m) for m in r["allocations"]}
            for it in items:
                a = current.get(it.allocation_id)
                if a is None or a.get("incarnation") != it.from_incarnation or a.get("state") not in _RESTARTABLE:
                    raise CreateRefused(CreateRefused.STALE, it.allocation_id)
        raise CreateRefused(CreateRefused.NO_CAPACITY, ", ".join(d["node_id"] for d in ordered))

    def subtree_to_stop(self, *, root_id: str, include_root: bool) -> list[ToStop]:
        # walk down only through cascading actors; depth = vertices on the path - 1
        cascades = __.not_(__.has("child_policy", P.neq("cascade")))
        rows = self._remote.run(
            lambda g: g.V(root_id).has_label(*ACTORS)
            .emit(__.loops().is_(P.gte(0 if include_root else 1)))
            .repeat(cascades.out(PARENT_OF).has_label(A)).times(256)
            .has_label(A).has("state", P.within(_LIVE))
            .project("id", "state", "incarnation", "depth")
            .by("id").by("state").by("incarnation").by(__.path().count(Scope.local)),
            write=False,
        )
        found = [ToStop(r["id"], State(r["state"]), int(r["incarnation"]), int(r["depth"]) - 1) for r in rows]
        return sorted(found, key=lambda x: (-x.depth, x.allocation_id))

    def mark_orphans(self, *, parent_id: str, now: float) -> list[str]:
        ids = self._remote.one(
            lambda g: g.V(parent_id).has_label(*ACTORS).out(PARENT_OF).has_label(A).has("state", P.within(_LIVE))
            .property("orphan", True).property("orphaned_at", now).values("id").fold()
        )
        return list(ids or [])

    def live_children(self, *, parent_ids: Sequence[str]) -> dict[str, int]:
        if not parent_ids:
            return {}
        # an abandoning parent waits for none of its children
        live = __.choose(__.has("child_policy", "abandon"), __.constant(0),
                         __.out(PARENT_OF).has_label(A).has("state", P.within(_LIVE)).count())
        rows = self._remote.run(
            lambda g: g.V(*parent_ids).has_label(*ACTORS).project("id", "n").by("id").by(live),
            write=False,
        )
        return {r["id"]: int(r["n"]) for r in rows}

    def set_fields(self, *, allocation_id: str, incarnation: int | None, fields: dict[str, Any]) -> AllocationRecord | None:
        def build(g: Any) -> GraphTraversal:
            t = g.V(allocation_id).has_label(A)
            if incarnation is not None:
                t = t.has("incarnation", value(incarnation))
            return set_props(t, fields, drop_none=True).element_map()

        m = self._remote.one(build)
        return _allocation(m) if m else None

    def set_actor_fields(self, *, actor_id: str, fields: dict[str, Any]) -> None:
        self._remote.run(lambda g: set_props(g.V(actor_id).has_label(*ACTORS), fields, drop_none=True).values("id"))

    def watched_nodes(self) -> list[str]:
        return list(self._remote.run(lambda g: having(g, N, "status", _STALE_OK).order().by("id").values("id"), write=False))

    def stale_nodes(self, *, heartbeat_before: float) -> list[str]:
        return list(self._remote.run(
            lambda g: having(g, N, "status", _STALE_OK).has("heartbeat_at", P.lt(heartbeat_before))
            .order().by("id").values("id"),
            write=False,
        ))

    def mark_node_lost(self, *, node_id: str, heartbeat_before: float, now: float) -> list[AllocationRecord] | None:
        tick = time.time_ns()
        r = self._remote.one(lambda g: _mark_node_lost(g, node_id, heartbeat_before, now, tick))
        return [_allocation(m) for m in r["victims"]] if r else None

    def watch(self, *, watcher_id: str, target_id: str, now: float) -> str | None:
        edge = __.coalesce(
            __.out_e(WATCHES).where(__.in_v().has_id(target_id)),
            __.add_e(WATCHES).to(__.V(target_id)).property("since", now),
        )
        state = self._remote.one(
            lambda g: g.V(watcher_id).has_label(A).where(__.V(target_id).has_label(A))
            .side_effect(edge).V(target_id).values("state")
        )
        return str(state) if state is not None else None

    def unwatch(self, *, watcher_id: str, target_id: str) -> bool:
        n = self._remote.one(
            lambda g: g.V(watcher_id).has_label(A).out_e(WATCHES).where(__.in_v().has_id(target_id).has_label(A))
            .fold().side_effect(__.unfold().drop()).count(Scope.local)
        )
        return bool(n)

    def watchers(self, *, target_ids: Sequence[str]) -> dict[str, list[str]]:
        if not target_ids:
            return {}
        rows = self._remote.run(
            lambda g: g.V(*target_ids).has_label(A).where(__.in_(WATCHES).has_label(A))
            .project("id", "w").by("id").by(__.in_(WATCHES).has_label(A).values("id").fold()),
            write=False,
        )
        return {r["id"]: list(r["w"]) for r in rows}

    def record_events(self, *, events: Sequence[Event]) -> None:
        if not events:
            return

        def build(g: Any) -> GraphTraversal:
            t = g.inject(0)
            tick = time.time_ns()
            for i, e in enumerate(events):
                p = {**e.to_props(), "tick": tick + i}
                new = new_vertex(EV, p["id"], {k: v for k, v in p.items() if k != "id"})
                t = t.side_effect(__.V(p["id"]).fold().coalesce(__.unfold(), new))
            return t

        self._remote.run(build)

    def record_decision(
        self, *, parent_id: str, event: Event, restart_log: Sequence[float] | None, restart_at: Mapping[str, float]
    ) -> tuple[Event, bool]:
        p = {**event.to_props(), "tick": time.time_ns()}
        fresh = __.side_effect(new_vertex(EV, event.id, {k: v for k, v in p.items() if k != "id"}))
        if restart_log is not None:
            fresh = fresh.property("restart_log", value([float(t) for t in restart_log]))
        for child_id, at in restart_at.items():
            fresh = fresh.side_effect(__.out(PARENT_OF).has_id(child_id).has_label(A).property("restart_at", float(at)))
        r = self._remote.one(
            lambda g: g.V(parent_id).has_label(*ACTORS)
            .choose(__.V(event.id).has_label(EV), __.constant(False), fresh.constant(True))
            .project("fresh", "event").by(__.identity()).by(__.V(event.id).has_label(EV).element_map())
        )
        if not r:  # the parent is gone: nothing was recorded
            return event, False
        return Event.from_props(props_of(r["event"])), bool(r["fresh"])

    def events(self, *, allocation_id: str | None, since: float | None, limit: int) -> list[Event]:
        def build(g: Any) -> GraphTraversal:
            t = g.V().has_label(EV)
            if allocation_id is not None:
                t = t.has("allocation_id", allocation_id)
            if since is not None:
                t = t.has("at", P.gt(since))
            return t.order().by("at").by(__.coalesce(__.values("tick"), __.constant(0))).by("id").limit(int(limit)).element_map()

        return [Event.from_props(props_of(m)) for m in self._remote.run(build, write=False)]

    def stuck(self, *, states: Sequence[State], updated_before: float, limit: int) -> list[AllocationRecord]:
        if not states:
            return []
        rows = self._remote.run(
            lambda g: having(g, A, "state", [s.value for s in states])
            .has("updated_at", P.lt(updated_before)).order().by("updated_at").limit(int(limit)).element_map(),
            write=False,
        )
        return [_allocation(m) for m in rows]

    def due_restarts(self, *, before: float, limit: int) -> list[tuple[str, str, int]]:
        rows = self._remote.run(
            lambda g: having(g, A, "state", _RESTARTABLE).has("restart_at", P.lt(before))
            .order().by("restart_at").limit(int(limit))
            .project("p", "id", "inc").by("parent_id").by("id").by("incarnation"),
            write=False,
        )
        return [(r["p"], r["id"], int(r["inc"])) for r in rows]


def _restart(
    g: Any, parent_id: str, items: Sequence[RestartItem], demands: Sequence[dict[str, Any]],
    restart_log: list[float], reason: str, now: float, tick: int,
) -> GraphTraversal:
    """Terminal incarnations become incarnation + 1 in `placed` on nodes with room; the parent's log updated; all or nothing."""
    ids = [it.allocation_id for it in items]
    parent_live = __.V(parent_id).or_(__.has_label(N), __.has_label(A).has("state", P.within(_ACCEPTS)))
    current = [
        __.V(parent_id).out(PARENT_OF).has_id(it.allocation_id).has_label(A)
        .has("incarnation", value(it.from_incarnation)).has("state", P.within(_RESTARTABLE))
        for it in items
    ]
    writes = __.identity()
    for d in demands:
        writes = writes.side_effect(subtract(subtract(__.V(d["node_id"]), "cpu_free", d["cpu"]), "memory_free", d["memory"]))
    writes = writes.side_effect(__.V(parent_id).property("restart_log", value(restart_log)))
    for it in items:
        writes = writes.side_effect(_new_incarnation(parent_id, it, reason, now, tick))
    t = g.inject(0).choose(
        __.not_(__.V(parent_id).has_label(*ACTORS)), __.constant("parent_missing"),
        __.choose(
            __.not_(parent_live), __.constant("parent_not_live"),
            __.choose(
                __.not_(__.and_(*current)), __.constant("stale"),
                __.choose(__.and_(*[fits(d) for d in demands]), writes.constant("restarted"), __.constant("no_capacity")),
            ),
        ),
    )
    return t.project("outcome", "parent_state", "allocations").by(__.identity()).by(
        __.coalesce(__.V(parent_id).values("state"), __.constant(""))
    ).by(__.V(*ids).has_label(A).element_map().fold())


def _new_incarnation(parent_id: str, it: RestartItem, reason: str, now: float, tick: int) -> GraphTraversal:
    # the state it leaves, kept in the path for the event
    t = __.V(it.allocation_id).as_("restarted").values("state").as_("restart_from").select("restarted")
    t = t.side_effect(__.out_e(RUNS_ON).drop())
    t = t.property("state", State.PLACED.value)
    t = add(add(t, "incarnation", 1), "version", 1)
    restarts = __.coalesce(__.values("restarts"), __.constant(0))
    t = t.sack(Operator.assign).by(restarts).sack(Operator.sum_).by(__.constant(1)).property("restarts", __.sack())
    t = set_props(t, {"node_id": it.node_id, "gpu_ids": list(it.gpu_ids), "updated_at": now, "backoff_level": it.backoff_level})
    t = set_props(t, dict.fromkeys(CLEARED_ON_RESTART), drop_none=True)
    t = t.side_effect(__.add_e(RUNS_ON).to(__.V(it.node_id)))
    for gid in it.gpu_ids:
        t = t.side_effect(__.add_e(CLAIMS).to(__.V(gid).property("claimed_by", it.allocation_id)))
    event = {"to": State.PLACED.value, "at": now, "tick": tick, "reason": reason, "by": parent_id}
    return t.side_effect(event_here("transition", event, from_state=__.select("restart_from")))


def _mark_node_lost(g: Any, node_id: str, before: float, now: float, tick: int) -> GraphTraversal:
    """The node is declared lost once (status and stale heartbeat guard it); its live allocations become `lost`."""
    lost = f"node {node_id} lost"
    event = {"to": State.LOST.value, "at": now, "tick": tick, "reason": lost, "by": "reaper"}
    victim = add(__.in_(RUNS_ON).has_label(A).has("state", P.within(_NODE_LOST_FROM)).has("executor", "process"), "version", 1)
    victim = (
        victim.side_effect(event_here("transition", event, from_state=__.select("ev_of").values("state")))
        .property("state", State.LOST.value).property("updated_at", now).property("error", lost)
        .aggregate("victims")
    )
    gpus = __.in_(GPU_OWNER).has_label(G).has("claimed_by").side_effect(__.in_e(CLAIMS).drop()).properties("claimed_by").drop()
    t = g.V(node_id).has_label(N).has("status", P.within(_STALE_OK)).has("heartbeat_at", P.lt(before))
    t = add(t.property("status", "lost"), "version", 1).property("status_changed_at", now)
    t = t.sack(Operator.assign).by("cpu").property("cpu_free", __.sack())
    t = t.sack(Operator.assign).by("memory").property("memory_free", __.sack())
    t = t.side_effect(victim).side_effect(gpus)
    return t.project("id", "victims").by("id").by(__.select("victims").unfold().element_map().fold())

