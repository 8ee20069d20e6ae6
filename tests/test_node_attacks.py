"""Node restriction against real agents (issue 10): what a rogue agent tries is refused, recorded, and harmless.

Given the API, a supervisor and the scheduler as processes on a real Redis, and two node
agents `node-a` and `node-b` that joined with join credentials and talk to the API only,
with two `sleep` allocations running on node-b: when an agent holding node-a's
credential (and, being node-a's machine, its session) tries to act for node-b, or an
agent is started twice with one identity, or a revoked credential comes back, or a
workload reads its agent's secrets, then each attempt is refused with a log line naming
the node and the reason (and an event on what it was about), the graph is unchanged,
and node-b's allocations keep running as the same processes.

The rogue speaks HTTP with A's credential (what any program on A's machine can do), or
is `controlplane worker` itself started with A's credential.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.domain.lifecycle import State
from controlplane.domain.records import Event
from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack, processes_of, wait_for

pytestmark = pytest.mark.slow
GRAPH = "attacks"
A, B = "node-a", "node-b"


def spec(name: str, argv: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": argv, "resources": {"cpu_milli": 10, "memory_mib": 8}, "grace_period_s": 1.0, **kw}


@pytest.fixture(scope="module")
def stack(falkordb_server: FalkorDBServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    falkordb_server.client(db=6).flushdb()
    s = Stack(falkordb_server, tmp_path_factory.mktemp("attacks"), graph=GRAPH, redis_db=6, grace_s=3.0)
    s.store.clear()
    try:
        s.start("supervisor", "supervisor", log=s.data_dir / "supervisor.log")
        s.start("scheduler", "scheduler")
        s.agent(A)
        s.agent(B)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def b_work(stack: Stack) -> list[str]:
    """Two allocations running on node-b, placed there by its node."""
    spawned = stack.control.allocations.spawn(B, [spec(f"b{i}", ["sleep", "600"], node=B) for i in range(2)])
    def running(allocation_id: str) -> bool:
        return stack.control.queries.allocation(allocation_id).state is State.RUNNING

    for a in spawned:
        wait_for(partial(running, a.id), 30, f"{a.name} running")
    return [a.id for a in spawned]


def snapshot(stack: Stack, ids: list[str]) -> dict[str, Any]:
    """What the attacks must not change: node-b (its status, identity, room) and its allocations' lives."""
    node = stack.control.queries.node(B)
    out: dict[str, Any] = {B: (node.status, node.extra.get("identity"), node.cpu_free, node.memory_free)}
    for i in ids:
        a = stack.control.queries.allocation(i)
        out[i] = (a.state, a.incarnation, a.pid, a.node_id, a.exit_code, a.error)
    return out


def still_running(stack: Stack, ids: list[str], before: dict[str, Any]) -> None:
    on_b = [(a.id, a.name, a.state.value, a.incarnation, a.cpu) for a in stack.store.list_allocations(
        after=None, limit=100, state=None, node_id=B)]
    assert snapshot(stack, ids) == before, on_b
    for i in ids:
        a = stack.control.queries.allocation(i)
        assert a.state is State.RUNNING and processes_of(i) == {a.incarnation: [a.pid]}, (i, processes_of(i))


def refused_events(stack: Stack, about: str, by: str = A) -> list[Event]:
    return [e for e in stack.control.queries.events(about, limit=1000) if e.kind == "refused" and e.by == f"node:{by}"]


def said(path: Path, *words: str) -> bool:
    """Whether a process's output has a line with all these words (rich wraps long lines: whitespace is folded)."""
    text = " ".join(path.read_text(errors="replace").split()) if path.exists() else ""
    return all(w in text for w in words)


def rogue(stack: Stack, *, token: str | None = None, session: str | None = None) -> httpx.Client:
    """A program on node-a's machine: node-a's credential and the session node-a's agent keeps there."""
    state = stack.data_dir / "nodes" / A
    headers = {"Authorization": f"Bearer {token or stack.node_token(A)}",
               "X-Agent-Session": session or (state / "session").read_text().strip()}
    return httpx.Client(base_url=f"{stack.api_url}/agent/v1", headers=headers, timeout=10)


def refusal(r: httpx.Response, status: int = 403) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["field"] and body["message"], body
    return body


def test_a_rogue_agent_with_node_a_credential_cannot_start_as_node_b(stack: Stack, b_work: list[str]) -> None:
    before = snapshot(stack, b_work)
    # When `controlplane worker --node node-b` runs on another machine with node-a's credential
    log = stack.data_dir / "rogue-start.log"
    proc = stack.start_agent(B, env={"CONTROLPLANE_NODE_TOKEN": stack.node_token(A), "DATA_DIR": str(stack.data_dir / "m2")},
                             log=log, name="rogue-start")
    # Then it is refused and stops, saying why; the API's audit log and node-b's events say it too
    assert proc.wait(timeout=60) != 0
    assert said(log, "node:node-a may not start an agent for node node-b", "its credential is for node node-a only")
    assert said(stack.api_log, "refused node:node-a: start an agent for node node-b")
    assert refused_events(stack, B)
    # And the graph, node-b's agent and its processes are as they were
    still_running(stack, b_work, before)
    assert stack.procs[B].poll() is None
    # And registering as node-b through the API directly is refused the same way
    with rogue(stack) as r:
        body = refusal(r.post(f"/nodes/{B}/register", json={"node": {"cpu_milli": 64000, "memory_mib": 1}}))
        assert body["field"] == "node" and "node:node-a may not register node node-b" in body["message"]
        refusal(r.post(f"/nodes/{B}/start", json={"node": {"cpu_milli": 64000, "memory_mib": 1}}))
    still_running(stack, b_work, before)


def test_a_rogue_agent_cannot_heartbeat_node_b(stack: Stack, b_work: list[str]) -> None:
    import redis

    before = snapshot(stack, b_work)
    broker = redis.Redis.from_url(stack.broker_url)
    session_b = broker.get(f"controlplane:agent:{B}")
    with rogue(stack) as r:
        for path in ("heartbeat", "mirror", "stop"):
            body = refusal(r.post(f"/nodes/{B}/{path}"))
            assert body["field"] == "node" and "its credential is for node node-a only" in body["message"], body
    assert said(stack.api_log, "refused node:node-a: heartbeat node node-b")
    assert broker.get(f"controlplane:agent:{B}") == session_b  # node-b's session is its agent's still
    broker.close()
    still_running(stack, b_work, before)


def test_a_rogue_agent_cannot_report_for_node_b_allocations(stack: Stack, b_work: list[str]) -> None:
    before = snapshot(stack, b_work)
    events_before = {i: len(refused_events(stack, i)) for i in b_work}
    keys = [[i, 1] for i in b_work]
    one = {"id": b_work[0], "incarnation": 1}
    reports = [
        ("exited", {"exits": [{**one, "exit_code": 0, "output_tail": "done"}]}),
        ("running", {"started": [{**one, "pid": os.getpid()}]}),
        ("claim", {"keys": keys}),
        ("failed", {**one, "error": "no such file"}),
        ("unstarted", {"keys": keys}),
        ("gone", {"keys": keys}),
        ("usage", {"usage": [{**one, "fields": {"usage_cpu_milli": 1}}]}),
        ("allocations", {"keys": keys}),
    ]
    with rogue(stack) as r:
        for path, body in reports:
            # as node-a (its own path and session) about node-b's allocations: refused by node restriction
            answer = refusal(r.post(f"/nodes/{A}/{path}", json=body))
            assert answer["field"] == "node" and f"placed on {B}" in answer["message"], (path, answer)
            # as node-b: refused before anything is looked at
            refusal(r.post(f"/nodes/{B}/{path}", json=body))
    # Then each is in the audit log and on the allocations' events, by node-a
    assert said(stack.api_log, f"refused node:{A}: report exited for {b_work[0]}#1 (placed on node {B})")
    assert said(stack.api_log, f"refused node:{A}: report running for {b_work[0]}#1 (placed on node {B})")
    for i in b_work:
        assert len(refused_events(stack, i)) > events_before[i]
    # And nothing changed: the same processes run, the graph shows them running
    still_running(stack, b_work, before)


def test_a_rogue_agent_cannot_take_node_b_work(stack: Stack, b_work: list[str]) -> None:
    import redis

    before = snapshot(stack, b_work)
    broker = redis.Redis.from_url(stack.broker_url)
    work = f"controlplane:work:{B}"
    queued = (broker.lrange(work, 0, -1), broker.hgetall(f"{work}:taken"))
    with rogue(stack) as r:
        body = refusal(r.get(f"/nodes/{B}/work", params={"wait": 0}))
        assert "node:node-a may not take the work of node node-b" in body["message"], body
        refusal(r.post(f"/nodes/{B}/work/ack", json={"ids": ["x"]}))
        # and node-a's own list has only node-a's work: none of node-b's allocations
        mine = r.get(f"/nodes/{A}/work", params={"wait": 0})
        assert mine.status_code == 200 and not any(k[0] in b_work for i in mine.json()["items"] for k in i["keys"])
    assert (broker.lrange(work, 0, -1), broker.hgetall(f"{work}:taken")) == queued
    broker.close()
    still_running(stack, b_work, before)


def test_long_polls_whose_callers_hang_up_end_at_once(stack: Stack, b_work: list[str]) -> None:
    """A caller that opens long polls for work and hangs up (a dead agent, a rogue opening many) holds no broker
    connection afterwards: each poll ends when its caller goes, not when its wait runs out."""
    import socket

    broker = stack.server.client(db=6)  # the server's admin: CLIENT LIST is not the control plane's to run

    def waiting() -> int:  # clients of the broker blocked in the work lists' doorbell (Celery's are BRPOPs)
        return sum(1 for c in broker.client_list() if c["cmd"] == "blpop" and "b" in c["flags"])

    state = stack.data_dir / "nodes" / A
    request = (f"GET /agent/v1/nodes/{A}/work?wait=25 HTTP/1.1\r\nHost: {stack.api_url.split('//')[1]}\r\n"
               f"Authorization: Bearer {stack.node_token(A)}\r\nX-Agent-Session: {(state / 'session').read_text().strip()}\r\n\r\n")
    host, port = stack.api_url.split("//")[1].split(":")
    polls = [socket.create_connection((host, int(port))) for _ in range(5)]
    try:
        for s in polls:
            s.sendall(request.encode())
        wait_for(lambda: waiting() >= 5, 10, "five long polls to wait on the broker")
    finally:
        for s in polls:
            s.close()
    hung_up = time.monotonic()
    wait_for(lambda: waiting() <= 2, 5, "the polls of callers that hung up to end (node-a's and node-b's agents keep one each)")
    assert time.monotonic() - hung_up < 5
    broker.close()


def test_reports_longer_than_the_api_takes_at_once_go_in_several_requests(stack: Stack, b_work: list[str]) -> None:
    """An agent with thousands of allocations (a node-loss restart, a shutdown) reports them all: the link splits
    what is longer than the agent API's limit per request (1,000) instead of being refused with 422."""
    from workers.link import ApiLink

    link = ApiLink(stack.api_url, stack.node_token(A), A)
    link.session = (stack.data_dir / "nodes" / A / "session").read_text().strip()
    try:
        assert link.allocations([(f"nothing-{i}", 1) for i in range(2500)]) == []  # none is there
        link.ack([f"no-such-item-{i}" for i in range(2500)])
    finally:
        link.close()


def test_agents_hold_no_broker_or_graph_credential_and_celery_remote_control_is_off(stack: Stack, b_work: list[str]) -> None:
    from workers.app import configure

    before = snapshot(stack, b_work)
    # An agent's environment names neither the graph nor the broker (nothing to send a broadcast with)
    for node in (A, B):
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{stack.procs[node].pid}/environ").read_text().split("\0") if "=" in kv)
        assert not {"REDIS_URL", "GRAPH_URI", "GRAPH_PASSWORD", "AUTH_SIGNING_KEY"} & set(env), sorted(env)
        assert env["CONTROLPLANE_API_URL"] == stack.api_url
    # And even with the broker's address, Celery's remote control reaches no worker: the supervisor answers no ping
    # and ignores a broadcast shutdown
    app = configure(stack.broker_url)
    assert not app.control.ping(timeout=1.0)
    app.control.broadcast("shutdown")
    app.control.broadcast("add_consumer", arguments={"queue": f"node.{B}"})
    time.sleep(3)
    assert stack.procs["supervisor"].poll() is None
    # and it still serves: an allocation (on node-a) that fails once is restarted by the supervisor
    once = '[ "$CONTROLPLANE_INCARNATION" = 1 ] && exit 3; exec sleep 600'
    [kid] = stack.control.allocations.spawn(A, [spec("once", ["sh", "-c", once], node=A)])
    wait_for(lambda: (k := stack.control.queries.allocation(kid.id)).incarnation == 2 and k.state is State.RUNNING, 30,
             "the supervisor to restart it")
    stack.control.allocations.stop(kid.id)
    still_running(stack, b_work, before)


def test_an_agent_started_twice_with_one_identity_is_refused(stack: Stack, b_work: list[str]) -> None:
    before = snapshot(stack, b_work)
    # When a second agent of node-b starts on the same machine (the same state directory)
    here = stack.data_dir / "twice-here.log"
    proc = stack.start_agent(B, log=here, name="twice-here")
    assert proc.wait(timeout=60) != 0
    assert said(here, "another agent of node node-b runs on this machine")
    # And when one starts on another machine with a copy of node-b's credential
    there = stack.data_dir / "twice-there.log"
    proc = stack.start_agent(B, env={"CONTROLPLANE_NODE_TOKEN": stack.node_token(B), "DATA_DIR": str(stack.data_dir / "m3")},
                             log=there, name="twice-there")
    assert proc.wait(timeout=90) != 0
    # Then it is refused while the first one lives, and says so; the API logs it
    assert said(there, "node node-b has a live agent already")
    assert said(stack.api_log, "refused node:node-b: a second agent process")
    # And the first goes on alone: one process per allocation, the same ones
    assert stack.procs[B].poll() is None
    still_running(stack, b_work, before)


def test_an_agent_whose_node_another_agent_took_is_fenced_off(stack: Stack, b_work: list[str]) -> None:
    before = snapshot(stack, b_work)
    c = "node-c"
    first_log = stack.data_dir / "fenced.log"
    first = stack.start_agent(c, log=first_log, name="fenced")
    wait_for(lambda: (n := stack.store.get_node(node_id=c)) and n.status == "ready", 60, "node-c registered")
    [a] = stack.control.allocations.spawn(c, [spec("on-c", ["sleep", "600"], node=c)])
    one = wait_for(lambda: (x := stack.control.queries.allocation(a.id)).state is State.RUNNING and x, 30, "on-c running")
    # When another machine takes node-c over with a copy of its credential and of its agent's session
    other = stack.data_dir / "m4" / "nodes" / c
    other.mkdir(parents=True, mode=0o700)
    (other / "session").write_text((stack.data_dir / "nodes" / c / "session").read_text())
    (other / "session").chmod(0o600)
    stack.start_agent(c, env={"CONTROLPLANE_NODE_TOKEN": stack.node_token(c), "DATA_DIR": str(stack.data_dir / "m4")},
                      log=stack.data_dir / "takeover.log", name="takeover")
    # Then the first agent is fenced off at its next request: it kills what it runs and stops, saying why
    assert first.wait(timeout=30) == 3
    assert said(first_log, "fenced: another agent process of node node-c took it over")
    assert said(stack.api_log, "refused node:node-c:", "fenced agent")
    # and the allocation runs once, as a new incarnation under the agent that holds the node now
    two = wait_for(lambda: (x := stack.control.queries.allocation(a.id)).state is State.RUNNING and x.incarnation == 2 and x,
                   60, "on-c running again")
    wait_for(lambda: processes_of(a.id) == {2: [two.pid]}, 15, "one process, the new incarnation's")
    assert one.pid != two.pid
    still_running(stack, b_work, before)


def test_a_workload_cannot_read_its_agent_secrets(stack: Stack, b_work: list[str]) -> None:
    state = stack.data_dir / "nodes" / A
    agent = stack.procs[A].pid
    secrets = [stack.node_token(A), (state / "session").read_text().strip(), stack.admin_token]
    script = (f"id -u; env; cat /proc/{agent}/environ; cat {state}/node.token; cat {state}/session; "
              f"cat {stack.data_dir}/admin.token; ls {stack.data_dir}/keys; cat /proc/{agent}/cmdline; echo; echo END")
    [a] = stack.control.allocations.spawn(A, [spec("nosy", ["sh", "-c", script], node=A)])
    done = wait_for(lambda: (x := stack.control.queries.allocation(a.id)).state in (State.SUCCEEDED, State.FAILED) and x,
                    30, "the nosy workload to end")
    out = Path(done.extra["log_path"]).read_text() if done.extra.get("log_path") else done.output_tail or ""
    assert "END" in out, out
    assert out.splitlines()[0].strip() != "0", "the workload runs as a user of its own"
    assert "Permission denied" in out, out
    for secret in secrets:
        assert secret not in out
    # it has its own token, and that one only
    own = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("CONTROLPLANE_TOKEN=")]
    assert own and own[0] not in secrets


def test_a_revoked_node_credential_cannot_come_back(stack: Stack, b_work: list[str]) -> None:
    before = snapshot(stack, b_work)
    [a] = stack.control.allocations.spawn(A, [spec("on-a", ["sleep", "600"], node=A, restart="temporary")])
    running_a = wait_for(lambda: (x := stack.control.queries.allocation(a.id)).state is State.RUNNING and x, 30, "on-a")
    # When an admin revokes node-a's credential
    assert stack.graphql("mutation($i: ID!) { revokeNodeCredential(id: $i) }", i=A)["revokeNodeCredential"] is True
    assert said(stack.api_log, "revoked the credential", "of node node-a")
    assert any("revoked" in (e.reason or "") and e.by == "admin:admin" for e in stack.control.queries.events(A, limit=1000))
    # Then node-a's agent is refused at its next request, kills what it runs and stops
    agent = stack.procs[A]
    assert agent.wait(timeout=30) == 3
    wait_for(lambda: not processes_of(a.id), 15, "node-a's process to be killed")
    assert running_a.pid is not None
    # and the reaper declares node-a lost (it beats no more), its allocation lost
    wait_for(lambda: stack.control.queries.node(A).status == "lost", 30, "node-a declared lost")
    wait_for(lambda: stack.control.queries.allocation(a.id).state in (State.LOST, State.FAILED), 30, "on-a lost")
    node_a = stack.control.queries.node(A)
    # When it comes back with the revoked credential (still in its state directory)
    log = stack.data_dir / "revoked.log"
    proc = stack.start_agent(A, log=log, name="revoked")
    # Then it is refused and stops, saying why; node-a stays lost, nothing else changed
    assert proc.wait(timeout=60) != 0
    assert said(log, "the API refuses this node's credential", "revoked")
    assert said(stack.api_log, "the token has been revoked")
    after = stack.control.queries.node(A)
    assert (after.status, after.heartbeat_at, after.extra.get("identity")) == ("lost", node_a.heartbeat_at,
                                                                                node_a.extra.get("identity"))
    # And a join credential already spent does not let it in again either
    with httpx.Client(base_url=f"{stack.api_url}/agent/v1", timeout=10) as c:
        token = stack.join_token(A)
        first = c.post("/join", json={"name": A}, headers={"Authorization": f"Bearer {token}"})
        body = refusal(first)  # node-a belongs to its (revoked) identity until an admin deregisters it
        assert body["field"] == "name" and "belongs to another identity" in body["message"]
    still_running(stack, b_work, before)

