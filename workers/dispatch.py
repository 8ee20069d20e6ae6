"""The Dispatcher the control plane uses to hand work to node agents over Celery."""

from __future__ import annotations

from celery import Celery

from workers.app import node_queue

RUN = "controlplane.run_allocation"
STOP = "controlplane.stop_allocation"


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def run(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        self.app.send_task(RUN, args=[allocation_id, incarnation], queue=node_queue(node_id))

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        self.app.send_task(STOP, args=[allocation_id, incarnation], queue=node_queue(node_id))
