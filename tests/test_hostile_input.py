"""Hostile strings from outside, on every engine: refused where they enter, naming the field, the graph untouched.

The rule (domain/text.py): ids of a safe charset, names on one line, free text
without control characters other than tab/newline/CR, no lone surrogates,
bounded lengths. Found by fuzzing: a NUL in an id made `watch` answer INTERNAL,
because FalkorDB's parameter header cannot carry it. Each entry point of the API
is tried with each hostile string (a table, one setup per engine), what passes
the rule must reach every engine and come back verbatim (a table and a
hypothesis property), and the service methods behind the CLI and the API all
declare their outside arguments.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx TestClient works the same (as in test_api.py)
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

import controlplane.services  # noqa: F401 - before controlplane.jobs, which imports it back (a cycle on main too)
from controlplane.domain.errors import InvalidInput
from controlplane.domain.lifecycle import CLAIM, RUN
from controlplane.domain.records import Exit
from controlplane.domain.text import Id, Line, Text, printable, rules_of
from controlplane.jobs.service import JobService
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.services.allocations import AllocationService
from controlplane.services.nodes import NodeService
from controlplane.services.queries import GraphQueries
from controlplane.services.reports import AgentReports
from controlplane.services.supervisor import SupervisorService
from controlplane.wiring import assemble
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.test_api import EVIL, REGISTER, SPAWN, data, job, node_input, register, spawn

# --- the strings ---------------------------------------------------------------------------------
#: refused wherever a string enters
ALWAYS = {
    "NUL": "a\x00b",
    "SOH": "a\x01b",
    "escape sequence": "\x1b[31mred",
    "DEL": "a\x7fb",
    "lone high surrogate": "a\ud800b",
    "lone low surrogate": "\udfff",
    "very long": "x" * 300_000,
}
#: refused in ids and one-line names, allowed in free text
NOT_ON_ONE_LINE = {"newline": "a\nb", "tab": "a\tb", "carriage return": "a\rb"}
#: refused in ids only
NOT_IN_IDS = {"space": "a b", "quote": "a'b", "unicode": "nöde"}
#: allowed everywhere text is free: what passes must reach every engine and come back as it was
BENIGN = [
    EVIL,
    '"double" and \'single\' quotes',
    "back\\slash \\' \\\" \\u0000 \\n",
    "é中文🚀 ünïcödé",
    "\u202eright-to-left\u202c and e\u0301 combining",
    "$param {curly} %s ${x} g.V().drop() MATCH (n) RETURN n",
    "\ufffd\uffff",
    "0" * 200,
]


def hostile(kind: str) -> dict[str, str]:
    found = dict(ALWAYS)
    if kind in ("id", "line"):
        found |= NOT_ON_ONE_LINE
    if kind == "id":
        found |= NOT_IN_IDS
    return found


# --- the rule, without an engine -----------------------------------------------------------------
@pytest.mark.parametrize(("rule", "kind"), [(Id("f"), "id"), (Line("f", max_length=4096), "line"), (Text("f", max_length=4096), "text")])
def test_each_kind_refuses_its_hostile_strings_naming_the_field(rule: Any, kind: str) -> None:
    for what, value in hostile(kind).items():
        with pytest.raises(InvalidInput) as refused:
            rule.check(value)
        assert refused.value.field == "f", what
    for value in (["a-b.c:d/e@f+g=h_1"] if kind == "id" else [*BENIGN, "plain"]):
        assert rule.check(value) == value
    if kind == "text":
        assert rule.check("line one\n\tline two\r\n") == "line one\n\tline two\r\n"


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_a_line_is_refused_exactly_when_it_holds_a_control_character_or_a_surrogate(value: str) -> None:
    bad = any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value)
    try:
        Line("name", max_length=10_000).check(value)
    except InvalidInput as exc:
        assert bad and exc.field == "name"
    else:
        assert not bad


@given(st.text())
@settings(deadline=None)
def test_what_is_recorded_of_a_process_output_is_always_acceptable_text(value: str) -> None:
    recorded = printable(value)
    assert Text("tail", max_length=len(recorded)).check(recorded) == recorded
    assert len(recorded) == len(value)


# --- every entry point declares what comes from outside -------------------------------------------
#: service methods the API and the CLI do not call with outside input (the control plane's own callbacks)
INTERNAL_METHODS = {"on_ended"}
#: parameters a caller inside the control plane sets, never a client
INTERNAL_PARAMETERS = {"field", "by"}
#: a string, an optional one, or a sequence of them (specs are pydantic's to check)
STRING = re.compile(r"(str|(list|Sequence|Collection)\[str\])( \| None)?")


def entry_points() -> list[tuple[str, Callable[..., Any]]]:
    found = [("SupervisorService.set_policy", SupervisorService.set_policy)]
    for cls in (NodeService, GraphQueries, AllocationService, JobService):
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_") and name not in INTERNAL_METHODS:
                found.append((f"{cls.__name__}.{name}", fn))
    return found


@pytest.mark.parametrize(("name", "fn"), entry_points(), ids=[n for n, _ in entry_points()])
def test_every_string_argument_of_an_entry_point_is_checked(name: str, fn: Callable[..., Any]) -> None:
    strings = {p.name for p in inspect.signature(fn).parameters.values() if STRING.fullmatch(str(p.annotation))}
    unchecked = strings - set(rules_of(fn)) - INTERNAL_PARAMETERS
    assert not unchecked, f"{name} takes {sorted(unchecked)} from outside without checking them (domain.text.checked)"


# --- through the API, on every engine ------------------------------------------------------------
@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    return assemble(store)


@pytest.fixture
def client(cp: ControlPlane, tmp_path: Path) -> Iterator[TestClient]:
    app, admin = app_with_auth(cp, tmp_path)
    with client_with(app, admin) as c:
        register(c, name="n1", cpu=64_000, memory=65_536)
        register(c, name="n2")
        yield c


WATCH = "mutation($w: ID!, $t: ID!) { watch(watcher: $w, target: $t) { id } }"
UNWATCH = "mutation($w: ID!, $t: ID!) { unwatch(watcher: $w, target: $t) }"
SUBMIT = "mutation($spec: JobSpecInput!, $node: ID, $r: String) { submitJob(spec: $spec, node: $node, requestId: $r) { id } }"
POLICY = "mutation($id: ID!, $p: SupervisionPolicyInput!) { setSupervision(id: $id, policy: $p) }"
TRAVERSE = """query($from: ID!, $after: String, $where: [Filter!]) {
  traverse(from: $from, edgeTypes: [PARENT_OF], where: $where, after: $after) { id } }"""
SNAPSHOT = """{ nodes { edges { node { id cpuFree labels supervision neighbors { node { id } } } } }
  allocations(first: 1000) { edges { node { id name state argv env supervision watchers { id } } } }
  jobs { edges { node { id } } } events(first: 10000) { id } }"""


def send(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    """post(), with the body escaped to ASCII: how a client sends a lone surrogate (\\ud800) in JSON."""
    r = client.post("/graphql", content=json.dumps({"query": query, "variables": variables}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert "Traceback" not in r.text and 'File "' not in r.text
    body: dict[str, Any] = r.json()
    return body


def task(**kw: Any) -> dict[str, Any]:
    return {"name": "t", "argv": ["true"], **kw}


def cases(a: str, b: str) -> list[tuple[str, str, str, Callable[[str], dict[str, Any]]]]:
    """(where, kind of string, query, variables with the string in place) for each entry point of the API."""
    return [
        ("watcher", "id", WATCH, lambda v: {"w": v, "t": b}),
        ("target", "id", WATCH, lambda v: {"w": a, "t": v}),
        ("watcher", "id", UNWATCH, lambda v: {"w": v, "t": b}),
        ("target", "id", UNWATCH, lambda v: {"w": a, "t": v}),
        ("id", "id", "query($id: ID!) { node(id: $id) { id } }", lambda v: {"id": v}),
        ("id", "id", "query($id: ID!) { allocation(id: $id) { id } }", lambda v: {"id": v}),
        ("id", "id", "query($id: ID!) { job(id: $id) { id } }", lambda v: {"id": v}),
        ("id", "id", "mutation($id: ID!) { cancelJob(id: $id) { id } }", lambda v: {"id": v}),
        ("id", "id", "mutation($id: ID!) { stopAllocation(id: $id) { id } }", lambda v: {"id": v}),
        ("reason", "text", "mutation($id: ID!, $r: String!) { stopAllocation(id: $id, reason: $r) { id } }", lambda v: {"id": a, "r": v}),
        ("after", "id", "query($x: String) { nodes(after: $x) { edges { cursor } } }", lambda v: {"x": v}),
        ("status", "line", "query($x: String) { nodes(status: $x) { edges { cursor } } }", lambda v: {"x": v}),
        ("after", "id", "query($x: String) { allocations(after: $x) { edges { cursor } } }", lambda v: {"x": v}),
        ("node", "id", "query($x: ID) { allocations(node: $x) { edges { cursor } } }", lambda v: {"x": v}),
        ("after", "id", "query($x: String) { jobs(after: $x) { edges { cursor } } }", lambda v: {"x": v}),
        ("state", "line", "query($x: String) { jobs(state: $x) { edges { cursor } } }", lambda v: {"x": v}),
        ("after", "id", "query($id: ID!, $x: String) { allocation(id: $id) { children(after: $x) { edges { cursor } } } }",
         lambda v: {"id": a, "x": v}),
        ("allocation", "id", "query($x: ID) { events(allocation: $x) { id } }", lambda v: {"x": v}),
        ("parent", "id", SPAWN, lambda v: {"parent": v, "spec": job()}),
        ("requestId", "line", SPAWN, lambda v: {"parent": "n1", "spec": job(), "requestId": v}),
        ("spec.name", "line", SPAWN, lambda v: {"parent": "n1", "spec": job(name=v)}),
        ("spec.argv[1]", "text", SPAWN, lambda v: {"parent": "n1", "spec": job(argv=["echo", v])}),
        ("spec.env", "text", SPAWN, lambda v: {"parent": "n1", "spec": job(env={"A": v})}),
        ("spec.env", "line", SPAWN, lambda v: {"parent": "n1", "spec": job(env={v: "x"})}),
        ("spec.node", "id", SPAWN, lambda v: {"parent": "n1", "spec": job(node=v)}),
        ("spec.nodeLabels", "id", SPAWN, lambda v: {"parent": "n1", "spec": job(nodeLabels={"zone": v})}),
        ("spec.resources.gpuModel", "line", SPAWN, lambda v: {"parent": "n1", "spec": job(resources={"gpus": 0, "gpuModel": v})}),
        ("spec.spreadKey", "line", SPAWN, lambda v: {"parent": "n1", "spec": job(spreadKey=v)}),
        ("spec.native", "line", SPAWN, lambda v: {"parent": "n1", "spec": {"name": "n", "executor": "native", "native": v}}),
        ("spec.config", "text", SPAWN, lambda v: {"parent": "n1", "spec": {"name": "n", "executor": "native", "native": "replicas",
                                                                          "config": {"count": 0, "template": {"name": v}}}}),
        ("spec.supervision.deciders[0].errorContains", "text", SPAWN,
         lambda v: {"parent": "n1", "spec": job(supervision={"deciders": [{"errorContains": v, "directive": "stop"}]})}),
        ("input.name", "id", REGISTER, lambda v: {"input": node_input(v)}),
        ("input.labels", "id", REGISTER, lambda v: {"input": node_input("n3", zone=v)}),
        ("input.gpus[0].model", "line", REGISTER, lambda v: {"input": {**node_input("n3"), "gpus": [{"model": v}]}}),
        ("a", "id", 'mutation($x: ID!) { connectNeighbors(a: $x, b: "n1", rttMs: 1) { id } }', lambda v: {"x": v}),
        ("b", "id", 'mutation($x: ID!) { connectNeighbors(a: "n1", b: $x, rttMs: 1) { id } }', lambda v: {"x": v}),
        ("id", "id", POLICY, lambda v: {"id": v, "p": {}}),
        ("policy.deciders[0].exitCodes", "line", POLICY, lambda v: {"id": "n1", "p": {"deciders": [{"exitCodes": v, "directive": "stop"}]}}),
        ("spec.name", "line", SUBMIT, lambda v: {"spec": {"name": v, "tasks": [task()]}}),
        ("spec.tasks[0].argv[0]", "text", SUBMIT, lambda v: {"spec": {"name": "j", "tasks": [task(argv=[v])]}}),
        ("spec.tasks[0].env", "text", SUBMIT, lambda v: {"spec": {"name": "j", "tasks": [task(env={"A": v})]}}),
        ("spec.tasks[0].needs[0]", "line", SUBMIT, lambda v: {"spec": {"name": "j", "tasks": [task(needs=[v])]}}),
        ("spec.tasks[0].executor", "line", SUBMIT, lambda v: {"spec": {"name": "j", "tasks": [task(executor=v)]}}),
        ("spec.tasks[0].placement.nodeLabels", "id", SUBMIT,
         lambda v: {"spec": {"name": "j", "tasks": [task(placement={"nodeLabels": {"zone": v}})]}}),
        ("spec.tasks[0].children[0].argv[0]", "text", SUBMIT,
         lambda v: {"spec": {"name": "j", "tasks": [task(children=[task(argv=[v])])]}}),
        ("node", "id", SUBMIT, lambda v: {"spec": {"name": "j", "tasks": [task()]}, "node": v}),
        ("requestId", "line", SUBMIT, lambda v: {"spec": {"name": "j", "tasks": [task()]}, "r": v}),
        ("from", "id", TRAVERSE, lambda v: {"from": v}),
        ("after", "id", TRAVERSE, lambda v: {"from": "n1", "after": v}),
        ("where[0].value", "text", TRAVERSE, lambda v: {"from": "n1", "where": [{"property": "name", "value": v}]}),
        ("where[0].value[1]", "text", TRAVERSE, lambda v: {"from": "n1", "where": [{"property": "name", "op": "IN", "value": ["a", v]}]}),
        ("query", "text", "query($q: String!) { rawQuery(query: $q) { rows } }", lambda v: {"q": v}),
    ]


def test_every_entry_point_refuses_every_hostile_string_naming_the_field(client: TestClient) -> None:
    # Given two allocations, one watching nothing yet, and the graph as it is
    a, b = spawn(client, "n1", job("a"))["id"], spawn(client, "n1", job("b"))["id"]
    before = data(client, SNAPSHOT)
    failures: list[str] = []
    # When each entry point gets each string its kind refuses
    for field, kind, query, variables in cases(a, b):
        for what, value in hostile(kind).items():
            body = send(client, query, **variables(value))  # HTTP 200, no traceback
            errors = body.get("errors") or []
            got = [e["extensions"] for e in errors]
            if got != [{"code": "INVALID_INPUT", "field": field}]:
                failures.append(f"{field} ({kind}) with {what}: {got or body.get('data')} {[e['message'][:120] for e in errors]}")
    # Then every one was an INVALID_INPUT naming the field, and nothing was written
    assert not failures, "\n".join(failures)
    assert data(client, SNAPSHOT) == before


def test_post_query_refuses_hostile_query_text(client: TestClient) -> None:
    for what, value in ALWAYS.items():
        r = client.post("/query", content=json.dumps({"query": value}), headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (400, "INVALID_INPUT", "query"), what


def test_the_services_behind_the_cli_refuse_them_too(cp: ControlPlane) -> None:
    cp.nodes.register({"name": "n1", "cpu_milli": 1000, "memory_mib": 1024})
    calls: list[tuple[Callable[[], Any], str]] = [
        (lambda: cp.allocations.watch("a\x00", "b"), "watcher"),
        (lambda: cp.allocations.stop("a\ud800"), "id"),
        (lambda: cp.allocations.spawn("n1", [{"name": "x", "argv": ["a\x00"]}], field="spec"), "spec.argv[0]"),
        (lambda: cp.jobs.submit({"name": "j", "tasks": [{"name": "t", "argv": ["true"]}]}, request_id="r\x00"), "requestId"),
        (lambda: cp.jobs.cancel("j\x01"), "id"),
        (lambda: cp.nodes.heartbeat("n1\x00"), "node"),
        (lambda: cp.queries.events("a\x00"), "allocation"),
        (lambda: cp.supervisor.set_policy("n1\n", {}), "id"),
    ]
    for call, field in calls:
        with pytest.raises(InvalidInput) as refused:
            call()
        assert refused.value.field == field
    assert cp.queries.allocations() == [] and cp.jobs.jobs() == []


# --- what passes reaches every engine and comes back verbatim --------------------------------------
NAMES = "query($id: ID!) { allocation(id: $id) { name argv env } }"


def round_trip(client: TestClient, text: str) -> dict[str, Any]:
    spec = job(text[:200] or "x", argv=["echo", text, "tab\there\nnewline"], env={"A": text})
    created = data(client, SPAWN, parent="n1", spec=spec)["spawnAllocation"]
    found: dict[str, Any] = data(client, NAMES, id=created["id"])["allocation"]
    return found


@pytest.mark.parametrize("text", BENIGN, ids=range(len(BENIGN)))
def test_text_that_passes_is_stored_and_found_verbatim(client: TestClient, text: str) -> None:
    # When text the rule allows is given as a name, an argument, an environment value and a stop reason
    got = round_trip(client, text)
    by_name = data(client, TRAVERSE.replace("PARENT_OF", "RUNS_ON").replace("traverse(from: $from,", "traverse(from: $from, direction: IN,"),
                   **{"from": "n1", "where": [{"property": "name", "value": text[:200]}]})["traverse"]
    a = spawn(client, "n1", job("stopped"))["id"]
    data(client, "mutation($id: ID!, $r: String!) { stopAllocation(id: $id, reason: $r) { id } }", id=a, r=text)
    reasons = [e["reason"] for e in data(client, "query($id: ID!) { events(allocation: $id) { reason } }", id=a)["events"]]
    # Then each comes back exactly as it was sent, and a filter on it finds it
    assert got == {"name": text[:200], "argv": ["echo", text, "tab\there\nnewline"], "env": {"A": text}}
    assert len(by_name) == 1
    assert text in reasons


@given(st.text(max_size=60))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_text_is_either_refused_naming_the_field_or_stored_verbatim(client: TestClient, text: str) -> None:
    body = send(client, SPAWN, parent="n1", spec=job("p", argv=["echo", text], env={"A": text}))
    if body.get("errors"):
        assert [e["extensions"] for e in body["errors"]] in (
            [{"code": "INVALID_INPUT", "field": "spec.argv[1]"}], [{"code": "INVALID_INPUT", "field": "spec.env"}])
        assert Text(max_length=32_768).problem(text) is not None
    else:
        got = data(client, NAMES, id=body["data"]["spawnAllocation"]["id"])["allocation"]
        assert (got["argv"], got["env"]) == (["echo", text], {"A": text})


# --- what the control plane records is made printable ----------------------------------------------
def test_a_process_output_with_control_characters_is_recorded_printable(client: TestClient, cp: ControlPlane) -> None:
    # Given a running allocation
    a = spawn(client, "n1", job("noisy"))["id"]
    cp.store.transition_many(changes=[Change(a, CLAIM)], now=cp.clock())
    cp.store.transition_many(changes=[Change(a, RUN, fields={"started_at": cp.clock()})], now=cp.clock())
    # When its process exits having written a NUL, an escape sequence and undecodable bytes
    ended = AgentReports(cp.store, node="n1", clock=cp.clock).exited([Exit((a, 1), 3, "out\x00put \x1b[31m\ud800 done\n")])
    # Then the agent's report is recorded, the output with those characters replaced
    got = data(client, "query($id: ID!) { allocation(id: $id) { state exitCode outputTail } }", id=a)["allocation"]
    assert [e.id for e in ended] == [a]
    assert got == {"state": "FAILED", "exitCode": 3, "outputTail": "out\ufffdput \ufffd[31m\ufffd done\n"}
