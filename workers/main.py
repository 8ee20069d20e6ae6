"""Run the Celery processes: a node agent (queue node.<name>) or a supervisor (queue control)."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from celery import Celery

from controlplane.eventbus import RedisNotifier
from controlplane.redis_leases import RedisLeases
from controlplane.settings import Settings
from controlplane.wiring import control_plane, open_store
from workers.agent import NodeAgent
from workers.app import CONTROL_QUEUE, configure, node_queue
from workers.dispatch import CeleryDispatcher
from workers.isolation import sandbox_config
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


def run_worker(
    settings: Settings,
    *,
    node: str,
    graph_uri: str | None,
    broker_url: str,
    concurrency: int = 16,
    labels: dict[str, str] | None = None,
    resources: dict[str, object] | None = None,
    loglevel: str = "WARNING",
    api_url: str | None = None,
) -> None:
    store = open_store(settings, graph_uri=graph_uri)
    store.bootstrap()
    app = configure(broker_url)
    credentials = None
    if settings.api_public_url or api_url:  # no API to tell allocations about: no token either (nor its imports)
        from controlplane.auth.bootstrap import allocation_credentials

        credentials = allocation_credentials(settings, settings.api_public_url or api_url)
    if credentials is None:
        log.warning("node %s: no signing key or API address here; its allocations get no CONTROLPLANE_TOKEN", node)
    agent = NodeAgent(
        store, CeleryDispatcher(app), node=node, work_dir=settings.data_dir, heartbeat_s=settings.heartbeat_s,
        leases=RedisLeases(broker_url), mirror_s=settings.heartbeat_mirror_s,
        labels=labels, resources=resources, notify=RedisNotifier(broker_url).notify, credentials=credentials,
        isolation=sandbox_config(settings), usage_period_s=settings.usage_period_s,
    )
    _quiet_root_warning()
    agent.recover()
    record = agent.register()
    log.warning("node %s registered: %d mCPU, %d MiB; isolation: %s", record.id, record.cpu, record.memory, agent.sandbox.describe())
    if agent.sandbox.isolation == "none":
        log.warning("node %s enforces no resource limits (isolation=none on its Node): %s", record.id, agent.sandbox.layout.reason)
    agent.start_heartbeat()
    install(agent=agent)
    try:
        _consume(app, _worker_args(node_queue(node), node, concurrency, loglevel), f"node agent {node}")
    finally:
        agent.shutdown()
        store.close()


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
