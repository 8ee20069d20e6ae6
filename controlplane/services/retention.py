"""Retention: the history and the ended allocations do not grow for ever.

Run by the one leading scheduler (workers/scheduler.py) every `interval`: events older than a
maximum age, or beyond a maximum count (the oldest first), go; so do ended allocations that
nothing depends on (terminal, no restart decided, no children left: a live allocation's parent
chain is never touched, and a parent goes only after its children), by age or beyond a count.
Every store call deletes one small batch, and one run does at most a few, so writers never
wait long behind it; what is left goes on the next run, which then comes sooner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controlplane.domain.clock import wall_clock
from controlplane.ports.store import Retention

#: an ended allocation is never pruned sooner than this after its last change, whatever the count:
#: its supervisor, watchers and job decide about it first
MIN_AGE_S = 60.0


def _below(t: float) -> float:
    """Just below a time read back from an engine, which may round it (FalkorDB keeps 15 significant digits): what
    is strictly older than it is strictly older than the instant itself."""
    return t - abs(t) * 1e-14


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    events_max_age_s: float = 7 * 86_400.0
    events_max_count: int = 1_000_000
    allocations_max_age_s: float = 7 * 86_400.0
    allocations_max_count: int = 100_000
    #: rows one statement deletes at most, and statements one run makes at most per kind
    batch: int = 500
    max_batches: int = 10


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int
    allocations: int
    #: a run stopped at its batch limit: there is more to prune now
    more: bool


class RetentionService:
    def __init__(self, store: Retention, *, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.clock = clock

    def prune(self, policy: RetentionPolicy) -> Pruned:
        """One run: at most `max_batches` batches of events and of allocations.

        Over a count, what goes is strictly older than the oldest one kept: the count is kept at least (events
        that share an instant with the oldest kept stay with it)."""
        now = self.clock()
        before = now - policy.events_max_age_s
        oldest_kept = self.store.event_cutoff(keep=policy.events_max_count)
        if oldest_kept is not None:
            before = max(before, _below(oldest_kept))
        events, more_events = self._batches(lambda: self.store.prune_events(before=before, limit=policy.batch), policy)
        ended_before = now - policy.allocations_max_age_s
        oldest_kept = self.store.allocation_cutoff(keep=policy.allocations_max_count)
        if oldest_kept is not None:
            ended_before = max(ended_before, min(_below(oldest_kept), now - MIN_AGE_S))
        allocations, more_allocations = self._batches(
            lambda: len(self.store.prune_allocations(before=ended_before, limit=policy.batch)), policy)
        return Pruned(events=events, allocations=allocations, more=more_events or more_allocations)

    @staticmethod
    def _batches(one: Callable[[], int], policy: RetentionPolicy) -> tuple[int, bool]:
        """Batches until one finds nothing (a batch of allocations may leave their parents prunable)."""
        total = 0
        for _ in range(policy.max_batches):
            n = one()
            total += n
            if n == 0:
                return total, False
        return total, True
