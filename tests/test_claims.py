"""The README's claims, each with a test that fails when the behaviour it claims is taken away.

- label placement on spawn: `node_labels` send an allocation only to nodes with those labels;
- death watch: watching an allocation that has already ended delivers Terminated at once;
- backoff jitter: the restarts after a correlated failure are spread, deterministically per child and incarnation;
- one reaper at a time: two schedulers, one leads (a Redis lease); the standby takes over when the lease expires;
- UNAVAILABLE: an API call while the graph server is down says so, and the API answers again once it is back.

The first three run on every engine (the `store` fixture); the last two need processes and a
server of their own to kill, and run on FalkorDB.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx TestClient works the same
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

from controlplane.domain.errors import NoCapacity
from controlplane.domain.lifecycle import CLAIM, RUN, State
from controlplane.domain.records import AllocationRecord, Exit
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.broker import HeldBroker
from tests.clock import Clock
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.stack import Stack, wait_for
from tests.store_passwords import server_config
from workers.dispatch import RESTART
from workers.scheduler import LOCK_KEY


def spec(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": ["sleep", "1000"], "resources": {"cpu_milli": 500, "memory_mib": 16}, **kw}


def start(cp: ControlPlane, *allocs: AllocationRecord) -> None:
    """What a node agent reports when it has started them (no process here)."""
    now = cp.clock()
    cp.store.transition_many(changes=[Change(a.id, CLAIM, a.incarnation) for a in allocs], now=now)
    cp.store.transition_many(changes=[Change(a.id, RUN, a.incarnation, {"started_at": now}) for a in allocs], now=now)


# --- label placement on spawn -------------------------------------------------------------------
def test_a_spawn_with_node_labels_goes_only_to_nodes_that_have_them(store: GraphStore) -> None:
    # Given two small eu nodes (one with an ssd) and a big us node, which would win on free cpu alone
    cp = assemble(store)
    cp.nodes.register({"name": "eu-1", "cpu_milli": 2_000, "memory_mib": 4_096, "labels": {"zone": "eu"}})
    cp.nodes.register({"name": "eu-2", "cpu_milli": 2_000, "memory_mib": 4_096, "labels": {"zone": "eu", "disk": "ssd"}})
    cp.nodes.register({"name": "us-1", "cpu_milli": 64_000, "memory_mib": 65_536, "labels": {"zone": "us"}})
    # When allocations that ask for zone=eu are spawned by the us node
    eu = cp.allocations.spawn("us-1", [spec(f"eu{i}", node_labels={"zone": "eu"}, resources={"cpu_milli": 1_000, "memory_mib": 16})
                                       for i in range(4)])
    ssd = cp.allocations.spawn("us-1", [spec("fast", node_labels={"zone": "eu", "disk": "ssd"}, resources={"cpu_milli": 0, "memory_mib": 16})])
    anywhere = cp.allocations.spawn("us-1", [spec("anywhere")])
    # Then each lands only on a node with every label it asked for (and the rest on the roomiest node)
    assert sorted(a.node_id for a in eu) == ["eu-1", "eu-1", "eu-2", "eu-2"]
    assert [a.node_id for a in ssd] == ["eu-2"]
    assert [a.node_id for a in anywhere] == ["us-1"]
    assert [cp.queries.allocation(a.id).node_labels for a in ssd] == [("disk=ssd", "zone=eu")]
    # And when every node with the labels is full (though us-1 has room), it is refused naming the labels
    with pytest.raises(NoCapacity) as refused:
        cp.allocations.spawn("us-1", [spec("one-too-many", node_labels={"zone": "eu"})], field="spec")
    assert refused.value.field == "spec" and "zone=eu" in refused.value.message
    assert len(store.list_allocations(after=None, limit=100)) == 6


# --- death watch --------------------------------------------------------------------------------
def test_watching_an_allocation_that_already_ended_delivers_terminated_at_once(store: GraphStore) -> None:
    # Given an allocation that failed, and another one that never watched it
    cp = assemble(store)
    cp.nodes.register({"name": "n1", "cpu_milli": 8_000, "memory_mib": 8_192})
    cp.supervisor.set_policy("n1", {"default_directive": "resume"})  # (the target stays failed)
    target, watcher = cp.allocations.spawn("n1", [spec("target"), spec("watcher")])
    start(cp, target, watcher)
    ended = AgentReports(cp.store, node="n1", clock=cp.clock).exited([Exit((target.id, 1), 3, "bye")])
    cp.dispatcher.terminated(keys=[(a.id, a.incarnation) for a in ended])
    assert [e for e in cp.queries.events(watcher.id) if e.kind == "terminated"] == []
    # When the watcher starts watching it
    seen = cp.allocations.watch(watcher.id, target.id)
    # Then it gets Terminated at once, naming the target and how it ended; watching again adds nothing
    assert seen.state is State.FAILED
    [told] = [e for e in cp.queries.events(watcher.id) if e.kind == "terminated"]
    assert (told.data["target"], told.to_state, told.incarnation) == (target.id, "failed", 1)
    cp.allocations.watch(watcher.id, target.id)
    assert len([e for e in cp.queries.events(watcher.id) if e.kind == "terminated"]) == 1
    assert cp.queries.watchers([target.id]) == {target.id: [watcher.id]}


# --- backoff jitter -----------------------------------------------------------------------------
def correlated_failure(store: GraphStore) -> tuple[ControlPlane, HeldBroker, list[AllocationRecord], float]:
    """Twenty children of one parent (the default policy) on n1, which is lost; the same ids every time."""
    clock = Clock()
    broker = HeldBroker()
    cp = assemble(store, broker, clock=clock)
    broker.bind(cp)
    cp.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536, "labels": {"pool": "batch"}})
    cp.nodes.register({"name": "n2", "cpu_milli": 8_000, "memory_mib": 8_192})
    [parent] = cp.allocations.spawn("n2", [spec("keeper", node="n2")], request_id="keeper")
    start(cp, parent)
    kids = cp.allocations.spawn(parent.id, [spec(f"w{i}", node_labels={"pool": "batch"}) for i in range(20)], request_id="workers")
    start(cp, *kids)
    cp.nodes.register({"name": "n3", "cpu_milli": 64_000, "memory_mib": 65_536, "labels": {"pool": "batch"}})
    clock.now += 10
    cp.nodes.heartbeat("n2")
    cp.nodes.heartbeat("n3")
    assert cp.repair.reap(grace_s=3) == {"n1": 20}
    return cp, broker, kids, clock.now


def test_restarts_after_a_correlated_failure_are_spread_by_jitter_and_the_same_each_time(store: GraphStore) -> None:
    # Given twenty children of one parent on n1, under the default policy (0.5 s backoff, 20 % jitter)
    # When n1 is lost
    cp, broker, kids, lost_at = correlated_failure(store)
    # Then one decision restarts them all, in several waves: each child once, after 0.5 s +- 20 %
    [decision] = [e for e in cp.queries.events(kids[0].parent_id) if e.kind == "decision"]
    waves = broker.take(RESTART)
    due = {child: m.countdown for m in waves for child, _, _ in m.args[1]}
    assert sorted(due) == sorted(k.id for k in kids) and sum(len(m.args[1]) for m in waves) == 20
    assert all(0.4 <= d <= 0.6 for d in due.values()), due
    assert len(waves) >= 2 and len(set(due.values())) == len(waves)
    # And delivered when due, they are restarted at as many different times as there are waves
    for m in sorted(waves, key=lambda m: m.countdown):
        cp.clock.now = lost_at + m.countdown  # type: ignore[attr-defined]
        broker.deliver(m)
    placed = {e.allocation_id: e.at for k in kids for e in cp.queries.events(k.id) if (e.incarnation, e.to_state) == (2, "placed")}
    assert sorted(placed) == sorted(due) and len(set(placed.values())) == len(waves)
    assert all(placed[k] == pytest.approx(lost_at + due[k]) for k in placed)
    # And the same failure of the same children (same ids, same incarnations) is spread the same way again
    store.clear()
    _, again, _, _ = correlated_failure(store)
    assert {child: m.countdown for m in again.take(RESTART) for child, _, _ in m.args[1]} == due
    assert set(decision.data["restarts"]) == set(due)


# --- one reaper at a time -----------------------------------------------------------------------
def _holder(client: redis.Redis) -> int | None:
    """The pid of the scheduler holding the lease (its token is host:pid:time), or None."""
    token = client.get(LOCK_KEY)
    if not isinstance(token, bytes):
        return None
    return int(token.decode().split(":")[1])


@pytest.mark.slow
def test_one_scheduler_reaps_and_the_standby_takes_over_when_the_leader_dies(falkordb_server: FalkorDBServer, tmp_path: Path) -> None:
    falkordb_server.client(db=7).flushdb()
    stack = Stack(falkordb_server, tmp_path, graph="reaper", redis_db=7, grace_s=1.0)
    stack.store.clear()
    lease = redis.Redis.from_url(stack.broker_url)
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    try:
        # Given two schedulers
        pids = {name: stack.start(name, "scheduler", log=log).pid for name, log in logs.items()}
        leader_pid = wait_for(lambda: _holder(lease), 30, "a scheduler to take the lease")
        [leader] = [n for n, p in pids.items() if p == leader_pid]
        [standby] = [n for n in pids if n != leader]
        # When a node stops heartbeating
        stack.control.nodes.register({"name": "ghost-1", "cpu_milli": 1_000, "memory_mib": 1_024})
        wait_for(lambda: stack.control.queries.node("ghost-1").status == "lost", 30, "ghost-1 to be declared lost")
        # Then the leader declared it lost; the standby never led, nor reaped
        assert _holder(lease) == leader_pid
        assert "ghost-1 lost" in logs[leader].read_text() and "leading" in logs[leader].read_text()
        assert "leading" not in logs[standby].read_text() and "ghost-1 lost" not in logs[standby].read_text()
        # When the leader is killed, and another node goes silent
        stack.kill9(leader)
        stack.control.nodes.register({"name": "ghost-2", "cpu_milli": 1_000, "memory_mib": 1_024})
        # Then the dead leader's lease runs out before the standby leads (never two leaders), and it reaps ghost-2
        holders: list[int | None] = []

        def standby_leads() -> bool:
            holder = _holder(lease)
            if not holders or holders[-1] != holder:
                holders.append(holder)
            return holder == pids[standby]

        wait_for(standby_leads, 30, "the standby to take the lease", every=0.02)
        assert holders[0] == leader_pid and set(holders[1:-1]) <= {None}
        wait_for(lambda: stack.control.queries.node("ghost-2").status == "lost", 30, "ghost-2 to be declared lost")
        standby_log = logs[standby].read_text()
        assert standby_log.count("leading") == 1 and "ghost-2 lost" in standby_log and "ghost-1 lost" not in standby_log
    finally:
        stack.close()
        lease.close()


# --- UNAVAILABLE --------------------------------------------------------------------------------
@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[FalkorDBServer, TestClient]]:
    """An API over a FalkorDB server of its own, to stop and start again."""
    server = FalkorDBServer(server_config(tmp_path / "db")).start()
    store = FalkorDBStore(server.url, graph="outage")
    try:
        store.bootstrap()
        app, admin = app_with_auth(assemble(store), tmp_path)
        with client_with(app, admin) as client:
            yield server, client
    finally:
        store.close()
        server.stop()


def _post(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query, "variables": variables})
    assert r.status_code == 200 and "Traceback" not in r.text, r.text
    body: dict[str, Any] = r.json()
    return body


NODES = "{ nodes(first: 10) { edges { node { id } } } }"
REGISTER = 'mutation { registerNode(input: {name: "n1", cpuMilli: 1000, memoryMib: 1024}) { id } }'
SPAWN = 'mutation { spawnAllocation(parent: "n1", spec: {name: "x", argv: ["true"]}) { id state } }'


def test_while_the_graph_server_is_down_the_api_answers_unavailable_and_then_comes_back(
    outage: tuple[FalkorDBServer, TestClient],
) -> None:
    server, client = outage
    assert "errors" not in _post(client, REGISTER)
    # When the graph server goes down
    server.stop()
    # Then a read and a write answer UNAVAILABLE, and the health check names the graph
    for query in (NODES, SPAWN):
        [err] = _post(client, query)["errors"]
        assert err["extensions"]["code"] == "UNAVAILABLE", err
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["checks"]["graph"] != "ok"
    # When it is started again, then the same calls answer, with what was written before the outage
    server.start()
    assert _post(client, NODES)["data"]["nodes"]["edges"] == [{"node": {"id": "n1"}}]
    spawned = _post(client, SPAWN)
    assert "errors" not in spawned and spawned["data"]["spawnAllocation"]["state"] == "PLACED"
    assert client.get("/healthz").status_code == 200
