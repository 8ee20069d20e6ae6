"""GraphQL over HTTP as the spec says: media types negotiated on Accept, status codes by what went wrong.

Real HTTP requests (FastAPI's TestClient) to the real app over the embedded
FalkorDB: the media type and status of an answer do not depend on the engine.
https://graphql.github.io/graphql-over-http/draft/#sec-Status-Codes
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx TestClient works the same (as in test_api.py)
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

from controlplane.api.graphql_http import APPLICATION_JSON, GRAPHQL_RESPONSE_JSON, negotiate
from controlplane.services import ControlPlane
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.test_api import REGISTER, data, node_input, register

NO_ACCEPT = object()


@pytest.fixture
def cp(falkordb_server: FalkorDBServer) -> Iterator[ControlPlane]:
    store = FalkorDBStore(falkordb_server.url, graph="graphql-http")
    store.bootstrap()
    store.clear()
    yield assemble(store)
    store.close()


@pytest.fixture
def client(cp: ControlPlane, tmp_path: Path) -> Iterator[TestClient]:
    app, admin = app_with_auth(cp, tmp_path)
    with client_with(app, admin) as c:
        register(c, name="n1")
        yield c


def send(client: TestClient, accept: Any, *, method: str = "POST", body: Any = None, content: bytes | None = None,
         params: dict[str, str] | None = None) -> httpx.Response:
    """One request with exactly this Accept header (NO_ACCEPT: none at all)."""
    request = client.build_request(method, "/graphql", json=body, content=content, params=params,
                                   headers={"content-type": "application/json"} if method == "POST" else None)
    if accept is NO_ACCEPT:
        del request.headers["accept"]
    else:
        request.headers["accept"] = accept
    response: httpx.Response = client.send(request)
    return response


def media_type(r: httpx.Response) -> str:
    return r.headers["content-type"].split(";")[0].strip()


# --- negotiation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (APPLICATION_JSON, APPLICATION_JSON),
        (f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8, {APPLICATION_JSON}; charset=utf-8", GRAPHQL_RESPONSE_JSON),  # the spec's advice
        (f"{APPLICATION_JSON}, {GRAPHQL_RESPONSE_JSON}", GRAPHQL_RESPONSE_JSON),  # both named: the preferred type
        (f"{APPLICATION_JSON}, {GRAPHQL_RESPONSE_JSON};q=0.9", APPLICATION_JSON),  # q decides
        ("*/*", APPLICATION_JSON),  # curl, httpx, browsers: what they always got
        ("application/*", APPLICATION_JSON),
        (f"*/*;q=0.1, {GRAPHQL_RESPONSE_JSON}", GRAPHQL_RESPONSE_JSON),
        (f"{APPLICATION_JSON};q=0, */*", GRAPHQL_RESPONSE_JSON),  # json refused outright, the wildcard allows the other
        ("APPLICATION/JSON", APPLICATION_JSON),
        (None, GRAPHQL_RESPONSE_JSON),  # no Accept: the spec's default since 2025
        ("", GRAPHQL_RESPONSE_JSON),
        ("text/html", None),
        (f"text/html, {GRAPHQL_RESPONSE_JSON};q=0, {APPLICATION_JSON};q=0", None),
        (f"{APPLICATION_JSON};q=nonsense", None),
    ],
)
def test_the_media_type_is_negotiated_on_accept(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


# --- status codes under each media type ----------------------------------------------------------
CASES = {
    "ok": ({"query": '{ node(id: "n1") { id } }'}, True),
    "field error": ({"query": '{ node(id: "ghost") { id } }'}, True),  # data: {node: null} and an error at a path
    "null data": ({"query": 'mutation { stopAllocation(id: "ghost") { id } }'}, True),  # a non-null root field failed
    "parse": ({"query": "{ node(id: "}, False),
    "validation": ({"query": "{ nodez { id } }"}, False),
    "cost limit": ({"query": "{ nodes(first: 1000) { edges { node { allocations(first: 1000) { edges { cursor } } } } } }"}, False),
    "variables": ({"query": "query($n: Int!) { nodes(first: $n) { edges { cursor } } }", "variables": {"n": "many"}}, False),
    "missing variable": ({"query": "query($id: ID!) { node(id: $id) { id } }"}, False),
    "bad enum variable": ({"query": "mutation($p: SupervisionPolicyInput!) { setSupervision(id: \"n1\", policy: $p) }",
                           "variables": {"p": {"strategy": "ONE_FOR_ALL"}}}, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_under_graphql_response_json_a_request_error_is_400_without_data(client: TestClient, case: str) -> None:
    body, executed = CASES[case]
    r = send(client, GRAPHQL_RESPONSE_JSON, body=body)
    answer = r.json()
    assert media_type(r) == GRAPHQL_RESPONSE_JSON and "charset=utf-8" in r.headers["content-type"]
    if executed:  # execution began: 200 with data (possibly null) and field errors
        assert r.status_code == 200 and "data" in answer
        assert all("path" in e for e in answer.get("errors", []))
    else:  # refused before execution: 400, no data entry, the errors about the document or the variables
        assert r.status_code == 400 and "data" not in answer
        assert answer["errors"] and {e["extensions"]["code"] for e in answer["errors"]} == {"INVALID_QUERY"}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("accept", [APPLICATION_JSON, "*/*"])
def test_under_application_json_every_well_formed_request_is_200_as_before(client: TestClient, case: str, accept: str) -> None:
    body, executed = CASES[case]
    r = send(client, accept, body=body)
    answer = r.json()
    assert (r.status_code, media_type(r)) == (200, APPLICATION_JSON)
    assert "data" in answer and (executed or answer["data"] is None)


def test_no_accept_header_is_answered_as_graphql_response_json(client: TestClient) -> None:
    ok = send(client, NO_ACCEPT, body=CASES["ok"][0])
    bad = send(client, NO_ACCEPT, body=CASES["validation"][0])
    assert (ok.status_code, media_type(ok), ok.json()) == (200, GRAPHQL_RESPONSE_JSON, {"data": {"node": {"id": "n1"}}})
    assert (bad.status_code, media_type(bad)) == (400, GRAPHQL_RESPONSE_JSON)


def test_an_accept_allowing_neither_type_is_406_and_nothing_runs(client: TestClient) -> None:
    r = send(client, "text/html", body={"query": REGISTER, "variables": {"input": node_input("sneaky")}})
    assert r.status_code == 406 and GRAPHQL_RESPONSE_JSON in r.text
    assert data(client, '{ nodes { edges { node { id } } } }')["nodes"]["edges"] == [{"node": {"id": "n1"}}]


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE_JSON, APPLICATION_JSON])
def test_a_mutation_over_get_is_405_and_nothing_runs(client: TestClient, accept: str) -> None:
    r = send(client, accept, method="GET", params={"query": 'mutation { connectNeighbors(a: "n1", b: "n2", rttMs: 1) { id } }'})
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    if accept == GRAPHQL_RESPONSE_JSON:
        assert media_type(r) == GRAPHQL_RESPONSE_JSON and "mutations" in r.json()["errors"][0]["message"]
    assert data(client, '{ node(id: "n1") { neighbors { rttMs } } }') == {"node": {"neighbors": []}}


def test_a_query_over_get_is_negotiated_too(client: TestClient) -> None:
    ok = send(client, GRAPHQL_RESPONSE_JSON, method="GET", params={"query": '{ node(id: "n1") { id } }'})
    bad = send(client, GRAPHQL_RESPONSE_JSON, method="GET", params={"query": "{ node(id: "})
    assert (ok.status_code, media_type(ok), ok.json()) == (200, GRAPHQL_RESPONSE_JSON, {"data": {"node": {"id": "n1"}}})
    assert (bad.status_code, "data" in bad.json()) == (400, False)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"NONSENSE", "JSON"),
        (b'{"query":', "JSON"),
        (b'{"query": 7}', "query"),
        (b'{"query": "{ __typename }", "variables": [7]}', "variables"),
        (b"{}", "query"),
    ],
)
def test_a_request_that_is_not_graphql_over_http_is_400_under_both_types(client: TestClient, content: bytes, words: str) -> None:
    typed = send(client, GRAPHQL_RESPONSE_JSON, content=content)
    legacy = send(client, APPLICATION_JSON, content=content)
    assert (typed.status_code, media_type(typed)) == (400, GRAPHQL_RESPONSE_JSON)
    assert typed.json()["errors"][0]["extensions"]["code"] == "INVALID_QUERY" and words in typed.json()["errors"][0]["message"]
    assert legacy.status_code == 400 and words in legacy.text


def test_graphiql_is_still_served_to_a_browser(client: TestClient) -> None:
    r = client.get("/graphql", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and "graphiql" in r.text.lower()


def test_a_websocket_subscription_is_not_negotiated(client: TestClient) -> None:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json({"type": "subscribe", "id": "1", "payload": {"query": '{ node(id: "n1") { id } }'}})
        assert ws.receive_json()["payload"] == {"data": {"node": {"id": "n1"}}}
