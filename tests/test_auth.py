"""Trust at the API, on every engine: each attack of issue 9 is refused with a clear code and changes nothing.

The API runs over a real engine with authentication on; credentials are what a user
has: the admin token of the first start, narrower ones derived through `createToken`,
and the token the node agent puts in an allocation's environment.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect
from strawberry.types.base import get_object_definition

from controlplane.api.schema import Mutation, Query, Subscription
from controlplane.auth import KeyRing, Tokens
from controlplane.auth.bootstrap import allocation_token, open_tokens
from controlplane.auth.keys import retire_key, rotate_signing_key
from controlplane.domain.capabilities import Kind, Role, default_capability
from controlplane.ports.store import GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.settings import Settings
from controlplane.wiring import assemble
from tests.credentials import TEST_HOST, app_with_auth, bearer, client, derive
from tests.http import TestClient
from tests.test_api import job, node_input

SPAWN = 'mutation($p: ID!) { spawnAllocation(parent: $p, spec: {name: "x", argv: ["true"]}) { id } }'
STOP = "mutation($id: ID!) { stopAllocation(id: $id) { id state } }"


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    return assemble(store)


@pytest.fixture
def api(cp: ControlPlane, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    app, admin = app_with_auth(cp, tmp_path)
    yield app, admin


@pytest.fixture
def admin(api: tuple[Any, str]) -> Iterator[TestClient]:
    app, token = api
    with client(app, token) as c:
        yield c


@pytest.fixture
def tree(admin: TestClient) -> dict[str, str]:
    """Node n1 with two sibling allocations a and b, and a child a1 under a."""
    ask(admin, 'mutation($i: NodeInput!) { registerNode(input: $i) { id } }', i=node_input("n1"))
    a = ask(admin, SPAWN, p="n1")["data"]["spawnAllocation"]["id"]
    b = ask(admin, SPAWN, p="n1")["data"]["spawnAllocation"]["id"]
    a1 = ask(admin, SPAWN, p=a)["data"]["spawnAllocation"]["id"]
    return {"a": a, "b": b, "a1": a1}


def ask(c: TestClient, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
    r = c.post("/graphql", json={"query": query, "variables": variables}, headers=bearer(token) if token else None)
    body: dict[str, Any] = r.json()
    body["status"] = r.status_code
    return body


def refused(body: dict[str, Any], code: str, status: int | None = None) -> str:
    """The one error's message, after checking its code (and HTTP status)."""
    assert body.get("errors") and len(body["errors"]) == 1, body
    assert body["errors"][0]["extensions"]["code"] == code, body
    if status is not None:
        assert body["status"] == status, body
    message: str = body["errors"][0]["message"]
    return message


def snapshot(cp: ControlPlane) -> tuple[Any, ...]:
    """What the graph holds, as the service reads it: nodes, allocations, events."""
    return (cp.queries.nodes(limit=1000), cp.queries.allocations(limit=1000), cp.queries.events(limit=10_000))


# --- deny by default ------------------------------------------------------------------------
def test_every_root_field_declares_what_it_needs() -> None:
    # Given the schema, When each root field is inspected, Then each has a permission (a new one cannot forget)
    missing = []
    for root in (Query, Mutation, Subscription):
        for f in get_object_definition(root, strict=True).fields:
            if not any(p.__name__.startswith("Requires_") for p in f.permission_classes):
                missing.append(f"{root.__name__}.{f.python_name}")
    assert missing == []


def test_no_token_is_unauthenticated_everywhere_but_healthz(api: tuple[Any, str], cp: ControlPlane, tree: dict[str, str]) -> None:
    app, _ = api
    before = snapshot(cp)
    with client(app, None) as anonymous:
        # When a caller without a credential spawns, queries raw, reads metrics, asks GraphiQL
        spawn = ask(anonymous, SPAWN, p="n1")
        raw = anonymous.post("/query", json={"query": "MATCH (n) RETURN n"})
        metrics = anonymous.get("/metrics")
        ide = anonymous.get("/graphql", headers={"Accept": "text/html"})
        health = anonymous.get("/healthz")
    # Then each is refused with UNAUTHENTICATED / 401 naming the missing credential, and nothing changed
    assert "no credential" in refused(spawn, "UNAUTHENTICATED", 401)
    assert (raw.status_code, raw.json()["code"]) == (401, "UNAUTHENTICATED")
    assert (metrics.status_code, metrics.json()["code"]) == (401, "UNAUTHENTICATED")
    assert ide.status_code == 401 and "token" in ide.text
    assert health.status_code == 200
    assert snapshot(cp) == before


def test_expired_tampered_and_foreign_tokens_are_unauthenticated(admin: TestClient, cp: ControlPlane, tree: dict[str, str]) -> None:
    # Given a token that expired, one whose claims were edited, one signed by another deployment's key
    short = derive(admin, ttl_s=1)
    header, claims, signature = derive(admin, verbs=["read"]).split(".")
    widened = json.loads(base64.urlsafe_b64decode(claims + "=="))
    widened["vrb"] = ["read", "spawn", "stop", "raw_query"]
    tampered = ".".join([header, base64.urlsafe_b64encode(json.dumps(widened).encode()).decode().rstrip("="), signature])
    other = Tokens(KeyRing.generate())
    foreign = other.issue(Kind.OPERATOR, "admin", default_capability(Kind.OPERATOR, "admin", role=Role.ADMIN,
                                                                     expires_at=time.time() + 60), role=Role.ADMIN).token
    time.sleep(1.1)
    before = snapshot(cp)
    # When each is used to spawn
    answers = {name: ask(admin, SPAWN, token, p="n1") for name, token in
               (("expired", short), ("tampered", tampered), ("foreign", foreign), ("garbage", "not-a-token"))}
    # Then each is UNAUTHENTICATED saying why, and the graph is unchanged
    assert "expired" in refused(answers["expired"], "UNAUTHENTICATED", 401)
    assert "signature does not verify" in refused(answers["tampered"], "UNAUTHENTICATED", 401)
    assert "unknown key" in refused(answers["foreign"], "UNAUTHENTICATED", 401)
    assert "malformed" in refused(answers["garbage"], "UNAUTHENTICATED", 401)
    assert snapshot(cp) == before


def test_a_token_is_refused_for_a_verb_or_subtree_it_does_not_cover(admin: TestClient, cp: ControlPlane, tree: dict[str, str]) -> None:
    # Given a read-only token over a, and a spawn/stop token over a
    reader = derive(admin, subtree=[tree["a"]], verbs=["read"])
    actor = derive(admin, subtree=[tree["a"]], verbs=["read", "spawn", "stop"])
    before = snapshot(cp)
    # When the reader spawns under a, and the actor spawns under its sibling b and stops b
    wrong_verb = ask(admin, SPAWN, reader, p=tree["a"])
    sibling = ask(admin, SPAWN, actor, p=tree["b"])
    stop_sibling = ask(admin, STOP, actor, id=tree["b"])
    read_sibling = ask(admin, '{ allocation(id: "%s") { id } }' % tree["b"], reader)
    listing = ask(admin, "{ allocations { edges { node { id } } } }", reader)
    # Then each is FORBIDDEN naming the verb or the subtree, and nothing changed
    assert "does not grant spawn" in refused(wrong_verb, "FORBIDDEN", 403)
    assert f"{tree['b']} is not in its subtrees" in refused(sibling, "FORBIDDEN", 403)
    assert "not in its subtrees" in refused(stop_sibling, "FORBIDDEN", 403)
    refused(read_sibling, "FORBIDDEN")
    assert "over everything" in refused(listing, "FORBIDDEN")
    assert snapshot(cp) == before
    # And within its subtree the same token works: it spawns under a's child
    created = ask(admin, SPAWN, actor, p=tree["a1"])["data"]["spawnAllocation"]["id"]
    assert cp.queries.allocation(created).parent_id == tree["a1"]
    assert (cp.queries.events(created)[0].by or "").startswith("admin:admin/")  # the audit names the delegated credential


def test_the_descendants_of_a_node_are_read_only_by_a_token_over_that_node(admin: TestClient, tree: dict[str, str]) -> None:
    # Given a reader over allocation a only, and one over node n1
    over_a = derive(admin, subtree=[tree["a"]], verbs=["read"])
    over_n1 = derive(admin, subtree=["n1"], verbs=["read"])
    query = '{ node(id: "n1") { descendants { id } } }'
    # When each asks for everything below n1, Then the one over a is refused, and the one over n1 sees all three
    assert "not in its subtrees" in refused(ask(admin, query, over_a), "FORBIDDEN")
    seen = ask(admin, query, over_n1)["data"]["node"]["descendants"]
    assert sorted(d["id"] for d in seen) == sorted(tree.values())
    # and the one over a still reads a's own descendants
    below_a = ask(admin, '{ allocation(id: "%s") { descendants { id } } }' % tree["a"], over_a)["data"]["allocation"]
    assert [d["id"] for d in below_a["descendants"]] == [tree["a1"]]

def test_a_derived_token_cannot_widen(admin: TestClient, tree: dict[str, str]) -> None:
    # Given a holder of read+spawn over a for 60 s
    held = derive(admin, subtree=[tree["a"]], verbs=["read", "spawn"], ttl_s=60)
    create = "mutation($s: [ID!], $v: [String!], $t: Float) { createToken(subtree: $s, verbs: $v, ttlS: $t) { token } }"
    # When it asks for more verbs, a sibling's subtree, its parent's, everything, a longer life
    attempts = {
        "verbs": ask(admin, create, held, v=["read", "spawn", "stop"]),
        "sibling": ask(admin, create, held, s=[tree["b"]]),
        "parent": ask(admin, create, held, s=["n1"]),
        "everything": ask(admin, create, held, s=["*"]),
        "ttl": ask(admin, create, held, t=3600),
    }
    # Then each is FORBIDDEN naming what would widen
    for name, answer in attempts.items():
        assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN", (name, answer)
    assert attempts["verbs"]["errors"][0]["extensions"]["field"] == "verbs"
    assert attempts["sibling"]["errors"][0]["extensions"]["field"] == "subtree"
    assert attempts["ttl"]["errors"][0]["extensions"]["field"] == "ttl"
    # And a narrower one is granted, and is narrower
    narrower = ask(admin, create, held, s=[tree["a1"]], v=["read"], t=30)["data"]["createToken"]["token"]
    who = ask(admin, "{ whoami { verbs subtree } }", narrower)["data"]["whoami"]
    assert who == {"verbs": ["read"], "subtree": [tree["a1"]]}


def test_a_revoked_token_and_those_derived_from_it_stop_working(admin: TestClient, cp: ControlPlane, tree: dict[str, str]) -> None:
    parent = derive(admin, subtree=[tree["a"]], verbs=["read", "spawn"])
    with TestClient(admin.app, headers=bearer(parent)) as holder:
        child = derive(holder, subtree=[tree["a1"]], verbs=["read"])
    revoked = ask(admin, "mutation($t: String!) { revokeToken(token: $t) }", t=parent)
    assert revoked["data"] == {"revokeToken": True}
    for token in (parent, child):
        assert "revoked" in refused(ask(admin, '{ allocation(id: "%s") { id } }' % tree["a1"], token), "UNAUTHENTICATED", 401)


def test_an_allocations_token_ends_with_its_incarnation(
    admin: TestClient, api: tuple[Any, str], cp: ControlPlane, tree: dict[str, str], tmp_path: Path
) -> None:
    # Given allocation a running with the token its node agent gave it (as in CONTROLPLANE_TOKEN)
    tokens = open_tokens(Settings(data_dir=tmp_path))
    agent = AgentReports(cp.store, node="n1", clock=cp.clock)
    [started] = agent.claim([(tree["a"], 1)])
    token = allocation_token(tokens, started.id, started.incarnation, ttl_s=600)
    # When it spawns a child of its own: granted; under its sibling: refused
    child = ask(admin, SPAWN, token, p=tree["a"])["data"]["spawnAllocation"]["id"]
    assert cp.queries.allocation(child).parent_id == tree["a"]
    assert cp.queries.events(child)[0].by == f"allocation:{tree['a']}#1"
    refused(ask(admin, SPAWN, token, p=tree["b"]), "FORBIDDEN", 403)
    # When its incarnation ends (it is stopped), the same token is refused and nothing changes
    ask(admin, STOP, id=tree["a"])
    before = snapshot(cp)
    after_end = ask(admin, SPAWN, token, p=tree["a"])
    assert "ended with it" in refused(after_end, "UNAUTHENTICATED", 401)
    assert snapshot(cp) == before


def test_a_viewer_reads_but_may_not_query_raw_nor_see_secrets(admin: TestClient, cp: ControlPlane, tree: dict[str, str]) -> None:
    ask(admin, 'mutation { spawnAllocation(parent: "n1", spec: {name: "s", argv: ["true"], env: {DB_PASSWORD: "hunter2"}}) { id } }')
    viewer = derive(admin, role="viewer")
    # When the viewer lists allocations with their env, and runs a raw query over GraphQL and POST /query
    listing = ask(admin, "{ allocations { edges { node { name env } } } }", viewer)
    raw = ask(admin, '{ rawQuery(query: "MATCH (n) RETURN n") { rows } }', viewer)
    post = admin.post("/query", json={"query": "MATCH (n) RETURN n"}, headers=bearer(viewer))
    # Then it reads, with env values hidden; the raw queries are FORBIDDEN
    envs = {e["node"]["name"]: e["node"]["env"] for e in listing["data"]["allocations"]["edges"]}
    assert envs["s"] == {"DB_PASSWORD": "<hidden>"}
    submitted = ask(admin, 'mutation { submitJob(node: "n1", spec: {name: "j", tasks: [{name: "t", argv: ["true"], '
                           'env: {TOKEN: "s3cret"}}]}) { id } }')["data"]["submitJob"]["id"]
    spec = ask(admin, '{ job(id: "%s") { spec } }' % submitted, viewer)["data"]["job"]["spec"]
    assert spec["tasks"][0]["env"] == {"TOKEN": "<hidden>"} and "s3cret" not in json.dumps(spec)
    walked = ask(admin, '{ traverse(from: "n1", edgeTypes: [PARENT_OF], label: "Allocation") { properties } }', viewer)
    assert {v["properties"]["name"]: v["properties"]["env"] for v in walked["data"]["traverse"]}["s"] == {"DB_PASSWORD": "<hidden>"}
    assert "raw_query" in refused(raw, "FORBIDDEN")
    assert (post.status_code, post.json()["code"]) == (403, "FORBIDDEN")
    # And an operator (who could spawn there) sees the value
    operator = derive(admin, role="operator")
    listing = ask(admin, "{ allocations { edges { node { name env } } } }", operator)
    assert {e["node"]["name"]: e["node"]["env"] for e in listing["data"]["allocations"]["edges"]}["s"] == {"DB_PASSWORD": "hunter2"}
    refused(ask(admin, 'mutation($i: NodeInput!) { registerNode(input: $i) { id } }', operator, i=node_input("n9")), "FORBIDDEN")


# --- browsers ---------------------------------------------------------------------------------
def test_a_foreign_host_or_origin_is_refused(admin: TestClient, cp: ControlPlane, tree: dict[str, str]) -> None:
    before = snapshot(cp)
    rebinding = admin.post("/graphql", json={"query": SPAWN, "variables": {"p": "n1"}}, headers={"Host": "attacker.example"})
    cross_site = admin.post("/graphql", json={"query": SPAWN, "variables": {"p": "n1"}}, headers={"Origin": "https://evil.example"})
    same_site = admin.post("/graphql", json={"query": "{ whoami { principal } }"}, headers={"Origin": f"http://{TEST_HOST}"})
    assert (rebinding.status_code, rebinding.json()["errors"][0]["extensions"]) == (403, {"code": "FORBIDDEN", "field": "host"})
    assert (cross_site.status_code, cross_site.json()["errors"][0]["extensions"]) == (403, {"code": "FORBIDDEN", "field": "origin"})
    assert same_site.json() == {"data": {"whoami": {"principal": "admin:admin"}}}
    assert snapshot(cp) == before


def test_a_cross_origin_websocket_is_refused_at_the_upgrade(admin: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as closed:
        with admin.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"], headers={"Origin": "https://evil.example"}) as ws:
            ws.send_json({"type": "connection_init"})
            ws.receive_json()
    assert closed.value.code == 4403


def test_a_websocket_needs_a_credential_at_connection_init_and_each_operation(api: tuple[Any, str], admin: TestClient) -> None:
    app, token = api
    short = derive(admin, ttl_s=1.5)
    with client(app, None) as anonymous:
        # Given no credential at the upgrade: connection_init without one is refused (4403)
        with pytest.raises(WebSocketDisconnect) as closed:
            with anonymous.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
                ws.send_json({"type": "connection_init", "payload": {}})
                ws.receive_json()
        assert closed.value.code == 4403
        # Given a short-lived token in connection_init: the first operation runs, one after expiry is refused
        with anonymous.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {short}"}})
            assert ws.receive_json() == {"type": "connection_ack"}
            ws.send_json({"type": "subscribe", "id": "1", "payload": {"query": "{ whoami { principal } }"}})
            assert ws.receive_json()["payload"]["data"]["whoami"]["principal"].startswith("admin:admin/")
            ws.receive_json()  # complete
            time.sleep(1.6)
            ws.send_json({"type": "subscribe", "id": "2", "payload": {"query": "{ whoami { principal } }"}})
            late = ws.receive_json()
            ws.send_json({"type": "subscribe", "id": "3", "payload": {"query": "subscription { events { kind } }"}})
            late_subscription = ws.receive_json()
    # a subscription too: refused before it streams anything
    assert late_subscription["payload"]["data"] is None
    assert [e["extensions"]["code"] for e in late_subscription["payload"]["errors"]] == ["UNAUTHENTICATED"]
    assert late["type"] == "error" and late["payload"][0]["extensions"] == {"code": "UNAUTHENTICATED", "field": "token"}
    assert "expired" in late["payload"][0]["message"]


def test_graphiql_logs_in_from_the_url_up_printed_and_then_works_with_the_cookie(api: tuple[Any, str]) -> None:
    app, token = api
    with client(app, None) as browser:
        # When the browser opens /graphql?token=... (the URL `controlplane up` printed)
        landing = browser.get(f"/graphql?token={token}", headers={"Accept": "text/html"}, follow_redirects=False)
        # Then it is sent to /graphql without the token in the URL, with an HttpOnly SameSite cookie
        assert landing.status_code == 303 and landing.headers["location"] == "/graphql"
        cookie = landing.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        # And GraphiQL and its same-origin queries work with the cookie alone
        ide = browser.get("/graphql", headers={"Accept": "text/html"})
        same = browser.post("/graphql", json={"query": "{ whoami { principal } }"}, headers={"Origin": f"http://{TEST_HOST}"})
        # But a cross-site page riding on the cookie is refused
        evil = browser.post("/graphql", json={"query": "{ whoami { principal } }"}, headers={"Origin": "https://evil.example"})
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
    assert same.json() == {"data": {"whoami": {"principal": "admin:admin"}}}
    assert evil.status_code == 403


# --- keys -----------------------------------------------------------------------------------
def test_keys_are_generated_0600_and_rotation_keeps_old_tokens_until_retired(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    tokens = open_tokens(settings, create=True)
    signing = tmp_path / "keys" / "signing.pem"
    assert stat.S_IMODE(os.stat(signing).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    cap = default_capability(Kind.OPERATOR, "ops", role=Role.OPERATOR, expires_at=time.time() + 60)
    old = tokens.issue(Kind.OPERATOR, "ops", cap, role=Role.OPERATOR).token
    # When the signing key is rotated, Then old tokens still verify and new ones are signed by the new key
    old_kid, new_kid = rotate_signing_key(tmp_path / "keys")
    rotated = open_tokens(settings)
    assert rotated.verify(old).subject == "ops"
    assert rotated.keys.signing_kid == new_kid != old_kid
    # When the old key is retired, Then its tokens are refused as signed by an unknown key
    assert old_kid is not None and retire_key(tmp_path / "keys", old_kid)
    from controlplane.domain.errors import Unauthenticated

    with pytest.raises(Unauthenticated, match="unknown key"):
        open_tokens(settings).verify(old)


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    open_tokens(settings, create=True)
    os.chmod(tmp_path / "keys" / "signing.pem", 0o644)
    from controlplane.domain.errors import InvalidInput

    with pytest.raises(InvalidInput, match="chmod 600"):
        open_tokens(settings)


def test_job_mutations_need_submit_and_stop(admin: TestClient, cp: ControlPlane, tree: dict[str, str]) -> None:
    spawner = derive(admin, subtree=["n1"], verbs=["read", "spawn"])
    before = snapshot(cp)
    submit = ask(admin, 'mutation { submitJob(node: "n1", spec: {name: "j", tasks: [{name: "t", argv: ["true"]}]}) { id } }', spawner)
    assert "does not grant submit" in refused(submit, "FORBIDDEN", 403)
    assert snapshot(cp) == before
    _ = job  # the spec helper of the API tests
