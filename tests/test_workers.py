"""A real node agent (talking to a real API over the embedded FalkorDB) runs real subprocesses.

Given a node agent started as `controlplane worker` (a separate process), when
allocations are spawned through the control plane, then the graph shows them
moving through the lifecycle with their exit codes and output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from controlplane.domain.lifecycle import TERMINAL, State
from controlplane.domain.records import AllocationRecord
from controlplane.services import ControlPlane
from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack, said_ready, wait_for

GRAPH = "workers"


@pytest.fixture(scope="module")
def real(falkordb_server: FalkorDBServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API and a node agent `w1` that joined with a join credential and talks to the API only."""
    falkordb_server.client(db=1).flushdb()
    s = Stack(falkordb_server, tmp_path_factory.mktemp("agent"), graph=GRAPH, redis_db=1)
    s.store.clear()
    try:
        s.agent("w1")
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def stack(real: Stack) -> tuple[ControlPlane, subprocess.Popen[bytes]]:
    return real.control, real.procs["w1"]


def settle(control: ControlPlane, allocation_id: str, timeout: float = 20.0) -> AllocationRecord:
    return cast(AllocationRecord, wait_for(
        lambda: (a := control.queries.allocation(allocation_id)).state in TERMINAL and a,
        timeout, f"{allocation_id} to finish",
    ))


def spec(argv: list[str], **kw: object) -> dict[str, Any]:
    return {"name": kw.pop("name", argv[0]), "argv": argv, "resources": {"cpu_milli": 10, "memory_mib": 8}, **kw}


def test_the_node_agent_registers_its_real_resources(stack: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, _ = stack
    node = control.queries.node("w1")
    assert node.cpu == len(os.sched_getaffinity(0)) * 1000
    assert node.memory > 100
    # and it heartbeats: the node's heartbeat moves on
    wait_for(lambda: control.queries.node("w1").heartbeat_at > node.heartbeat_at, what="a later heartbeat")


def test_a_process_runs_to_success_with_its_output(stack: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, _ = stack
    [a] = control.allocations.spawn("w1", [spec(["sh", "-c", "echo hello from $CONTROLPLANE_ALLOCATION_ID"], env={"X": "1"})])
    done = settle(control, a.id)
    assert (done.state, done.exit_code) == (State.SUCCEEDED, 0)
    assert done.output_tail is not None and f"hello from {a.id}" in done.output_tail
    assert control.queries.node("w1").cpu_free == control.queries.node("w1").cpu  # released


def test_a_failing_process_is_failed_with_its_exit_code(stack: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, _ = stack
    [a] = control.allocations.spawn("w1", [spec(["sh", "-c", "echo boom >&2; exit 3"])])
    done = settle(control, a.id)
    assert (done.state, done.exit_code) == (State.FAILED, 3)
    assert "boom" in (done.output_tail or "") and "code 3" in (done.error or "")


def test_a_missing_executable_fails_clearly(stack: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, _ = stack
    [a] = control.allocations.spawn("w1", [spec(["no-such-binary-xyz"])])
    done = settle(control, a.id)
    assert done.state is State.FAILED and "not found" in (done.error or "")


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(stack: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, _ = stack
    polite, stubborn = control.allocations.spawn(
        "w1",
        [
            spec(["sleep", "60"], name="polite"),
            spec(["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"], name="stubborn", grace_period_s=1.0),
        ],
    )
    for a in (polite, stubborn):
        wait_for(partial(lambda i: control.queries.allocation(i).state is State.RUNNING, a.id), what=f"{a.name} running")
    wait_for(lambda: said_ready(control, stubborn.id), what="the shell to install its trap")  # it says so after it
    started = time.monotonic()
    control.allocations.stop(polite.id)
    control.allocations.stop(stubborn.id)
    p, s = settle(control, polite.id), settle(control, stubborn.id)
    assert (p.state, p.exit_code) == (State.STOPPED, -signal.SIGTERM)
    assert (s.state, s.exit_code) == (State.STOPPED, -signal.SIGKILL)
    assert time.monotonic() - started >= 0.9  # the stubborn one had its grace period
    for a in (p, s):
        assert a.pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(a.pid, 0)


def test_children_spawned_by_a_running_allocation_run_too(stack: tuple[ControlPlane, subprocess.Popen[bytes]]) -> None:
    control, _ = stack
    [parent] = control.allocations.spawn("w1", [spec(["sleep", "30"], name="parent")])
    wait_for(lambda: control.queries.allocation(parent.id).state is State.RUNNING, what="parent running")
    kids = control.allocations.spawn(parent.id, [spec(["true"], name=f"kid{i}") for i in range(5)])
    assert all(settle(control, k.id).state is State.SUCCEEDED for k in kids)
    assert sorted(a.id for a in control.queries.descendants(parent.id)) == sorted(k.id for k in kids)
    control.allocations.stop(parent.id)
    assert settle(control, parent.id).state is State.STOPPED


def test_killing_the_agent_kills_its_processes(real: Stack) -> None:
    control = real.control
    proc = real.agent("doomed")
    [a] = control.allocations.spawn("doomed", [spec(["sleep", "120"], node="doomed")])
    started = wait_for(lambda: (r := control.queries.allocation(a.id)).state is State.RUNNING and r, what="running")
    pid = started.pid
    real.kill9("doomed")
    assert proc.poll() is not None

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/status").exists() and "zombie" in Path(f"/proc/{pid}/status").read_text()
    wait_for(gone, timeout=10, what="the allocation's process to die with its agent")
