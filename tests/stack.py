"""A real stack for end-to-end tests: FalkorDB, the API, node agents, a supervisor and the scheduler as processes.

Node agents are started as a user starts them on another machine: an admin token (the
one the API wrote on its first start) asks the API for a join credential, the agent gets
that and the API's address and nothing else (no graph, no broker), joins, and keeps its
node credential in its state directory.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.ports.agents import WorkItem
from controlplane.ports.store import GraphStore
from controlplane.redis_agents import WORK_PREFIX, RedisWork
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer, find_free_port
from tests.store_passwords import broker_url, graph_url
from workers.app import configure
from workers.dispatch import CeleryDispatcher

#: what an agent on another machine would not have: the graph's and the broker's addresses and credentials
NOT_FOR_AGENTS = ("GRAPH_BACKEND", "GRAPH_URI", "GRAPH_NAME", "GRAPH_USER", "GRAPH_PASSWORD", "REDIS_URL", "CONTROLPLANE_TOKEN")

if TYPE_CHECKING:
    import pytest

    from controlplane.services import ControlPlane


def clean_node(node: str, data_dir: Path) -> int:
    """What a new agent of `node` would do at start: kill and remove every cgroup, uid and directory a dead one left."""
    from controlplane.settings import load_settings
    from workers.isolation import Sandbox, sandbox_config

    sandbox = Sandbox(sandbox_config(load_settings()), node=node, data_dir=data_dir)
    try:
        return sandbox.recover()
    finally:
        sandbox.close()


def said_ready(control: ControlPlane, allocation_id: str) -> bool:
    """The allocation's output (its log on this machine) has its `ready` line."""
    log = control.queries.allocation(allocation_id).extra.get("log_path")
    return isinstance(log, str) and os.path.exists(log) and "ready" in Path(log).read_text(errors="replace")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - e.g. the graph restarting
            last_exc = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def engine_graph(engine: str, request: pytest.FixtureRequest, server: FalkorDBServer, *, graph: str) -> tuple[GraphStore, str]:
    """A clean graph of `engine` for a Stack, and the address its processes reach it at.

    FalkorDB: a graph on `server` itself, the broker, so that restarting `server` restarts the graph
    too; Neo4j and Gremlin: the session's test server of that engine (its one database).
    """
    store: GraphStore
    if engine == "falkordb":
        uri = graph_url(server)
        store = FalkorDBStore(uri, graph=graph)
    elif engine == "neo4j":
        from graph_schema.cypher.neo4j_store import Neo4jStore

        uri = str(request.getfixturevalue("neo4j_uri"))
        store = Neo4jStore(uri)
    elif engine == "gremlin":
        from graph_schema.gremlin.store import GremlinStore

        uri = str(request.getfixturevalue("gremlin_url"))
        store = GremlinStore(uri)
    else:
        raise ValueError(f"unknown engine {engine}")
    store.bootstrap()
    store.clear()
    return store, uri


def processes_of(allocation_id: str) -> dict[int, list[int]]:
    """The process table's view of an allocation: incarnation -> pids of the live processes that carry its id
    in their environment (the process the agent started, and whatever that one started)."""
    found: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode("utf-8", "replace").split("\0") if "=" in kv)
            if "zombie" in (proc / "status").read_text() or env.get("CONTROLPLANE_ALLOCATION_ID") != allocation_id:
                continue
        except OSError:
            continue  # gone, or not ours to read
        found.setdefault(int(env.get("CONTROLPLANE_INCARNATION", "0")), []).append(int(proc.name))
    return found


@dataclass(frozen=True)
class Taken:
    """A Celery message as the Redis transport keeps it until acked: the payload, where it was sent."""

    payload: dict[str, Any]
    exchange: str
    routing_key: str

    @property
    def args(self) -> list[Any]:
        body = self.payload["body"]
        raw = base64.b64decode(body) if self.payload.get("properties", {}).get("body_encoding") == "base64" else body
        args: list[Any] = json.loads(raw)[0]
        return args


class Stack:
    """`server` is the Redis (and, by default, the graph); `store` another engine's store when given."""

    def __init__(
        self,
        server: FalkorDBServer,
        data_dir: Path,
        *,
        graph: str,
        heartbeat_s: float = 0.5,
        grace_s: float = 2.0,
        store: GraphStore | None = None,
        graph_uri: str | None = None,
        redis_db: int = 2,
    ) -> None:
        self.server = server
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.graph = graph
        #: the Celery broker (a database of `server`, as its broker user): what the processes and `control` talk to
        self.broker_url = broker_url(server, redis_db)
        self.env = {
            **os.environ,
            "GRAPH_BACKEND": store.engine if store is not None else "falkordb",
            "GRAPH_URI": graph_uri or graph_url(server),
            "GRAPH_NAME": graph,
            "REDIS_URL": self.broker_url,
            "DATA_DIR": str(data_dir),
            "HEARTBEAT_S": str(heartbeat_s),
            "NODE_GRACE_S": str(grace_s),
            "SCHEDULER_INTERVAL_S": "0.2",
            "PLACED_DEADLINE_S": "5",
            "STARTING_DEADLINE_S": "10",
        }
        self.api_port = find_free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env.update({"API_HOST": "127.0.0.1", "API_PORT": str(self.api_port)})
        #: what a node agent gets besides `env` less NOT_FOR_AGENTS (its settings: data dir, heartbeat, isolation):
        #: the API's address
        self.agent_env = {"CONTROLPLANE_API_URL": self.api_url}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: set[str] = set()
        #: the names in `procs` of node agents
        self.agent_procs: set[str] = set()
        self.store: GraphStore = store if store is not None else FalkorDBStore(graph_url(server), graph=graph)
        self.store.bootstrap()
        self.work = RedisWork(self.broker_url)
        self.control = assemble(self.store, CeleryDispatcher(configure(self.broker_url), self.work))

    def use_broker(self, url: str, *, notify: bool = False) -> None:
        """Another broker (before any process starts): the processes' REDIS_URL, the work lists, `control`'s dispatcher."""
        from controlplane.eventbus import RedisNotifier
        from controlplane.wiring import dispatcher

        self.work.close()
        self.broker_url = self.env["REDIS_URL"] = url
        self.work = RedisWork(url)
        self.control = assemble(self.store, dispatcher(url), notify=RedisNotifier(url).notify if notify else None)

    # --- the API, and credentials the way users get them --------------------------------------
    def api(self) -> subprocess.Popen[bytes]:
        """The API (`controlplane api`), started once: agents talk to it and to nothing else."""
        proc = self.procs.get("api")
        if proc is not None and proc.poll() is None:
            return proc
        proc = self.start("api", "api", log=self.api_log)
        wait_for(self._api_up, 60, "the API to answer", every=0.1)
        return proc

    def _api_up(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code in (200, 503)
        except httpx.TransportError:
            return False

    @property
    def api_log(self) -> Path:
        """What the API printed: its audit log lines (refusals, joins, revocations) among them."""
        return self.data_dir / "api.log"

    @property
    def admin_token(self) -> str:
        """The admin token the API wrote on its first start."""
        return (self.data_dir / "admin.token").read_text().strip()

    def graphql(self, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
        import httpx

        r = httpx.post(f"{self.api_url}/graphql", json={"query": query, "variables": variables}, timeout=30,
                       headers={"Authorization": f"Bearer {token or self.admin_token}", "Accept": "application/json"})
        body: dict[str, Any] = r.json()
        assert not body.get("errors"), body
        return dict(body["data"])

    def join_token(self, name: str | None = None, *, ttl_s: float = 600, uses: int = 1) -> str:
        """A join credential, asked of the API with the admin's token (`controlplane node join-token`)."""
        self.api()
        answer = self.graphql("mutation($n: String, $t: Float!, $u: Int!) { createJoinToken(name: $n, ttlS: $t, uses: $u) "
                              "{ token } }", n=name, t=ttl_s, u=uses)
        return str(answer["createJoinToken"]["token"])

    def node_token(self, node: str) -> str:
        """The credential the agent of `node` got when it joined (in its state directory, 0600)."""
        return (self.data_dir / "nodes" / node / "node.token").read_text().strip()

    def start_agent(self, node: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None,
                    name: str | None = None) -> subprocess.Popen[bytes]:
        """`controlplane worker --node <node>` as on another machine: a join credential the first time, then its own."""
        self.api()
        agent_env = {**{k: v for k, v in self.env.items() if k not in NOT_FOR_AGENTS}, **self.agent_env}
        if not (self.data_dir / "nodes" / node / "node.token").exists():
            agent_env["CONTROLPLANE_JOIN_TOKEN"] = self.join_token(node)
        agent_env.update(env or {})
        argv = [sys.executable, "-m", "controlplane", "worker", "--node", node, "--concurrency", "8", *args]
        if log is None:
            proc = subprocess.Popen(argv, env=agent_env)
        else:
            with log.open("ab") as out:
                proc = subprocess.Popen(argv, env=agent_env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name or node] = proc
        self.agents.add(node)
        self.agent_procs.add(name or node)
        return proc

    def start(self, name: str, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `controlplane <args>` as a process; its output goes to `log` when given."""
        if log is None:
            proc = subprocess.Popen([sys.executable, "-m", "controlplane", *args], env=self.env)
        else:
            with log.open("ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "controlplane", *args], env=self.env,
                                        stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def agent(self, node: str, **labels: str) -> subprocess.Popen[bytes]:
        """Start a node agent and wait until it has registered (a restarted one too: a heartbeat of its own)."""
        started = time.time()
        proc = self.start_agent(node, *[a for k, v in labels.items() for a in ("--label", f"{k}={v}")])
        wait_for(lambda: (n := self.store.get_node(node_id=node)) and n.status == "ready" and n.heartbeat_at >= started,
                 60, f"agent {node} to register")
        return proc

    def settled(self, timeout: float = 30.0) -> None:
        """Wait until the broker holds no message, ready or taken (acks are late: a taken one is acked when done)."""
        import redis

        broker = redis.Redis.from_url(self.broker_url)
        work = [f"{WORK_PREFIX}{n}" for n in self.agents]

        def idle() -> bool:
            return (not broker.llen("control") and not broker.hlen("unacked")
                    and not any(broker.llen(w) or broker.hlen(f"{w}:taken") for w in work))

        try:
            for _ in range(3):  # idle three times in a row: nothing in between was sent by what just ran
                wait_for(idle, timeout, "the broker to have delivered and acked every message", every=0.1)
                time.sleep(0.1)
        finally:
            broker.close()

    def taken(self, task: str) -> list[Taken]:
        """Messages of `task` that a worker has taken and not acked yet (acks are late: while the task runs,
        or waits for its countdown, its message stays in the broker's `unacked` hash, ready to be restored)."""
        import redis

        broker = redis.Redis.from_url(self.broker_url)
        try:
            found = [Taken(*json.loads(raw)) for raw in broker.hvals("unacked")]
        finally:
            broker.close()
        return [t for t in found if t.payload.get("headers", {}).get("task") == task]

    def redeliver(self, message: Taken, copies: int = 1) -> None:
        """Put the very message back on its queue, as the broker does with one whose worker died unacked."""
        import redis

        payload = {**message.payload, "headers": {**message.payload.get("headers", {}), "redelivered": True}}
        broker = redis.Redis.from_url(self.broker_url)
        try:
            for _ in range(copies):
                broker.lpush(message.routing_key, json.dumps(payload))
        finally:
            broker.close()

    def push_work(self, node: str, kind: str, keys: list[tuple[str, int]], copies: int = 1) -> None:
        """Put a run or stop on a node's work list, as the dispatcher does (or again, as after a lost acknowledgement)."""
        import uuid

        self.work.push(node_id=node, items=[WorkItem(uuid.uuid4().hex, kind, tuple(keys)) for _ in range(copies)])

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    @contextmanager
    def serving(self, *agents: str) -> Iterator[Stack]:
        """A supervisor, a scheduler and an agent per node name, all stopped at the end (also when one fails to
        come up)."""
        try:
            self.start("supervisor", "supervisor")
            self.start("scheduler", "scheduler")
            for node in agents:
                self.agent(node)
            yield self
        finally:
            self.close()

    def close(self) -> None:
        # the agents first, while the API they report to still runs, then everything else
        for group in ([p for n, p in self.procs.items() if n in self.agent_procs],
                      [p for n, p in self.procs.items() if n not in self.agent_procs]):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    name = next(n for n, p in self.procs.items() if p is proc)
                    print(f"stack: {name} (pid {proc.pid}) did not stop within 20 s of SIGTERM; killed", file=sys.stderr)
                    proc.kill()
                    proc.wait(timeout=10)
        for node in self.agents:  # those killed with -9 and never started again left their cgroups
            clean_node(node, self.data_dir)
        self.work.close()
        self.store.close()
