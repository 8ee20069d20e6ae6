"""Run the worker processes: a node agent (the agent API only) or a supervisor (Celery, queue control)."""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from typing import Any

from celery import Celery

from controlplane.domain.errors import Conflict, Unauthenticated
from controlplane.settings import Settings
from controlplane.wiring import control_plane
from workers.agent import NodeAgent, with_retries
from workers.app import CONTROL_QUEUE, configure
from workers.isolation import sandbox_config
from workers.link import ApiLink, join
from workers.node_state import NodeState, not_dumpable, state_dir
from workers.runtime import install

log = logging.getLogger(__name__)


def _quiet_root_warning() -> None:
    """Celery warns when run as root; node agents on a laptop and in CI are root, in the image they are not."""
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)


def _worker_args(queue: str, name: str, concurrency: int, loglevel: str) -> list[str]:
    return [
        "--quiet", "worker", "-Q", queue, "-P", "threads", "-c", str(concurrency), "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", loglevel,
    ]


def _consume(app: Celery, argv: list[str], what: str) -> None:
    """Run the Celery consumer until this process is asked to stop (a signal sets Celery's shutdown flags).

    A consumer that dies of an error of its own is started again in the same process, so that what the
    process runs (a node's allocations) outlives it: kombu's Redis transport can fail its reconnect after
    a broker restart ("'NoneType' object has no attribute 'hostname'"), which Celery reports as an
    unrecoverable error and ends the worker with.
    """
    from celery.worker import state

    starter: Any = app  # celery-types says start() never returns; it returns when the consumer stops
    while True:
        starter.start(argv=argv)
        flags = vars(state)  # set by Celery's signal handlers (typed as always None in celery-types)
        if flags.get("should_stop") is not None or flags.get("should_terminate") is not None:
            return
        log.error("%s: the Celery consumer stopped on an unrecoverable error; starting it again", what)
        time.sleep(1.0)


def run_agent(
    settings: Settings,
    *,
    node: str,
    api_url: str,
    concurrency: int = 16,
    labels: dict[str, str] | None = None,
    resources: dict[str, object] | None = None,
    node_token: str | None = None,
    join_token: str | None = None,
) -> int:
    """A node agent until SIGTERM or SIGINT: 0, or 3 when fenced off or its credential was refused.

    It needs the API's address and its node credential (`node_token`, else the state directory's), or a join
    credential to get one; it opens no connection to the graph or the broker."""
    state = NodeState.open(state_dir(settings.data_dir, node, settings.agent_state_dir), node)
    try:
        if not not_dumpable():
            log.warning("node %s: could not make the agent non-dumpable; its memory is as safe as its user", node)
        token = node_token or state.token()
        if token is None:
            if not join_token:
                raise Unauthenticated(f"node {node} has no credential yet ({state.path / 'node.token'}): join it with a join "
                                      "credential (CONTROLPLANE_JOIN_TOKEN) from `controlplane node join-token`", field="token")
            token, identity = with_retries(join, api_url, join_token, node)
            log.warning("node %s joined: identity %s, credential in %s (0600)", node, identity, state.save_token(token))
        link = ApiLink(api_url, token, node, connections=concurrency + 8)
        agent = NodeAgent(
            link, node=node, work_dir=settings.data_dir, api_url=api_url, heartbeat_s=settings.heartbeat_s,
            mirror_s=settings.heartbeat_mirror_s, labels=labels, resources=resources, isolation=sandbox_config(settings),
            usage_period_s=settings.usage_period_s, concurrency=concurrency,
        )
        stop = agent.stopped
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            answer = _start(agent, state)
            log.warning("node %s registered: %d mCPU, %d MiB; isolation: %s", node, answer["node"]["cpu"],
                        answer["node"]["memory"], agent.sandbox.describe())
            if agent.sandbox.isolation == "none":
                log.warning("node %s enforces no resource limits (isolation=none on its Node): %s", node,
                            agent.sandbox.layout.reason)
            agent.start_heartbeat()
            serving = threading.Thread(target=agent.serve, name="work", daemon=True)
            serving.start()
            stop.wait()
        finally:
            agent.shutdown()
        if agent.failure is not None:
            log.error("node %s stopped: %s", node, agent.failure)
            return 3
        return 0
    finally:
        state.close()


def _start(agent: NodeAgent, state: NodeState) -> dict[str, Any]:
    """Start the node's session, replacing the dead predecessor's on this machine; while another agent of the node
    runs elsewhere, wait for its session to lapse (a few seconds), then give up with its reason."""
    deadline = time.monotonic() + 15
    while True:
        try:
            answer = agent.start(replaces=state.previous_session())
        except Conflict as exc:
            if time.monotonic() > deadline or agent.stopped.is_set():
                raise
            log.warning("node %s: %s; trying again", agent.node, exc.message)
            time.sleep(1.0)
            continue
        state.save_session(str(answer["session"]))
        return answer


def run_supervisor(
    settings: Settings, *, graph_uri: str | None, broker_url: str, concurrency: int = 8, loglevel: str = "WARNING", name: str = "supervisor"
) -> None:
    control = control_plane(settings, graph_uri=graph_uri, broker_url=broker_url)
    _quiet_root_warning()
    install(control=control)
    try:
        _consume(configure(broker_url), _worker_args(CONTROL_QUEUE, name, concurrency, loglevel), name)
    finally:
        control.store.close()
