"""The periodic scheduler: reaps lost nodes, reconciles stuck allocations, prunes old history (retention).

Exactly one runs at a time: each tick happens only while holding a Redis lock
with a short TTL (renewed every tick), so a second scheduler waits as a hot
standby and takes over within one TTL when the first dies.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from controlplane.redis_urls import sync_client
from controlplane.services.retention import RetentionPolicy
from controlplane.settings import Settings
from controlplane.wiring import control_plane

log = logging.getLogger(__name__)
LOCK_KEY = "controlplane:scheduler"


class LeaderLock:
    """A Redis lease: SET NX PX to take it, compare-and-extend to keep it."""

    _EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"

    def __init__(self, client: redis.Redis, *, ttl_s: float, key: str = LOCK_KEY) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self._extend = client.register_script(self._EXTEND)

    def hold(self) -> bool:
        """True while this process is the leader (takes the lease if free, renews it if ours)."""
        if self._extend(keys=[self.key], args=[self.token, self.ttl_ms]):
            return True
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        if self.client.get(self.key) == self.token.encode():
            self.client.delete(self.key)


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        events_max_age_s=settings.retention_events_max_age_s, events_max_count=settings.retention_events_max_count,
        allocations_max_age_s=settings.retention_allocations_max_age_s,
        allocations_max_count=settings.retention_allocations_max_count, batch=settings.retention_batch,
    )


def run_scheduler(settings: Settings, *, graph_uri: str | None, broker_url: str, stop: threading.Event | None = None) -> None:
    control = control_plane(settings, graph_uri=graph_uri, broker_url=broker_url)
    lock = LeaderLock(sync_client(broker_url), ttl_s=max(2.0, settings.scheduler_interval_s * 4))
    stop = stop or threading.Event()
    leader = False
    retention = retention_policy(settings)
    next_prune = 0.0
    try:
        while not stop.is_set():
            try:
                now_leader = lock.hold()
                if now_leader != leader:
                    log.warning("scheduler %s: %s", lock.token, "leading" if now_leader else "standing by")
                    leader = now_leader
                    control.repair.lost_sight()  # whatever it saw before leading (or last led) is old
                if leader:
                    control.repair.reap(grace_s=settings.node_grace_s)
                    control.repair.reconcile(
                        placed_deadline_s=settings.placed_deadline_s, starting_deadline_s=settings.starting_deadline_s
                    )
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + settings.retention_interval_s
                        if control.retention.prune(retention).more:  # more to go: again at the next tick
                            next_prune = 0.0
            except Exception as exc:  # a restarted graph or broker: keep ticking
                log.warning("scheduler tick failed: %s", exc)
                control.repair.lost_sight()
            stop.wait(settings.scheduler_interval_s)
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass
        control.store.close()
