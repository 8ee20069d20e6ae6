"""Fault injection with real processes, on every engine: kill -9 agents and allocations, restart the broker.

Given a stack of real processes (node agents, a supervisor, the scheduler) on
the engine under test, with a FalkorDB server as the broker (on FalkorDB, the
graph too), when something dies, then the graph and its events show the
allocations recovering exactly as the supervision policies say. How fast is
for bench/bench_recovery.py; the tests assert order and outcome.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from graph_schema.falkordb_server import FalkorDBServer
from tests.conftest import ENGINES
from tests.stack import Stack, engine_graph, wait_for
from tests.store_passwords import server_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=ENGINES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = FalkorDBServer(server_config(tmp_path_factory.mktemp("faults-db"))).start()
    try:
        store, uri = engine_graph(request.param, request, server, graph="faults")
        with Stack(server, tmp_path_factory.mktemp("faults"), graph="faults", store=store, graph_uri=uri).serving(
                "alpha", "beta") as s:
            yield s
    finally:
        server.stop()


def spec(name: str, argv: list[str], **kw: object) -> dict[str, Any]:
    return {"name": name, "argv": argv, "resources": {"cpu_milli": 10, "memory_mib": 8}, "grace_period_s": 1.0, **kw}


def running(stack: Stack, allocation_id: str, incarnation: int = 1, timeout: float = 20.0) -> AllocationRecord:
    return cast(AllocationRecord, wait_for(
        lambda: (a := stack.control.queries.allocation(allocation_id)).state is State.RUNNING and a.incarnation >= incarnation and a,
        timeout, f"{allocation_id} running (incarnation >= {incarnation})",
    ))


def pid_of(stack: Stack, allocation_id: str) -> int:
    pid = stack.control.queries.allocation(allocation_id).pid
    assert pid is not None, f"{allocation_id} has no process"
    return pid


def test_killing_an_allocation_process_restarts_it_with_backoff_then_escalates(stack: Stack) -> None:
    policy = {"max_restarts": 2, "window_s": 60, "backoff": {"min_s": 0.5, "max_s": 5, "factor": 2, "jitter": 0}}
    [parent] = stack.control.allocations.spawn("alpha", [spec("parent", ["sleep", "600"], node="alpha", supervision=policy)])
    running(stack, parent.id)
    [kid] = stack.control.allocations.spawn(parent.id, [spec("kid", ["sleep", "600"], node="alpha")])
    pids = []
    for inc in (1, 2, 3):
        a = running(stack, kid.id, inc)
        assert a.incarnation == inc and a.pid is not None
        pids.append(a.pid)
        os.kill(a.pid, signal.SIGKILL)
        if inc < 3:
            wait_for(partial(lambda i: stack.control.queries.allocation(kid.id).incarnation == i + 1, inc), 20, f"restart {inc + 1}")
    assert len(set(pids)) == 3
    # the third failure in 60 s is past the intensity: the parent fails, and the node restarts it
    p = wait_for(lambda: (x := stack.control.queries.allocation(parent.id)).incarnation == 2 and x, 20, "parent escalated and restarted")
    assert p.incarnation == 2
    k = stack.control.queries.allocation(kid.id)
    assert (k.state, k.incarnation) == (State.FAILED, 3)
    restarts = [e for e in stack.control.queries.events(kid.id) if e.to_state == "placed" and e.from_state == "failed"]
    failures = [e for e in stack.control.queries.events(kid.id) if e.to_state == "failed"]
    gaps = [b.at - a.at for a, b in zip(failures, restarts, strict=False)]  # the last failure was not restarted
    assert len(restarts) == 2 and gaps[0] >= 0.45 and gaps[1] >= 0.95  # 0.5 s, then 1 s of backoff
    stack.control.allocations.stop(parent.id)


def test_a_spec_that_always_crashes_escalates_to_the_node_and_stops(stack: Stack) -> None:
    policy = {"max_restarts": 2, "window_s": 60, "backoff": {"min_s": 0.1, "max_s": 0.2, "jitter": 0}}
    stack.control.supervisor.set_policy("beta", policy)
    [a] = stack.control.allocations.spawn("beta", [spec("crasher", ["sh", "-c", "exit 7"], node="beta")])
    final = wait_for(
        lambda: [e for e in stack.control.queries.events(a.id) if e.kind == "escalated"] and stack.control.queries.allocation(a.id),
        30, "escalation to the node",
    )
    assert final.state is State.FAILED and final.incarnation == 3 and final.exit_code == 7
    time.sleep(1.0)
    assert stack.control.queries.allocation(a.id).incarnation == 3  # never loops


@pytest.mark.parametrize(("strategy", "expected"), [("one_for_all", [2, 2, 2, 2]), ("rest_for_one", [1, 2, 2, 2])])
def test_group_strategies_restart_exactly_their_set_in_order(stack: Stack, strategy: str, expected: list[int]) -> None:
    policy = {"strategy": strategy, "backoff": {"min_s": 0.1, "jitter": 0}}
    [parent] = stack.control.allocations.spawn("alpha", [spec("sup", ["sleep", "600"], node="alpha", supervision=policy)])
    kids = stack.control.allocations.spawn(parent.id, [spec(f"k{i}", ["sleep", "600"], node="alpha") for i in range(4)])
    for k in kids:
        running(stack, k.id)
    os.kill(pid_of(stack, kids[1].id), signal.SIGKILL)
    for k, inc in zip(kids, expected, strict=True):
        running(stack, k.id, inc)
    time.sleep(0.5)
    assert [stack.control.queries.allocation(k.id).incarnation for k in kids] == expected
    restarted = [k.id for k, inc in zip(kids, expected, strict=True) if inc == 2]
    placed = sorted((e.at, e.tick, e.allocation_id) for k in restarted
                    for e in stack.control.queries.events(k) if e.from_state in ("failed", "stopped") and e.to_state == "placed")
    assert [a for _, _, a in placed] == restarted  # one restart, in creation order
    stack.control.allocations.stop(parent.id)


def test_killing_a_node_agent_moves_its_allocations_to_another_node(stack: Stack) -> None:
    # Given ten services that need a `pool=svc` node, all running on gamma, and a second such node
    stack.agent("gamma", pool="svc")
    [parent] = stack.control.allocations.spawn("beta", [spec("keeper", ["sleep", "600"], node="beta")])
    running(stack, parent.id)
    kids = stack.control.allocations.spawn(parent.id, [spec(f"svc{i}", ["sleep", "600"], node_labels={"pool": "svc"})
                                                       for i in range(10)])
    for k in kids:
        assert running(stack, k.id).node_id == "gamma"
    stack.agent("zeta", pool="svc")
    # When gamma's agent is killed
    stack.kill9("gamma")
    # Then gamma is declared lost, and every service runs again on zeta (never on alpha or beta), after being lost
    wait_for(lambda: stack.control.queries.node("gamma").status == "lost", 20, "gamma declared lost")
    for k in kids:
        a = running(stack, k.id, 2, timeout=30)
        assert a.node_id == "zeta"
        moves = [(e.incarnation, e.to_state) for e in stack.control.queries.events(k.id) if e.kind == "transition"]
        assert moves.index((1, "lost")) < moves.index((2, "placed")) < moves.index((2, "running"))
    decisions = [e for e in stack.control.queries.events(parent.id) if e.kind == "decision"]
    assert len(decisions) == 1  # ten lost children, one decision
    stack.control.allocations.stop(parent.id)


def test_an_agent_restarted_within_the_grace_period_does_not_leave_ghosts(stack: Stack) -> None:
    stack.agent("delta")
    [a] = stack.control.allocations.spawn("delta", [spec("svc", ["sleep", "600"], node="delta")])
    first = running(stack, a.id)
    # the reaper is held while the agent restarts, so that the restart is within the grace period however
    # long a loaded machine takes to start a Python process: the node is never declared lost
    reaper = stack.procs["scheduler"]
    reaper.send_signal(signal.SIGSTOP)
    try:
        stack.kill9("delta")
        stack.agent("delta")
    finally:
        reaper.send_signal(signal.SIGCONT)
    again = running(stack, a.id, 2)
    assert again.pid != first.pid and stack.control.queries.node("delta").status == "ready"
    lost = [e for e in stack.control.queries.events(a.id) if e.to_state == "lost"]
    assert len(lost) == 1 and "restarted" in (lost[0].reason or "")
    stack.control.allocations.stop(a.id)


def test_a_node_that_comes_back_stops_what_was_replaced_meanwhile(stack: Stack) -> None:
    # Given an agent whose allocation runs, frozen (SIGSTOP) as by a network partition:
    # its processes live on, its heartbeats stop
    stack.agent("epsilon", pool="partition")
    a = stack.control.allocations.spawn("alpha", [spec("movable", ["sleep", "600"], node_labels={"pool": "partition"})])[0]
    first = running(stack, a.id)
    assert first.node_id == "epsilon"
    old_pid = pid_of(stack, a.id)
    stack.agent("eta", pool="partition")
    agent = stack.procs["epsilon"]
    agent.send_signal(signal.SIGSTOP)
    try:
        # When the node is declared lost, the allocation runs again elsewhere
        wait_for(lambda: stack.control.queries.node("epsilon").status == "lost", 15, "epsilon lost")
        moved = running(stack, a.id, 2)
        assert moved.node_id == "eta"
        os.kill(old_pid, 0)  # the old process still runs on the partitioned node
    finally:
        agent.send_signal(signal.SIGCONT)
    # Then, back, the node re-registers and kills its replaced copy; the new one keeps running
    wait_for(lambda: stack.control.queries.node("epsilon").status == "ready", 15, "epsilon back")
    def gone() -> bool:
        try:
            os.kill(old_pid, 0)
        except ProcessLookupError:
            return True
        status = Path(f"/proc/{old_pid}/status")
        return "zombie" in status.read_text() if status.exists() else True
    wait_for(gone, 15, "the replaced process to be stopped")
    assert stack.control.queries.allocation(a.id).state is State.RUNNING and stack.control.queries.allocation(a.id).incarnation == 2
    stack.control.allocations.stop(a.id)


def test_a_lost_run_message_is_dispatched_again_by_the_reconciler(stack: Stack) -> None:
    # Given a dispatch that never reaches the agent (a broker that lost the message)
    from controlplane.wiring import assemble, dispatcher
    from workers.app import configure

    lossy = assemble(stack.store, dispatcher(stack.server.redis_url(9)))
    [a] = lossy.allocations.spawn("alpha", [spec("patient", ["sh", "-c", "echo finally"], node="alpha")])
    configure(stack.broker_url)  # the rest of the suite talks to the real broker again
    assert stack.control.queries.allocation(a.id).state is State.PLACED
    # When it stays `placed` past the deadline, then the scheduler dispatches it again and it runs
    done = wait_for(lambda: (x := stack.control.queries.allocation(a.id)).state is State.SUCCEEDED and x, 30, "the re-dispatch")
    assert "finally" in (done.output_tail or "") and done.incarnation == 1


def test_restarting_the_broker_mid_run_loses_and_duplicates_nothing(stack: Stack) -> None:
    # (the broker is the FalkorDB server: on FalkorDB, the graph restarts with it; the JVM test
    # servers start with an empty graph each time, so restarting one would be a wipe, not a fault)
    [parent] = stack.control.allocations.spawn("alpha", [spec("batch", ["sleep", "600"], node="alpha")])
    running(stack, parent.id)
    kids = stack.control.allocations.spawn(parent.id, [spec(f"j{i}", ["sh", "-c", "sleep 1.5; echo done"], node="alpha") for i in range(12)])
    time.sleep(0.5)
    stack.server.restart()
    done = wait_for(
        lambda: all(stack.control.queries.allocation(k.id).state is State.SUCCEEDED for k in kids) and kids,
        40, "every job to succeed after the restart",
    )
    for k in done:
        a = stack.control.queries.allocation(k.id)
        assert a.incarnation == 1 and "done" in (a.output_tail or "")
        moves = [(e.incarnation, e.to_state) for e in stack.control.queries.events(k.id) if e.kind == "transition"]
        assert moves == [(1, "placed"), (1, "starting"), (1, "running"), (1, "succeeded")]  # each step once
    assert len(stack.control.queries.children(parent.id)) == 12
    stack.control.allocations.stop(parent.id)
