"""A real stack for end-to-end tests: FalkorDB, node agents, a supervisor and the scheduler as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.ports.store import GraphStore
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer
from workers.app import configure
from workers.dispatch import CeleryDispatcher


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
    ) -> None:
        self.server = server
        self.data_dir = data_dir
        self.graph = graph
        self.env = {
            **os.environ,
            "GRAPH_BACKEND": store.engine if store is not None else "falkordb",
            "GRAPH_URI": graph_uri or server.url,
            "GRAPH_NAME": graph,
            "REDIS_URL": server.redis_url(2),
            "DATA_DIR": str(data_dir),
            "HEARTBEAT_S": str(heartbeat_s),
            "NODE_GRACE_S": str(grace_s),
            "SCHEDULER_INTERVAL_S": "0.2",
            "PLACED_DEADLINE_S": "5",
            "STARTING_DEADLINE_S": "10",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: set[str] = set()
        self.store: GraphStore = store if store is not None else FalkorDBStore(server.url, graph=graph)
        self.store.bootstrap()
        self.control = assemble(self.store, CeleryDispatcher(configure(server.redis_url(2))))

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "controlplane", *args], env=self.env)
        self.procs[name] = proc
        return proc

    def agent(self, node: str, **labels: str) -> subprocess.Popen[bytes]:
        proc = self.start(node, "worker", "--node", node, "--concurrency", "8",
                          *[a for k, v in labels.items() for a in ("--label", f"{k}={v}")])
        self.agents.add(node)
        wait_for(lambda: (n := self.store.get_node(node_id=node)) and n.status == "ready", 60, f"agent {node} to register")
        return proc

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
