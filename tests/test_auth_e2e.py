"""Allocations act as themselves, end to end: a real API process, a real node agent, a real process that uses the
token it finds in its environment.

Given `controlplane api` (keys and admin token made on its first start) and a node agent in the
same data directory, when an admin spawns a process that calls the API with its own
CONTROLPLANE_TOKEN, then it can spawn a child under itself, cannot spawn outside its subtree,
and once it is stopped its token no longer works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack, wait_for

PY = "/usr/bin/python3"  # reachable by the allocations' own users (the test's interpreter may live under /root)
SCRIPT = r"""
import json, os, sys, time, urllib.request, urllib.error
def ask(query, **variables):
    r = urllib.request.Request(os.environ["CONTROLPLANE_API_URL"] + "/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["CONTROLPLANE_TOKEN"]})
    try:
        return json.loads(urllib.request.urlopen(r, timeout=20).read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())
spawn = 'mutation($p: ID!) { spawnAllocation(parent: $p, spec: {name: "child", argv: ["sleep", "60"]}) { id } }'
me = os.environ["CONTROLPLANE_ALLOCATION_ID"]
report = {"token": os.environ["CONTROLPLANE_TOKEN"], "own": ask(spawn, p=me), "escape": ask(spawn, p=os.environ["CONTROLPLANE_NODE"])}
print("REPORT " + json.dumps(report), flush=True)
time.sleep(60)
"""


@pytest.fixture
def stack(falkordb_server: FalkorDBServer, tmp_path: Path) -> Iterator[tuple[Stack, str, dict[str, str]]]:
    s = Stack(falkordb_server, tmp_path, graph="auth-e2e")
    s.store.clear()
    try:
        s.api()  # `controlplane api`: keys and the admin token made on its first start
        url = s.api_url
        wait_for(lambda: (tmp_path / "admin.token").exists() and httpx.get(f"{url}/healthz").status_code == 200,
                 what="the API to start")
        admin = {"Authorization": "Bearer " + s.admin_token}
        s.agent("e2e-node")
        yield s, url, admin
    finally:
        s.close()


def ask(url: str, headers: dict[str, str], query: str, **variables: Any) -> dict[str, Any]:
    body: dict[str, Any] = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, headers=headers,
                                      timeout=20).json()
    return body


@pytest.mark.timeout(300)
def test_a_running_allocation_spawns_its_own_children_with_its_token_and_nothing_else(stack: tuple[Stack, str, dict[str, str]]) -> None:
    s, url, admin = stack
    spawned = ask(url, admin, 'mutation($a: [String!]!) { spawnAllocation(parent: "e2e-node", spec: {name: "self", argv: $a}) { id } }',
                  a=[PY, "-c", SCRIPT])
    me = spawned["data"]["spawnAllocation"]["id"]

    def report() -> dict[str, Any] | None:
        tail = s.store.get_allocation(allocation_id=me)
        log = Path(s.data_dir, "runs", "e2e-node", f"{me}.1.log")
        text = log.read_text() if log.exists() else ""
        line = next((ln for ln in text.splitlines() if ln.startswith("REPORT ")), None)
        return json.loads(line[len("REPORT "):]) if line and tail else None

    got = wait_for(report, timeout=60, what="the allocation's report")
    # Then its own child was created under it, by it
    child = got["own"]["data"]["spawnAllocation"]["id"]
    record = s.store.get_allocation(allocation_id=child)
    assert record is not None and record.parent_id == me
    assert s.control.queries.events(child)[0].by == f"allocation:{me}#1"
    # And spawning under the node (outside its subtree) was FORBIDDEN, creating nothing there
    assert got["escape"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert [a.id for a in s.control.queries.children("e2e-node")] == [me]
    # When it is stopped, Then its token is refused, and the graph is unchanged by the attempt
    ask(url, admin, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=me)
    wait_for(lambda: (a := s.store.get_allocation(allocation_id=me)) is not None and a.state.value == "stopped", timeout=120,
             what="it to stop")
    before = s.control.queries.allocations(limit=100)
    late = ask(url, {"Authorization": "Bearer " + got["token"]},
               'mutation($p: ID!) { spawnAllocation(parent: $p, spec: {name: "late", argv: ["true"]}) { id } }', p=me)
    assert late["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert s.control.queries.allocations(limit=100) == before
