"""At-least-once with real workers, on every engine: every task kind sent again changes nothing twice.

Given node agents and a supervisor as real processes, when a task they already
ran is sent to the same queue again (two copies at once, then one more after
the fact, as Celery does for a task whose worker died before acking it), then
the process table, the graph and its events show each step exactly once: one
process per incarnation, one new incarnation per restart, one entry in the
restart log per decision, each transition once, the node's free room exact.
tests/test_redelivery.py replays the same in-process, message by message.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from graph_schema.falkordb_server import FalkorDBServer
from tests.conftest import ENGINES
from tests.stack import Stack, engine_graph, processes_of, said_ready, wait_for
from tests.store_passwords import server_config
from workers.app import CONTROL_QUEUE
from workers.dispatch import RESTART, RUN, START_NATIVE, STOP, TERMINATED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=ENGINES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = FalkorDBServer(server_config(tmp_path_factory.mktemp("redelivery-db"))).start()
    try:
        store, uri = engine_graph(request.param, request, server, graph="redelivery")
        s = Stack(server, tmp_path_factory.mktemp("redelivery"), graph="redelivery", store=store, graph_uri=uri)
        try:
            s.start("supervisor", "supervisor")
            s.agent("alpha")
            yield s
        finally:
            s.close()
    finally:
        server.stop()


def spec(name: str, argv: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": argv, "resources": {"cpu_milli": 10, "memory_mib": 8}, "grace_period_s": 1.0, **kw}


def send(stack: Stack, task: str, args: list[Any], queue: str, copies: int = 2) -> None:
    """What a broker does for a task whose worker died before acking: deliver it again (here, `copies` more times)."""
    app = stack.control.dispatcher.app  # type: ignore[attr-defined]  # the Celery dispatcher
    with app.producer_or_acquire() as producer:
        for _ in range(copies):
            app.send_task(task, args=args, queue=queue, producer=producer)


def running(stack: Stack, allocation_id: str, incarnation: int = 1, timeout: float = 30.0) -> AllocationRecord:
    try:
        found: AllocationRecord = wait_for(
            lambda: (a := stack.control.queries.allocation(allocation_id)).state is State.RUNNING and a.incarnation == incarnation and a,
            timeout, f"{allocation_id} running as incarnation {incarnation}",
        )
    except AssertionError as exc:
        a = stack.control.queries.allocation(allocation_id)
        raise AssertionError(f"{exc}; it is {a.state.value} as incarnation {a.incarnation}: {moves(stack, allocation_id)}") from None
    return found


def ended(stack: Stack, allocation_id: str, timeout: float = 30.0) -> AllocationRecord:
    found: AllocationRecord = wait_for(
        lambda: (a := stack.control.queries.allocation(allocation_id)).is_terminal and not a.extra.get("restart_at") and a,
        timeout, f"{allocation_id} to end",
    )
    return found


def moves(stack: Stack, allocation_id: str) -> list[tuple[int | None, str | None, str | None]]:
    return [(e.incarnation, e.from_state, e.to_state) for e in stack.control.queries.events(allocation_id, limit=1000)
            if e.kind == "transition"]


def events_are_unique(stack: Stack) -> None:
    ids = [e.id for e in stack.control.queries.events(limit=10_000)]
    assert len(ids) == len(set(ids))


def room_taken(stack: Stack, node: str = "alpha") -> int:
    n = stack.control.queries.node(node)
    return n.cpu - n.cpu_free


STARTED = [(1, "pending", "placed"), (1, "placed", "starting"), (1, "starting", "running")]


def test_a_run_delivered_again_starts_no_second_process(stack: Stack) -> None:
    # Given an allocation running as one process
    before = room_taken(stack)
    [a] = stack.control.allocations.spawn("alpha", [spec("once", ["sleep", "600"])])
    first = running(stack, a.id)
    # When its `run` arrives twice at once, and once more after that
    stack.push_work("alpha", RUN, [(a.id, 1)], copies=2)
    stack.settled()
    stack.push_work("alpha", RUN, [(a.id, 1)], copies=1)
    stack.settled()
    # Then one process, the same one, and each step of its life once
    assert processes_of(a.id) == {1: [first.pid]}
    assert stack.control.queries.allocation(a.id).pid == first.pid
    assert moves(stack, a.id) == STARTED
    assert room_taken(stack) == before + 10
    stack.control.allocations.stop(a.id)
    ended(stack, a.id)
    assert room_taken(stack) == before


def test_a_stop_delivered_again_ends_the_process_once(stack: Stack) -> None:
    # Given a process that ignores SIGTERM, with a grace period of 1 s
    before = room_taken(stack)
    [a] = stack.control.allocations.spawn("alpha", [spec("stubborn", ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"])])
    running(stack, a.id)
    wait_for(lambda: processes_of(a.id), what="the shell to run")
    wait_for(lambda: said_ready(stack.control, a.id), what="the shell to install its trap")  # it says so after it
    # When it is stopped, its `stop` arrives twice more while it is stopping, and once after it ended
    stack.control.allocations.stop(a.id)
    stack.push_work("alpha", STOP, [(a.id, 1)], copies=2)
    done = ended(stack, a.id)
    stack.push_work("alpha", STOP, [(a.id, 1)], copies=1)
    stack.settled()
    # Then it was killed once, after its grace period, and stopped once; its room is given back once
    assert (done.state, done.exit_code) == (State.STOPPED, -signal.SIGKILL)
    assert moves(stack, a.id) == [*STARTED, (1, "running", "stopping"), (1, "stopping", "stopped")]
    assert processes_of(a.id) == {}
    assert room_taken(stack) == before
    events_are_unique(stack)


def test_one_crash_whose_terminated_arrives_three_times_is_one_restart(stack: Stack) -> None:
    # Given a parent that allows two restarts in a minute (the issue's case), and its child
    before = room_taken(stack)
    policy = {"max_restarts": 2, "window_s": 60, "backoff": {"min_s": 2.0, "jitter": 0}}
    [parent] = stack.control.allocations.spawn("alpha", [spec("parent", ["sleep", "600"], supervision=policy)])
    running(stack, parent.id)
    [kid] = stack.control.allocations.spawn(parent.id, [spec("kid", ["sleep", "600"])])
    first = running(stack, kid.id)
    # When the child is killed once, and its `terminated` arrives twice more before the restart and once after
    os.kill(first.pid, signal.SIGKILL)  # type: ignore[arg-type]
    wait_for(lambda: stack.control.queries.allocation(kid.id).state is State.FAILED, what="the crash to be reported")
    send(stack, TERMINATED, [[[kid.id, 1]]], CONTROL_QUEUE)
    second = running(stack, kid.id, 2)
    send(stack, TERMINATED, [[[kid.id, 1]]], CONTROL_QUEUE, copies=1)
    stack.settled()
    # Then the parent decided once and lives on; the child was restarted once, as one new process
    p = stack.control.queries.allocation(parent.id)
    assert (p.state, p.incarnation, len(p.extra["restart_log"])) == (State.RUNNING, 1, 1)
    assert [e.data.get("directive") for e in stack.control.queries.events(parent.id) if e.kind == "decision"] == ["restart"]
    k = stack.control.queries.allocation(kid.id)
    assert (k.state, k.incarnation, k.extra["restarts"], k.pid) == (State.RUNNING, 2, 1, second.pid)
    assert processes_of(kid.id) == {2: [second.pid]}
    assert moves(stack, kid.id) == [*STARTED, (1, "running", "failed"), (2, "failed", "placed"), (2, "placed", "starting"),
                                    (2, "starting", "running")]
    assert room_taken(stack) == before + 20
    events_are_unique(stack)
    stack.control.allocations.stop(parent.id)
    ended(stack, parent.id)


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all"])
def test_a_restart_delivered_again_starts_no_new_incarnation(stack: Stack, strategy: str) -> None:
    # Given three children under a parent; the first one crashes
    before = room_taken(stack)
    policy = {"strategy": strategy, "backoff": {"min_s": 0.5, "jitter": 0}}
    [parent] = stack.control.allocations.spawn("alpha", [spec("sup", ["sleep", "600"], supervision=policy)])
    running(stack, parent.id)
    kids = stack.control.allocations.spawn(parent.id, [spec(f"k{i}", ["sleep", "600"]) for i in range(3)])
    for k in kids:
        running(stack, k.id)
    os.kill(stack.control.queries.allocation(kids[0].id).pid, signal.SIGKILL)  # type: ignore[arg-type]
    # the very `restart` the supervisor sent, copied while it waits for its backoff
    [restart] = wait_for(lambda: [t for t in stack.taken(RESTART) if t.args[0] == parent.id], what="the restart to be sent",
                         every=0.01)
    expected = [2, 1, 1] if strategy == "one_for_one" else [2, 2, 2]
    now = {k.id: running(stack, k.id, inc) for k, inc in zip(kids, expected, strict=True)}
    stack.settled()
    # When that message is delivered again, twice at once, then once more
    stack.redeliver(restart, copies=2)
    stack.settled()
    stack.redeliver(restart)
    stack.settled()
    # Then nothing restarted again: the same processes, one per child, and one restart per restarted child
    for k, inc in zip(kids, expected, strict=True):
        a = stack.control.queries.allocation(k.id)
        assert (a.state, a.incarnation, a.pid) == (State.RUNNING, inc, now[k.id].pid)
        assert processes_of(k.id) == {inc: [now[k.id].pid]}
        assert [m[0] for m in moves(stack, k.id) if m[2] == "placed"] == list(range(1, inc + 1))
    assert len(stack.control.queries.allocation(parent.id).extra["restart_log"]) == 1
    assert room_taken(stack) == before + 40
    # And a stop of an incarnation that was replaced leaves the new one running
    stack.push_work("alpha", STOP, [(kids[0].id, 1)], copies=2)
    stack.settled()
    assert processes_of(kids[0].id) == {2: [now[kids[0].id].pid]}
    stack.control.allocations.stop(parent.id)
    ended(stack, parent.id)


def test_a_native_start_delivered_again_keeps_one_set_of_replicas(stack: Stack) -> None:
    # Given a replicas allocation (a native executor, run by the supervisor) keeping three processes
    before = room_taken(stack)
    template = spec("web", ["sleep", "600"], restart="permanent")
    [rs] = stack.control.allocations.spawn("alpha", [{"name": "rs", "executor": "native", "native": "replicas",
                                                      "config": {"count": 3, "template": template},
                                                      "resources": {"cpu_milli": 0, "memory_mib": 0}}])
    running(stack, rs.id)
    copies = wait_for(lambda: len(c := stack.control.queries.children(rs.id)) == 3 and c, what="three copies")
    pids = {c.id: running(stack, c.id).pid for c in copies}
    # When its `start_native` arrives twice at once, and once more after that
    send(stack, START_NATIVE, [[[rs.id, 1]]], CONTROL_QUEUE)
    stack.settled()
    send(stack, START_NATIVE, [[[rs.id, 1]]], CONTROL_QUEUE, copies=1)
    stack.settled()
    # Then still three copies, the same processes, and the replicas allocation started once
    assert moves(stack, rs.id) == STARTED
    assert sorted(c.id for c in stack.control.queries.children(rs.id)) == sorted(pids)
    for c in copies:
        assert processes_of(c.id) == {1: [pids[c.id]]}
    assert room_taken(stack) == before + 30
    stack.control.allocations.stop(rs.id)
    ended(stack, rs.id)
    assert room_taken(stack) == before


def test_the_callbacks_of_a_finished_job_delivered_again_change_nothing(stack: Stack) -> None:
    # Given a job of two tasks (a, then b) that ran to success
    job = stack.control.jobs.submit({"name": "pair", "tasks": [
        {"name": "a", "argv": ["true"], "resources": {"cpu_milli": 10, "memory_mib": 8}},
        {"name": "b", "argv": ["true"], "needs": ["a"], "resources": {"cpu_milli": 10, "memory_mib": 8}},
    ]}, node="alpha")
    done = wait_for(lambda: (j := stack.control.jobs.job(job.id)).state in ("succeeded", "failed") and j, 60, "the job to end")
    assert done.state == "succeeded", done.error
    root = ended(stack, str(done.root_id))
    runs = {t.path: [r.allocation_id for r in t.runs] for t in stack.control.jobs.tasks(job.id)}
    stack.settled()
    # When the root's start and every `terminated` (the tasks', the root's) arrive twice more
    send(stack, START_NATIVE, [[[root.id, 1]]], CONTROL_QUEUE)
    send(stack, TERMINATED, [[[a, 1] for rs in runs.values() for a in rs]], CONTROL_QUEUE)
    send(stack, TERMINATED, [[[root.id, 1]]], CONTROL_QUEUE)
    stack.settled()
    # Then the job stays done with one run of each task, and its root ended once
    assert stack.control.jobs.job(job.id).state == "succeeded"
    assert {t.path: [r.allocation_id for r in t.runs] for t in stack.control.jobs.tasks(job.id)} == runs
    assert all(len(r) == 1 for r in runs.values())
    for a in [root.id, *(a for rs in runs.values() for a in rs)]:
        assert [m for m in moves(stack, a) if m[2] in ("succeeded", "failed", "placed")][-1][2] == "succeeded"
        assert stack.control.queries.allocation(a).incarnation == 1
    assert [m[2] for m in moves(stack, root.id)].count("succeeded") == 1
    events_are_unique(stack)
