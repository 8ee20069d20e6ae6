"""GremlinStore's retention: old events and ended allocations pruned in small batches.

The Gremlin counterpart of the retention statements in cypher/statements.py. Each batch is
one traversal (one transaction); an allocation changed by another transaction meanwhile
makes the commit fail and the batch is run again by Remote, its conditions read anew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import P, Scope

from controlplane.domain.lifecycle import TERMINAL
from graph_schema.gremlin.steps import EV, PARENT_OF, A, having

if TYPE_CHECKING:
    from graph_schema.gremlin.remote import Remote

_TERMINAL = sorted(s.value for s in TERMINAL)


def _prunable(g: Any, before: float) -> GraphTraversal:
    """Ended allocations nothing depends on: terminal, no restart decided, no children, last changed by `before`."""
    return (
        having(g, A, "state", _TERMINAL).has("updated_at", P.lt(before))
        .not_(__.has("restart_at")).not_(__.out(PARENT_OF).has_label(A))
    )


class RetentionMixin:
    _remote: Remote

    def event_cutoff(self, *, keep: int) -> float | None:
        excess = int(self._remote.one(lambda g: g.V().has_label(EV).count(), write=False)) - max(1, int(keep))
        if excess <= 0:
            return None
        found = self._remote.run(lambda g: g.V().has_label(EV).values("at").order().skip(excess).limit(1), write=False)
        return float(found[0]) if found else None

    def prune_events(self, *, before: float, limit: int) -> int:
        n = self._remote.one(
            lambda g: g.V().has_label(EV).has("at", P.lt(float(before))).limit(int(limit)).fold()
            .side_effect(__.unfold().drop()).count(Scope.local)
        )
        return int(n or 0)

    def allocation_cutoff(self, *, keep: int) -> float | None:
        excess = int(self._remote.one(lambda g: having(g, A, "state", _TERMINAL).count(), write=False)) - max(1, int(keep))
        if excess <= 0:
            return None
        found = self._remote.run(
            lambda g: having(g, A, "state", _TERMINAL).values("updated_at").order().skip(excess).limit(1), write=False)
        return float(found[0]) if found else None

    def prune_allocations(self, *, before: float, limit: int) -> list[str]:
        # the ids are read before the drop: a removed vertex has no properties left to read
        r = self._remote.one(
            lambda g: _prunable(g, before).order().by("updated_at").limit(int(limit)).fold()
            .project("ids", "gone").by(__.unfold().values("id").fold()).by(__.unfold().drop().fold())
        )
        return list(r["ids"]) if r else []
