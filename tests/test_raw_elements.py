"""Raw query answers carry vertices, edges and paths in one shape on every engine (see the `store` fixture).

A graph browser draws whatever a raw query returns; it can only do that if an
edge names the vertices it joins by the same ids the vertices carry, whichever
engine answered. Given a node with an allocation under it, when a raw query
returns the node, the PARENT_OF edge and the path between them, then the edge's
source and target are the two vertices' ids and the path holds both.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.specs import NodeSpec
from controlplane.ports.store import GraphStore
from controlplane.services import ControlPlane
from controlplane.wiring import assemble

CYPHER = {
    "vertex": "MATCH (n:Node {id: 'box'}) RETURN n",
    "child": "MATCH (:Node {id: 'box'})-[:PARENT_OF]->(a) RETURN a",
    "edge": "MATCH (:Node {id: 'box'})-[r:PARENT_OF]->() RETURN r",
    "neighbor": "MATCH (:Node {id: 'box'})-[r:NEIGHBOR_OF]->() RETURN r",
    "path": "MATCH p = (:Node {id: 'box'})-[:PARENT_OF]->() RETURN p",
    "map": "RETURN {labels: ['Node'], properties: {}} AS m",
}
GREMLIN = {
    "vertex": "g.V('box')",
    "child": "g.V('box').out('PARENT_OF')",
    "edge": "g.V('box').outE('PARENT_OF')",
    "neighbor": "g.V('box').outE('NEIGHBOR_OF')",
    "path": "g.V('box').outE('PARENT_OF').inV().path()",
    "map": "g.inject(1).project('labels','properties').by(constant(['Node'])).by(constant([:]))",
}


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    control = assemble(store)
    control.nodes.register(NodeSpec(name="box", cpu_milli=4000, memory_mib=4096))
    control.nodes.register(NodeSpec(name="peer", cpu_milli=4000, memory_mib=4096))
    control.nodes.connect("box", "peer", rtt_ms=7.5, bandwidth=1e9)
    control.allocations.spawn("box", [{"name": "worker", "argv": ["true"], "resources": {"cpu_milli": 10, "memory_mib": 8}}])
    return control


def one(cp: ControlPlane, which: str) -> Any:
    q = (GREMLIN if cp.store.engine == "gremlin" else CYPHER)[which]
    result = cp.queries.raw_query(q)
    assert len(result.rows) == 1 and len(result.rows[0]) == 1, result.rows
    return result.rows[0][0]


def test_an_edge_names_the_vertices_it_joins_by_their_element_ids(cp: ControlPlane) -> None:
    node, child, edge = one(cp, "vertex"), one(cp, "child"), one(cp, "edge")
    assert node["~element"] == "vertex" and "Node" in node["labels"] and node["properties"]["id"] == "box"
    assert child["~element"] == "vertex" and "Allocation" in child["labels"] and child["properties"]["name"] == "worker"
    assert (edge["~element"], edge["type"], edge["source"], edge["target"]) == ("edge", "PARENT_OF", node["id"], child["id"])
    assert all(isinstance(x, str) and x for x in (node["id"], child["id"], edge["id"]))
    assert node["id"] != child["id"]


def test_an_edge_carries_its_properties(cp: ControlPlane) -> None:
    link = one(cp, "neighbor")
    assert (link["type"], link["source"], link["properties"]["rtt_ms"]) == ("NEIGHBOR_OF", one(cp, "vertex")["id"], 7.5)


def test_a_path_holds_its_vertices_and_edges_in_order(cp: ControlPlane) -> None:
    path = one(cp, "path")
    assert path["~element"] == "path"
    assert [v["id"] for v in path["vertices"]] == [one(cp, "vertex")["id"], one(cp, "child")["id"]]
    assert path["edges"] == [one(cp, "edge")]


def test_a_map_that_looks_like_a_vertex_is_not_taken_for_one(cp: ControlPlane) -> None:
    assert one(cp, "map") == {"labels": ["Node"], "properties": {}}
