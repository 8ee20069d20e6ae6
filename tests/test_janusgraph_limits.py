"""What JanusGraph over Cassandra guarantees, and what it does not, shown on a real server.

The conformance suite shows JanusGraphStore gives the same answers as the other engines.
These tests show why it can and where it stops: without ConsistencyModifier.LOCK two
transactions writing one property both commit (the last write wins, nothing is refused);
with it, the second commit is refused and the store reruns it; a check on a vertex a
transaction only reads is not protected (write skew); lists are kept as JSON text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import T

from controlplane.wiring import assemble
from graph_schema.gremlin.janusgraph import JanusGraphStore


@pytest.fixture
def g(janusgraph_url: str) -> Iterator[GraphTraversalSource]:
    store = JanusGraphStore(janusgraph_url)
    store.bootstrap()  # the schema: which keys are locked
    store.clear()
    conn = DriverRemoteConnection(janusgraph_url, "g")
    yield traversal().with_(conn)
    conn.close()
    store.clear()
    store.close()


def commit(tx: object) -> None:
    # gremlinpython's commit() returns the server's answer unread: a refused commit only raises when read
    tx.commit().all().result()  # type: ignore[attr-defined]


def two_writers(g: GraphTraversalSource, key: str) -> None:
    """Two transactions read `key` of vertex n (10), then write 10-8 and 10-6; the second commits first."""
    g.add_v("Node").property(T.id, "n").property("id", "n").property(key, 10).id_().to_list()
    tx1, tx2 = g.tx(), g.tx()
    g1, g2 = tx1.begin(), tx2.begin()
    assert g1.V("n").values(key).next() == g2.V("n").values(key).next() == 10
    g1.V("n").property(key, 2).id_().to_list()  # ids, not elements: see docs/engines.md (RelationIdentifier)
    g2.V("n").property(key, 4).id_().to_list()
    commit(tx2)
    commit(tx1)


def test_without_a_lock_two_transactions_writing_one_property_both_commit(g: GraphTraversalSource) -> None:
    # Given a key the schema does not lock (created on first use), two read-modify-writes race
    two_writers(g, "unlocked_counter")
    # Then both commit and the last one wins: one reservation is silently lost
    assert g.V("n").values("unlocked_counter").next() == 2


def test_with_lock_the_second_commit_of_a_locked_key_is_refused(g: GraphTraversalSource) -> None:
    # Given cpu_free, declared with ConsistencyModifier.LOCK by the bootstrap
    with pytest.raises(GremlinServerError, match="(?i)lock|expected value|commit"):
        two_writers(g, "cpu_free")
    # Then the first committer wins; the loser must run again (JanusGraphRemote reruns the traversal)
    assert g.V("n").values("cpu_free").next() == 4


def test_a_check_on_a_vertex_the_transaction_only_reads_is_not_protected(g: GraphTraversalSource) -> None:
    # Given a running parent; a transaction checks it is running and links a child to it
    g.add_v("Allocation").property(T.id, "p").property("id", "p").property("state", "running").id_().to_list()
    tx1, tx2 = g.tx(), g.tx()
    g1, g2 = tx1.begin(), tx2.begin()
    assert g1.V("p").values("state").next() == "running"
    # When the parent is stopped and committed meanwhile
    g2.V("p").property("state", "stopping").id_().to_list()
    commit(tx2)
    g1.add_v("Allocation").property(T.id, "k").property("id", "k").add_e("PARENT_OF").from_(__.V("p")).count().to_list()
    commit(tx1)
    # Then both commit: an edge does not write its vertices' locked keys (TinkerGraph refuses this race)
    assert g.V("p").values("state").next() == "stopping"
    assert g.V("p").out("PARENT_OF").values("id").to_list() == ["k"]


def test_lists_are_kept_as_json_text_and_read_back_as_lists(janusgraph_url: str, g: GraphTraversalSource) -> None:
    store = JanusGraphStore(janusgraph_url)
    try:
        assemble(store).nodes.register(
            {"name": "edge-eu-1", "cpu_milli": 1000, "memory_mib": 64, "labels": {"zone": "eu", "rack": "r1"}})
        # the graph holds JSON text, under a vertex id with '-' escaped (JanusGraph reserves '-')
        assert g.V("edge%2Deu%2D1").values("labels").next() == '["rack=r1","zone=eu"]'
        node = store.get_node(node_id="edge-eu-1")
        assert node is not None and node.labels == ("rack=r1", "zone=eu")
        found = store.candidates(cpu=1, memory=1, gpus=0, gpu_model=None, labels=["zone=eu"], node_ids=None, limit=5)
        assert [c.node_id for c in found] == ["edge-eu-1"]
        assert store.candidates(cpu=1, memory=1, gpus=0, gpu_model=None, labels=["zone=e"], node_ids=None, limit=5) == []
    finally:
        store.close()
