"""At-least-once, replayed: every supervisor task delivered again changes nothing twice, on every engine.

Celery may deliver a task more than once (acks_late, reject_on_worker_lost),
at the same time or long after the first delivery. Here the services send
their tasks to an in-memory broker (tests/broker.py) that holds each message
until the test delivers it, as often and in the order the test chooses; the
graph is a real server of each engine. What a node agent would report is
reported through the agent's own guarded moves (AgentReports), without a
process. tests/test_redelivery_workers.py does the same with real workers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.domain.lifecycle import CLAIM, RUN, State
from controlplane.domain.records import AllocationRecord, Exit
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.wiring import assemble
from tests.broker import HeldBroker, Message
from tests.clock import Clock
from workers.dispatch import RESTART, START_NATIVE, TERMINATED
from workers.dispatch import RUN as RUN_TASK


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker() -> HeldBroker:
    return HeldBroker()


@pytest.fixture
def cp(store: GraphStore, clock: Clock, broker: HeldBroker) -> Iterator[ControlPlane]:
    control = assemble(store, broker, clock=clock)
    broker.bind(control)
    control.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536})
    yield control


def spec(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": ["sleep", "1000"], "resources": {"cpu_milli": 100, "memory_mib": 16}, **kw}


def start(cp: ControlPlane, *allocs: AllocationRecord) -> None:
    """What a node agent reports when it has started them (no process here, so no pid to signal)."""
    current = cp.store.get_allocations(allocation_ids=[a.id for a in allocs])
    now = cp.clock()
    cp.store.transition_many(changes=[Change(a.id, CLAIM, a.incarnation) for a in current], now=now)
    cp.store.transition_many(changes=[Change(a.id, RUN, a.incarnation, {"started_at": now}) for a in current], now=now)


def exit_(cp: ControlPlane, a: AllocationRecord, code: int = 1) -> Message:
    """What a node agent reports when the process exits: the guarded move, then one `terminated` message."""
    current = cp.queries.allocation(a.id)
    ended = AgentReports(cp.store, node=current.node_id, clock=cp.clock).exited([Exit((a.id, current.incarnation), code, "boom")])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])
    broker: HeldBroker = cp.dispatcher  # type: ignore[assignment]  # the fixture's broker
    [message] = broker.take(TERMINATED)
    return message


def family(cp: ControlPlane, broker: HeldBroker, kids: int, **policy: Any) -> tuple[AllocationRecord, list[AllocationRecord]]:
    """A running parent with this supervision policy, and its running children."""
    [parent] = cp.allocations.spawn("n1", [spec("parent", supervision=policy)])
    start(cp, parent)
    children = cp.allocations.spawn(parent.id, [spec(f"c{i}") for i in range(kids)])
    start(cp, *children)
    broker.take(RUN_TASK)
    return parent, children


def concurrently(n: int, deliver: Any) -> None:
    """Run `deliver` in n threads released at the same instant (as n workers taking copies of one message)."""
    gate = threading.Barrier(n)
    errors: list[BaseException] = []

    def one() -> None:
        gate.wait()
        try:
            deliver()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def picture(cp: ControlPlane) -> tuple[Any, ...]:
    """Everything a user could observe of the graph: every allocation, every node's free room, every event."""
    allocs = tuple(sorted(
        (a.id, a.state, a.incarnation, a.node_id, a.extra.get("restarts"), tuple(a.extra.get("restart_log") or ()),
         a.extra.get("restart_at"), a.extra.get("escalated"))
        for a in cp.store.list_allocations(after=None, limit=1000)
    ))
    nodes = tuple((n.id, n.status, n.cpu_free, n.memory_free, tuple(n.extra.get("restart_log") or ()))
                  for n in cp.store.list_nodes(after=None, limit=100))
    events = tuple(sorted(e.id for e in cp.store.events(allocation_id=None, since=None, limit=10_000)))
    return allocs, nodes, events


def transitions(cp: ControlPlane, allocation_id: str) -> list[tuple[int | None, str | None, str | None]]:
    return [(e.incarnation, e.from_state, e.to_state) for e in cp.queries.events(allocation_id) if e.kind == "transition"]


def decisions(cp: ControlPlane, parent_id: str) -> list[str]:
    return [str(e.data.get("directive")) for e in cp.queries.events(parent_id) if e.kind == "decision"]


# --- terminated -------------------------------------------------------------------------------
def test_one_crash_delivered_three_times_is_one_decision_and_one_restart(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a parent that allows two restarts in its window, and its running child
    parent, [kid] = family(cp, broker, 1, max_restarts=2, window_s=60)
    # When the child crashes once and its `terminated` arrives three times before the restart is due
    crash = exit_(cp, kid)
    for _ in range(3):
        broker.deliver(crash)
    restarts = broker.take(RESTART)
    for m in restarts:  # then every restart message sent, each once
        broker.deliver(m)
    # Then the parent decided once: one entry in its restart log, and it is still running (no escalation)
    p = cp.queries.allocation(parent.id)
    assert (p.state, p.incarnation, len(p.extra["restart_log"])) == (State.RUNNING, 1, 1)
    assert decisions(cp, parent.id) == ["restart"]
    # and the child was restarted once: incarnation 2, one restart in its history
    k = cp.queries.allocation(kid.id)
    assert (k.state, k.incarnation, k.extra["restarts"]) == (State.PLACED, 2, 1)
    assert transitions(cp, kid.id)[-2:] == [(1, "running", "failed"), (2, "failed", "placed")]
    assert len([m for m in broker.take(RUN_TASK) if m.args[1] == [(kid.id, 2)]]) == 1  # one run for the new incarnation


def test_one_crash_delivered_three_times_at_once_is_one_decision(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given the same family
    parent, [kid] = family(cp, broker, 1, max_restarts=2, window_s=60)
    crash = exit_(cp, kid)
    # When three supervisor workers take copies of the one `terminated` at the same instant
    concurrently(3, lambda: broker.deliver(crash))
    broker.drain(RESTART)
    # Then one decision, one entry in the restart log, one new incarnation
    p = cp.queries.allocation(parent.id)
    assert (p.state, len(p.extra["restart_log"])) == (State.RUNNING, 1)
    assert decisions(cp, parent.id) == ["restart"]
    k = cp.queries.allocation(kid.id)
    assert (k.state, k.incarnation, k.extra["restarts"]) == (State.PLACED, 2, 1)


def test_a_terminated_delivered_again_after_the_restart_changes_nothing(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a child that crashed and was restarted, everything delivered
    _, [kid] = family(cp, broker, 1, max_restarts=2, window_s=60)
    crash = exit_(cp, kid)
    broker.deliver(crash)
    broker.drain()
    before = picture(cp)
    # When its old `terminated` arrives again, long after
    cp.clock.now += 30  # type: ignore[attr-defined]
    broker.deliver(crash)
    broker.drain()
    # Then the graph is exactly as it was: no decision, no restart, no event
    assert picture(cp) == before
    assert [m.task for m in broker.held] == [RUN_TASK]  # only the first restart's run


def test_an_escalation_delivered_again_does_not_fail_the_restarted_parent(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a parent that allows no restart: its child's crash fails it, and its node restarts it
    parent, [kid] = family(cp, broker, 1, max_restarts=0, window_s=60)
    crash = exit_(cp, kid)
    broker.deliver(crash)
    broker.drain()
    p = cp.queries.allocation(parent.id)
    assert (p.state, p.incarnation) == (State.PLACED, 2)
    before = picture(cp)
    # When the child's `terminated` arrives again, at the parent's new incarnation
    broker.deliver(crash)
    broker.drain()
    # Then the new incarnation lives on: the escalation was carried out once, for the incarnation it was decided in
    assert picture(cp) == before
    assert [t for t in transitions(cp, parent.id) if t[2] == "failed"] == [(1, "stopping", "failed")]


def test_a_node_escalation_delivered_again_reports_once(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a child of the node itself that may not be restarted (the node allows none)
    cp.supervisor.set_policy("n1", {"max_restarts": 0})
    [kid] = cp.allocations.spawn("n1", [spec("lonely")])
    start(cp, kid)
    crash = exit_(cp, kid)
    # When its crash is delivered three times
    for _ in range(3):
        broker.deliver(crash)
        broker.drain()
    # Then the failure is reported at the node once, and the child stays failed
    assert [e.kind for e in cp.queries.events(kid.id) if e.kind == "escalated"] == ["escalated"]
    k = cp.queries.allocation(kid.id)
    assert (k.state, k.incarnation) == (State.FAILED, 1)


def test_a_correlated_crash_delivered_again_between_restart_waves_is_still_one_decision(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given eight children of one parent (default policy: one_for_one, jittered backoff), all crashing at once
    [parent] = cp.allocations.spawn("n1", [spec("parent")], request_id="waves-parent")
    start(cp, parent)
    kids = cp.allocations.spawn(parent.id, [spec(f"c{i}") for i in range(8)], request_id="waves-kids")
    start(cp, *kids)
    ended = AgentReports(cp.store, node="n1", clock=cp.clock).exited([Exit((k.id, 1), 1, "boom") for k in kids])
    cp.dispatcher.terminated(keys=[(a.id, a.incarnation) for a in ended])
    [crash] = broker.take(TERMINATED)
    broker.deliver(crash)
    first, *later = sorted(broker.take(RESTART), key=lambda m: m.countdown)
    assert later, "the restarts go out in more than one wave"
    # When the first wave is carried out, and then the same `terminated` arrives again
    broker.deliver(first)
    broker.deliver(crash)
    for m in later + broker.take(RESTART):
        broker.deliver(m)
    # Then it found the decision made for all eight: one entry in the restart log, one restart each
    assert decisions(cp, parent.id) == ["restart"]
    assert len(cp.queries.allocation(parent.id).extra["restart_log"]) == 1
    assert [cp.queries.allocation(k.id).incarnation for k in kids] == [2] * 8


# --- restart ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_a_restart_delivered_again_restarts_each_child_once(cp: ControlPlane, broker: HeldBroker, strategy: str) -> None:
    # Given three running children under a parent with this strategy; the first crashes
    parent, kids = family(cp, broker, 3, strategy=strategy)
    broker.deliver(exit_(cp, kids[0]))
    [restart] = broker.take(RESTART)
    broker.drain(TERMINATED)  # the siblings a group strategy stopped first
    # When the restart message is delivered, and then twice more (one of them long after)
    broker.deliver(restart)
    broker.drain()
    cp.clock.now += 30  # type: ignore[attr-defined]
    concurrently(2, lambda: broker.deliver(restart))
    broker.drain()
    # Then each child it names got exactly one new incarnation
    expected = {"one_for_one": [2, 1, 1], "one_for_all": [2, 2, 2], "rest_for_one": [2, 2, 2]}[strategy]
    assert [cp.queries.allocation(k.id).incarnation for k in kids] == expected
    assert len(cp.queries.allocation(parent.id).extra["restart_log"]) == 1
    for k, inc in zip(kids, expected, strict=True):
        assert [t[0] for t in transitions(cp, k.id) if t[2] == "placed"] == list(range(1, inc + 1))
    n1 = cp.queries.node("n1")
    assert n1.cpu_free == n1.cpu - 100 * 4  # the parent and three children hold their room once


# --- native executors -------------------------------------------------------------------------
def test_a_native_start_delivered_again_spawns_its_replicas_once(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a replicas allocation, whose start is sent to a supervisor
    template = spec("web", restart="permanent")
    [rs] = cp.allocations.spawn("n1", [{"name": "rs", "executor": "native", "native": "replicas",
                                        "config": {"count": 3, "template": template}, "resources": {"cpu_milli": 0, "memory_mib": 0}}])
    [started] = broker.take(START_NATIVE)
    # When it is delivered three times at once, then once more
    concurrently(3, lambda: broker.deliver(started))
    broker.deliver(started)
    # Then it runs as incarnation 1 with its three copies, each spawned once and sent to its agent
    # (concurrent repeats of the spawn may each send the `run`; the agent's claim takes it once)
    a = cp.queries.allocation(rs.id)
    assert (a.state, a.incarnation) == (State.RUNNING, 1)
    assert transitions(cp, rs.id) == [(1, "pending", "placed"), (1, "placed", "starting"), (1, "starting", "running")]
    copies = cp.queries.children(rs.id)
    assert sorted(c.name for c in copies) == ["web-0", "web-1", "web-2"]
    runs = [k for m in broker.take(RUN_TASK) for k in m.args[1]]
    assert set(runs) == {(c.id, 1) for c in copies}
    n1 = cp.queries.node("n1")
    assert n1.cpu_free == n1.cpu - 3 * 100


def test_native_callbacks_delivered_again_end_their_allocation_once(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a replicas allocation whose two copies run to success
    template = spec("batch")
    [rs] = cp.allocations.spawn("n1", [{"name": "rs", "executor": "native", "native": "replicas",
                                        "config": {"count": 2, "template": template}, "resources": {"cpu_milli": 0, "memory_mib": 0}}])
    broker.drain(START_NATIVE)
    copies = cp.queries.children(rs.id)
    start(cp, *copies)
    ended = [exit_(cp, c, code=0) for c in copies]
    # When each copy's `terminated` arrives three times (the last one makes the replicas allocation end)
    for m in ended * 3:
        broker.deliver(m)
    [own] = broker.take(TERMINATED)  # the replicas allocation's own end, sent once
    for _ in range(3):
        broker.deliver(own)
    broker.drain()
    # Then it succeeded once, and nothing was restarted
    assert transitions(cp, rs.id)[-1] == (1, "running", "succeeded")
    assert [t[2] for t in transitions(cp, rs.id)].count("succeeded") == 1
    assert all(cp.queries.allocation(c.id).incarnation == 1 for c in copies)
    assert not broker.take(RESTART)


def test_a_job_whose_messages_are_all_delivered_twice_runs_each_task_once(cp: ControlPlane, broker: HeldBroker) -> None:
    # Given a job of three tasks, a -> b -> c
    job = cp.jobs.submit({"name": "chain", "tasks": [
        {"name": "a", "argv": ["true"]}, {"name": "b", "argv": ["true"], "needs": ["a"]},
        {"name": "c", "argv": ["true"], "needs": ["b"]},
    ]}, node="n1")
    # When every message to a supervisor arrives twice, and each task's process succeeds
    for _ in range(10):
        for m in broker.take(START_NATIVE) + broker.take(TERMINATED) + broker.take(RESTART):
            broker.deliver(m)
            broker.deliver(m)
        placed = [k for m in broker.take(RUN_TASK) for k in m.args[1]]
        if not placed:
            break
        for allocation_id, _ in placed:
            a = cp.queries.allocation(allocation_id)
            start(cp, a)
            ended = AgentReports(cp.store, node=a.node_id, clock=cp.clock).exited([Exit((a.id, a.incarnation), 0, "ok")])
            cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])
    # Then the job succeeded with one run of each task, and its root ended once
    done = cp.jobs.job(job.id)
    assert done.state == "succeeded"
    tasks = cp.jobs.tasks(job.id)
    assert sorted((t.path, len(t.runs)) for t in tasks) == [("a", 1), ("b", 1), ("c", 1)]
    assert all(cp.queries.allocation(r.allocation_id).incarnation == 1 for t in tasks for r in t.runs)
    assert [t[2] for t in transitions(cp, str(done.root_id))].count("succeeded") == 1
