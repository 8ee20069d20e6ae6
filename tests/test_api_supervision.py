"""Supervision, events, jobs and raw queries through the API, on every engine (see the `store` fixture).

Supervision and native executors run in-process (`assemble(store)`);
allocations are driven through the lifecycle with the node agent's own guarded
transitions, as in test_supervision.py. Given / When / Then, asserting on what a
client observes: GraphQL answers, websocket messages, HTTP statuses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.api import live
from controlplane.api.live import PAGE, EventCursor
from controlplane.domain.lifecycle import CLAIM, RUN
from controlplane.domain.records import Event, Exit
from controlplane.eventbus import RedisNotifier
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.wiring import assemble
from graph_schema.falkordb_server import FalkorDBServer
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.http import TestClient
from tests.test_api import SPAWN, data, error, job, post, register, spawn

SPAWN_POLICY = """mutation($parent: ID!, $spec: AllocationSpecInput!) {
  spawnAllocation(parent: $parent, spec: $spec) { id supervision restartType childPolicy restarts orphan escalated
    restartAt native jobId taskId watchers { id } watching { id } } }"""
SET_SUPERVISION = "mutation($id: ID!, $policy: SupervisionPolicyInput!) { setSupervision(id: $id, policy: $policy) }"
WATCH = "mutation($w: ID!, $t: ID!) { watch(watcher: $w, target: $t) { id watchers { id name } } }"
UNWATCH = "mutation($w: ID!, $t: ID!) { unwatch(watcher: $w, target: $t) }"
EVENTS = """query($id: ID, $since: Float, $first: Int!) {
  events(allocation: $id, since: $since, first: $first) { id kind allocationId incarnation fromState toState at reason by data } }"""
SUBMIT = """mutation($spec: JobSpecInput!, $node: ID, $requestId: String) { submitJob(spec: $spec, node: $node, requestId: $requestId) {
  id name state tasksTotal error submittedAt submittedBy { id } spec
  root { id state executor native jobId parent { id } }
  tasks { path name parentPath state replicas executor needs runs { incarnation state allocation { id jobId taskId } node { id } } } } }"""
RAW = "query($q: String!, $limit: Int! = 1000, $t: Float! = 10) { rawQuery(query: $q, limit: $limit, timeoutS: $t) { engine language columns rows truncated elapsedMs } }"
SUBSCRIBE = "subscription($id: ID, $since: Float) { events(allocation: $id, since: $since) { kind allocationId fromState toState by } }"
#: billions of rows from small lists (a range of 1e8 would meet the engine's memory limit before its time limit)
SLOW = "UNWIND range(1, 2000) AS a UNWIND range(1, 2000) AS b UNWIND range(1, 2000) AS c WITH a WHERE (a + b + c) % 7 = 3 RETURN count(*)"


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    return assemble(store)


@pytest.fixture
def client(cp: ControlPlane, tmp_path: Path) -> Iterator[TestClient]:
    app, admin = app_with_auth(cp, tmp_path)
    with client_with(app, admin) as c:
        register(c, cpu=64_000, memory=65_536)
        yield c


def run(cp: ControlPlane, *ids: str) -> None:
    """What a node agent does when it starts them (no process id: nothing to signal)."""
    cp.store.transition_many(changes=[Change(i, CLAIM) for i in ids], now=cp.clock())
    cp.store.transition_many(changes=[Change(i, RUN, fields={"started_at": cp.clock()}) for i in ids], now=cp.clock())


def crash(cp: ControlPlane, allocation_id: str, code: int = 1) -> None:
    """What a node agent reports when the process exits; then the supervisor reacts."""
    current = cp.queries.allocation(allocation_id)
    ended = AgentReports(cp.store, node=current.node_id, clock=cp.clock).exited([Exit((allocation_id, current.incarnation), code, "boom")])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])


def allocation(client: TestClient, allocation_id: str, fields: str) -> dict[str, Any]:
    found: dict[str, Any] = data(client, f"query($id: ID!) {{ allocation(id: $id) {{ {fields} }} }}", id=allocation_id)["allocation"]
    return found


def task(name: str, *needs: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": ["sleep", "100"], "needs": list(needs), "resources": {"cpuMilli": 100, "memoryMib": 16}, **kw}


def events_of(client: TestClient, allocation_id: str | None = None, **kw: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = data(client, EVENTS, id=allocation_id, since=kw.get("since"), first=kw.get("first", 100))["events"]
    return found


class Subscriber:
    """A graphql-transport-ws client on the app's /graphql websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}

    def subscribe(self, query: str, op: str = "1", **variables: Any) -> None:
        self.ws.send_json({"type": "subscribe", "id": op, "payload": {"query": query, "variables": variables}})

    def next(self) -> dict[str, Any]:
        message: dict[str, Any] = self.ws.receive_json()
        return message


def subscriber(client: TestClient) -> Any:
    return client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"])


# --- supervision policies ------------------------------------------------------------------
def test_a_policy_given_at_spawn_is_read_back_with_the_restart_type(client: TestClient) -> None:
    # Given a parent spawned with a supervision policy (a typed input, enums in lower case) and a restart type,
    # and one spawned with neither
    policy: dict[str, Any] = {"strategy": "one_for_all", "maxRestarts": 5, "windowS": 30, "childPolicy": "abandon",
                              "deciders": [{"on": "exit", "exitCodes": "3-5", "directive": "stop"}]}
    custom = data(client, SPAWN_POLICY, parent="n1", spec=job("custom", restart="permanent", supervision=policy))
    plain = data(client, SPAWN_POLICY, parent="n1", spec=job("plain"))
    # Then the client reads the policy back as the JSON of files (snake_case keys), the defaults filled in
    got: dict[str, Any] = custom["spawnAllocation"]
    assert got["supervision"] == {
        "strategy": "one_for_all", "max_restarts": 5, "window_s": 30.0, "child_policy": "abandon",
        "deciders": [{"on": "exit", "exit_codes": "3-5", "error_contains": None, "directive": "stop"}],
        "default_directive": "restart",
        "backoff": {"min_s": 0.5, "max_s": 30.0, "factor": 2.0, "jitter": 0.2, "reset_after_s": 60.0},
    }
    assert (got["restartType"], got["childPolicy"], got["restarts"], got["orphan"]) == ("permanent", "abandon", 0, False)
    # And an allocation without a policy shows null (the default) and the default restart type
    assert {k: v for k, v in plain["spawnAllocation"].items() if k != "id"} == {
        "supervision": None, "restartType": "transient", "childPolicy": "cascade", "restarts": 0, "orphan": False,
        "escalated": None, "restartAt": None, "native": None, "jobId": None, "taskId": None, "watchers": [], "watching": [],
    }


def test_set_supervision_changes_how_a_parent_restarts_its_children(client: TestClient, cp: ControlPlane) -> None:
    # Given a running parent with the default policy and three running children
    parent = spawn(client, "n1", job("parent"))
    kids = [spawn(client, parent["id"], job(f"k{i}")) for i in range(3)]
    run(cp, parent["id"], *(k["id"] for k in kids))
    # When the client switches it to one_for_all and a child crashes
    changed = data(client, SET_SUPERVISION, id=parent["id"], policy={"strategy": "one_for_all"})
    crash(cp, kids[1]["id"])
    # Then the policy reads back, and every child was restarted as a new incarnation
    assert changed == {"setSupervision": True}
    got = allocation(client, parent["id"], "supervision children { edges { node { name incarnation restarts state } } }")
    assert got["supervision"]["strategy"] == "one_for_all"
    assert sorted((e["node"]["name"], e["node"]["incarnation"], e["node"]["restarts"], e["node"]["state"])
                  for e in got["children"]["edges"]) == [(f"k{i}", 2, 1, "PLACED") for i in range(3)]


def test_a_node_takes_a_policy_too(client: TestClient) -> None:
    before = data(client, '{ node(id: "n1") { supervision } }')
    data(client, SET_SUPERVISION, id="n1", policy={"maxRestarts": 1, "windowS": 10})
    after = data(client, '{ node(id: "n1") { supervision } }')["node"]["supervision"]
    assert before == {"node": {"supervision": None}}
    assert (after["max_restarts"], after["window_s"], after["strategy"]) == (1, 10.0, "one_for_one")


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"maxRestarts": -1}, "policy.maxRestarts"),
        ({"windowS": 0}, "policy.windowS"),
        ({"backoff": {"minS": -1}}, "policy.backoff.minS"),
        ({"backoff": {"minS": 10, "maxS": 5}}, "policy.backoff.maxS"),
        ({"deciders": [{"on": "exit", "exitCodes": "three", "directive": "stop"}]}, "policy.deciders[0].exitCodes"),
        ({"deciders": [{"errorContains": "a\x00b", "directive": "stop"}]}, "policy.deciders[0].errorContains"),
    ],
)
def test_a_bad_policy_is_invalid_input_naming_its_field_and_nothing_changes(
    client: TestClient, policy: dict[str, Any], field: str
) -> None:
    a = spawn(client, "n1", job("a"))
    err = error(client, SET_SUPERVISION, id=a["id"], policy=policy)
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": field}
    assert err["message"].startswith(f"{field}: ")
    assert allocation(client, a["id"], "supervision") == {"supervision": None}


def test_the_policy_of_a_stopped_allocation_cannot_change(client: TestClient) -> None:
    a = spawn(client, "n1", job("a"))
    data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=a["id"])
    stopped = error(client, SET_SUPERVISION, id=a["id"], policy={"strategy": "one_for_all"})
    ghost = error(client, SET_SUPERVISION, id="ghost", policy={})
    assert stopped["extensions"] == {"code": "CONFLICT", "field": "id"} and "stopped" in stopped["message"]
    assert ghost["extensions"] == {"code": "NOT_FOUND", "field": "id"}


def test_children_of_an_abandoning_parent_are_shown_as_orphans(client: TestClient, cp: ControlPlane) -> None:
    parent = spawn(client, "n1", job("parent", supervision={"childPolicy": "abandon"}))
    kid = spawn(client, parent["id"], job("kid"))
    run(cp, parent["id"], kid["id"])
    data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=parent["id"])
    assert allocation(client, kid["id"], "state orphan") == {"state": "RUNNING", "orphan": True}


# --- death watch -------------------------------------------------------------------------------
def test_a_watcher_sees_terminated_when_the_watched_one_crashes(client: TestClient, cp: ControlPlane) -> None:
    # Given two running siblings under a parent that resumes (does not restart) failed children
    parent = spawn(client, "n1", job("parent", supervision={"defaultDirective": "resume"}))
    watcher, target = (spawn(client, parent["id"], job(n)) for n in ("watcher", "target"))
    run(cp, parent["id"], watcher["id"], target["id"])
    # When the watcher watches the target, and the target crashes
    watched = data(client, WATCH, w=watcher["id"], t=target["id"])["watch"]
    crash(cp, target["id"], code=2)
    # Then the watch answered the target with its watchers, each side sees the other
    assert watched == {"id": target["id"], "watchers": [{"id": watcher["id"], "name": "watcher"}]}
    assert allocation(client, watcher["id"], "watching { id }") == {"watching": [{"id": target["id"]}]}
    # And the watcher's history has one `terminated` event naming the target and how it ended
    terminated = [e for e in events_of(client, watcher["id"]) if e["kind"] == "terminated"]
    assert [(e["allocationId"], e["toState"], e["by"], e["data"]) for e in terminated] == [
        (watcher["id"], "failed", target["id"], {"target": target["id"]})
    ]


def test_unwatch_ends_a_watch_once(client: TestClient) -> None:
    a, b = spawn(client, "n1", job("a")), spawn(client, "n1", job("b"))
    data(client, WATCH, w=a["id"], t=b["id"])
    first, again = data(client, UNWATCH, w=a["id"], t=b["id"]), data(client, UNWATCH, w=a["id"], t=b["id"])
    assert (first, again) == ({"unwatch": True}, {"unwatch": False})
    assert allocation(client, b["id"], "watchers { id }") == {"watchers": []}


def test_bad_watches_name_the_argument(client: TestClient) -> None:
    a = spawn(client, "n1", job("a"))
    itself = error(client, WATCH, w=a["id"], t=a["id"])
    ghost = error(client, WATCH, w=a["id"], t="ghost")
    assert itself["extensions"] == {"code": "INVALID_INPUT", "field": "target"}
    assert ghost["extensions"] == {"code": "NOT_FOUND", "field": "target"}


# --- events ---------------------------------------------------------------------------------
def test_the_events_of_an_allocation_come_in_order(client: TestClient, cp: ControlPlane) -> None:
    # Given an allocation that was placed, started, ran and was stopped
    a = spawn(client, "n1", job("a"))
    run(cp, a["id"])
    data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=a["id"])
    # When the client asks for its events, all of them, the first two, and as a field of the allocation
    every = events_of(client, a["id"])
    two = events_of(client, a["id"], first=2)
    field = allocation(client, a["id"], "events(first: 100) { id }")["events"]
    # Then they are its transitions in the order they happened, each with its incarnation
    assert [(e["fromState"], e["toState"]) for e in every if e["kind"] == "transition"] == [
        ("pending", "placed"), ("placed", "starting"), ("starting", "running"), ("running", "stopping"), ("stopping", "stopped"),
    ]
    assert [e["at"] for e in every] == sorted(e["at"] for e in every)
    assert {(e["allocationId"], e["incarnation"]) for e in every} == {(a["id"], 1)}
    assert two == every[:2] and [e["id"] for e in field] == [e["id"] for e in every]
    # And the stop says who asked for it
    assert next(e for e in every if e["toState"] == "stopping")["by"] == "admin:admin"


def test_events_after_since_and_across_allocations(client: TestClient) -> None:
    # Given two allocations spawned 50 ms apart
    a = spawn(client, "n1", job("a"))
    time.sleep(0.05)
    b = spawn(client, "n1", job("b"))
    # When the client asks for all events, and for those after a moment between the two
    everything = events_of(client)
    between = (events_of(client, a["id"])[-1]["at"] + events_of(client, b["id"])[0]["at"]) / 2
    later = events_of(client, since=between)
    # Then the first answer holds both, the second only the later one's
    assert {e["allocationId"] for e in everything} == {a["id"], b["id"]}
    assert [e["at"] for e in everything] == sorted(e["at"] for e in everything)
    assert {e["allocationId"] for e in later} == {b["id"]}


def test_events_of_an_unknown_allocation_or_too_many_are_refused(client: TestClient) -> None:
    ghost = error(client, EVENTS, id="ghost", first=10)
    too_many = error(client, EVENTS, id=None, first=20_000)
    assert ghost["extensions"] == {"code": "NOT_FOUND", "field": "allocation"}
    assert too_many["extensions"] == {"code": "INVALID_INPUT", "field": "first"}


# --- the live stream ---------------------------------------------------------------------------
def ev(event_id: str, at: float) -> Event:
    return Event(id=event_id, kind="transition", allocation_id="a", at=at)


def test_the_cursor_delivers_events_sharing_an_at_once_each_even_when_one_arrives_late() -> None:
    # Given a subscriber that read two events of the same instant
    cursor = EventCursor(since=None)
    first = cursor.advance([ev("e1", 100.0), ev("e2", 100.0)])
    # When the next read sees them again, with a third of that instant written meanwhile, then a later one
    second = cursor.advance([ev("e1", 100.0), ev("e2", 100.0), ev("e3", 100.0)])
    third = cursor.advance([ev("e3", 100.0), ev("e4", 100.5)])
    # Then each is delivered exactly once, in order, and the next read starts just before the newest
    assert [[e.id for e in b] for b in (first, second, third)] == [["e1", "e2"], ["e3"], ["e4"]]
    assert cursor.since is not None and 100.0 < cursor.since < 100.5


def test_the_cursor_tolerates_an_at_read_back_rounded() -> None:
    cursor = EventCursor(since=None)
    cursor.advance([ev("e1", 1795756714.981337)])
    assert cursor.advance([ev("e1", 1795756714.98134), ev("e2", 1795756714.98134)]) == [ev("e2", 1795756714.98134)]


def test_the_cursor_never_goes_before_the_since_asked_for() -> None:
    cursor = EventCursor(since=50.0)
    cursor.advance([ev("e1", 50.001)])
    assert cursor.since == 50.0


def test_a_full_page_of_known_events_makes_the_cursor_read_more() -> None:
    cursor = EventCursor(since=None)
    same_instant = [ev(f"e{i:04d}", 7.0) for i in range(PAGE)]
    assert len(cursor.advance(same_instant)) == PAGE
    assert cursor.advance(same_instant) == [] and cursor.limit == 2 * PAGE
    assert cursor.advance([*same_instant, ev("late", 7.0)]) == [ev("late", 7.0)] and cursor.limit == PAGE


@pytest.mark.timeout(60)
def test_a_subscription_since_0_streams_history_then_each_new_transition(client: TestClient) -> None:
    # Given a placed allocation and a client subscribed to all its events over graphql-transport-ws
    a = spawn(client, "n1", job("a"))
    with subscriber(client) as ws:
        sub = Subscriber(ws)
        sub.subscribe(SUBSCRIBE, id=a["id"], since=0)
        history = sub.next()
        # When the allocation is stopped
        data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=a["id"])
        live = sub.next()
        ws.send_json({"type": "complete", "id": "1"})
    # Then the client got its past transition first, then the new one as it happened
    [placed] = events_of(client, a["id"], first=1)
    assert history == {"id": "1", "type": "next", "payload": {"data": {"events": {
        "kind": "transition", "allocationId": a["id"], "fromState": "pending", "toState": "placed", "by": placed["by"]}}}}
    assert live["type"] == "next" and live["payload"]["data"]["events"] == {
        "kind": "transition", "allocationId": a["id"], "fromState": "placed", "toState": "stopped", "by": "admin:admin",
    }


@pytest.mark.timeout(60)
def test_a_subscription_from_since_skips_the_history_and_sees_a_crash(client: TestClient, cp: ControlPlane) -> None:
    # Given a running allocation, and a moment after its last transition
    a = spawn(client, "n1", job("a", restart="temporary"))
    run(cp, a["id"])
    since = events_of(client, a["id"])[-1]["at"] + 0.02
    time.sleep(0.05)
    # When a client subscribes from that moment, and the allocation crashes
    with subscriber(client) as ws:
        sub = Subscriber(ws)
        sub.subscribe(SUBSCRIBE, id=a["id"], since=since)
        crash(cp, a["id"], code=3)
        first = sub.next()
    # Then the first event it gets is the crash, not the history before it
    assert first["payload"]["data"]["events"]["fromState"] == "running"
    assert first["payload"]["data"]["events"]["toState"] == "failed"


@pytest.mark.timeout(60)
def test_a_subscription_stops_reading_when_the_client_goes_away(
    client: TestClient, cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a subscriber that got one event, the reads of the graph counted
    reads: list[float] = []
    real = cp.queries.events

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(cp.queries, "events", counted)
    a = spawn(client, "n1", job("a"))
    with subscriber(client) as ws:
        sub = Subscriber(ws)
        sub.subscribe(SUBSCRIBE, id=a["id"], since=0)
        assert sub.next()["type"] == "next"
    # When it disconnects without a word, and some polling periods pass
    after_close = len(reads)
    time.sleep(1.5)
    # Then the server stopped reading for it
    assert len(reads) == after_close


@pytest.mark.timeout(60)
def test_a_subscription_to_an_unknown_allocation_is_not_found(client: TestClient) -> None:
    with subscriber(client) as ws:
        sub = Subscriber(ws)
        sub.subscribe(SUBSCRIBE, id="ghost")
        answer, done = sub.next(), sub.next()
    assert answer["type"] == "next" and answer["payload"]["data"] is None
    assert [e["extensions"] for e in answer["payload"]["errors"]] == [{"code": "NOT_FOUND", "field": "allocation"}]
    assert done == {"id": "1", "type": "complete"}


@pytest.mark.timeout(60)
def test_the_redis_doorbell_wakes_subscribers_at_once(
    store: GraphStore, falkordb_server: FalkorDBServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given an API whose subscriptions listen to the doorbell the supervisor rings, and read the graph
    # otherwise only once an hour (so an event that arrives at all was brought by the bell)
    monkeypatch.setattr(live, "DOORBELL_POLL_S", 3600.0)
    url = falkordb_server.redis_url(2)
    cp = assemble(store, notify=RedisNotifier(url).notify)
    app, admin = app_with_auth(cp, tmp_path, events_redis_url=url)
    with client_with(app, admin) as client:
        register(client)
        a = spawn(client, "n1", job("a"))
        with subscriber(client) as ws:
            sub = Subscriber(ws)
            sub.subscribe(SUBSCRIBE, id=a["id"], since=0)
            sub.next()  # the history: pending -> placed; the subscriber now waits for the bell
            time.sleep(0.2)
            # When the allocation is stopped (the supervisor rings the bell)
            data(client, "mutation($id: ID!) { stopAllocation(id: $id) { id } }", id=a["id"])
            woken = sub.next()  # without the bell: not before the hourly read (the test times out first)
    # Then the event arrives
    assert woken["payload"]["data"]["events"]["toState"] == "stopped"


# --- jobs ---------------------------------------------------------------------------------------
def test_a_submitted_dag_answers_its_tasks_and_a_running_root(client: TestClient) -> None:
    # Given a job of three tasks: extract, then clean and report, report also waiting for clean
    spec = {"name": "etl", "tasks": [task("extract"), task("clean", "extract"), task("report", "extract", "clean")]}
    # When the client submits it from n1
    got = data(client, SUBMIT, spec=spec, node="n1")["submitJob"]
    # Then the job is running under a native root on n1, and only the task with no needs has started
    assert (got["name"], got["state"], got["tasksTotal"], got["error"], got["submittedBy"]) == ("etl", "running", 3, None, {"id": "n1"})
    root = got["root"]
    assert (root["state"], root["executor"], root["native"], root["jobId"], root["parent"]) == ("RUNNING", "native", "job", got["id"], {"id": "n1"})
    tasks = {t["path"]: t for t in got["tasks"]}
    assert [t["path"] for t in got["tasks"]] == ["extract", "clean", "report"]
    assert {p: (t["state"], t["needs"], len(t["runs"])) for p, t in tasks.items()} == {
        "extract": ("running", [], 1), "clean": ("pending", ["extract"], 0), "report": ("pending", ["extract", "clean"], 0),
    }
    [run_] = tasks["extract"]["runs"]
    assert (run_["incarnation"], run_["state"], run_["node"]) == (1, "placed", {"id": "n1"})
    assert run_["allocation"]["jobId"] == got["id"] and run_["allocation"]["taskId"] == f"{got['id']}/extract"
    # And the spec reads back with the defaults filled in, the job can be asked for and is listed
    assert got["spec"]["tasks"][1]["needs"] == ["extract"] and got["spec"]["tasks"][0]["replicas"] == 1
    again = data(client, "query($id: ID!) { job(id: $id) { id state root { id } } }", id=got["id"])["job"]
    listed = data(client, '{ jobs(state: "running") { edges { node { id } } pageInfo { hasNextPage } } }')["jobs"]
    assert again == {"id": got["id"], "state": "running", "root": {"id": root["id"]}}
    assert listed == {"edges": [{"node": {"id": got["id"]}}], "pageInfo": {"hasNextPage": False}}
    # And the root's children are the started task's allocations
    children = allocation(client, root["id"], "children { edges { node { id } } }")["children"]["edges"]
    assert [c["node"]["id"] for c in children] == [run_["allocation"]["id"]]


def test_a_repeated_request_id_answers_the_same_job(client: TestClient) -> None:
    spec = {"name": "once", "tasks": [task("a")]}
    first = data(client, SUBMIT, spec=spec, requestId="r-1")["submitJob"]
    again = data(client, SUBMIT, spec=spec, requestId="r-1")["submitJob"]
    assert (again["id"], again["root"]["id"]) == (first["id"], first["root"]["id"])
    assert len(data(client, "{ jobs { edges { node { id } } } }")["jobs"]["edges"]) == 1


def test_a_cyclic_job_is_refused_listing_the_cycle_and_nothing_is_written(client: TestClient) -> None:
    err = error(client, SUBMIT, spec={"name": "loop", "tasks": [task("a", "c"), task("b", "a"), task("c", "b")]})
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": "spec.tasks"}
    assert "cycle" in err["message"] and "a -> c -> b -> a" in err["message"]
    assert data(client, "{ jobs { edges { node { id } } } }") == {"jobs": {"edges": []}}
    assert data(client, "{ allocations { edges { node { id } } } }") == {"allocations": {"edges": []}}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"name": "j", "tasks": [{"name": "t"}]}, "spec.tasks[0].argv", ["must not be empty"]),
        ({"name": "j", "tasks": [task("t", resources={"cpuMilli": -1})]}, "spec.tasks[0].resources.cpuMilli", []),
        ({"name": "j", "tasks": [task("t", resources={"cpuMilli": 999_000})]}, "spec.tasks", ["t.resources.cpu_milli: no node offers cpu=999000m"]),
        ({"name": "j", "tasks": []}, "spec.tasks", []),
        ({"name": "bad name", "tasks": [task("t")]}, "spec.name", []),
        ({"name": "j", "tasks": [task("t", placement={"nodeLabels": {"zone": "e u"}})]}, "spec.tasks[0].placement.nodeLabels", []),
        ({"name": "j", "tasks": [task("t", children=[task("c", supervision={"backoff": {"factor": 0.5}})])]},
         "spec.tasks[0].children[0].supervision.backoff.factor", []),
    ],
)
def test_a_bad_job_names_the_place_in_the_spec(client: TestClient, spec: dict[str, Any], field: str, words: list[str]) -> None:
    err = error(client, SUBMIT, spec=spec)
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": field}
    assert err["message"].startswith(f"{field}: ") and all(w in err["message"] for w in words)
    assert data(client, "{ jobs { edges { node { id } } } }") == {"jobs": {"edges": []}}


def test_submitting_from_an_unknown_node_is_not_found(client: TestClient) -> None:
    err = error(client, SUBMIT, spec={"name": "j", "tasks": [task("t")]}, node="ghost")
    assert err["extensions"] == {"code": "NOT_FOUND", "field": "node"}


def test_cancelling_a_job_stops_its_root_and_tasks(client: TestClient) -> None:
    # Given a running job with two independent tasks
    submitted = data(client, SUBMIT, spec={"name": "long", "tasks": [task("a"), task("b")]}, node="n1")["submitJob"]
    # When the client cancels it (twice: the second changes nothing)
    query = "mutation($id: ID!) { cancelJob(id: $id) { id state root { state } tasks { runs { allocation { state } } } } }"
    cancelled = data(client, query, id=submitted["id"])["cancelJob"]
    again = data(client, query, id=submitted["id"])["cancelJob"]
    # Then the job is cancelled, and its root and every task allocation are stopped
    assert (cancelled["state"], cancelled["root"]) == ("cancelled", {"state": "STOPPED"})
    assert [r["allocation"]["state"] for t in cancelled["tasks"] for r in t["runs"]] == ["STOPPED", "STOPPED"]
    assert again["state"] == "cancelled"
    assert error(client, query, id="ghost")["extensions"] == {"code": "NOT_FOUND", "field": "id"}


def test_the_job_schema_is_a_json_schema_of_the_spec(client: TestClient) -> None:
    schema = data(client, "{ jobSchema }")["jobSchema"]
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"name", "tasks", "supervision"} <= set(schema["properties"]) and schema["required"] == ["name", "tasks"]


# --- raw queries ------------------------------------------------------------------------------
# The same questions in each engine's own language: Cypher on FalkorDB and Neo4j, Gremlin on Gremlin.
CYPHER = {
    "ids": "MATCH (n:Node) RETURN n.id AS id, n.cpu AS cpu ORDER BY id",
    "vertices": "MATCH (n:Node) RETURN n ORDER BY n.id",
    "count": "MATCH (n) RETURN count(n) AS n",
    "cpu": "MATCH (n:Node) RETURN n.cpu",
    "writes": ["CREATE (:X {id: 'x'})", "MATCH (n:Node) SET n.cpu = 1 RETURN n", "MATCH (n) DETACH DELETE n"],
    "syntax": "MATC (n) RETURN n",
    "slow": SLOW,
    "count_x": "MATCH (x:X) RETURN count(x)",
}
GREMLIN = {
    "ids": "g.V().hasLabel('Node').order().by('id').project('id','cpu').by('id').by('cpu')",
    "vertices": "g.V().hasLabel('Node').order().by('id')",
    "count": "g.V().count()",
    "cpu": "g.V().hasLabel('Node').values('cpu')",
    "writes": ["g.addV('X').property('id','x')", "g.V().hasLabel('Node').property('cpu', 1)", "g.V().drop()"],
    "syntax": "g.V(.hasLabel('Node')",
    "slow": "g.inject(1).repeat(identity()).times(100000000).count()",
    "count_x": "g.V().hasLabel('X').count()",
}


def lang(cp: ControlPlane) -> dict[str, Any]:
    return GREMLIN if cp.store.engine in ("gremlin", "janusgraph") else CYPHER


def raw(client: TestClient, query: str, **kw: Any) -> dict[str, Any]:
    found: dict[str, Any] = data(client, RAW, q=query, **kw)["rawQuery"]
    return found


def test_a_raw_match_returns_rows_with_columns(client: TestClient, cp: ControlPlane) -> None:
    register(client, name="n2")
    q = lang(cp)
    got = raw(client, q["ids"])
    one = raw(client, q["vertices"], limit=1)
    if cp.store.engine in ("gremlin", "janusgraph"):
        assert (got["language"], got["columns"], got["truncated"]) == ("gremlin", ["result"], False)
        assert got["rows"] == [[{"id": "n1", "cpu": 64_000}], [{"id": "n2", "cpu": 4000}]]
    else:
        assert (got["language"], got["columns"], got["rows"], got["truncated"]) == ("cypher", ["id", "cpu"], [["n1", 64_000], ["n2", 4000]], False)
    [[vertex]] = one["rows"]  # the same shape of vertex on every engine (graph_schema.raw_elements)
    assert vertex["~element"] == "vertex" and "Node" in vertex["labels"] and vertex["properties"]["id"] == "n1"
    assert got["engine"] == cp.store.engine and got["elapsedMs"] >= 0
    assert one["truncated"] is True and len(one["rows"]) == 1


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_raw_write_is_refused_and_nothing_is_written(client: TestClient, cp: ControlPlane, which: int) -> None:
    q = lang(cp)
    before = raw(client, q["count"])["rows"]
    err = error(client, RAW, q=q["writes"][which])
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": "query"} and "read-only" in err["message"]
    assert raw(client, q["count"])["rows"] == before
    assert raw(client, q["cpu"])["rows"] == [[64_000]]


@pytest.mark.parametrize(
    ("variables", "field"),
    [({"q": "syntax"}, "query"), ({"q": "  "}, "query"), ({"q": "count", "t": 0}, "timeoutS"),
     ({"q": "count", "limit": 0}, "limit")],
)
def test_bad_raw_queries_are_invalid_input_naming_the_argument(client: TestClient, cp: ControlPlane, variables: dict[str, Any], field: str) -> None:
    q = lang(cp)
    err = error(client, RAW, **{**variables, "q": q.get(variables["q"], variables["q"])})
    assert err["extensions"] == {"code": "INVALID_INPUT", "field": field}


def test_a_raw_query_past_its_time_is_stopped(client: TestClient, cp: ControlPlane) -> None:
    err = error(client, RAW, q=lang(cp)["slow"], t=0.05)
    assert err["extensions"] == {"code": "TIMEOUT", "field": "query"}


def test_post_query_answers_scripts_with_plain_json(client: TestClient, cp: ControlPlane) -> None:
    q = lang(cp)
    ok = client.post("/query", json={"query": q["cpu"], "limit": 5})
    write = client.post("/query", json={"query": q["writes"][0]})
    syntax = client.post("/query", json={"query": q["syntax"]})
    slow = client.post("/query", json={"query": q["slow"], "timeoutS": 0.05})
    not_json = client.post("/query", content=b"MATCH (n) RETURN n", headers={"content-type": "application/json"})
    unknown = client.post("/query", json={"query": q["count"], "params": {}})
    assert ok.status_code == 200 and ok.json()["rows"] == [[64_000]] and ok.json()["truncated"] is False
    assert ok.json()["language"] == ("gremlin" if cp.store.engine in ("gremlin", "janusgraph") else "cypher")
    assert write.status_code == 400 and write.json()["code"] == "INVALID_INPUT" and write.json()["field"] == "query"
    assert "read-only" in write.json()["message"]
    assert (syntax.status_code, syntax.json()["field"]) == (400, "query")
    assert (slow.status_code, slow.json()["code"]) == (408, "TIMEOUT")
    assert (not_json.status_code, not_json.json()["code"], not_json.json()["field"]) == (400, "INVALID_INPUT", None)
    assert (unknown.status_code, unknown.json()["field"]) == (400, "params")
    assert raw(client, q["count_x"])["rows"] == [[0]]


def test_spawn_through_graphql_can_name_a_native_executor(client: TestClient) -> None:
    spec = {"name": "web", "executor": "native", "native": "replicas", "resources": {"cpuMilli": 0, "memoryMib": 0},
            "config": {"count": 2, "template": {"name": "w", "argv": ["sleep", "9"], "resources": {"cpu_milli": 10, "memory_mib": 8}}}}
    created = data(client, SPAWN, parent="n1", spec=spec)["spawnAllocation"]
    got = allocation(client, created["id"], "state native children { edges { node { name } } }")
    assert (got["state"], got["native"], len(got["children"]["edges"])) == ("RUNNING", "replicas", 2)
    bad = post(client, SPAWN, parent="n1", spec={**spec, "native": "warp-drive"})
    assert bad["errors"][0]["extensions"] == {"code": "INVALID_INPUT", "field": "spec.native"}
