"""The GraphQL API over HTTP, on every engine (see the `store` fixture): what a client sends and gets back.

Given / When / Then, asserting on the answers a client observes: data, errors
with their code and field, HTTP statuses, and the graph behind them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from controlplane.api import types as api_types
from controlplane.domain.lifecycle import State
from controlplane.domain.traversal import Op
from controlplane.domain.vocabulary import Direction, EdgeType
from controlplane.ports.store import GraphStore
from controlplane.services import ControlPlane
from controlplane.wiring import assemble
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.http import TestClient

EVIL = "x'}) MATCH (n) DETACH DELETE n // \" RETURN 1"


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    return assemble(store)


@pytest.fixture
def client(cp: ControlPlane, tmp_path: Any) -> Iterator[TestClient]:
    """An admin's client: the token of the API's first start, sent as a bearer token."""
    app, admin = app_with_auth(cp, tmp_path)
    with client_with(app, admin) as c:
        yield c


def post(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    """Send one operation; every answer, even a refusal, is HTTP 200 JSON without a traceback."""
    r = client.post("/graphql", json={"query": query, "variables": variables})
    assert r.status_code == 200, r.text
    assert "Traceback" not in r.text and 'File "' not in r.text
    body: dict[str, Any] = r.json()
    return body


def data(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    body = post(client, query, **variables)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]
    return result


def error(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    body = post(client, query, **variables)
    assert len(body.get("errors") or []) == 1, body
    err: dict[str, Any] = body["errors"][0]
    return err


REGISTER = """mutation($input: NodeInput!) { registerNode(input: $input) { id name status cpu cpuFree memoryFree labels } }"""
SPAWN = """mutation($parent: ID!, $spec: AllocationSpecInput!, $requestId: String) {
  spawnAllocation(parent: $parent, spec: $spec, requestId: $requestId) {
    id name state incarnation cpu memory env argv gpuIds nodeId
    parent { __typename id name } node { id }
  }
}"""
SPAWN_MANY = """mutation($parent: ID!, $specs: [AllocationSpecInput!]!) {
  spawnAllocations(parent: $parent, specs: $specs) { id name state parent { id } }
}"""


def node_input(name: str = "n1", cpu: int = 4000, memory: int = 8192, gpus: int = 0, **labels: str) -> dict[str, Any]:
    return {"name": name, "cpuMilli": cpu, "memoryMib": memory, "labels": labels, "gpus": [{"model": "A100", "memoryMib": 40960}] * gpus}


def job(name: str = "job", cpu: int = 100, memory: int = 64, gpus: int = 0, **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": ["true"], "resources": {"cpuMilli": cpu, "memoryMib": memory, "gpus": gpus}, **kw}


def register(client: TestClient, **kw: Any) -> dict[str, Any]:
    return cast(dict[str, Any], data(client, REGISTER, input=node_input(**kw))["registerNode"])


def spawn(client: TestClient, parent: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return cast(dict[str, Any], data(client, SPAWN, parent=parent, spec=spec or job())["spawnAllocation"])


def spawn_many(client: TestClient, parent: str, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    created: list[dict[str, Any]] = data(client, SPAWN_MANY, parent=parent, specs=specs)["spawnAllocations"]
    return created


# --- nodes ------------------------------------------------------------------------------
def test_a_registered_node_answers_with_its_gpus_and_neighbors(client: TestClient) -> None:
    # Given two registered nodes, one with GPUs, linked as neighbours
    registered = register(client, name="gpu-box", cpu=8000, gpus=2, zone="eu")
    register(client, name="peer")
    linked = data(client, 'mutation { connectNeighbors(a: "gpu-box", b: "peer", rttMs: 3.5, bandwidth: 1e9) { id } }')
    # When the client asks for the node with its GPUs and neighbours
    got = data(
        client,
        """{ node(id: "gpu-box") { id name status cpu memory cpuFree labels heartbeatAt
               gpus { id model memory claimedBy { id } }
               neighbors { rttMs bandwidth node { id neighbors { node { id } } } } } }""",
    )["node"]
    # Then it sees the registration, free capacity, both GPUs unclaimed and the symmetric link
    assert registered == {
        "id": "gpu-box", "name": "gpu-box", "status": "ready", "cpu": 8000, "cpuFree": 8000, "memoryFree": 8192,
        "labels": ["zone=eu"],
    }
    assert linked == {"connectNeighbors": {"id": "gpu-box"}}
    assert (got["cpu"], got["memory"], got["cpuFree"], got["heartbeatAt"] > 0) == (8000, 8192, 8000, True)
    assert got["gpus"] == [
        {"id": "gpu-box/gpu0", "model": "A100", "memory": 40960, "claimedBy": None},
        {"id": "gpu-box/gpu1", "model": "A100", "memory": 40960, "claimedBy": None},
    ]
    assert got["neighbors"] == [
        {"rttMs": 3.5, "bandwidth": 1e9, "node": {"id": "peer", "neighbors": [{"node": {"id": "gpu-box"}}]}}
    ]


def test_nodes_are_listed_in_pages(client: TestClient) -> None:
    for name in ("c", "a", "b"):
        register(client, name=name)
    query = "query($after: String) { nodes(first: 2, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"
    first = data(client, query)["nodes"]
    rest = data(client, query, after=first["pageInfo"]["endCursor"])["nodes"]
    assert [e["node"]["id"] for e in first["edges"]] == ["a", "b"]
    assert first["pageInfo"] == {"hasNextPage": True, "endCursor": "b"}
    assert [e["cursor"] for e in rest["edges"]] == ["c"]
    assert rest["pageInfo"] == {"hasNextPage": False, "endCursor": "c"}


# --- the hierarchy ----------------------------------------------------------------------
def test_allocations_spawned_under_a_node_and_under_an_allocation_form_a_tree(client: TestClient) -> None:
    # Given a node
    register(client, cpu=8000, memory=8192)
    # When a root allocation is spawned under the node, and a child under the root
    root = spawn(client, "n1", job("root", cpu=1000, memory=512, env={"A": "1"}))
    child = spawn(client, root["id"], job("child", cpu=500))
    # Then each answers its state, resources, its parent (a Node or an Allocation) and the node it runs on
    assert {k: root[k] for k in ("name", "state", "incarnation", "cpu", "memory", "env", "argv", "nodeId")} == {
        "name": "root", "state": "PLACED", "incarnation": 1, "cpu": 1000, "memory": 512, "env": {"A": "1"},
        "argv": ["true"], "nodeId": "n1",
    }
    assert root["parent"] == {"__typename": "Node", "id": "n1", "name": "n1"}
    assert child["parent"] == {"__typename": "Allocation", "id": root["id"], "name": "root"}
    assert child["node"] == {"id": "n1"}
    # And the node's free capacity shows both reservations
    assert data(client, '{ node(id: "n1") { cpuFree } }') == {"node": {"cpuFree": 8000 - 1500}}


def test_children_come_in_pages_with_cursors(client: TestClient) -> None:
    # Given a root with five children
    register(client)
    root = spawn(client, "n1", job("root"))
    kids = spawn_many(client, root["id"], [job(f"k{i}", cpu=10) for i in range(5)])
    query = """query($id: ID!, $after: String) { allocation(id: $id) {
        children(first: 2, after: $after) { edges { cursor node { id name } } pageInfo { hasNextPage endCursor } } } }"""
    # When the client pages through them two at a time
    seen: list[str] = []
    pages: list[bool] = []
    after = None
    while True:
        page = data(client, query, id=root["id"], after=after)["allocation"]["children"]
        seen += [e["node"]["id"] for e in page["edges"]]
        assert [e["cursor"] for e in page["edges"]] == [e["node"]["id"] for e in page["edges"]]
        pages.append(page["pageInfo"]["hasNextPage"])
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    # Then it sees every child once, in id order, in three pages
    assert seen == sorted(k["id"] for k in kids)
    assert pages == [True, True, False]
    # And a node's children are its root allocations
    node_children = data(client, '{ node(id: "n1") { children { edges { node { id } } pageInfo { hasNextPage } } } }')
    assert node_children["node"]["children"] == {"edges": [{"node": {"id": root["id"]}}], "pageInfo": {"hasNextPage": False}}


def test_descendants_to_a_depth_and_ancestors_up_to_the_node(client: TestClient) -> None:
    # Given root -> 3 kids -> 1 grandkid under the first kid
    register(client, cpu=64000, memory=65536)
    root = spawn(client, "n1", job("root"))
    kids = spawn_many(client, root["id"], [job(f"kid{i}") for i in range(3)])
    grandkid = spawn(client, kids[0]["id"], job("grandkid"))
    query = """query($id: ID!, $depth: Int!) { allocation(id: $id) {
        descendants(maxDepth: $depth) { id name state node { id } parent { id } } } }"""
    # When the client asks for descendants at depth 1 and at any depth, and for the grandkid's ancestors
    shallow = data(client, query, id=root["id"], depth=1)["allocation"]["descendants"]
    deep = data(client, query, id=root["id"], depth=64)["allocation"]["descendants"]
    ancestors = data(
        client, "query($id: ID!) { allocation(id: $id) { ancestors { __typename id name ... on Node { cpu } } } }",
        id=grandkid["id"],
    )["allocation"]["ancestors"]
    # Then depth limits the walk, the answer is ordered by id, and each knows its node and parent
    assert [d["id"] for d in shallow] == sorted(k["id"] for k in kids)
    assert [d["id"] for d in deep] == sorted([k["id"] for k in kids] + [grandkid["id"]])
    assert {d["name"]: d["parent"]["id"] for d in deep} == {
        "kid0": root["id"], "kid1": root["id"], "kid2": root["id"], "grandkid": kids[0]["id"],
    }
    assert {d["node"]["id"] for d in deep} == {"n1"} and {d["state"] for d in deep} == {"PLACED"}
    assert ancestors == [
        {"__typename": "Allocation", "id": kids[0]["id"], "name": "kid0"},
        {"__typename": "Allocation", "id": root["id"], "name": "root"},
        {"__typename": "Node", "id": "n1", "name": "n1", "cpu": 4000 * 16},
    ]


def test_a_batch_spawn_creates_all_in_order_or_nothing(client: TestClient) -> None:
    register(client, cpu=2000)
    created = spawn_many(client, "n1", [job("a", cpu=500), job("b", cpu=500)])
    assert [(c["name"], c["state"], c["parent"]["id"]) for c in created] == [("a", "PLACED", "n1"), ("b", "PLACED", "n1")]
    # a batch that does not fit is refused whole
    refused = error(client, SPAWN_MANY, parent="n1", specs=[job("c", cpu=500), job("d", cpu=500), job("e", cpu=500)])
    assert refused["extensions"]["code"] == "NO_CAPACITY"
    listed = data(client, "{ allocations { edges { node { name } } } }")["allocations"]["edges"]
    assert sorted(e["node"]["name"] for e in listed) == ["a", "b"]


def test_a_repeated_request_id_answers_the_same_allocation(client: TestClient) -> None:
    register(client)
    first = data(client, SPAWN, parent="n1", spec=job(), requestId="req-1")["spawnAllocation"]
    again = data(client, SPAWN, parent="n1", spec=job(), requestId="req-1")["spawnAllocation"]
    assert again["id"] == first["id"]
    assert data(client, '{ node(id: "n1") { cpuFree } }') == {"node": {"cpuFree": 4000 - 100}}


def test_stopping_an_allocation_releases_what_it_held(client: TestClient) -> None:
    # Given an allocation holding a GPU and cpu
    register(client, gpus=1)
    a = spawn(client, "n1", job(cpu=1000, gpus=1))
    held = data(client, '{ node(id: "n1") { cpuFree gpus { claimedBy { id name } } } }')["node"]
    # When it is stopped (twice: the second changes nothing)
    stopped = data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id state } }", id=a["id"])
    again = data(client, "mutation($id: ID!) { stopAllocation(id: $id) { state } }", id=a["id"])
    # Then it is stopped and the node has its cpu and GPU back
    assert held == {"cpuFree": 3000, "gpus": [{"claimedBy": {"id": a["id"], "name": "job"}}]}
    assert stopped["stopAllocation"] == {"id": a["id"], "state": "STOPPED"}
    assert again["stopAllocation"]["state"] == "STOPPED"
    assert data(client, '{ node(id: "n1") { cpuFree gpus { claimedBy { id } } } }')["node"] == {
        "cpuFree": 4000, "gpus": [{"claimedBy": None}],
    }


def test_allocations_are_filtered_by_state_and_node(client: TestClient) -> None:
    register(client, name="n1")
    register(client, name="n2")
    a = spawn(client, "n1", job("a", node="n1"))
    b = spawn(client, "n1", job("b", node="n2"))
    spawn(client, "n1", job("c", node="n2"))
    data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=b["id"])
    query = "query($state: AllocationState, $node: ID) { allocations(state: $state, node: $node) { edges { node { name node { id } } } } }"
    on_n2 = data(client, query, node="n2")["allocations"]["edges"]
    placed = data(client, query, state="PLACED")["allocations"]["edges"]
    assert sorted(e["node"]["name"] for e in on_n2) == ["b", "c"]
    assert sorted(e["node"]["name"] for e in placed) == ["a", "c"]
    node_view = data(client, '{ node(id: "n2") { allocations(state: STOPPED) { edges { node { id } } } } }')
    assert node_view["node"]["allocations"]["edges"] == [{"node": {"id": b["id"]}}]
    assert a["node"] == {"id": "n1"}


def test_a_generic_traversal_follows_edges_with_filters(client: TestClient) -> None:
    # Given a root with four children, one of them stopped
    register(client, cpu=64000, memory=65536)
    root = spawn(client, "n1", job("root", cpu=10))
    kids = spawn_many(client, root["id"], [job(f"k{i}", cpu=10) for i in range(4)])
    data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=kids[1]["id"])
    query = """query($from: ID!, $where: [Filter!], $dir: Direction!, $label: String, $types: [EdgeType!]!) {
        traverse(from: $from, edgeTypes: $types, direction: $dir, maxDepth: 3, where: $where, label: $label) {
          label id properties } }"""
    # When the client walks down PARENT_OF keeping placed ones, up to the Node, and into the node over RUNS_ON by name
    placed = data(client, query, **{"from": root["id"]}, types=["PARENT_OF"], dir="OUT",
                  where=[{"property": "state", "op": "EQ", "value": "placed"}])["traverse"]
    up = data(client, query, **{"from": kids[0]["id"]}, types=["PARENT_OF"], dir="IN", label="Node")["traverse"]
    named = data(client, query, **{"from": "n1"}, types=["RUNS_ON"], dir="IN",
                 where=[{"property": "name", "op": "IN", "value": ["k0", "k2"]}])["traverse"]
    # Then it gets exactly the vertices that match, with their label and properties
    assert [v["id"] for v in placed] == sorted(k["id"] for i, k in enumerate(kids) if i != 1)
    assert {v["label"] for v in placed} == {"Allocation"} and {v["properties"]["state"] for v in placed} == {"placed"}
    assert [(v["label"], v["id"]) for v in up] == [("Node", "n1")]
    assert sorted(v["properties"]["name"] for v in named) == ["k0", "k2"]


# --- refusals ---------------------------------------------------------------------------
def test_an_unknown_id_is_not_found_naming_the_field(client: TestClient) -> None:
    node = post(client, '{ node(id: "ghost") { id } }')
    alloc = error(client, '{ allocation(id: "ghost") { id } }')
    parent = error(client, SPAWN, parent="ghost", spec=job())
    assert node["data"] == {"node": None}
    assert node["errors"][0]["extensions"] == {"code": "NOT_FOUND", "field": "id"}
    assert node["errors"][0]["message"] == "id: no node 'ghost'" and node["errors"][0]["path"] == ["node"]
    assert alloc["extensions"] == {"code": "NOT_FOUND", "field": "id"}
    assert parent["extensions"] == {"code": "NOT_FOUND", "field": "parent"} and "ghost" in parent["message"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (job(cpu=-5), "spec.resources.cpuMilli"),
        ({**job(), "resources": {"memoryMib": 10**9}}, "spec.resources.memoryMib"),
        ({**job(), "argv": []}, "spec.argv"),
        ({**job(), "env": {"BAD NAME": "x"}}, "spec.env"),
        ({**job(), "nodeLabels": "zone"}, "spec.nodeLabels"),
        ({**job(), "name": ""}, "spec.name"),
        ({**job(), "gracePeriodS": -1}, "spec.gracePeriodS"),
    ],
)
def test_bad_spawn_input_is_invalid_naming_the_field_and_writes_nothing(
    client: TestClient, spec: dict[str, Any], field: str
) -> None:
    register(client)
    err = error(client, SPAWN, parent="n1", spec=spec)
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": field}
    assert err["message"].startswith(f"{field}: ")
    assert data(client, "{ allocations { edges { node { id } } } }") == {"allocations": {"edges": []}}


def test_a_batch_names_the_offending_spec_by_index(client: TestClient) -> None:
    register(client)
    err = error(client, SPAWN_MANY, parent="n1", specs=[job("ok"), job("bad", cpu=-1)])
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": "specs[1].resources.cpuMilli"}


def test_spawning_under_a_stopped_parent_is_a_conflict(client: TestClient) -> None:
    register(client)
    parent = spawn(client, "n1", job("parent"))
    data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=parent["id"])
    err = error(client, SPAWN, parent=parent["id"], spec=job("orphan"))
    assert err["extensions"] == {"code": "CONFLICT", "field": "parent"}
    assert "stopped" in err["message"]


def test_what_no_node_could_ever_offer_is_invalid_input_and_what_none_has_now_no_capacity(client: TestClient) -> None:
    register(client, cpu=2000)
    err = error(client, SPAWN, parent="n1", spec=job(cpu=3000))
    gpu = error(client, SPAWN, parent="n1", spec=job(gpus=1))
    mars = error(client, SPAWN, parent="n1", spec=job(nodeLabels={"zone": "mars"}))
    assert (err["extensions"], err["message"]) == (
        {"code": "INVALID_INPUT", "field": "spec.resources.cpuMilli"},
        "spec.resources.cpuMilli: no node offers cpu=3000m (the largest has 2000m)")
    assert (gpu["extensions"], gpu["message"]) == (
        {"code": "INVALID_INPUT", "field": "spec.resources.gpus"}, "spec.resources.gpus: no node has a GPU")
    assert (mars["extensions"], mars["message"]) == (
        {"code": "INVALID_INPUT", "field": "spec.nodeLabels"}, "spec.nodeLabels: no node has zone=mars")
    data(client, SPAWN, parent="n1", spec=job(cpu=1500))
    full = error(client, SPAWN, parent="n1", spec=job(cpu=1000))
    assert (full["extensions"], full["message"]) == (
        {"code": "NO_CAPACITY", "field": "spec"},
        "spec: no ready node with room for cpu=1000m memory=64MiB now: n1 has 500m cpu free")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": EVIL}, "input.name"),
        ({"cpuMilli": -1}, "input.cpuMilli"),
        ({"labels": {"zone": "a b"}}, "input.labels"),
        ({"gpus": [{"model": EVIL}]}, "input.gpus[0].model"),
    ],
)
def test_a_bad_node_is_refused_naming_the_field_and_the_graph_is_untouched(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    register(client, name="keep")
    err = error(client, REGISTER, input={**node_input("evil"), **change})
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": field}
    assert err["message"].startswith(f"{field}: ")
    assert [e["node"]["id"] for e in data(client, "{ nodes { edges { node { id } } } }")["nodes"]["edges"]] == ["keep"]


def test_names_full_of_quotes_and_keywords_are_stored_verbatim(client: TestClient) -> None:
    register(client)
    a = spawn(client, "n1", {**job(), "name": EVIL, "argv": ["echo", EVIL], "env": {"A": EVIL}})
    got = data(client, "query($id: ID!) { allocation(id: $id) { name argv env } }", id=a["id"])["allocation"]
    assert got == {"name": EVIL, "argv": ["echo", EVIL], "env": {"A": EVIL}}
    assert data(client, '{ node(id: "n1") { id } }') == {"node": {"id": "n1"}}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("{ nodes(first: 5000) { edges { cursor } } }", "first"),
        ("{ allocations(first: 0) { edges { cursor } } }", "first"),
        ('{ traverse(from: "n1", edgeTypes: [PARENT_OF], maxDepth: 50) { id } }', "maxDepth"),
        ('{ traverse(from: "n1", edgeTypes: [PARENT_OF], first: 5000) { id } }', "first"),
        ('{ traverse(from: "n1", edgeTypes: [PARENT_OF], where: [{property: "x) OR true", value: 1}]) { id } }', "where[0].property"),
        ('{ traverse(from: "n1", edgeTypes: [PARENT_OF], label: "Node) DETACH DELETE (x") { id } }', "label"),
        ('mutation { connectNeighbors(a: "n1", b: "n1", rttMs: 1) { id } }', "b"),
        ('mutation { connectNeighbors(a: "n1", b: "n2", rttMs: -1) { id } }', "rttMs"),
    ],
)
def test_limits_and_bad_arguments_are_invalid_input(client: TestClient, query: str, field: str) -> None:
    register(client)
    register(client, name="n2")
    err = error(client, query)
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": field}


def test_descendants_beyond_their_limits_are_invalid_input(client: TestClient) -> None:
    register(client)
    a = spawn(client, "n1")
    depth = error(client, "query($id: ID!) { allocation(id: $id) { descendants(maxDepth: 300) { id } } }", id=a["id"])
    first = error(client, "query($id: ID!) { allocation(id: $id) { descendants(first: 20000) { id } } }", id=a["id"])
    assert depth["extensions"] == {"code": "INVALID_INPUT", "field": "maxDepth"}
    assert first["extensions"] == {"code": "INVALID_INPUT", "field": "first"}


def test_a_too_deep_query_is_refused_before_running(client: TestClient) -> None:
    nested = "id"
    for _ in range(8):
        nested = f"children {{ edges {{ node {{ {nested} }} }} }}"
    err = error(client, f'{{ node(id: "n1") {{ {nested} }} }}')
    assert "depth" in err["message"] and err["extensions"]["code"] == "INVALID_QUERY"


def test_a_query_that_could_return_too_much_is_refused(client: TestClient) -> None:
    err = error(client, "{ nodes(first: 1000) { edges { node { allocations(first: 1000) { edges { node { id } } } } } } }")
    assert err["extensions"]["code"] == "INVALID_QUERY" and "too costly" in err["message"]


def test_too_many_aliases_are_refused(client: TestClient) -> None:
    err = error(client, "{ " + " ".join(f'n{i}: node(id: "x") {{ id }}' for i in range(60)) + " }")
    assert err["extensions"]["code"] == "INVALID_QUERY" and "aliases" in err["message"]


@pytest.mark.parametrize(
    "query",
    [
        "{ node(id: ",  # syntax
        "{ nodez { id } }",  # unknown field
        '{ node(id: "n1") { cpu(x: 1) } }',  # unknown argument
        "mutation { stopAllocation { id } }",  # missing argument
    ],
)
def test_a_malformed_query_is_an_error_not_a_crash(client: TestClient, query: str) -> None:
    err = error(client, query)
    assert err["extensions"] == {"code": "INVALID_QUERY", "field": None}


def test_an_unexpected_failure_is_internal_without_details(
    client: TestClient, cp: ControlPlane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a service that fails in a way nobody planned for
    def broken(node_id: str) -> None:
        raise RuntimeError("secret connection string redis://user:pw@host")

    monkeypatch.setattr(cp.queries, "node", broken)
    # When a client asks
    err = error(client, '{ node(id: "n1") { id } }')
    # Then it gets a generic INTERNAL error, and the details go to the server log only
    assert err["extensions"] == {"code": "INTERNAL", "field": None}
    assert "secret" not in json.dumps(err) and "RuntimeError" not in json.dumps(err)
    assert any("secret connection string" in (r.exc_text or "") + r.getMessage() for r in caplog.records)


# --- the HTTP surface -------------------------------------------------------------------
def test_graphiql_is_served_to_a_browser(client: TestClient) -> None:
    r = client.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "graphiql" in r.text.lower()


def test_queries_work_over_get_too(client: TestClient) -> None:
    register(client)
    r = client.get("/graphql", params={"query": '{ node(id: "n1") { id } }'})
    assert r.status_code == 200 and r.json() == {"data": {"node": {"id": "n1"}}}


def test_the_graphql_transport_ws_protocol_is_spoken(client: TestClient) -> None:
    register(client)
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        ack = ws.receive_json()
        ws.send_json({"type": "subscribe", "id": "1", "payload": {"query": '{ node(id: "n1") { id } }'}})
        answer, done = ws.receive_json(), ws.receive_json()
    assert ack == {"type": "connection_ack"}
    assert answer == {"id": "1", "type": "next", "payload": {"data": {"node": {"id": "n1"}}}}
    assert done == {"id": "1", "type": "complete"}


def test_healthz_is_ok_when_every_check_passes_and_a_node_is_ready(client: TestClient) -> None:
    register(client)
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "checks": {"graph": "ok"}, "reasons": []})


def test_healthz_is_degraded_while_no_node_is_ready(client: TestClient, cp: ControlPlane) -> None:
    # Given no node at all, then a node that was declared lost
    empty = client.get("/healthz")
    register(client)
    time.sleep(0.2)
    cp.repair.reap(grace_s=0.1)
    lost = client.get("/healthz")
    # Then the API answers (200) but never says ok, and says why
    assert (empty.status_code, empty.json()["status"]) == (200, "degraded")
    assert "no node is registered" in empty.json()["reasons"][0]
    assert (lost.status_code, lost.json()["status"], lost.json()["reasons"]) == (200, "degraded", ["no node is ready (1 lost)"])


def test_healthz_names_a_component_that_is_down_and_a_slow_dependency(cp: ControlPlane, tmp_path: Any) -> None:
    def slow() -> None:
        time.sleep(1.2)

    app, _ = app_with_auth(cp, tmp_path, health_checks={"graph": cp.store.ping, "broker": slow},
                           health_probes={"components": lambda: ["scheduler is down (exit code -9; 1 restarts)"]})
    with client_with(app, None) as c:  # /healthz is open
        r = c.get("/healthz")
    assert (r.status_code, r.json()["status"]) == (200, "degraded")
    assert set(r.json()["reasons"]) >= {"broker answered in 1.2 s", "scheduler is down (exit code -9; 1 restarts)"}


def test_healthz_is_503_naming_the_failing_check(cp: ControlPlane, tmp_path: Any) -> None:
    def broker() -> None:
        raise ConnectionError("broker unreachable at redis://localhost:1")

    app, _ = app_with_auth(cp, tmp_path, health_checks={"graph": cp.store.ping, "broker": broker})
    with client_with(app, None) as c:  # /healthz is open
        r = c.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {
        "status": "failing",
        "checks": {"graph": "ok", "broker": "ConnectionError: broker unreachable at redis://localhost:1"},
        "reasons": [],
    }


def test_metrics_count_operations_by_root_field_and_outcome(client: TestClient) -> None:
    register(client)
    data(client, '{ node(id: "n1") { id } }')
    error(client, '{ allocation(id: "ghost") { id } }')
    text = client.get("/metrics").text
    assert 'controlplane_graphql_operations_total{operation="query:node",outcome="ok"} 1.0' in text
    assert 'controlplane_graphql_operations_total{operation="query:allocation",outcome="error"} 1.0' in text
    assert 'controlplane_graphql_errors_total{code="NOT_FOUND"} 1.0' in text
    assert 'controlplane_graphql_operation_seconds_count{operation="mutation:registerNode"} 1.0' in text


# --- the schema mirrors the domain ------------------------------------------------------
@pytest.mark.parametrize(
    ("api", "domain"),
    [(api_types.AllocationState, State), (api_types.EdgeType, EdgeType), (api_types.Direction, Direction), (api_types.FilterOp, Op)],
)
def test_graphql_enums_match_the_domain(api: Any, domain: Any) -> None:
    assert {(m.name, m.value) for m in api} == {(m.name, m.value) for m in domain}
