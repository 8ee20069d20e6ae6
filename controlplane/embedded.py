"""`controlplane up`: the whole stack on one machine from the embedded default.

Embedded FalkorDB (also Celery's Redis, database 1), the API in this process,
a supervisor, the scheduler and one local node agent as child processes. Ctrl-C stops everything cleanly. The
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
from typing import TYPE_CHECKING

from controlplane.settings import Settings

if TYPE_CHECKING:
    from controlplane.auth import Tokens
    from controlplane.services import ControlPlane

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


def spawn_child(settings: Settings, endpoints: Endpoints, *args: str) -> subprocess.Popen[bytes]:
    """Run `controlplane <args>` as a child process against the same graph and broker."""
    env = {
        **os.environ,
        "GRAPH_BACKEND": settings.graph_backend,
        "GRAPH_URI": endpoints.graph_uri,
        "REDIS_URL": endpoints.broker_url,
        "DATA_DIR": str(settings.data_dir),
        "HEARTBEAT_S": str(settings.heartbeat_s),
    }
    return subprocess.Popen([sys.executable, "-m", "controlplane", *args], env=env)


def open_api_tokens(settings: Settings) -> tuple[Tokens | None, tuple[str, bool] | None]:
    """The API's Tokens (keys generated on first start) and its admin token (made on first start: print it once).

    (None, None) when authentication is off, which only a loopback listener may be.
    """
    from controlplane.auth.bootstrap import ensure_admin_token, open_tokens
    from controlplane.domain.errors import InvalidInput

    if settings.auth_disabled:
        if settings.api_host not in ("127.0.0.1", "localhost", "::1"):
            raise InvalidInput("authentication can be off only on a loopback address", field="AUTH_DISABLED")
        return None, None
    tokens = open_tokens(settings, create=True)
    return tokens, ensure_admin_token(tokens, settings)


def run_api(settings: Settings) -> None:
    """Serve the API alone against an external graph and broker (GRAPH_URI, REDIS_URL): for deployments."""
    import uvicorn

    from controlplane.api import create_app
    from controlplane.api.auth import browsers_from
    from controlplane.wiring import control_plane, health_checks

    tokens, login = open_api_tokens(settings)
    if login is not None and login[1]:
        print(f"admin token written to {settings.data_dir / 'admin.token'} (0600)", flush=True)
    ends = resolve_endpoints(settings)
    control = control_plane(settings, graph_uri=ends.graph_uri, broker_url=ends.broker_url)
    app = create_app(control, tokens=tokens, browsers=browsers_from(settings), health_checks=health_checks(control.store, ends.broker_url),
                     max_depth=settings.max_query_depth, max_descendants=settings.max_descendants, events_redis_url=ends.broker_url)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning")


DEMO_NODES: tuple[tuple[str, int, int, list[str], list[str]], ...] = (
    # name, cores, memory MiB, GPUs, labels
    ("edge-eu-1", 4, 8192, ["A100", "A100"], ["zone=eu"]),
    ("edge-eu-2", 4, 8192, [], ["zone=eu"]),
    ("edge-us-1", 4, 8192, ["T4"], ["zone=us"]),
)
DEMO_LINKS = (("edge-eu-1", "edge-eu-2", 2.0), ("edge-eu-1", "edge-us-1", 80.0), ("edge-eu-2", "edge-us-1", 85.0))
DEMO_JOB = Path(__file__).resolve().parent.parent / "examples" / "demo-job.yaml"


def start_demo(settings: Settings, endpoints: Endpoints, control: ControlPlane, local: str | None) -> list[subprocess.Popen[bytes]]:
    """A small topology (node agents with GPUs and zones, neighbour links with RTTs) and a sample job."""
    import threading
    import time

    import yaml

    procs = []
    for name, cores, memory, gpus, labels in DEMO_NODES:
        args = ["worker", "--node", name, "--cpus", str(cores), "--memory-mib", str(memory), "--concurrency", "8"]
        args += [a for g in gpus for a in ("--gpu", g)] + [a for label in labels for a in ("--label", label)]
        procs.append(spawn_child(settings, endpoints, *args))

    def seed() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(control.store.get_node(node_id=n[0]) for n in DEMO_NODES):
                break
            time.sleep(0.2)
        for a, b, rtt in DEMO_LINKS:
            control.nodes.connect(a, b, rtt_ms=rtt, bandwidth=10e9)
        if local:
            control.nodes.connect(local, "edge-eu-1", rtt_ms=1.0, bandwidth=10e9)
        job = control.jobs.submit(yaml.safe_load(DEMO_JOB.read_text()), node="edge-eu-1")
        print(f"demo: submitted job {job.id} ({job.name}); watch it: controlplane jobs {job.id}  |  "
              f"controlplane tree edge-eu-1", flush=True)

    threading.Thread(target=seed, name="demo-seed", daemon=True).start()
    return procs


def run_stack(
    settings: Settings,
    *,
    node: str | None,
    worker: bool,
    concurrency: int,
    announce: Callable[[Endpoints, str | None, tuple[str, bool] | None], None],
    demo: bool = False,
) -> None:
    import uvicorn

    from controlplane.api import create_app
    from controlplane.api.auth import browsers_from
    from controlplane.wiring import control_plane, health_checks
    from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig

    tokens, login = open_api_tokens(settings)  # before the node agents start: they sign their allocations' tokens
    server: FalkorDBServer | None = None
    children: list[subprocess.Popen[bytes]] = []
    graph_uri, broker_url = settings.graph_uri, settings.redis_url
    if settings.graph_backend == "falkordb" and not graph_uri:
        server = FalkorDBServer(FalkorDBServerConfig(data_dir=settings.data_dir / "falkordb")).start()
        graph_uri = server.url
        broker_url = broker_url or server.redis_url(1)
    if not graph_uri or not broker_url:
        raise SystemExit("set GRAPH_URI and REDIS_URL for a non-embedded engine")
    try:
        control = control_plane(settings, graph_uri=graph_uri, broker_url=broker_url)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        endpoints = Endpoints(graph_uri=graph_uri, broker_url=broker_url, api_url=api_url)
        write_endpoints(settings, endpoints)
        node_name = node or local_node_name()
        children.append(spawn_child(settings, endpoints, "supervisor"))
        children.append(spawn_child(settings, endpoints, "scheduler"))
        if worker:
            children.append(spawn_child(settings, endpoints, "worker", "--node", node_name, "--concurrency", str(concurrency)))
        if demo:
            children.extend(start_demo(settings, endpoints, control, node_name if worker else None))
        app = create_app(control, tokens=tokens, browsers=browsers_from(settings), health_checks=health_checks(control.store, broker_url),
                         max_depth=settings.max_query_depth, max_descendants=settings.max_descendants, events_redis_url=broker_url)
        announce(endpoints, node_name if worker else None, login)
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning")
        uvicorn.Server(config).run()
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if server is not None:
            server.stop()
        (settings.data_dir / STACK_FILE).unlink(missing_ok=True)
