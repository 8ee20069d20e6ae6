"""Supervision on every engine: decisions carried out on the graph (supervision in-process, no broker).

Processes are not involved here (see test_faults.py for real ones): allocations are
moved through the lifecycle with the same guarded transitions a node agent uses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.domain.errors import Conflict, InvalidInput, NotFound
from controlplane.domain.lifecycle import CLAIM, RUN, State
from controlplane.domain.records import AllocationRecord, Exit
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.wiring import assemble
from tests.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cp(store: GraphStore, clock: Clock) -> Iterator[ControlPlane]:
    control = assemble(store, clock=clock)
    control.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536})
    yield control


def spec(name: str, **kw: object) -> dict[str, Any]:
    return {"name": name, "argv": ["sleep", "1000"], "resources": {"cpu_milli": 100, "memory_mib": 16}, **kw}


def run(cp: ControlPlane, *allocs: AllocationRecord) -> None:
    """What a node agent does when it starts them (without a process id: nothing to signal)."""
    cp.store.transition_many(changes=[Change(a.id, CLAIM) for a in allocs], now=cp.clock())
    cp.store.transition_many(changes=[Change(a.id, RUN, fields={"started_at": cp.clock()}) for a in allocs], now=cp.clock())


def crash(cp: ControlPlane, a: AllocationRecord, code: int = 1) -> None:
    """What a node agent reports when the process exits, then the supervisor reacts."""
    current = cp.queries.allocation(a.id)
    ended = AgentReports(cp.store, node=current.node_id, clock=cp.clock).exited([Exit((a.id, current.incarnation), code, "boom")])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])


def parent_with(cp: ControlPlane, n: int, **policy: object) -> tuple[AllocationRecord, list[AllocationRecord]]:
    [parent] = cp.allocations.spawn("n1", [spec("parent", supervision=policy or None)])
    run(cp, parent)
    kids = cp.allocations.spawn(parent.id, [spec(f"c{i}") for i in range(n)])
    run(cp, *kids)
    return parent, kids


def states(cp: ControlPlane, kids: list[AllocationRecord]) -> list[tuple[str, int]]:
    return [(cp.queries.allocation(k.id).state.value, cp.queries.allocation(k.id).incarnation) for k in kids]


CLEAN_START = ("exit_code", "error", "output_tail", "pid", "started_at", "finished_at", "restart_at", "log_path",
               "stop_grace_s", "waiting")


def test_a_new_incarnation_starts_clean_and_keeps_what_the_allocation_is(cp: ControlPlane) -> None:
    # Given children that ran with a pid and a log, each field written in another order (an engine may keep
    # properties in the order they came), then failed with an error and their output (their restarts due)
    _, kids = parent_with(cp, 6, strategy="one_for_one", max_restarts=10)
    shuffle = random.Random(7).shuffle
    before = {}
    for kid in kids:
        fields = [("pid", 4242), ("log_path", "/tmp/k.log"), ("stop_grace_s", 3.0), ("waiting", "w"), ("restart_at", 9.0)]
        shuffle(fields)
        for k, v in fields:
            cp.store.set_fields(allocation_id=kid.id, incarnation=1, fields={k: v})
        before[kid.id] = cp.queries.allocation(kid.id)
        crash(cp, kid)
    kept = ("name", "argv", "env", "cpu", "memory", "parent_id", "node_labels", "restart_type", "child_policy")
    for kid in kids:
        # When each is restarted, the new incarnation carries nothing of the last one's run ...
        after = cp.queries.allocation(kid.id)
        assert (after.incarnation, after.state) == (2, State.PLACED)
        assert {k: v for k, v in after.extra.items() if k in CLEAN_START} == {}, kid.name
        assert (after.exit_code, after.error, after.output_tail, after.pid) == (None, None, None, None)
        # ... and keeps what the allocation is
        old = before[kid.id]
        assert [getattr(after, k, after.extra.get(k)) for k in kept] == [getattr(old, k, old.extra.get(k)) for k in kept]
    # and clearing several fields at once removes those and only those, whatever order they were written in
    for round_ in range(8):
        fields = [("restart_at", 1.0), ("waiting", "w"), ("pid", 7), ("log_path", "/l"), ("stop_grace_s", 2.0)]
        shuffle(fields)
        for k, v in fields:
            cp.store.set_fields(allocation_id=kids[0].id, incarnation=2, fields={k: v})
        cleared = cp.store.set_fields(allocation_id=kids[0].id, incarnation=2,
                                      fields={"restart_at": None, "waiting": None, "log_path": None})
        assert cleared is not None, round_
        assert (cleared.pid, cleared.extra.get("stop_grace_s"), cleared.name) == (7, 2.0, kids[0].name), round_
        assert not {"restart_at", "waiting", "log_path"} & set(cleared.extra), round_
        cp.store.set_fields(allocation_id=kids[0].id, incarnation=2, fields={"pid": None})
        cp.store.set_fields(allocation_id=kids[0].id, incarnation=2, fields={"stop_grace_s": None})


def test_one_for_one_restarts_only_the_failed_child_as_a_new_incarnation(cp: ControlPlane) -> None:
    _, kids = parent_with(cp, 3, strategy="one_for_one")
    crash(cp, kids[1])
    assert states(cp, kids) == [("running", 1), ("placed", 2), ("running", 1)]
    restarted = cp.queries.allocation(kids[1].id)
    assert restarted.extra["restarts"] == 1 and restarted.exit_code is None
    moves = [(e.from_state, e.to_state) for e in cp.queries.events(kids[1].id) if e.kind == "transition"]
    assert moves == [("pending", "placed"), ("placed", "starting"), ("starting", "running"), ("running", "failed"), ("failed", "placed")]
    decisions = [e for e in cp.queries.events(kids[1].id) if e.kind == "decision"]
    assert len(decisions) == 1 and decisions[0].data["directive"] == "restart"


def test_one_for_all_restarts_every_sibling_after_stopping_them(cp: ControlPlane) -> None:
    parent, kids = parent_with(cp, 3, strategy="one_for_all")
    crash(cp, kids[0])
    assert states(cp, kids) == [("placed", 2)] * 3
    # the siblings were stopped, not failed: their stops are recorded before their restart
    moves = [(e.from_state, e.to_state) for e in cp.queries.events(kids[2].id) if e.kind == "transition"][-3:]
    assert moves == [("running", "stopping"), ("stopping", "stopped"), ("stopped", "placed")]
    assert len(cp.queries.allocation(parent.id).extra["restart_log"]) == 1


def test_rest_for_one_restarts_the_failed_child_and_those_created_after_it(cp: ControlPlane) -> None:
    _, kids = parent_with(cp, 4, strategy="rest_for_one")
    crash(cp, kids[1])
    assert states(cp, kids) == [("running", 1), ("placed", 2), ("placed", 2), ("placed", 2)]


def test_transient_children_that_succeed_are_not_restarted_permanent_ones_are(cp: ControlPlane) -> None:
    [parent] = cp.allocations.spawn("n1", [spec("parent")])
    run(cp, parent)
    transient, permanent, temporary = cp.allocations.spawn(parent.id, [spec("t"), spec("p", restart="permanent"), spec("x", restart="temporary")])
    run(cp, transient, permanent, temporary)
    crash(cp, transient, code=0)
    crash(cp, permanent, code=0)
    crash(cp, temporary, code=1)
    assert states(cp, [transient, permanent, temporary]) == [("succeeded", 1), ("placed", 2), ("failed", 1)]


def test_past_the_intensity_the_parent_fails_and_its_parent_decides(cp: ControlPlane, clock: Clock) -> None:
    parent, [kid] = parent_with(cp, 1, max_restarts=2, window_s=60)
    for _ in range(2):
        crash(cp, kid)
        run(cp, cp.queries.allocation(kid.id))
        clock.now += 1
    crash(cp, kid)  # the third failure within 60 s
    k = cp.queries.allocation(kid.id)
    assert (k.state, k.incarnation) == (State.FAILED, 3)  # not restarted a third time
    p = cp.queries.allocation(parent.id)
    assert (p.state, p.incarnation) == (State.PLACED, 2)  # the parent failed; the node (its parent) restarted it
    [failed] = [e for e in cp.queries.events(parent.id) if e.to_state == "failed"]
    assert failed.from_state == "stopping"
    assert "intensity exceeded" in (cp.store.events(allocation_id=kid.id, since=None, limit=100)[-1].reason or "")


def test_a_child_that_always_crashes_escalates_to_the_node_and_stops(cp: ControlPlane, clock: Clock) -> None:
    [kid] = cp.allocations.spawn("n1", [spec("crashloop")])
    for _ in range(10):
        run(cp, cp.queries.allocation(kid.id))
        crash(cp, cp.queries.allocation(kid.id))
        clock.now += 0.5
        if cp.queries.allocation(kid.id).state is not State.PLACED:
            break
    final = cp.queries.allocation(kid.id)
    assert final.state is State.FAILED and final.incarnation == 4  # 3 restarts (the default intensity), then no more
    escalated = [e for e in cp.queries.events(kid.id) if e.kind == "escalated"]
    assert len(escalated) == 1 and "n1" in (escalated[0].reason or "")


def test_a_decider_rule_can_stop_instead_of_restarting(cp: ControlPlane) -> None:
    _, kids = parent_with(cp, 2, deciders=[{"on": "exit", "exit_codes": "3-5", "directive": "stop"}])
    crash(cp, kids[0], code=4)
    crash(cp, kids[1], code=9)
    assert states(cp, kids) == [("failed", 1), ("placed", 2)]


def test_stop_is_children_first_and_the_parent_is_stopped_last(cp: ControlPlane) -> None:
    parent, kids = parent_with(cp, 2)
    grandkids = cp.allocations.spawn(kids[0].id, [spec("g")])
    run(cp, *grandkids)
    cp.allocations.stop(parent.id)
    order = [e.allocation_id for e in cp.queries.events() if e.to_state == "stopped"]
    assert order.index(grandkids[0].id) < order.index(kids[0].id) < order.index(parent.id)
    assert order.index(kids[1].id) < order.index(parent.id)
    assert all(cp.queries.allocation(a.id).state is State.STOPPED for a in [parent, *kids, *grandkids])


def test_abandoned_children_live_on_as_orphans(cp: ControlPlane) -> None:
    parent, kids = parent_with(cp, 2, child_policy="abandon")
    cp.allocations.stop(parent.id)
    assert cp.queries.allocation(parent.id).state is State.STOPPED
    for k in kids:
        a = cp.queries.allocation(k.id)
        assert a.state is State.RUNNING and a.extra.get("orphan") is True


def test_death_watch_delivers_terminated_to_every_watcher(cp: ControlPlane) -> None:
    _, (a, b, c) = parent_with(cp, 3, strategy="one_for_one", deciders=[{"on": "any", "directive": "resume"}])
    cp.allocations.watch(a.id, c.id)
    cp.allocations.watch(b.id, c.id)
    crash(cp, c, code=2)
    for watcher in (a, b):
        [t] = [e for e in cp.queries.events(watcher.id) if e.kind == "terminated"]
        assert (t.data["target"], t.to_state) == (c.id, "failed")
    cp.allocations.watch(a.id, c.id)  # watching the dead delivers at once, once
    assert len([e for e in cp.queries.events(a.id) if e.kind == "terminated"]) == 1


def test_a_lost_node_is_one_decision_per_parent_and_restarts_go_elsewhere(cp: ControlPlane, clock: Clock) -> None:
    # Given twenty children that must run on a `pool=batch` node, all on n1, under a parent on n2
    cp.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536, "labels": {"pool": "batch"}})
    cp.nodes.register({"name": "n2", "cpu_milli": 64_000, "memory_mib": 65_536})
    [parent] = cp.allocations.spawn("n2", [spec("parent", node="n2", supervision={"strategy": "one_for_all"})])
    run(cp, parent)
    kids = cp.allocations.spawn(parent.id, [spec(f"c{i}", node_labels={"pool": "batch"}) for i in range(20)])
    run(cp, *kids)
    assert {k.node_id for k in kids} == {"n1"}
    cp.nodes.register({"name": "n3", "cpu_milli": 8_000, "memory_mib": 65_536, "labels": {"pool": "batch"}})
    # When n1 goes silent
    clock.now += 10
    cp.nodes.heartbeat("n2")
    cp.nodes.heartbeat("n3")
    reaped = cp.repair.reap(grace_s=3)
    # Then one decision restarts them all on n3, the other batch node (never on n2, which has more room)
    assert reaped == {"n1": 20}
    assert cp.queries.node("n1").status == "lost"
    after = [cp.queries.allocation(k.id) for k in kids]
    assert {(a.state, a.incarnation, a.node_id) for a in after} == {(State.PLACED, 2, "n3")}
    decisions = [e for e in cp.queries.events(parent.id) if e.kind == "decision"]
    assert len(decisions) == 1 and len(cp.queries.allocation(parent.id).extra["restart_log"]) == 1
    assert cp.repair.reap(grace_s=3) == {}  # declared once


def test_a_restart_keeps_the_label_constraint_and_waits_for_a_fitting_node(cp: ControlPlane, clock: Clock) -> None:
    # Given an allocation that asked for zone=eu, on eu-1, with another eu node and a free us node
    for name, zone in (("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")):
        cp.nodes.register({"name": name, "cpu_milli": 4_000, "memory_mib": 4_096, "labels": {"zone": zone}})
    cp.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536})  # its parent's node
    [a] = cp.allocations.spawn("n1", [spec("eu-only", node_labels={"zone": "eu"}, restart="permanent",
                                                resources={"cpu_milli": 3_000, "memory_mib": 16})])
    run(cp, a)
    first = a.node_id
    assert first in ("eu-1", "eu-2")
    other = "eu-2" if first == "eu-1" else "eu-1"

    def lose(node: str) -> None:
        clock.now += 10
        for n in ("eu-1", "eu-2", "us-1", "n1"):
            if n != node and cp.queries.node(n).status == "ready":
                cp.nodes.heartbeat(n)
        assert node in cp.repair.reap(grace_s=3)

    # When its node is lost, it is restarted on the other eu node, never on the free us node
    lose(first)
    moved = cp.queries.allocation(a.id)
    assert (moved.state, moved.incarnation, moved.node_id) == (State.PLACED, 2, other)
    run(cp, moved)
    # When the last eu node is lost too, it waits, and an event says why
    lose(other)
    waiting = cp.queries.allocation(a.id)
    assert (waiting.state, waiting.incarnation) == (State.LOST, 2)
    why = [e for e in cp.queries.events(a.id) if e.kind == "waiting"]
    wants = "waiting for a ready node with zone=eu and room for cpu=3000m memory=16MiB"
    assert cp.queries.allocation(a.id).extra["waiting"] == wants
    assert len(why) == 1 and why[0].reason == f"{wants}: eu-1 is lost; eu-2 is lost"
    assert why[0].data["code"] == "NO_CAPACITY"
    clock.now += 10
    cp.repair.reconcile(placed_deadline_s=30, starting_deadline_s=60)
    assert cp.queries.allocation(a.id).state is State.LOST  # still no eu node: still waiting, still one event
    assert len([e for e in cp.queries.events(a.id) if e.kind == "waiting"]) == 1
    # When an eu node joins, the reconciler places it there
    cp.nodes.register({"name": "eu-3", "cpu_milli": 4_000, "memory_mib": 4_096, "labels": {"zone": "eu"}})
    clock.now += 10
    cp.repair.reconcile(placed_deadline_s=30, starting_deadline_s=60)
    back = cp.queries.allocation(a.id)
    assert (back.state, back.incarnation, back.node_id) == (State.PLACED, 3, "eu-3")
    assert back.extra.get("waiting") is None


def test_a_waiting_restart_says_what_it_waits_for_once_per_change_and_stop_ends_the_wait(cp: ControlPlane, clock: Clock) -> None:
    # Given an allocation that needs one A100 in zone=eu, on the only such node
    cp.nodes.register({"name": "eu-gpu", "cpu_milli": 4_000, "memory_mib": 4_096, "labels": {"zone": "eu"},
                       "gpus": [{"model": "A100"}]})
    [a] = cp.allocations.spawn("n1", [spec("trainer", node_labels={"zone": "eu"}, restart="permanent",
                                           resources={"cpu_milli": 500, "memory_mib": 16, "gpus": 1, "gpu_model": "A100"})])
    run(cp, a)
    # When its node is lost, it waits for a node like it, and says so
    clock.now += 10
    cp.nodes.heartbeat("n1")
    assert "eu-gpu" in cp.repair.reap(grace_s=3)
    wants = "waiting for a ready node with zone=eu, 1 A100 and room for cpu=500m memory=16MiB"
    assert cp.queries.allocation(a.id).extra["waiting"] == wants
    # When the node comes back without its zone label, no node could ever take it: a second event, INVALID_INPUT
    cp.nodes.register({"name": "eu-gpu", "cpu_milli": 4_000, "memory_mib": 4_096, "labels": {"zone": "us"},
                       "gpus": [{"model": "A100"}]})
    for _ in range(3):  # retried, one event per change of what it waits on
        clock.now += 10
        cp.nodes.heartbeat("n1")
        cp.repair.reconcile(placed_deadline_s=30, starting_deadline_s=60)
    waits = [(e.reason, e.data["code"]) for e in cp.queries.events(a.id) if e.kind == "waiting"]
    assert waits == [(f"{wants}: eu-gpu is lost", "NO_CAPACITY"), (f"{wants}: no node has zone=eu", "INVALID_INPUT")]
    # When it is stopped, the wait ends
    stopped = cp.allocations.stop(a.id)
    assert (stopped.state, stopped.extra.get("waiting"), stopped.extra.get("restart_at")) == (State.LOST, None, None)
    clock.now += 10
    cp.repair.reconcile(placed_deadline_s=30, starting_deadline_s=60)
    assert cp.queries.allocation(a.id).incarnation == 1


def test_a_node_pin_holds_the_allocation_waits_for_its_node(cp: ControlPlane, clock: Clock) -> None:
    # Given an allocation pinned to n9 (as a Kubernetes pod bound to its node)
    cp.nodes.register({"name": "n9", "cpu_milli": 4_000, "memory_mib": 4_096})
    [a] = cp.allocations.spawn("n1", [spec("pinned", node="n9", restart="permanent")])
    run(cp, a)
    # When n9 is lost, it is not restarted on n1, which has room
    clock.now += 10
    cp.nodes.heartbeat("n1")
    cp.repair.reap(grace_s=3)
    assert cp.queries.allocation(a.id).state is State.LOST
    assert any(e.kind == "waiting" and "node n9" in (e.reason or "") for e in cp.queries.events(a.id))
    # When n9 comes back, it runs there again
    cp.nodes.register({"name": "n9", "cpu_milli": 4_000, "memory_mib": 4_096})
    clock.now += 10
    cp.repair.reconcile(placed_deadline_s=30, starting_deadline_s=60)
    back = cp.queries.allocation(a.id)
    assert (back.state, back.incarnation, back.node_id) == (State.PLACED, 2, "n9")


@pytest.mark.parametrize(
    ("supervision", "field"),
    [
        ({"strategy": "one_for_none"}, "spec.supervision.strategy"),
        ({"window_s": -5}, "spec.supervision.window_s"),
        ({"backoff": {"min_s": -1}}, "spec.supervision.backoff.min_s"),
        ({"deciders": [{"on": "exit", "directive": "panic"}]}, "spec.supervision.deciders[0].directive"),
    ],
)
def test_bad_policies_are_refused_and_nothing_is_written(cp: ControlPlane, store: GraphStore, supervision: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        cp.allocations.spawn("n1", [spec("x", supervision=supervision)], field="spec")
    assert err.value.field == field
    assert store.list_allocations(after=None, limit=10) == []


def test_bad_watch_and_policy_targets(cp: ControlPlane) -> None:
    [a] = cp.allocations.spawn("n1", [spec("a")])
    with pytest.raises(NotFound) as err:
        cp.allocations.watch(a.id, "ghost")
    assert err.value.field == "target"
    cp.allocations.stop(a.id)
    with pytest.raises(Conflict):
        cp.supervisor.set_policy(a.id, {"strategy": "one_for_all"})
    with pytest.raises(InvalidInput) as err2:
        cp.supervisor.set_policy("n1", {"max_restarts": -1})
    assert err2.value.field == "policy.max_restarts"
