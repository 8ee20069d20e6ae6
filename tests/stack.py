"""A real stack for end-to-end tests: FalkorDB, node agents, a supervisor and the scheduler as processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.ports.store import GraphStore
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.store_passwords import broker_url, graph_url
from workers.app import configure
from workers.dispatch import CeleryDispatcher

if TYPE_CHECKING:
    import pytest


def clean_node(node: str, data_dir: Path) -> int:
    """What a new agent of `node` would do at start: kill and remove every cgroup, uid and directory a dead one left."""
    from controlplane.settings import load_settings
    from workers.isolation import Sandbox, sandbox_config

    sandbox = Sandbox(sandbox_config(load_settings()), node=node, data_dir=data_dir)
    try:
        return sandbox.recover()
    finally:
        sandbox.close()


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
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: set[str] = set()
        self.store: GraphStore = store if store is not None else FalkorDBStore(graph_url(server), graph=graph)
        self.store.bootstrap()
        self.control = assemble(self.store, CeleryDispatcher(configure(self.broker_url)))

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
        proc = self.start(node, "worker", "--node", node, "--concurrency", "8",
                          *[a for k, v in labels.items() for a in ("--label", f"{k}={v}")])
        self.agents.add(node)
        wait_for(lambda: (n := self.store.get_node(node_id=node)) and n.status == "ready" and n.heartbeat_at >= started,
                 60, f"agent {node} to register")
        return proc

    def settled(self, timeout: float = 30.0) -> None:
        """Wait until the broker holds no message, ready or taken (acks are late: a taken one is acked when done)."""
        import redis

        broker = redis.Redis.from_url(self.broker_url)
        queues = ["control", *(f"node.{n}" for n in self.procs)]

        def idle() -> bool:
            return not any(broker.llen(q) for q in queues) and not broker.hlen("unacked")

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

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in self.agents:  # those killed with -9 and never started again left their cgroups
            clean_node(node, self.data_dir)
        self.store.close()
