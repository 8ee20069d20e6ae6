"""What Gremlin Server + TinkerGraph guarantee, and what they do not, shown on a real server.

The conformance suite shows GremlinStore gives the same answers as the Cypher engines.
These tests show *why* it can, and where the engine itself stops: optimistic commits
(refused, not waited for), checks on elements a transaction only reads (not protected),
a TinkerGraph without transactions (a failed traversal keeps its first writes), and an
in-memory graph (gone when the server restarts). Plus the harness's own promise: no
Gremlin Server JVM outlives the process that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import T

from tests.gremlin_harness.launcher import PLAIN_GRAPH_PROPERTIES, start_gremlin  # noqa: E402

CONFLICT = "Conflict: element modified in another transaction"


@pytest.fixture
def g(gremlin_url: str) -> Iterator[GraphTraversalSource]:
    conn = DriverRemoteConnection(gremlin_url, "g")
    source = traversal().with_(conn)
    source.V().drop().iterate()
    yield source
    source.V().drop().iterate()
    conn.close()


def commit(tx: object) -> None:
    # gremlinpython's commit() returns the server's answer unread: an refused commit only raises when read
    tx.commit().all().result()  # type: ignore[attr-defined]


def test_two_transactions_writing_one_vertex_the_second_commit_is_refused_not_waited_for(g: GraphTraversalSource) -> None:
    # Given a node with 10 free, and two transactions that each read it and reserve on it
    g.add_v("Node").property(T.id, "n").property("cpu_free", 10).iterate()
    tx1, tx2 = g.tx(), g.tx()
    g1, g2 = tx1.begin(), tx2.begin()
    assert g1.V("n").values("cpu_free").next() == g2.V("n").values("cpu_free").next() == 10
    g1.V("n").property("cpu_free", 10 - 8).iterate()
    g2.V("n").property("cpu_free", 10 - 6).iterate()
    # When both commit
    commit(tx2)
    with pytest.raises(GremlinServerError, match=CONFLICT):
        commit(tx1)
    # Then the first committer wins and nothing is overcommitted; the loser must run again
    # (graph_schema.gremlin.remote.Remote reruns the whole traversal, which re-reads 4 free)
    assert g.V("n").values("cpu_free").next() == 4


def test_a_check_on_a_vertex_the_transaction_only_reads_is_not_protected(g: GraphTraversalSource) -> None:
    # Given a running parent; a transaction checks it is running, then creates a child
    # *without* writing the parent (no edge from it)
    g.add_v("Allocation").property(T.id, "p").property("state", "running").iterate()
    tx1, tx2 = g.tx(), g.tx()
    g1, g2 = tx1.begin(), tx2.begin()
    assert g1.V("p").values("state").next() == "running"
    # When the parent is stopped and committed meanwhile
    g2.V("p").property("state", "stopped").iterate()
    commit(tx2)
    g1.add_v("Allocation").property(T.id, "k").property("parent_id", "p").iterate()
    commit(tx1)
    # Then both commits succeed: a child was created under a stopped parent (write skew)
    assert g.V("p").values("state").next() == "stopped"
    assert g.V("k").count().next() == 1


def test_linking_the_child_to_its_parent_writes_the_parent_so_the_same_race_is_refused(g: GraphTraversalSource) -> None:
    # Given the same race, but the create adds the PARENT_OF edge from the parent, as
    # GremlinStore.create_allocations does (an edge changes both of its vertices)
    g.add_v("Allocation").property(T.id, "p").property("state", "running").iterate()
    tx1, tx2 = g.tx(), g.tx()
    g1, g2 = tx1.begin(), tx2.begin()
    assert g1.V("p").values("state").next() == "running"
    g2.V("p").property("state", "stopped").iterate()
    commit(tx2)
    g1.add_v("Allocation").property(T.id, "k").add_e("PARENT_OF").from_(__.V("p")).iterate()
    # Then the create's commit is refused; rerun, it sees the parent stopped
    with pytest.raises(GremlinServerError, match=CONFLICT):
        commit(tx1)
    assert g.V("k").count().next() == 0


def half_failing(g: GraphTraversalSource) -> None:
    """A traversal whose first step writes and whose second fails (a duplicate vertex id)."""
    with pytest.raises(GremlinServerError, match="already exists"):
        g.add_v("Allocation").property(T.id, "x1").add_v("Allocation").property(T.id, "x1").iterate()


def test_with_transactions_a_traversal_that_fails_half_way_writes_nothing(g: GraphTraversalSource) -> None:
    half_failing(g)
    assert g.V("x1").count().next() == 0
    # and the server thread that rolled it back answers again (TinkerPop 3.8.1 leaves it hanging
    # when the graph has vertex indexes but no edge index: the harness declares one of each)
    for _ in range(3 * 8):  # every thread of the server's gremlinPool, several times
        assert g.V("x1").count().next() == 0


def test_without_transactions_a_traversal_that_fails_half_way_keeps_its_first_writes(tmp_path: Path) -> None:
    # Given a Gremlin Server over a plain TinkerGraph (no transactions)
    with start_gremlin(tmp_path, graph_properties=PLAIN_GRAPH_PROPERTIES) as server:
        conn = DriverRemoteConnection(server.url, "g")
        try:
            plain = traversal().with_(conn)
            # When a traversal fails after its first write
            half_failing(plain)
            # Then the first write stays: no traversal is atomic there
            assert plain.V("x1").count().next() == 1
        finally:
            conn.close()


def test_an_in_memory_graph_is_gone_after_a_server_restart(tmp_path: Path) -> None:
    with start_gremlin(tmp_path / "first") as server:
        conn = DriverRemoteConnection(server.url, "g")
        traversal().with_(conn).add_v("Node").property(T.id, "n1").iterate()
        conn.close()
    with start_gremlin(tmp_path / "second") as server:
        conn = DriverRemoteConnection(server.url, "g")
        try:
            assert traversal().with_(conn).V().count().next() == 0
        finally:
            conn.close()


# --- the harness --------------------------------------------------------------------------
def test_stop_ends_the_jvm(tmp_path: Path) -> None:
    with start_gremlin(tmp_path) as server:
        assert server.url.startswith("ws://127.0.0.1:") and server.is_running()
    assert not server.is_running()


_STARTER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.gremlin_harness.launcher import start_gremlin
server = start_gremlin(Path({workdir!r}))
print(server.pid, flush=True)
time.sleep(600)
"""


def test_the_jvm_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # Given a Python process that started a server and is then killed without any cleanup
    root = str(Path(__file__).resolve().parents[1])
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER.format(root=root, workdir=str(tmp_path))],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert starter.stdout is not None
        jvm = int(starter.stdout.readline())
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(timeout=10)
        # Then its JVM notices (stdin EOF, parent gone) and exits
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(jvm):
            time.sleep(0.2)
        assert not _alive(jvm)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        if starter.stdout is not None:
            starter.stdout.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
