"""Raw queries cannot write, on every engine: each known way around a read-only guard is refused by the engine.

Before this suite, `g.withoutStrategies(ReadOnlyStrategy).addV('X')` wrote through POST /query on
Gremlin Server. Every attempt below is run as an admin's raw query would be, and afterwards the
graph is exactly as before: no new vertex, the node's capacity untouched.
"""

from __future__ import annotations

import pytest

from controlplane.domain.errors import ControlPlaneError
from controlplane.ports.store import GraphStore
from controlplane.services import ControlPlane
from controlplane.wiring import assemble

CYPHER = [
    "CREATE (:X)",
    "MATCH (n:Node) SET n.cpu = 1",
    "MERGE (x:X {id: 'x'}) RETURN x",
    "MATCH (n) DETACH DELETE n",
    "MATCH (n:Node) REMOVE n.cpu",
    "CALL { CREATE (:X) } IN TRANSACTIONS",
    "UNWIND [1] AS i CALL { WITH i CREATE (:X) } RETURN i",
    "LOAD CSV FROM 'file:///etc/passwd' AS row CREATE (:X {line: row[0]})",
    "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row LIMIT 1",
    "LOAD CSV FROM 'http://127.0.0.1:1/x.csv' AS row RETURN row",
]
CYPHER_PROCEDURES = {
    "neo4j": [
        "CALL db.createLabel('X')",
        "CALL db.createProperty('x')",
        "CREATE INDEX x_idx FOR (n:X) ON (n.y)",
        "CALL dbms.setConfigValue('db.logs.query.enabled', 'OFF')",
    ],
    "falkordb": [
        "CALL db.idx.fulltext.createNodeIndex('Node', 'name')",
        "CREATE INDEX FOR (n:Node) ON (n.cpu)",
        "CALL db.idx.fulltext.drop('Node')",
        "DROP INDEX ON :Node(id)",
    ],
}
GREMLIN = [
    "g.addV('X')",
    "g.withoutStrategies(ReadOnlyStrategy).addV('X')",
    "g.withoutStrategies(ReadOnlyStrategy).V().hasLabel('Node').property('cpu', 1)",
    "g.withStrategies(new SubgraphStrategy(vertices: __.hasLabel('Node'))).withoutStrategies(ReadOnlyStrategy).addV('X')",
    "g.inject(1).sideEffect(__.addV('X'))",
    "g.V().hasLabel('Node').sideEffect(__.property('cpu', 1))",
    "g.inject(1).addV('X')",
    "g.V().hasLabel('Node').drop()",
    "g.mergeV([(T.label): 'X'])",
    "g.V().hasLabel('Node').union(__.addE('SELF').to(__.V().hasLabel('Node')))",
    "g.withComputer().V().hasLabel('Node').property('cpu', 1)",
    "g.io('/tmp/controlplane-raw-write.json').write()",
    "g.io('/etc/hostname').read()",
    "g.call('tinker.search', [search: 'x']).addV('X')",
]


#: engines whose raw queries are Gremlin (on g_ro); the others speak Cypher
GREMLIN_ENGINES = {"gremlin", "janusgraph"}


def attempts(engine: str) -> list[str]:
    if engine in GREMLIN_ENGINES:
        return GREMLIN
    return CYPHER + CYPHER_PROCEDURES[engine]


def count_all(cp: ControlPlane) -> object:
    text = "g.V().count()" if cp.store.engine in GREMLIN_ENGINES else "MATCH (n) RETURN count(n)"
    return cp.queries.raw_query(text).rows


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    control = assemble(store)
    control.nodes.register({"name": "n1", "cpu_milli": 4000, "memory_mib": 4096})
    control.allocations.spawn("n1", [{"name": "a", "argv": ["true"]}])
    return control


def test_every_known_way_around_read_only_is_refused_and_writes_nothing(cp: ControlPlane) -> None:
    before = (count_all(cp), cp.queries.node("n1"), cp.queries.allocations(limit=100))
    wrote = []
    for query in attempts(cp.store.engine):
        # When an admin's raw query tries to write (or to read files on the server)
        try:
            result = cp.queries.raw_query(query, timeout_s=10)
        except ControlPlaneError as exc:
            # Then the engine refuses it, with a clear code
            assert exc.code.value in ("INVALID_INPUT", "TIMEOUT", "UNAVAILABLE"), (query, exc)
            continue
        wrote.append((query, result.rows[:3]))
    # And no attempt got an answer, and the graph is unchanged
    assert wrote == []
    assert (count_all(cp), cp.queries.node("n1"), cp.queries.allocations(limit=100)) == before
