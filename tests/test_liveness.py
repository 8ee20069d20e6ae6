"""Liveness that does not lie: expensive reads never starve the control plane, and the reaper distrusts its blindness.

Given real node agents whose leases live in Redis, when readers flood the API with
queries that could run for ever, then no node is declared lost, no allocation is
touched, and other calls keep answering; and the reaper declares nothing when it
cannot see the leases or when most nodes fall silent at the same moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain.errors import Busy
from controlplane.domain.lifecycle import State
from controlplane.ports.store import GraphStore
from controlplane.redis_leases import RedisLeases
from controlplane.services import ControlPlane
from controlplane.services.queries import QueryGate
from controlplane.settings import Settings
from controlplane.wiring import assemble, control_plane
from graph_schema.falkordb_server import FalkorDBServer, find_free_port
from tests.clock import Clock
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.http import TestClient
from tests.stack import Stack, wait_for
from tests.store_passwords import server_config

CLIQUE = 24
#: reads that, unbounded, would run for hours: the engine's own time limit must stop them (Neo4j answers the
#: cartesian count from its count store at once, so Cypher also counts every trail of the clique; TinkerPop bulks
#: traversers on one vertex, so Gremlin walks simple paths, which it cannot bulk)
ENDLESS = {
    "cypher": ["MATCH (a),(b),(c),(d),(e),(f),(g),(h) RETURN count(*)",
               "MATCH p = (:Node)-[:NEIGHBOR_OF*1..12]->(:Node) RETURN count(p)"],
    "gremlin": ["g.V().repeat(__.both().simplePath()).times(12).count()"],
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalkorDBServer]:
    """A Redis of its own for Celery and the leases, as `controlplane up` runs it beside the graph's server."""
    server = FalkorDBServer(server_config(tmp_path_factory.mktemp("broker"), graph=False)).start()
    yield server
    server.stop()


@pytest.fixture
def stack(store: GraphStore, falkordb_server: FalkorDBServer, broker: FalkorDBServer, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Stack]:
    uri_fixture = {"neo4j": "neo4j_uri", "gremlin": "gremlin_url"}.get(store.engine)
    uri = request.getfixturevalue(uri_fixture) if uri_fixture else falkordb_server.url
    graph = "liveness"
    if store.engine == "falkordb":
        from graph_schema.cypher.falkordb_store import FalkorDBStore

        store = FalkorDBStore(falkordb_server.url, graph=graph)
        store.bootstrap()
        store.clear()
    broker.client(db=0).flushdb()
    s = Stack(falkordb_server, tmp_path, graph=graph, store=store, graph_uri=uri)
    s.env["REDIS_URL"] = broker.redis_url(0)
    settings = Settings.model_validate({
        "graph_backend": store.engine, "graph_name": graph, "query_timeout_s": 3, "max_concurrent_queries": 2,
        "query_wait_s": 0.5,
    })
    s.control = control_plane(settings, graph_uri=uri, broker_url=broker.redis_url(0), readers=True)
    try:
        s.start("supervisor", "supervisor")
        s.start("scheduler", "scheduler")
        s.agent("busy-node")
        yield s
    finally:
        s.close()


def clique(cp: ControlPlane, leases: RedisLeases, stop: threading.Event) -> list[str]:
    """CLIQUE nodes, every one a NEIGHBOR_OF every other, kept alive by renewing their leases."""
    names = [f"k{i:02d}" for i in range(CLIQUE)]
    for n in names:
        cp.nodes.register({"name": n, "cpu_milli": 1000, "memory_mib": 1024})
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            cp.nodes.connect(a, b, rtt_ms=1.0)

    def renew() -> None:
        while not stop.is_set():
            for n in names:
                leases.renew(node_id=n, now=0)
            stop.wait(0.3)

    threading.Thread(target=renew, daemon=True).start()
    return names


@pytest.mark.slow
def test_endless_reads_in_a_loop_starve_neither_heartbeats_nor_the_api(stack: Stack, tmp_path: Path) -> None:
    # Given three allocations running on a real agent, and a dense neighbour clique to traverse
    cp = stack.control
    stop = threading.Event()
    clique(cp, RedisLeases(stack.env["REDIS_URL"]), stop)
    running = cp.allocations.spawn("busy-node", [{"name": f"s{i}", "argv": ["sleep", "600"],
                                                  "resources": {"cpu_milli": 10, "memory_mib": 8}} for i in range(3)])
    for a in running:
        wait_for(partial(lambda i: cp.queries.allocation(i).state is State.RUNNING, a.id), 30, f"{a.name} running")
    pids = {a.id: cp.queries.allocation(a.id).pid for a in running}
    lang = "gremlin" if cp.store.engine == "gremlin" else "cypher"
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def flood(client: TestClient, body: str, variables: dict[str, Any]) -> None:
        while not stop.is_set():
            answer = client.post("/graphql", json={"query": body, "variables": variables}).json()
            code = (answer.get("errors") or [{}])[0].get("extensions", {}).get("code", "OK")
            with lock:
                outcomes[code] = outcomes.get(code, 0) + 1

    app, admin = app_with_auth(cp, tmp_path, health_checks={})
    with client_with(app, admin) as client:
        raw = "query($q: String!) { rawQuery(query: $q, timeoutS: 5) { rows } }"
        readers = [
            threading.Thread(target=flood, args=(client, raw, {"q": q}), daemon=True) for q in ENDLESS[lang] * 2
        ] + [
            threading.Thread(target=flood, args=(client, "query { traverse(from: \"k00\", edgeTypes: [NEIGHBOR_OF], "
                                                          "maxDepth: 10) { id } }", {}), daemon=True),
        ]
        # When readers loop on endless queries for 30 s
        for t in readers:
            t.start()
        latencies = []
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                started = time.monotonic()
                got = client.post("/graphql", json={"query": "{ node(id: \"busy-node\") { status } }"}).json()
                latencies.append(time.monotonic() - started)
                # Then the node stays ready all along, and other calls keep answering
                assert got == {"data": {"node": {"status": "ready"}}}, got
                time.sleep(0.5)
        finally:
            stop.set()
            for t in readers:
                t.join(timeout=30)
    # ... the expensive ones were stopped by the engine (TIMEOUT) or turned away (BUSY), never left running
    assert outcomes.get("TIMEOUT", 0) >= 3 and set(outcomes) <= {"TIMEOUT", "BUSY", "OK"}, outcomes
    # ... and plain reads answered at once, never queued behind an endless one (that would be its whole 5 s or more,
    # every time); one slow answer on a machine whose cores the flood keeps busy is not starvation
    latencies.sort()
    median, worst = latencies[len(latencies) // 2], latencies[-1]
    assert median < 1.0 and worst < 10.0, f"plain reads behind the flood: median {median:.2f}s, worst {worst:.1f}s"
    # ... and no allocation was lost, killed or restarted
    for a in running:
        now = cp.queries.allocation(a.id)
        assert (now.state, now.incarnation, now.pid) == (State.RUNNING, 1, pids[a.id])
        assert not [e for e in cp.queries.events(a.id) if e.to_state == "lost"]
    assert cp.queries.node("busy-node").status == "ready"
    cp.allocations.stop(running[0].id)


def test_the_reaper_declares_nothing_when_it_cannot_see_the_leases(store: GraphStore) -> None:
    # Given a node whose graph heartbeat is old, and a lease store nobody answers at
    blind = assemble(store, leases=RedisLeases(f"redis://127.0.0.1:{find_free_port()}/0", timeout_s=0.2))
    blind.nodes.register({"name": "quiet", "cpu_milli": 1000, "memory_mib": 1024})
    [a] = blind.allocations.spawn("quiet", [{"name": "w", "argv": ["sleep", "1"]}])
    # When the reaper runs long after the grace period
    time.sleep(0.3)
    reaped = blind.repair.reap(grace_s=0.1)
    # Then it declares nothing: it could not see, so it does not judge
    assert reaped == {}
    assert blind.queries.node("quiet").status == "ready"
    assert blind.queries.allocation(a.id).state is State.PLACED


def test_after_the_lease_store_was_out_of_reach_the_reaper_waits_a_grace_period_before_judging(
    store: GraphStore, tmp_path: Path
) -> None:
    # Given a node renewing its lease in a Redis of its own, with one allocation
    redis_server = FalkorDBServer(server_config(tmp_path / "leases", graph=False)).start()
    leases = RedisLeases(redis_server.redis_url(0), timeout_s=0.5)
    try:
        cp = assemble(store, leases=leases)
        cp.nodes.register({"name": "solo", "cpu_milli": 1000, "memory_mib": 1024})
        [a] = cp.allocations.spawn("solo", [{"name": "w", "argv": ["sleep", "60"]}])
        leases.renew(node_id="solo", now=time.time())
        # When the lease store goes away for longer than the grace period (no agent can renew meanwhile)
        redis_server.kill_hard()
        assert cp.repair.reap(grace_s=1.0) == {}  # blind: judges nothing
        time.sleep(1.5)
        redis_server.restart()  # on the same port
        # Then, back, it still judges nothing while the node has not had a whole grace period to renew
        assert cp.repair.reap(grace_s=1.0) == {}
        assert cp.queries.node("solo").status == "ready"
        # and a node that renewed in that time is never lost; one that stayed silent through it is
        time.sleep(0.6)
        leases.renew(node_id="solo", now=time.time())
        assert cp.repair.reap(grace_s=1.0) == {}
        time.sleep(1.2)
        assert cp.repair.reap(grace_s=1.0) == {"solo": 1}
        assert cp.queries.allocation(a.id).state is State.LOST
    finally:
        leases.close()
        redis_server.stop()


def test_the_reaper_holds_off_when_most_nodes_fall_silent_at_once(store: GraphStore) -> None:
    # Given four nodes, each running an allocation
    clock = Clock()
    cp = assemble(store, clock=clock)
    for n in ("a", "b", "c", "d"):
        cp.nodes.register({"name": n, "cpu_milli": 1000, "memory_mib": 1024})
    work = {n: cp.allocations.spawn(n, [{"name": f"w-{n}", "argv": ["sleep", "60"], "node": n}])[0] for n in "abcd"}
    # When three of them go silent in the same moment
    clock.now += 10
    cp.nodes.heartbeat("a")
    # Then the reaper declares none of them lost, and says why on each
    assert cp.repair.reap(grace_s=3) == {}
    for n in "bcd":
        assert cp.queries.node(n).status == "ready"
        assert cp.queries.allocation(work[n].id).state is State.PLACED
        [held] = [e for e in cp.queries.events(n) if e.kind == "reaper"]
        assert "3 of 4 nodes" in (held.reason or "")
    # When the others come back, it still waits: every node gets a whole grace period to renew after such a moment
    cp.nodes.heartbeat("b")
    cp.nodes.heartbeat("c")
    assert cp.repair.reap(grace_s=3) == {}
    # and once one has stayed silent through it, that one alone is declared lost
    clock.now += 3.5
    for n in "abc":
        cp.nodes.heartbeat(n)
    assert cp.repair.reap(grace_s=3) == {"d": 1}
    assert cp.queries.allocation(work["d"].id).state is State.LOST


def test_an_expensive_query_past_the_gate_is_busy_and_a_deep_traverse_is_stopped_by_the_engine(store: GraphStore) -> None:
    # Given a gate that lets one expensive query run at a time, and a dense clique
    cp = assemble(store)
    gate = QueryGate(1, wait_s=0.2)
    cp.queries.gate = gate
    names = [f"q{i:02d}" for i in range(16)]
    for n in names:
        cp.nodes.register({"name": n, "cpu_milli": 1000, "memory_mib": 1024})
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            cp.nodes.connect(a, b, rtt_ms=1.0)
    lang = "gremlin" if store.engine == "gremlin" else "cypher"
    errors: list[BaseException] = []

    def endless() -> None:
        try:
            cp.queries.raw_query(ENDLESS[lang][-1], timeout_s=2)
        except BaseException as exc:  # noqa: BLE001 - what it ended with is the answer
            errors.append(exc)

    first = threading.Thread(target=endless)
    first.start()
    time.sleep(0.3)
    # When a second one comes while the first runs
    with pytest.raises(Busy) as busy:
        cp.queries.raw_query("RETURN 1" if lang == "cypher" else "g.V().count()", timeout_s=1)
    first.join(timeout=30)
    # Then it is refused BUSY at once, and the first is stopped by the engine's own time limit
    assert busy.value.code.value == "BUSY"
    assert [type(e).__name__ for e in errors] == ["QueryTimeout"]
