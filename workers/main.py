"""Run a node agent: register the machine, heartbeat, consume the node's queue with Celery."""

from __future__ import annotations

import logging

from controlplane.settings import Settings
from controlplane.wiring import open_store
from workers.agent import NodeAgent
from workers.app import configure, node_queue
from workers.runtime import install

log = logging.getLogger(__name__)


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
) -> None:
    store = open_store(settings, graph_uri=graph_uri)
    store.bootstrap()
    agent = NodeAgent(
        store, node=node, work_dir=settings.data_dir, heartbeat_s=settings.heartbeat_s, labels=labels, resources=resources
    )
    record = agent.register()
    log.warning("node %s registered: %d mCPU, %d MiB", record.id, record.cpu, record.memory)
    agent.start_heartbeat()
    install(agent)
    app = configure(broker_url)
    try:
        app.worker_main(
            [
                "worker", "-Q", node_queue(node), "-P", "threads", "-c", str(concurrency),
                "-n", f"{node}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", loglevel,
            ]
        )
    finally:
        agent.shutdown()
        store.close()
