"""Typed GraphQL inputs generated from the domain's models: what GraphQL refuses itself, what introspection shows.

The shape of an input (enum values, field names, types) is GraphQL's to check,
before any resolver runs; its values (ranges, patterns) stay the domain's (see
test_api.py and test_api_supervision.py for those refusals). These properties
do not depend on the graph engine, so the tests run on the embedded FalkorDB.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel
from strawberry.utils.str_converters import to_camel_case

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx TestClient works the same (as in test_api.py)
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

from controlplane.domain.specs import EXECUTORS, AllocationSpec, ResourceSpec
from controlplane.domain.supervision import Backoff, ChildPolicy, DeciderRule, Directive, RestartType, Strategy, SupervisionPolicy
from controlplane.jobs.spec import Affinity, JobSpec, Placement, TaskSpec
from controlplane.services import ControlPlane
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.test_api import SPAWN, data, job, register

GRAPHQL_RESPONSE = "application/graphql-response+json"
ROOT = Path(__file__).resolve().parent.parent
SET_SUPERVISION = "mutation($id: ID!, $policy: SupervisionPolicyInput!) { setSupervision(id: $id, policy: $policy) }"
SUBMIT = "mutation($spec: JobSpecInput!, $node: ID) { submitJob(spec: $spec, node: $node) { id spec } }"


@pytest.fixture
def cp(falkordb_server: FalkorDBServer) -> Iterator[ControlPlane]:
    store = FalkorDBStore(falkordb_server.url, graph="api-inputs")
    store.bootstrap()
    store.clear()
    yield assemble(store)
    store.close()


@pytest.fixture
def client(cp: ControlPlane, tmp_path: Path) -> Iterator[TestClient]:
    app, admin = app_with_auth(cp, tmp_path)
    with client_with(app, admin) as c:
        register(c, name="n1", cpu=64_000, memory=65_536, gpus=1, zone="eu")
        yield c


def calls(monkeypatch: pytest.MonkeyPatch, owner: Any, method: str) -> list[Any]:
    """Record each call of a service method (it still runs)."""
    seen: list[Any] = []
    real: Callable[..., Any] = getattr(owner, method)

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, method, counted)
    return seen


def task(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": ["true"], **kw}


# --- GraphQL refuses a bad shape before any resolver runs -------------------------------------------
BAD_SHAPES = [
    # (what, operation, variables, service that must not be called, words of the message)
    ("an unknown executor", SPAWN, {"parent": "n1", "spec": job(executor="docker")}, "allocations.spawn", ["docker", "Executor"]),
    ("an unknown restart type", SPAWN, {"parent": "n1", "spec": job(restart="sometimes")}, "allocations.spawn", ["sometimes", "RestartType"]),
    ("an unknown strategy", SPAWN, {"parent": "n1", "spec": job(supervision={"strategy": "one_for_none"})}, "allocations.spawn",
     ["one_for_none", "SupervisionStrategy"]),
    ("an UPPER_CASE value", SPAWN, {"parent": "n1", "spec": job(supervision={"childPolicy": "ABANDON"})}, "allocations.spawn",
     ["ABANDON", "ChildPolicy"]),
    ("an unknown directive", SET_SUPERVISION, {"id": "n1", "policy": {"deciders": [{"on": "exit", "directive": "panic"}]}},
     "supervisor.set_policy", ["panic", "SupervisionDirective"]),
    ("an unknown decider kind", SET_SUPERVISION, {"id": "n1", "policy": {"deciders": [{"on": "oom", "directive": "stop"}]}},
     "supervisor.set_policy", ["oom", "FailureKindMatch"]),
    ("a snake_case key", SET_SUPERVISION, {"id": "n1", "policy": {"max_restarts": 3}}, "supervisor.set_policy", ["max_restarts"]),
    ("a number as text", SET_SUPERVISION, {"id": "n1", "policy": {"maxRestarts": "3"}}, "supervisor.set_policy", ["maxRestarts"]),
    ("a nested task's restart type", SUBMIT, {"spec": {"name": "j", "tasks": [task("a", children=[task("b", restart="never")])]}},
     "jobs.submit", ["never", "RestartType"]),
    ("an unknown job field", SUBMIT, {"spec": {"name": "j", "tasks": [task("a")], "colour": "red"}}, "jobs.submit", ["colour"]),
    ("a task without a name", SUBMIT, {"spec": {"name": "j", "tasks": [{"argv": ["true"]}]}}, "jobs.submit", ["name"]),
]


def service(cp: ControlPlane, path: str) -> tuple[Any, str]:
    owner, method = path.split(".")
    return getattr(cp, owner), method


@pytest.mark.parametrize(("what", "query", "variables", "target", "words"), BAD_SHAPES, ids=[b[0] for b in BAD_SHAPES])
def test_graphql_refuses_a_bad_shape_before_any_resolver_runs(
    client: TestClient, cp: ControlPlane, monkeypatch: pytest.MonkeyPatch,
    what: str, query: str, variables: dict[str, Any], target: str, words: list[str],
) -> None:
    # Given a service whose calls are counted, and the graph as it is
    seen = calls(monkeypatch, *service(cp, target))
    before = data(client, "{ allocations { edges { node { id } } } jobs { edges { node { id } } } node(id: \"n1\") { supervision } }")
    # When a client sends an input of the wrong shape, asking for the GraphQL response media type
    r = client.post("/graphql", json={"query": query, "variables": variables}, headers={"accept": GRAPHQL_RESPONSE})
    # Then it is a request error: 400, no data entry, one INVALID_QUERY error naming the culprit, no field path
    body = r.json()
    assert r.status_code == 400, body
    assert "data" not in body and len(body["errors"]) == 1
    [err] = body["errors"]
    assert err["extensions"] == {"code": "INVALID_QUERY", "field": None} and "path" not in err
    assert all(w in err["message"] for w in words), err["message"]
    # And no resolver ran: the service was never called and the graph is as it was
    assert seen == []
    assert data(client, "{ allocations { edges { node { id } } } jobs { edges { node { id } } } node(id: \"n1\") { supervision } }") == before


def test_an_enum_literal_in_the_document_is_checked_too(client: TestClient, cp: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = calls(monkeypatch, cp.allocations, "spawn")
    quoted = client.post("/graphql", json={"query": 'mutation { spawnAllocation(parent: "n1", spec: {name: "x", argv: ["true"], '
                                                    'restart: "permanent"}) { id } }'})
    bare = data(client, 'mutation { spawnAllocation(parent: "n1", spec: {name: "x", argv: ["true"], restart: permanent, '
                        'supervision: {strategy: rest_for_one, deciders: [{on: exit, exitCodes: "1", directive: stop}]}}) '
                        '{ restartType supervision } }')["spawnAllocation"]
    # A quoted value is a string, not an enum value: refused by validation (application/json: 200, data null)
    assert quoted.status_code == 200 and quoted.json()["data"] is None
    assert quoted.json()["errors"][0]["extensions"]["code"] == "INVALID_QUERY"
    assert "RestartType" in quoted.json()["errors"][0]["message"]
    # The bare value, as written in files, is taken
    assert bare["restartType"] == "permanent" and bare["supervision"]["strategy"] == "rest_for_one"
    assert bare["supervision"]["deciders"] == [{"on": "exit", "exit_codes": "1", "error_contains": None, "directive": "stop"}]
    assert len(seen) == 1


# --- introspection shows the enums and the defaults -----------------------------------------------
ENUMS: list[tuple[str, list[str]]] = [
    ("SupervisionStrategy", [s.value for s in Strategy]),
    ("SupervisionDirective", [d.value for d in Directive]),
    ("RestartType", [r.value for r in RestartType]),
    ("ChildPolicy", [c.value for c in ChildPolicy]),
    ("FailureKindMatch", list(get_args(DeciderRule.model_fields["on"].annotation))),
    ("Executor", list(EXECUTORS)),
]
TYPE_QUERY = """query($name: String!) { __type(name: $name) { kind name description
  enumValues { name description }
  inputFields { name description defaultValue type { kind name ofType { kind name ofType { kind name ofType { name } } } } } } }"""


def introspect(client: TestClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = data(client, TYPE_QUERY, name=name)["__type"]
    assert found is not None, f"no type {name}"
    return found


@pytest.mark.parametrize(("name", "values"), ENUMS, ids=[e[0] for e in ENUMS])
def test_introspection_shows_each_enum_with_the_values_of_files(client: TestClient, name: str, values: list[str]) -> None:
    found = introspect(client, name)
    assert found["kind"] == "ENUM"
    assert [v["name"] for v in found["enumValues"]] == values
    assert all(v["description"] for v in found["enumValues"]), "every value says what it means"
    assert "lower-case" in found["description"]


def test_introspection_shows_types_and_defaults_of_a_policy(client: TestClient) -> None:
    fields = {f["name"]: f for f in introspect(client, "SupervisionPolicyInput")["inputFields"]}
    assert {n: (f["type"]["kind"], f["type"]["ofType"]["name"], f["defaultValue"]) for n, f in fields.items()} == {
        "strategy": ("NON_NULL", "SupervisionStrategy", "one_for_one"),
        "deciders": ("NON_NULL", None, "[]"),
        "defaultDirective": ("NON_NULL", "SupervisionDirective", "restart"),
        "maxRestarts": ("NON_NULL", "Int", "3"),
        "windowS": ("NON_NULL", "Float", "60"),
        "backoff": ("NON_NULL", "BackoffInput", "{ minS: 0.5, maxS: 30, factor: 2, jitter: 0.2, resetAfterS: 60 }"),
        "childPolicy": ("NON_NULL", "ChildPolicy", "cascade"),
    }
    assert "at most 10000" in fields["maxRestarts"]["description"]


def test_a_task_input_contains_itself_and_the_spawn_input_takes_a_policy(client: TestClient) -> None:
    task_fields = {f["name"]: f["type"] for f in introspect(client, "TaskSpecInput")["inputFields"]}
    spawn_fields = {f["name"]: f["type"] for f in introspect(client, "AllocationSpecInput")["inputFields"]}
    children = task_fields["children"]
    assert (children["kind"], children["ofType"]["kind"], children["ofType"]["ofType"]["kind"],
            children["ofType"]["ofType"]["ofType"]["name"]) == ("NON_NULL", "LIST", "NON_NULL", "TaskSpecInput")
    assert (spawn_fields["supervision"]["kind"], spawn_fields["supervision"]["name"]) == ("INPUT_OBJECT", "SupervisionPolicyInput")
    assert spawn_fields["restart"]["ofType"]["name"] == "RestartType"


MODELS = [
    (AllocationSpec, "AllocationSpecInput"), (ResourceSpec, "ResourcesInput"), (SupervisionPolicy, "SupervisionPolicyInput"),
    (DeciderRule, "DeciderRuleInput"), (Backoff, "BackoffInput"), (JobSpec, "JobSpecInput"), (TaskSpec, "TaskSpecInput"),
    (Placement, "PlacementInput"), (Affinity, "AffinityInput"),
]


@pytest.mark.parametrize(("model", "name"), MODELS, ids=[m[1] for m in MODELS])
def test_every_field_of_a_domain_model_is_a_field_of_its_input(client: TestClient, model: type[BaseModel], name: str) -> None:
    fields = {f["name"]: f for f in introspect(client, name)["inputFields"]}
    assert list(fields) == [to_camel_case(f) for f in model.model_fields]
    required = {to_camel_case(f) for f, info in model.model_fields.items() if info.is_required()}
    assert {n for n, f in fields.items() if f["defaultValue"] is None and f["type"]["kind"] == "NON_NULL"} == required


# --- a job file is a GraphQL input ------------------------------------------------------------------
def as_input(model: type[BaseModel], value: Any) -> Any:
    """A spec as written in a file (snake_case), as GraphQL input (camelCase); the keys of JSON values stay."""
    if isinstance(value, list):
        return [as_input(model, v) for v in value]
    out = {}
    for key, v in value.items():
        nested = _model_of(model.model_fields[key].annotation)
        out[to_camel_case(key)] = as_input(nested, v) if nested is not None and v is not None else v
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("example", ["demo-job.yaml", "etl.yaml"])
def test_a_job_file_submitted_through_graphql_is_the_same_job(client: TestClient, example: str) -> None:
    # Given a job file, as the CLI would read it
    spec = yaml.safe_load((ROOT / "examples" / example).read_text())
    # When it is submitted through GraphQL as a typed input
    got = data(client, SUBMIT, spec=as_input(JobSpec, spec), node="n1")["submitJob"]
    # Then the job accepted is exactly the one the file describes
    assert got["spec"] == JobSpec.model_validate(spec).model_dump(mode="json")


# --- the README's GraphQL examples work -------------------------------------------------------------
def readme_operations() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"The same through GraphQL.*?```graphql\n(.*?)```", text, re.S)
    assert block is not None
    operations, current = [], ""
    for line in block.group(1).splitlines():
        if re.match(r"^(query|mutation|subscription) ", line) and current.strip():
            operations.append(current)
            current = ""
        if not line.startswith("#"):
            current += line.split("   #")[0] + "\n"
    return [*operations, current]


def test_the_readme_graphql_examples_run(client: TestClient) -> None:
    # Given the README's nodes: the gpu-box its agent registers, the demo's edge-eu-1; and its operations in order
    register(client, name="gpu-box", cpu=8000, memory=32768, gpus=1, zone="eu")
    register(client, name="edge-eu-1")
    operations = [op for op in readme_operations() if not op.startswith("subscription")]
    created: dict[str, str] = {}
    # When each runs (the spawned allocation's id in place of <id>)
    for op in operations:
        answer = data(client, op.replace("<id>", created.get("id", "none")))
        if "spawnAllocation" in answer:
            created["id"] = answer["spawnAllocation"]["id"]
    # Then none was refused, and the spawn took its typed supervision policy
    assert len(operations) >= 8 and "id" in created
    policy = data(client, "query($id: ID!) { allocation(id: $id) { supervision } }", id=created["id"])["allocation"]["supervision"]
    assert (policy["strategy"], policy["max_restarts"], policy["window_s"]) == ("rest_for_one", 5, 60.0)
