"""`controlplane up`: the whole stack on one machine from the embedded default.

Embedded FalkorDB for the graph, a second redis-server from the same package for
the broker (Celery, node leases, the events doorbell), the API in this process, a
supervisor, the scheduler and one local node agent as child processes. Ctrl-C stops
everything cleanly. The addresses are written to <data_dir>/stack.json so other CLI
commands find them. Two servers, because a FalkorDB write waiting for its graph's lock
holds the whole redis-server: liveness and Celery must not share it with the graph.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.settings import STACK_FILE, Settings
from controlplane.stack_supervisor import StackSupervisor

if TYPE_CHECKING:
    from controlplane.auth import Tokens
    from controlplane.services import ControlPlane
    from graph_schema.falkordb_server import FalkorDBServer

#: on the way out the API waits this long for requests in flight (an agent's long poll for work, a subscription),
#: then cuts them: their callers retry against the next API
GRACEFUL_SHUTDOWN_S = 5


@dataclass(frozen=True)
class Endpoints:
    graph_uri: str
    broker_url: str
    api_url: str | None = None
    #: in stack.json: the URLs carry no password, these name the secrets (store_secrets.py) that hold them
    graph_secret: str | None = None
    broker_secret: str | None = None


def local_node_name() -> str:
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in socket.gethostname())[:63]
    return name if name and name[0].isalnum() else f"node-{name}".strip("-")[:63] or "local"


def write_endpoints(settings: Settings, endpoints: Endpoints) -> Path:
    """stack.json (0600): the addresses, each password replaced by the name of its secret when it has one."""
    from controlplane.store_secrets import without_password

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / STACK_FILE
    written = replace(
        endpoints,
        graph_uri=without_password(endpoints.graph_uri) if endpoints.graph_secret else endpoints.graph_uri,
        broker_url=without_password(endpoints.broker_url) if endpoints.broker_secret else endpoints.broker_url,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(written.__dict__, indent=2))
    return path


def read_endpoints(settings: Settings) -> Endpoints | None:
    """The running stack's addresses, with the passwords its secrets hold."""
    from controlplane.store_secrets import read_secret, with_password

    path = settings.data_dir / STACK_FILE
    if not path.exists():
        return None
    stack = Endpoints(**json.loads(path.read_text()))
    graph_pw = read_secret(settings.data_dir, stack.graph_secret) if stack.graph_secret else None
    broker_pw = read_secret(settings.data_dir, stack.broker_secret) if stack.broker_secret else None
    return replace(stack, graph_uri=with_password(stack.graph_uri, graph_pw) if graph_pw else stack.graph_uri,
                   broker_url=with_password(stack.broker_url, broker_pw) if broker_pw else stack.broker_url)


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Where the graph and the broker are: settings first, else the running embedded stack."""
    from controlplane.wiring import broker_address

    stack = read_endpoints(settings)
    graph = settings.graph_uri or (stack.graph_uri if stack and settings.graph_backend == "falkordb" else None)
    broker = broker_address(settings, settings.redis_url) if settings.redis_url else (stack.broker_url if stack else None)
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


#: what a node agent must not inherit: it talks to the API only, with its own credential
_NOT_FOR_AGENTS = ("GRAPH_URI", "GRAPH_USER", "GRAPH_PASSWORD", "REDIS_URL", "CONTROLPLANE_TOKEN", "AUTH_SIGNING_KEY",
                   "AUTH_SIGNING_KEY_FILE")


def spawn_agent(settings: Settings, endpoints: Endpoints, tokens: Tokens | None, node: str, *args: str) -> subprocess.Popen[bytes]:
    """Run `controlplane worker --node <node> <args>` against the API only: its environment names no graph, no broker
    and no key. On its first start (no credential in its state directory yet) it gets a join credential for its
    name, single-use and short-lived, which it exchanges for its own node credential."""
    from controlplane.auth.bootstrap import join_token

    env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_AGENTS}
    env.update({"DATA_DIR": str(settings.data_dir), "HEARTBEAT_S": str(settings.heartbeat_s),
                "CONTROLPLANE_API_URL": endpoints.api_url or ""})
    state = settings.agent_state_dir or settings.data_dir / "nodes" / node
    if tokens is not None and tokens.can_sign and not (state / "node.token").exists():
        env["CONTROLPLANE_JOIN_TOKEN"], _ = join_token(tokens, name=node, ttl_s=600)
    return subprocess.Popen([sys.executable, "-m", "controlplane", "worker", "--node", node, *args], env=env)


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
    from controlplane.wiring import agent_api, control_plane, health_checks

    tokens, login = open_api_tokens(settings)
    if login is not None and login[1]:
        print(f"admin token written to {settings.data_dir / 'admin.token'} (0600)", flush=True)
    ends = resolve_endpoints(settings)
    control = control_plane(settings, graph_uri=ends.graph_uri, broker_url=ends.broker_url, readers=True)
    app = create_app(control, tokens=tokens, browsers=browsers_from(settings), health_checks=health_checks(control.store, ends.broker_url),
                     max_depth=settings.max_query_depth, max_descendants=settings.max_descendants, events_redis_url=ends.broker_url,
                     runs_dir=settings.data_dir.absolute() / "runs",
                     agents=agent_api(control, settings, ends.broker_url, tokens) if tokens is not None else None)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


DEMO_NODES: tuple[tuple[str, int, int, list[str], list[str]], ...] = (
    # name, cores, memory MiB, GPUs, labels
    ("edge-eu-1", 4, 8192, ["A100", "A100"], ["zone=eu"]),
    ("edge-eu-2", 4, 8192, [], ["zone=eu"]),
    ("edge-us-1", 4, 8192, ["T4"], ["zone=us"]),
)
DEMO_LINKS = (("edge-eu-1", "edge-eu-2", 2.0), ("edge-eu-1", "edge-us-1", 80.0), ("edge-eu-2", "edge-us-1", 85.0))
DEMO_JOB = Path(__file__).resolve().parent.parent / "examples" / "demo-job.yaml"


def start_demo(settings: Settings, endpoints: Endpoints, control: ControlPlane, local: str | None,
               children: StackSupervisor, tokens: Tokens | None) -> None:
    """A small topology (node agents with GPUs and zones, neighbour links with RTTs) and a sample job."""
    import threading
    import time

    import yaml

    for name, cores, memory, gpus, labels in DEMO_NODES:
        args = ["--cpus", str(cores), "--memory-mib", str(memory), "--concurrency", "8"]
        args += [a for g in gpus for a in ("--gpu", g)] + [a for label in labels for a in ("--label", label)]
        children.add(f"node agent {name}", partial(spawn_agent, settings, endpoints, tokens, name, *args), stop_rank=1)

    def seed() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(control.store.get_node(node_id=n) for n in [*(d[0] for d in DEMO_NODES), *([local] if local else [])]):
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


def embedded_server(settings: Settings, role: str) -> FalkorDBServer:
    """One of `up`'s two redis-servers ("falkordb": the graph; "broker"), each with its generated passwords: the
    administrator's (`default`, the launcher alone) and the control plane user's, limited to what it needs."""
    from controlplane.store_secrets import BROKER, BROKER_ADMIN, GRAPH, GRAPH_ADMIN, USER, store_secret
    from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
    from graph_schema.redis_acl import broker_user, graph_user

    graph = role == "falkordb"
    admin, mine = (GRAPH_ADMIN, GRAPH) if graph else (BROKER_ADMIN, BROKER)
    password = store_secret(settings.data_dir, mine)
    user = graph_user(USER, password, graphs=(settings.graph_name,)) if graph else broker_user(USER, password)
    return FalkorDBServer(FalkorDBServerConfig(
        data_dir=settings.data_dir / role, graph=graph, password=store_secret(settings.data_dir, admin), users=(user,),
        query_mem_mib=settings.falkordb_query_mem_mib,
        query_timeout_max_ms=int(settings.falkordb_query_timeout_max_s * 1000)))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_stack(
    settings: Settings,
    *,
    node: str | None,
    worker: bool,
    concurrency: int,
    announce: Callable[[Endpoints, str | None, tuple[str, bool] | None], None],
    demo: bool = False,
) -> None:
    import threading

    import uvicorn

    from controlplane.api import create_app
    from controlplane.api.auth import browsers_from
    from controlplane.store_secrets import BROKER, GRAPH, USER
    from controlplane.wiring import agent_api, broker_address, control_plane, health_checks

    tokens, login = open_api_tokens(settings)  # before the node agents start: the API issues their credentials
    servers: list[FalkorDBServer] = []
    children = StackSupervisor(say=lambda line: print(f"controlplane up: {line}", flush=True))
    graph_uri = settings.graph_uri
    broker_url = broker_address(settings, settings.redis_url) if settings.redis_url else None
    graph_secret = broker_secret = None
    if settings.graph_backend == "falkordb" and not graph_uri:
        servers.append(embedded_server(settings, "falkordb").start())
        graph_uri, graph_secret = servers[0].user_url(USER), GRAPH
    if not broker_url:
        # the broker (Celery, node leases, the doorbell) on a server of its own: a graph write queued behind a long
        # read holds FalkorDB's whole server, and liveness must never wait for that
        servers.append(embedded_server(settings, "broker").start())
        broker_url, broker_secret = servers[-1].user_url(USER, 0), BROKER
    if not graph_uri or not broker_url:
        raise SystemExit("set GRAPH_URI and REDIS_URL for a non-embedded engine")
    server: uvicorn.Server | None = None
    serving: threading.Thread | None = None
    try:
        control = control_plane(settings, graph_uri=graph_uri, broker_url=broker_url, readers=True)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        endpoints = Endpoints(graph_uri=graph_uri, broker_url=broker_url, api_url=api_url, graph_secret=graph_secret,
                              broker_secret=broker_secret)
        write_endpoints(settings, endpoints)
        node_name = node or local_node_name()
        app = create_app(control, tokens=tokens, browsers=browsers_from(settings), health_checks=health_checks(control.store, broker_url),
                         health_probes={"components": children.down}, max_depth=settings.max_query_depth,
                         max_descendants=settings.max_descendants, events_redis_url=broker_url,
                         runs_dir=settings.data_dir.absolute() / "runs",
                         agents=agent_api(control, settings, broker_url, tokens) if tokens is not None else None)
        # the API serves from a thread, so that on the way out the node agents still reach it to report what they
        # ran as lost (they talk to nothing else); this thread waits for Ctrl-C or SIGTERM
        server = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                                               timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
        serving = threading.Thread(target=server.run, name="api", daemon=True)
        serving.start()
        children.add("supervisor", partial(spawn_child, settings, endpoints, "supervisor"))
        children.add("scheduler", partial(spawn_child, settings, endpoints, "scheduler"))
        if worker:  # agents stop last: no decision is made while the stack stops, the next `up` decides
            children.add(f"node agent {node_name}", partial(
                spawn_agent, settings, endpoints, tokens, node_name, "--concurrency", str(concurrency)), stop_rank=1)
        if demo:
            start_demo(settings, endpoints, control, node_name if worker else None, children, tokens)
        announce(endpoints, node_name if worker else None, login)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)  # as Ctrl-C: through the `finally` below, nothing orphaned
        # Ctrl-C is this thread's to hear (the API serves from another), even when `up` was started with SIGINT
        # ignored or blocked, as a script's background job is
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        while serving.is_alive():
            serving.join(timeout=0.5)
    finally:
        children.stop()
        if server is not None and serving is not None:
            server.should_exit = True
            serving.join(timeout=10)
        for s in reversed(servers):
            s.stop()
        (settings.data_dir / STACK_FILE).unlink(missing_ok=True)
