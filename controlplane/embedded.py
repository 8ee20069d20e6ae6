"""`controlplane up`: the whole stack on one machine from the embedded default.

Embedded FalkorDB (also Celery's Redis, database 1), the API in this process,
one local node agent as a child process. Ctrl-C stops everything cleanly. The
addresses are written to <data_dir>/stack.json so other CLI commands find them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controlplane.settings import Settings

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class Endpoints:
    graph_uri: str
    broker_url: str
    api_url: str | None = None


def local_node_name() -> str:
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in socket.gethostname())[:63]
    return name if name and name[0].isalnum() else f"node-{name}".strip("-")[:63] or "local"


def write_endpoints(settings: Settings, endpoints: Endpoints) -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / STACK_FILE
    path.write_text(json.dumps(endpoints.__dict__, indent=2))
    return path


def read_endpoints(settings: Settings) -> Endpoints | None:
    path = settings.data_dir / STACK_FILE
    if not path.exists():
        return None
    return Endpoints(**json.loads(path.read_text()))


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Where the graph and the broker are: settings first, else the running embedded stack."""
    stack = read_endpoints(settings)
    graph = settings.graph_uri or (stack.graph_uri if stack and settings.graph_backend == "falkordb" else None)
    broker = settings.redis_url or (stack.broker_url if stack else None)
    if not graph or not broker:
        from controlplane.domain.errors import Unavailable

        raise Unavailable(
            "no control plane found: run `controlplane up`, or set GRAPH_URI and REDIS_URL "
            f"(looked for {settings.data_dir / STACK_FILE})"
        )
    return Endpoints(graph_uri=graph, broker_url=broker, api_url=stack.api_url if stack else None)


def spawn_worker(settings: Settings, endpoints: Endpoints, *, node: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GRAPH_BACKEND": settings.graph_backend,
        "GRAPH_URI": endpoints.graph_uri,
        "REDIS_URL": endpoints.broker_url,
        "DATA_DIR": str(settings.data_dir),
        "HEARTBEAT_S": str(settings.heartbeat_s),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane", "worker", "--node", node, "--concurrency", str(concurrency)], env=env
    )


def run_stack(
    settings: Settings,
    *,
    node: str | None,
    worker: bool,
    concurrency: int,
    announce: Callable[[Endpoints, str | None], None],
) -> None:
    import uvicorn

    from controlplane.api import create_app
    from controlplane.services import ControlPlane
    from controlplane.wiring import health_checks, open_store
    from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
    from workers.app import configure
    from workers.dispatch import CeleryDispatcher

    server: FalkorDBServer | None = None
    worker_proc: subprocess.Popen[bytes] | None = None
    graph_uri, broker_url = settings.graph_uri, settings.redis_url
    if settings.graph_backend == "falkordb" and not graph_uri:
        server = FalkorDBServer(FalkorDBServerConfig(data_dir=settings.data_dir / "falkordb")).start()
        graph_uri = server.url
        broker_url = broker_url or server.redis_url(1)
    if not graph_uri or not broker_url:
        raise SystemExit("set GRAPH_URI and REDIS_URL for a non-embedded engine")
    try:
        store = open_store(settings, graph_uri=graph_uri)
        store.bootstrap()
        celery = configure(broker_url)
        control = ControlPlane(store, CeleryDispatcher(celery))
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        endpoints = Endpoints(graph_uri=graph_uri, broker_url=broker_url, api_url=api_url)
        write_endpoints(settings, endpoints)
        node_name = node or local_node_name()
        if worker:
            worker_proc = spawn_worker(settings, endpoints, node=node_name, concurrency=concurrency)
        app = create_app(control, health_checks=health_checks(store, broker_url), max_depth=settings.max_query_depth)
        announce(endpoints, node_name if worker else None)
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning")
        uvicorn.Server(config).run()
    finally:
        if worker_proc is not None and worker_proc.poll() is None:
            worker_proc.send_signal(signal.SIGTERM)
            try:
                worker_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker_proc.kill()
                worker_proc.wait()
        if server is not None:
            server.stop()
        (settings.data_dir / STACK_FILE).unlink(missing_ok=True)
