"""Node leases in Redis: renewed by each node agent, read by the one leading reaper.

One key per node holding the Redis server's own time of the last renewal (set by a
script, so agents' clocks never matter), expiring long after the grace period only to
collect nodes that left. The reaper reads every lease and the server's time in one
round trip. Redis answers these from its main thread while FalkorDB runs graph
queries on its own threads, so a long user query on the same server never delays a
lease.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from controlplane.domain.errors import Unavailable
from controlplane.redis_urls import sync_client

PREFIX = "controlplane:lease:"
#: a lease key outlives its grace period by this factor (then Redis forgets a node that left)
KEEP_FACTOR = 100
#: the server's time in microseconds, as a decimal string (Lua numbers are doubles)
_NOW = "local t = redis.call('TIME') local now = t[1] .. string.format('%06d', tonumber(t[2]))"
_RENEW = _NOW + " redis.call('SET', KEYS[1], now, 'EX', ARGV[1]) return 1"
_READ = _NOW + " return {now, redis.call('MGET', unpack(KEYS))}"


class RedisLeases:
    def __init__(self, url: str, *, keep_s: float = 300.0, timeout_s: float = 1.0) -> None:
        self._redis = sync_client(  # through Sentinels too: the leases follow the primary
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
        )
        self._keep_s = max(1, int(keep_s))
        self._renew = self._redis.register_script(_RENEW)
        self._read = self._redis.register_script(_READ)

    def renew(self, *, node_id: str, now: float) -> None:
        try:
            self._renew(keys=[PREFIX + node_id], args=[self._keep_s])
        except redis.RedisError as exc:
            raise Unavailable(f"the lease store is unreachable: {exc}") from exc

    def silent(self, *, node_ids: Sequence[str], now: float, grace_s: float) -> list[str]:
        if not node_ids:
            return []
        try:
            server_now, values = self._read(keys=[PREFIX + n for n in node_ids])
        except redis.RedisError as exc:
            raise Unavailable(f"the lease store is unreachable: {exc}") from exc
        now_us, grace_us = int(server_now), grace_s * 1_000_000
        return [n for n, v in zip(node_ids, values, strict=True) if v is None or now_us - int(v) > grace_us]

    def close(self) -> None:
        self._redis.close()
