"""The Celery application of the control plane's own workers: one app, configured at run time from Settings.

One queue, `control`, for supervisors (terminations, restarts, native executors); node
agents are not Celery workers and hold no broker credential (they take their work from
the agent API). Tasks carry ids only; acks_late with reject-on-worker-lost, so a task
whose worker died is delivered again, and every task is idempotent. Remote control
(broadcast shutdown, add_consumer, ...) is off: nothing on the broker may steer a worker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import pools as kombu_pools

from controlplane.redis_urls import celery_broker, celery_ssl

app = Celery("controlplane", include=["workers.tasks"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=8,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    # Redelivery of an unacked task after this long; a redelivered run finds its allocation
    # past `placed` and does nothing.
    broker_transport_options={"visibility_timeout": 120},
    task_default_queue="control",
    worker_enable_remote_control=False,
)

CONTROL_QUEUE = "control"


def configure(broker_url: str) -> Celery:
    """Point the app at a broker (a Redis, or its Sentinels); connections pooled for a previous broker are dropped."""
    broker_url, use_ssl = celery_ssl(broker_url)
    broker_url, options = celery_broker(broker_url)
    app.conf.broker_transport_options = {"visibility_timeout": 120, **options}
    app.conf.broker_use_ssl = use_ssl
    if app.conf.broker_url != broker_url:
        private: Any = app  # Celery keeps its connection pools private, and offers no way to drop them
        if private._pool is not None:
            private._pool.force_close_all()
            private._pool = None
        private.amqp._producer_pool = None
        kombu_pools.reset()  # kombu caches producer pools per connection, closed ones included
        app.conf.update(broker_url=broker_url)
    return app

