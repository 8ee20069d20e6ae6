"""JanusGraph on a real ring: three Cassandra nodes (127.0.0.1/.2/.3, RF 3, QUORUM) and two JanusGraph Servers.

Given control planes whose stores are spread over both servers, while allocations are
spawned, started, crashed and restarted, when a Cassandra node or a JanusGraph Server is
killed with SIGKILL, then every request still completes exactly once: each spawn's
allocation exists once, its history is the one expected, and node capacity adds up (after a
Cassandra node's death, within one request's reservation: the limit docs/engines.md explains). A
client of a killed server moves to the other; a server that comes back sees everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.lifecycle import CLAIM, HOLDS_RESOURCES, RUN, State
from controlplane.domain.records import Exit
from controlplane.ports.store import Change
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.wiring import assemble
from graph_schema.gremlin.janusgraph import JanusGraphStore
from tests.conftest import IN_CI
from tests.janusgraph_harness.launcher import RingStack

# the ring takes minutes to start on a busy 2-core machine, and every request there is a QUORUM round trip
pytestmark = [pytest.mark.slow, pytest.mark.ring, pytest.mark.timeout(900)]

EXPECTED_MOVES = [("pending", "placed"), ("placed", "starting"), ("starting", "running"), ("running", "failed"),
                  ("failed", "placed")]


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RingStack]:
    stack = RingStack(Path(tmp_path_factory.mktemp("ring")))
    try:
        stack.start()
    except Exception as exc:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"the JanusGraph ring could not start in CI: {exc}", pytrace=False)
        pytest.skip(f"the JanusGraph ring cannot start here: {exc}")
    yield stack
    stack.stop()


def client(ring: RingStack, first: int) -> ControlPlane:
    """A control plane whose store starts on server `first` and knows the other one."""
    return assemble(JanusGraphStore(ring.urls, start_at=first))


def url_of(cp: ControlPlane) -> str:
    """The JanusGraph Server a client's store talks to now."""
    assert isinstance(cp.store, JanusGraphStore)
    return cp.store.url


def retried(what: Callable[[], Any], *, for_s: float = 120.0) -> Any:
    """What a caller does with an error it cannot tell from a lost answer: ask again (every request is idempotent)."""
    deadline = time.monotonic() + for_s
    while True:
        try:
            return what()
        except ControlPlaneError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def lifecycle(cp: ControlPlane, node: str, request_id: str, done: list[tuple[str, str, float]]) -> None:
    """Spawn (with a request id), start, crash, and let the supervisor restart one allocation."""
    [parent] = retried(lambda: cp.allocations.spawn(node, [{"name": "sup", "argv": ["sleep", "9"], "resources": {"cpu_milli": 10}}],
                                        request_id=f"{request_id}-sup"))
    [a] = retried(lambda: cp.allocations.spawn(parent.id, [{"name": "w", "argv": ["sleep", "9"], "resources": {"cpu_milli": 100}}],
                                   request_id=request_id))
    for move in (CLAIM, RUN):
        retried(partial(cp.store.transition_many, changes=[Change(x.id, move) for x in (parent, a)], now=time.time()))

    def crash() -> None:
        ended = AgentReports(cp.store, node=a.node_id).exited([Exit((a.id, 1), 1, "boom")])
        cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])

    retried(crash)
    deadline = time.monotonic() + 120
    while retried(lambda: cp.queries.allocation(a.id).incarnation) != 2:  # a decision whose answer was lost: decided again
        assert time.monotonic() < deadline, f"{a.id} was not restarted"
        retried(lambda: cp.dispatcher.terminated(keys=[(a.id, 1)]))
    done.append((request_id, a.id, time.monotonic()))


#: how far a node's free cpu may end from the sum of its live reservations after a Cassandra node was killed: one
#: request's (its supervisor's 10 and its worker's 100). A commit whose coordinator dies is reported failed but may
#: be applied on one replica, which a QUORUM read of the other two does not see: a lock check passes it by (the
#: limit docs/engines.md describes). Everything else is exact.
CASSANDRA_KILL_DRIFT = 110


def check_graph(cp: ControlPlane, node: str, done: list[tuple[str, str, float]], requests: int, *,
                capacity_drift: int = 0) -> None:
    """Each request's allocation once, with exactly the expected history; capacity adds up (within `capacity_drift`)."""
    ids = [a for _, a, _ in done]
    assert len(done) == requests and len(set(ids)) == requests
    for aid in ids:
        a = cp.queries.allocation(aid)
        assert (a.state, a.incarnation) == (State.PLACED, 2)
        moves = [(e.from_state, e.to_state) for e in cp.queries.events(aid) if e.kind == "transition"]
        assert moves == EXPECTED_MOVES
    live = [a for a in cp.store.list_allocations(after=None, limit=10_000, node_id=node) if a.state in HOLDS_RESOURCES]
    assert len(live) == 2 * requests  # each request's supervisor and its worker, nothing else
    n = cp.store.get_node(node_id=node)
    assert n is not None and n.cpu_free >= 0
    drift = n.cpu_free - (n.cpu - sum(a.cpu for a in live))
    assert abs(drift) <= capacity_drift, f"free cpu of {node} is {drift:+d} mcpu from its live reservations"
    if drift:
        print(f"the limit shown: free cpu of {node} ended {drift:+d} mcpu from its live reservations")


def run_with_fault(cps: list[ControlPlane], node: str, n: int, fault: Callable[[], None]) -> list[tuple[str, str, float]]:
    """n lifecycles per client on `node`, in threads; `fault` once some have completed; all must complete."""
    cps[0].nodes.register({"name": node, "cpu_milli": 64_000, "memory_mib": 65_536})
    done: list[tuple[str, str, float]] = []
    errors: list[BaseException] = []
    threads = []
    for k, cp in enumerate(cps):
        def work(cp: ControlPlane = cp, k: int = k) -> None:
            for i in range(n):
                try:
                    lifecycle(cp, node, f"{node}-{k}-{i}", done)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
        threads.append(threading.Thread(target=work))
    for t in threads:
        t.start()
    while len(done) < 2:  # the fault comes mid-run, with requests in flight
        time.sleep(0.1)
    fault_at = time.monotonic()
    fault()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert any(at > fault_at for _, _, at in done), "no work completed after the fault"
    return done


@pytest.fixture(scope="module")
def clients(ring: RingStack) -> Iterator[list[ControlPlane]]:
    cps = [client(ring, 0), client(ring, 1)]
    cps[0].store.bootstrap()
    cps[0].store.clear()
    yield cps
    for cp in cps:
        cp.store.close()


def test_killing_a_cassandra_node_loses_and_duplicates_nothing(ring: RingStack, clients: list[ControlPlane]) -> None:
    victim = ring.ring.nodes[2]
    done = run_with_fault(clients, "ncas", 5, victim.kill9)
    assert not victim.is_running()
    check_graph(clients[0], "ncas", done, 10, capacity_drift=CASSANDRA_KILL_DRIFT)
    # When the node comes back and another one dies, the ring still answers everything at QUORUM:
    # the returned node is serving again (with the writes it missed, from hints or read repair)
    victim.start()
    seed = ring.ring.nodes[0]
    seed.kill9()
    try:
        check_graph(clients[1], "ncas", done, 10, capacity_drift=CASSANDRA_KILL_DRIFT)
    finally:
        seed.start()


def test_killing_a_janusgraph_server_moves_its_clients_and_a_restarted_one_catches_up(
    ring: RingStack, clients: list[ControlPlane]
) -> None:
    assert url_of(clients[0]) == ring.urls[0] and url_of(clients[1]) == ring.urls[1]
    server = ring.janusgraphs[0]
    done = run_with_fault(clients, "njg", 5, server.kill9)
    assert url_of(clients[0]) == ring.urls[1]  # moved over
    check_graph(clients[1], "njg", done, 10)
    # When the server comes back, a client of it alone sees all of it
    server.start()
    back = JanusGraphStore([ring.urls[0]])
    try:
        check_graph(assemble(back), "njg", done, 10)
    finally:
        back.close()
