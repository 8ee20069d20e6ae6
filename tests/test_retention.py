"""Retention on every engine (see the `store` fixture): old events and ended allocations are pruned in small
batches, and nothing that lives, or that something living depends on, is touched.

Given / When / Then, asserting on what a user observes afterwards: the events, the hierarchy, the listings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain.lifecycle import CLAIM, RUN, State
from controlplane.domain.records import AllocationRecord, Event, Exit
from controlplane.domain.traversal import build_traversal
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.services.retention import MIN_AGE_S, RetentionPolicy
from controlplane.wiring import assemble
from graph_schema.falkordb_server import FalkorDBServer
from tests.clock import Clock
from tests.stack import Stack, wait_for
from tests.store_passwords import server_config

DAY = 86_400.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cp(store: GraphStore, clock: Clock) -> Iterator[ControlPlane]:
    control = assemble(store, clock=clock)
    control.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536, "gpus": [{"model": "A100"}]})
    yield control


def spec(name: str, **kw: object) -> dict[str, Any]:
    return {"name": name, "argv": ["sleep", "1000"], "resources": {"cpu_milli": 100, "memory_mib": 16},
            "restart": "temporary", **kw}


def run(cp: ControlPlane, a: AllocationRecord) -> None:
    cp.store.transition_many(changes=[Change(a.id, CLAIM)], now=cp.clock())
    cp.store.transition_many(changes=[Change(a.id, RUN, fields={"started_at": cp.clock()})], now=cp.clock())


def end(cp: ControlPlane, a: AllocationRecord, code: int = 0) -> None:
    """Its process exits (as its node agent reports), then supervision hears of it."""
    ended = AgentReports(cp.store, node=a.node_id, clock=cp.clock).exited([Exit((a.id, a.incarnation), code, "bye")])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])


def events(store: GraphStore, at: float, n: int, prefix: str = "e") -> None:
    store.record_events(events=[Event(id=f"{prefix}{at}:{i}", kind="note", allocation_id="n1", at=at + i * 0.001)
                                for i in range(n)])


def all_events(cp: ControlPlane) -> list[Event]:
    return cp.store.events(allocation_id=None, since=None, limit=10_000)


def test_events_older_than_the_max_age_go_and_the_newer_stay(cp: ControlPlane, store: GraphStore, clock: Clock) -> None:
    # Given events from 10 days ago and from an hour ago
    events(store, clock.now - 10 * DAY, 5, "old")
    events(store, clock.now - 3600, 3, "new")
    # When retention keeps 7 days
    done = cp.retention.prune(RetentionPolicy(events_max_age_s=7 * DAY))
    # Then the old ones are gone, the recent ones all there
    assert (done.events, done.more) == (5, False)
    assert sorted(e.id for e in all_events(cp)) == sorted(f"new{clock.now - 3600}:{i}" for i in range(3))


def test_beyond_the_max_count_the_oldest_events_go_in_small_batches(cp: ControlPlane, store: GraphStore, clock: Clock) -> None:
    # Given 12 recent events
    events(store, clock.now - 60, 12)
    # When retention keeps 5, in batches of 2 and at most 3 batches a run
    policy = RetentionPolicy(events_max_count=5, batch=2, max_batches=3)
    first = cp.retention.prune(policy)
    # Then one run deletes one small batch at a time, 6 in all, and says there is more
    assert (first.events, first.more) == (6, True)
    # And a writer between two runs is not held up: its event is recorded and kept (it is among the newest)
    events(store, clock.now, 1, "writer")
    second = cp.retention.prune(policy)
    assert (second.events, second.more) == (2, False)
    kept = all_events(cp)
    assert len(kept) == 5 and kept[-1].id == f"writer{clock.now}:0"
    assert [e.at for e in kept] == sorted(e.at for e in kept)


def test_ended_allocations_nothing_depends_on_are_pruned_with_their_edges(cp: ControlPlane, clock: Clock) -> None:
    # Given, under node n1: a live allocation watching an ended one; an ended parent with an ended child; an ended
    # parent whose abandoned child lives on; an ended one whose restart is decided; one that ended just now
    [live, gone, parent] = cp.allocations.spawn("n1", [spec("live"), spec("gone", resources={"gpus": 1}), spec("parent")])
    for a in (live, gone, parent):
        run(cp, a)
    [kid] = cp.allocations.spawn(parent.id, [spec("kid")])
    run(cp, kid)
    [abandoner] = cp.allocations.spawn("n1", [spec("abandoner", supervision={"child_policy": "abandon"})])
    run(cp, abandoner)
    [orphan] = cp.allocations.spawn(abandoner.id, [spec("orphan")])
    run(cp, orphan)
    [restarting] = cp.allocations.spawn("n1", [spec("restarting")])
    run(cp, restarting)
    cp.allocations.watch(live.id, gone.id)
    for a in (gone, kid, parent, abandoner):
        end(cp, a)
    end(cp, restarting, code=1)
    # (as when its parent decided a restart that waits for its backoff or for a node)
    cp.store.set_fields(allocation_id=restarting.id, incarnation=None, fields={"restart_at": clock.now + 30 * DAY})
    assert cp.queries.allocation(restarting.id).state is State.FAILED
    clock.now += 10 * DAY
    [recent] = cp.allocations.spawn("n1", [spec("recent")])
    run(cp, recent)
    end(cp, recent)
    assert orphan.id in {a.id for a in cp.queries.children(abandoner.id)}
    # When retention keeps ended allocations 7 days
    done = cp.retention.prune(RetentionPolicy(allocations_max_age_s=7 * DAY))
    # Then those nothing depends on are gone, a parent right after its child, in the same run
    assert (done.allocations, done.more) == (3, False)
    remaining = {a.id for a in cp.store.list_allocations(after=None, limit=100)}
    assert remaining == {live.id, abandoner.id, orphan.id, restarting.id, recent.id}
    # And the listings and walks of what remains read as before, with no edge to what went
    assert {a.id for a in cp.queries.children("n1")} == {live.id, abandoner.id, restarting.id, recent.id}
    assert {a.id for a in cp.queries.allocations(node_id="n1")} == remaining
    assert [a.id for a in cp.queries.children(abandoner.id)] == [orphan.id]
    assert [v.id for v in cp.queries.ancestors(orphan.id)] == [abandoner.id, "n1"]
    assert {a.id for a in cp.queries.descendants("n1")} == remaining
    watching = build_traversal(start_id=live.id, edge_types=["WATCHES"], direction="OUT", target_label="Allocation")
    assert cp.queries.traverse(watching) == [] and cp.queries.watchers([gone.id]) == {}
    assert [g.claimed_by for g in cp.store.gpus(node_id="n1")] == [None]
    assert cp.queries.node("n1").cpu_free == 64_000 - 2 * 100  # what the two live ones hold
    # And nothing live, or on a live one's parent chain, or waiting for its restart, was touched
    assert cp.queries.allocation(orphan.id).state is State.RUNNING and cp.queries.allocation(restarting.id).extra["restart_at"]


def test_beyond_the_max_count_the_longest_ended_go_but_never_one_just_ended(cp: ControlPlane, clock: Clock) -> None:
    # Given three allocations that ended one hour apart, the last one a moment ago
    ended = []
    for i in range(3):
        [a] = cp.allocations.spawn("n1", [spec(f"a{i}")])
        run(cp, a)
        end(cp, a)
        ended.append(a)
        clock.now += 3600
    clock.now -= 3600 - 1  # the last ended a second ago
    # When retention keeps one ended allocation
    cp.retention.prune(RetentionPolicy(allocations_max_count=1))
    # Then the two that ended first are gone, the most recent one stays
    assert [a.id for a in cp.store.list_allocations(after=None, limit=10)] == [ended[2].id]
    # And with none to keep, one that ended less than MIN_AGE_S ago still stays (its supervisor decides first)
    cp.retention.prune(RetentionPolicy(allocations_max_count=1, events_max_count=1))
    clock.now += MIN_AGE_S / 2
    assert cp.retention.prune(RetentionPolicy(allocations_max_count=1)).allocations == 0


@pytest.mark.slow
def test_the_leading_scheduler_prunes_with_the_configured_policy(tmp_path: Path) -> None:
    # Given a stack whose scheduler keeps 20 events, pruning every 0.2 s
    server = FalkorDBServer(server_config(tmp_path / "db")).start()
    s = Stack(server, tmp_path / "data", graph="retention")
    try:
        s.store.clear()
        s.env.update({"RETENTION_EVENTS_MAX_COUNT": "20", "RETENTION_INTERVAL_S": "0.2", "RETENTION_BATCH": "7"})
        now = time.time()
        s.store.record_events(events=[Event(id=f"x{i:03d}", kind="note", allocation_id="n1", at=now - 100 + i)
                                      for i in range(100)])
        # When the scheduler runs
        s.start("scheduler", "scheduler")
        # Then the history shrinks to the newest 20, by batches of 7
        wait_for(lambda: len(s.store.events(allocation_id=None, since=None, limit=1000)) == 20, 30,
                 "the scheduler to prune events")
        kept = s.store.events(allocation_id=None, since=None, limit=1000)
        assert [e.id for e in kept] == [f"x{i:03d}" for i in range(80, 100)]
    finally:
        s.close()
        server.stop()
