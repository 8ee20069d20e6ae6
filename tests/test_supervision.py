"""Supervision on every engine: decisions carried out on the graph (supervision in-process, no broker).

Processes are not involved here (see test_faults.py for real ones): allocations are
moved through the lifecycle with the same guarded transitions a node agent uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.domain.errors import Conflict, InvalidInput, NotFound
from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from controlplane.services import AgentService, ControlPlane
from controlplane.services.agent import Exit
from graph_schema.store import GraphStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cp(store: GraphStore, clock: Clock) -> Iterator[ControlPlane]:
    control = ControlPlane(store, dispatcher=None, clock=clock)
    control.register_node({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536})
    yield control


def spec(name: str, **kw: object) -> dict:
    return {"name": name, "argv": ["sleep", "1000"], "resources": {"cpu_milli": 100, "memory_mib": 16}, **kw}


def run(cp: ControlPlane, *allocs: AllocationRecord) -> None:
    """What a node agent does when it starts them (without a process id: nothing to signal)."""
    for a in allocs:
        cp.store.transition(allocation_id=a.id, expected=[State.PLACED], to=State.STARTING, now=cp.clock())
        cp.store.transition(allocation_id=a.id, expected=[State.STARTING], to=State.RUNNING, now=cp.clock(),
                            fields={"started_at": cp.clock()})


def crash(cp: ControlPlane, a: AllocationRecord, code: int = 1) -> None:
    """What a node agent reports when the process exits, then the supervisor reacts."""
    current = cp.allocation(a.id)
    ended = AgentService(cp.store, clock=cp.clock).exited([Exit((a.id, current.incarnation), code, "boom")])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])


def parent_with(cp: ControlPlane, n: int, **policy: object) -> tuple[AllocationRecord, list[AllocationRecord]]:
    [parent] = cp.spawn("n1", [spec("parent", supervision=policy or None)])
    run(cp, parent)
    kids = cp.spawn(parent.id, [spec(f"c{i}") for i in range(n)])
    run(cp, *kids)
    return parent, kids


def states(cp: ControlPlane, kids: list[AllocationRecord]) -> list[tuple[str, int]]:
    return [(cp.allocation(k.id).state.value, cp.allocation(k.id).incarnation) for k in kids]


def test_one_for_one_restarts_only_the_failed_child_as_a_new_incarnation(cp: ControlPlane) -> None:
    _, kids = parent_with(cp, 3, strategy="one_for_one")
    crash(cp, kids[1])
    assert states(cp, kids) == [("running", 1), ("placed", 2), ("running", 1)]
    restarted = cp.allocation(kids[1].id)
    assert restarted.extra["restarts"] == 1 and restarted.exit_code is None
    moves = [(e.from_state, e.to_state) for e in cp.events(kids[1].id) if e.kind == "transition"]
    assert moves == [("pending", "placed"), ("placed", "starting"), ("starting", "running"), ("running", "failed"), ("failed", "placed")]
    decisions = [e for e in cp.events(kids[1].id) if e.kind == "decision"]
    assert len(decisions) == 1 and decisions[0].data["directive"] == "restart"


def test_one_for_all_restarts_every_sibling_after_stopping_them(cp: ControlPlane) -> None:
    parent, kids = parent_with(cp, 3, strategy="one_for_all")
    crash(cp, kids[0])
    assert states(cp, kids) == [("placed", 2)] * 3
    # the siblings were stopped, not failed: their stops are recorded before their restart
    moves = [(e.from_state, e.to_state) for e in cp.events(kids[2].id) if e.kind == "transition"][-3:]
    assert moves == [("running", "stopping"), ("stopping", "stopped"), ("stopped", "placed")]
    assert len(cp.allocation(parent.id).extra["restart_log"]) == 1


def test_rest_for_one_restarts_the_failed_child_and_those_created_after_it(cp: ControlPlane) -> None:
    _, kids = parent_with(cp, 4, strategy="rest_for_one")
    crash(cp, kids[1])
    assert states(cp, kids) == [("running", 1), ("placed", 2), ("placed", 2), ("placed", 2)]


def test_transient_children_that_succeed_are_not_restarted_permanent_ones_are(cp: ControlPlane) -> None:
    [parent] = cp.spawn("n1", [spec("parent")])
    run(cp, parent)
    transient, permanent, temporary = cp.spawn(parent.id, [spec("t"), spec("p", restart="permanent"), spec("x", restart="temporary")])
    run(cp, transient, permanent, temporary)
    crash(cp, transient, code=0)
    crash(cp, permanent, code=0)
    crash(cp, temporary, code=1)
    assert states(cp, [transient, permanent, temporary]) == [("succeeded", 1), ("placed", 2), ("failed", 1)]


def test_past_the_intensity_the_parent_fails_and_its_parent_decides(cp: ControlPlane, clock: Clock) -> None:
    parent, [kid] = parent_with(cp, 1, max_restarts=2, window_s=60)
    for _ in range(2):
        crash(cp, kid)
        run(cp, cp.allocation(kid.id))
        clock.now += 1
    crash(cp, kid)  # the third failure within 60 s
    k = cp.allocation(kid.id)
    assert (k.state, k.incarnation) == (State.FAILED, 3)  # not restarted a third time
    p = cp.allocation(parent.id)
    assert (p.state, p.incarnation) == (State.PLACED, 2)  # the parent failed; the node (its parent) restarted it
    [failed] = [e for e in cp.events(parent.id) if e.to_state == "failed"]
    assert failed.from_state == "stopping"
    assert "intensity exceeded" in (cp.store.events(allocation_id=kid.id, since=None, limit=100)[-1].reason or "")


def test_a_child_that_always_crashes_escalates_to_the_node_and_stops(cp: ControlPlane, clock: Clock) -> None:
    [kid] = cp.spawn("n1", [spec("crashloop")])
    for attempt in range(10):
        run(cp, cp.allocation(kid.id))
        crash(cp, cp.allocation(kid.id))
        clock.now += 0.5
        if cp.allocation(kid.id).state is not State.PLACED:
            break
    final = cp.allocation(kid.id)
    assert final.state is State.FAILED and final.incarnation == 4  # 3 restarts (the default intensity), then no more
    escalated = [e for e in cp.events(kid.id) if e.kind == "escalated"]
    assert len(escalated) == 1 and "n1" in (escalated[0].reason or "")


def test_a_decider_rule_can_stop_instead_of_restarting(cp: ControlPlane) -> None:
    _, kids = parent_with(cp, 2, deciders=[{"on": "exit", "exit_codes": "3-5", "directive": "stop"}])
    crash(cp, kids[0], code=4)
    crash(cp, kids[1], code=9)
    assert states(cp, kids) == [("failed", 1), ("placed", 2)]


def test_stop_is_children_first_and_the_parent_is_stopped_last(cp: ControlPlane) -> None:
    parent, kids = parent_with(cp, 2)
    grandkids = cp.spawn(kids[0].id, [spec("g")])
    run(cp, *grandkids)
    cp.stop(parent.id)
    order = [e.allocation_id for e in cp.events() if e.to_state == "stopped"]
    assert order.index(grandkids[0].id) < order.index(kids[0].id) < order.index(parent.id)
    assert order.index(kids[1].id) < order.index(parent.id)
    assert all(cp.allocation(a.id).state is State.STOPPED for a in [parent, *kids, *grandkids])


def test_abandoned_children_live_on_as_orphans(cp: ControlPlane) -> None:
    parent, kids = parent_with(cp, 2, child_policy="abandon")
    cp.stop(parent.id)
    assert cp.allocation(parent.id).state is State.STOPPED
    for k in kids:
        a = cp.allocation(k.id)
        assert a.state is State.RUNNING and a.extra.get("orphan") is True


def test_death_watch_delivers_terminated_to_every_watcher(cp: ControlPlane) -> None:
    _, (a, b, c) = parent_with(cp, 3, strategy="one_for_one", deciders=[{"on": "any", "directive": "resume"}])
    cp.watch(a.id, c.id)
    cp.watch(b.id, c.id)
    crash(cp, c, code=2)
    for watcher in (a, b):
        [t] = [e for e in cp.events(watcher.id) if e.kind == "terminated"]
        assert (t.data["target"], t.to_state) == (c.id, "failed")
    cp.watch(a.id, c.id)  # watching the dead delivers at once, once
    assert len([e for e in cp.events(a.id) if e.kind == "terminated"]) == 1


def test_a_lost_node_is_one_decision_per_parent_and_restarts_go_elsewhere(cp: ControlPlane, clock: Clock) -> None:
    cp.register_node({"name": "n2", "cpu_milli": 64_000, "memory_mib": 65_536})
    [parent] = cp.spawn("n2", [spec("parent", node="n2", supervision={"strategy": "one_for_all"})])
    run(cp, parent)
    kids = cp.spawn(parent.id, [spec(f"c{i}", node="n1") for i in range(20)])
    run(cp, *kids)
    clock.now += 10
    cp.heartbeat("n2")  # n2 is alive, n1 is silent
    reaped = cp.supervisor.reap(grace_s=3)
    assert reaped == {"n1": 20}
    assert cp.node("n1").status == "lost"
    after = [cp.allocation(k.id) for k in kids]
    assert {(a.state, a.incarnation, a.node_id) for a in after} == {(State.PLACED, 2, "n2")}
    decisions = [e for e in cp.events(parent.id) if e.kind == "decision"]
    assert len(decisions) == 1 and len(cp.allocation(parent.id).extra["restart_log"]) == 1
    assert cp.supervisor.reap(grace_s=3) == {}  # declared once


@pytest.mark.parametrize(
    ("supervision", "field"),
    [
        ({"strategy": "one_for_none"}, "spec.supervision.strategy"),
        ({"window_s": -5}, "spec.supervision.window_s"),
        ({"backoff": {"min_s": -1}}, "spec.supervision.backoff.min_s"),
        ({"deciders": [{"on": "exit", "directive": "panic"}]}, "spec.supervision.deciders[0].directive"),
    ],
)
def test_bad_policies_are_refused_and_nothing_is_written(cp: ControlPlane, store: GraphStore, supervision: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        cp.spawn("n1", [spec("x", supervision=supervision)], field="spec")
    assert err.value.field == field
    assert store.list_allocations(after=None, limit=10) == []


def test_bad_watch_and_policy_targets(cp: ControlPlane) -> None:
    [a] = cp.spawn("n1", [spec("a")])
    with pytest.raises(NotFound) as err:
        cp.watch(a.id, "ghost")
    assert err.value.field == "target"
    cp.stop(a.id)
    with pytest.raises(Conflict):
        cp.set_policy(a.id, {"strategy": "one_for_all"})
    with pytest.raises(InvalidInput) as err2:
        cp.set_policy("n1", {"max_restarts": -1})
    assert err2.value.field == "policy.max_restarts"
