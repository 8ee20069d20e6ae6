"""Day-2 operations through the API, on every engine (see the `store` fixture): what a waiting restart waits for,
why a job failed and what became of its other tasks, and live events from the moment of subscribing.

Supervision runs in-process (`assemble(store)`); allocations move through the node agent's own guarded
transitions. Given / When / Then, asserting on GraphQL answers and websocket messages.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from controlplane.services import ControlPlane
from tests.http import TestClient
from tests.test_api import data, job, spawn
from tests.test_api_supervision import SUBMIT, SUBSCRIBE, Subscriber, client, cp, crash, run, subscriber, task

__all__ = ["client", "cp"]  # the fixtures of test_api_supervision, used here too

WAITING = """query($id: ID!) { allocation(id: $id) { state incarnation waiting restartAt
  events(first: 100) { kind reason data } } }"""


def test_a_restart_with_no_node_to_take_it_says_what_it_waits_for(client: TestClient, cp: ControlPlane) -> None:
    # Given an allocation that needs zone=eu, running on the only eu node
    data(client, """mutation { registerNode(input: {name: "eu-1", cpuMilli: 2000, memoryMib: 1024, labels: {zone: "eu"}}) { id } }""")
    a = spawn(client, "n1", job("eu-only", restart="permanent", nodeLabels={"zone": "eu"}))
    run(cp, a["id"])
    # When that node is lost (as the reaper declares it), and the parent decides a restart
    lost = cp.store.mark_node_lost(node_id="eu-1", heartbeat_before=time.time() + 60, now=time.time())
    assert lost is not None and [x.id for x in lost] == [a["id"]]
    cp.supervisor.on_terminated([(a["id"], 1)])  # in-process, the decided restart is tried at once
    got = data(client, WAITING, id=a["id"])["allocation"]
    # Then the client reads what it waits for, and the event says what stands in the way
    wants = "waiting for a ready node with zone=eu and room for cpu=100m memory=64MiB"
    assert (got["state"], got["incarnation"], got["waiting"]) == ("LOST", 1, wants)
    assert got["restartAt"] is not None
    [waiting] = [e for e in got["events"] if e["kind"] == "waiting"]
    assert waiting["reason"] == f"{wants}: eu-1 is lost" and waiting["data"]["code"] == "NO_CAPACITY"
    # When the client stops it, Then the wait ends
    stopped = data(client, "mutation($id: ID!) { stopAllocation(id: $id) { waiting restartAt } }", id=a["id"])
    assert stopped["stopAllocation"] == {"waiting": None, "restartAt": None}


def test_a_failed_job_names_the_task_exit_and_output_and_the_other_tasks_read_skipped(client: TestClient, cp: ControlPlane) -> None:
    # Given a job of two tasks, b after a
    submitted = data(client, SUBMIT, spec={"name": "etl", "tasks": [task("a", restart="temporary"), task("b", "a")]})["submitJob"]
    [a_run] = submitted["tasks"][0]["runs"]
    allocation_id = a_run["allocation"]["id"]
    run(cp, allocation_id)
    # When a's process is killed by SIGKILL
    crash(cp, allocation_id, code=-9)
    got = data(client, "query($id: ID!) { job(id: $id) { state error tasks { path state } } }", id=submitted["id"])["job"]
    # Then the job's error names the task, its allocation, the signal and the end of its output; b was skipped
    assert got["state"] == "failed"
    assert got["error"].startswith(f"task a failed: allocation {allocation_id} (incarnation 1 on n1) killed by signal 9 (SIGKILL)")
    assert got["error"].endswith("output ends: boom")
    assert got["tasks"] == [{"path": "a", "state": "failed"}, {"path": "b", "state": "skipped"}]


@pytest.mark.timeout(60)
def test_a_subscription_without_since_starts_from_now(client: TestClient, cp: ControlPlane) -> None:
    # Given an allocation with a history (spawned, running)
    a = spawn(client, "n1", job("a", restart="temporary"))
    run(cp, a["id"])
    # When a client subscribes without `since`, and then the allocation crashes
    with subscriber(client) as ws:
        sub = Subscriber(ws)
        sub.subscribe(SUBSCRIBE, id=a["id"])
        time.sleep(0.3)  # the subscription has read the graph once: what happened before is behind it
        crash(cp, a["id"], code=3)
        first: dict[str, Any] = sub.next()
    # Then the first event it gets is the crash: none of the history before it
    assert first["payload"]["data"]["events"]["fromState"] == "running"
    assert first["payload"]["data"]["events"]["toState"] == "failed"
