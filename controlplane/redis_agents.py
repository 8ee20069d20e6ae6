"""Node sessions, node work lists and join credentials' uses in Redis: what the agent API keeps outside the graph.

Only the control plane (the API, the dispatcher) holds the Redis credential; node
agents reach none of this except through the API, which names the node from the
agent's own credential. Every check-and-change is one Lua script, so two API
replicas never both hand a node to two agents, nor one work item to two takers.

Keys, per node N:
- `controlplane:agent:N` — the live session's id, expiring `ttl` after its last renewal;
- `controlplane:lease:N` — the node's lease (redis_leases.py: the server's time of the last heartbeat),
  renewed by the same script that keeps the session, so the reaper's rules are unchanged;
- `controlplane:work:N` (list of items, JSON), `...:taken` (hash id -> item), `...:due` (zset id -> when it is
  handed out again, server time in ms), `...:bell` (a one-element list the long poll blocks on);
- `controlplane:join:<token id>` — uses spent of a join credential, expiring with it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from controlplane.domain.errors import Unavailable
from controlplane.ports.agents import Opened, WorkItem
from controlplane.redis_leases import _NOW, KEEP_FACTOR
from controlplane.redis_leases import PREFIX as LEASE_PREFIX
from controlplane.redis_urls import async_client, sync_client

SESSION_PREFIX = "controlplane:agent:"
WORK_PREFIX = "controlplane:work:"
JOIN_PREFIX = "controlplane:join:"
#: an item taken and not acknowledged within this long is handed out again (Celery's visibility timeout)
VISIBILITY_S = 120.0
#: a node's work list outlives its last push by this long (then Redis forgets a node that left)
WORK_KEEP_S = 7 * 86400

_OPEN = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and cur ~= ARGV[2] then return {0, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {1, 0}
"""
# KEYS: session, lease; ARGV: session, ttl ms, lease keep s
_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
""" + _NOW + """
redis.call('SET', KEYS[2], now, 'EX', ARGV[3])
return 1
"""
_HOLDS = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
_CLOSE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_USE = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
# KEYS: list, taken, due; ARGV: limit, visibility ms
_TAKE = _MS + """
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local item = redis.call('HGET', KEYS[2], id)
  if item then redis.call('LPUSH', KEYS[1], item) end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local item = redis.call('LPOP', KEYS[1])
  if not item then break end
  local id = cjson.decode(item)['id']
  redis.call('HSET', KEYS[2], id, item)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), id)
  out[#out + 1] = item
end
return out
"""
_ACK = """
local n = 0
for _, id in ipairs(ARGV) do
  n = n + redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return n
"""
_REQUEUE = """
local items = redis.call('HVALS', KEYS[2])
for _, item in ipairs(items) do redis.call('LPUSH', KEYS[1], item) end
redis.call('DEL', KEYS[2], KEYS[3])
if #items > 0 then redis.call('LPUSH', KEYS[4], 1) redis.call('LTRIM', KEYS[4], 0, 0) end
return #items
"""


def _work_keys(node_id: str) -> list[str]:
    base = WORK_PREFIX + node_id
    return [base, base + ":taken", base + ":due", base + ":bell"]


def _item(raw: bytes | str) -> WorkItem:
    d = json.loads(raw)
    return WorkItem(id=str(d["id"]), kind=str(d["kind"]), keys=tuple((str(i), int(n)) for i, n in d["keys"]))


def encode(item: WorkItem) -> str:
    return json.dumps({"id": item.id, "kind": item.kind, "keys": [list(k) for k in item.keys]}, separators=(",", ":"))


class _PerLoop:
    """redis.asyncio clients are bound to the event loop they connect in: one client per loop."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._url = url
        self._kwargs = kwargs
        self._clients: dict[int, aioredis.Redis] = {}

    def client(self) -> aioredis.Redis:
        loop = id(asyncio.get_running_loop())
        found = self._clients.get(loop)
        if found is None:
            found = self._clients[loop] = async_client(self._url, **self._kwargs)
        return found


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(f"the broker (node sessions and work) is unreachable: {exc}")


class RedisSessions:
    """NodeSessions and JoinUses."""

    def __init__(self, url: str, *, lease_keep_s: float = 300.0, timeout_s: float = 2.0) -> None:
        self._redis = _PerLoop(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        self._lease_keep_s = max(1, int(lease_keep_s))

    async def _eval(self, script: str, keys: Sequence[str], *args: Any) -> Any:
        try:
            return await self._redis.client().eval(script, len(keys), *keys, *args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    async def open(self, *, node_id: str, session: str, replaces: str | None, ttl_s: float) -> Opened:
        taken, held = await self._eval(_OPEN, [SESSION_PREFIX + node_id], session, replaces or session, int(ttl_s * 1000))
        if taken:
            return Opened()
        return Opened(refused=f"node {node_id} has a live agent already (its session lapses in {int(held) / 1000:.1f} s "
                              "unless renewed)", held_ms=int(held))

    async def renew(self, *, node_id: str, session: str, ttl_s: float) -> bool:
        return bool(await self._eval(_RENEW, [SESSION_PREFIX + node_id, LEASE_PREFIX + node_id], session,
                                     int(ttl_s * 1000), self._lease_keep_s))

    async def holds(self, *, node_id: str, session: str, ttl_s: float) -> bool:
        return bool(await self._eval(_HOLDS, [SESSION_PREFIX + node_id], session, int(ttl_s * 1000)))

    async def close(self, *, node_id: str, session: str) -> None:
        await self._eval(_CLOSE, [SESSION_PREFIX + node_id], session)

    async def use(self, *, token_id: str, uses: int, until: float) -> bool:
        return bool(await self._eval(_USE, [JOIN_PREFIX + token_id], uses, int(max(until, time.time() + 1) * 1000)))


def lease_keep_s(grace_s: float) -> float:
    """How long a node's lease key outlives its grace period (the reaper's lease store keeps it as long)."""
    return grace_s * KEEP_FACTOR


class RedisWork:
    """WorkSender (sync, for the dispatcher) and WorkQueue (async, for the API's long poll)."""

    def __init__(self, url: str, *, visibility_s: float = VISIBILITY_S, timeout_s: float = 2.0) -> None:
        self._sync = sync_client(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._push = self._sync.register_script(
            "for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end "
            "redis.call('EXPIRE', KEYS[1], ARGV[1]) redis.call('LPUSH', KEYS[4], 1) redis.call('LTRIM', KEYS[4], 0, 0) "
            "redis.call('EXPIRE', KEYS[4], ARGV[1]) return 1")
        self._redis = _PerLoop(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        #: the long poll blocks a connection of its own for up to its wait: no socket timeout shorter than that
        self._waiting = _PerLoop(url, socket_timeout=None, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        self._visibility_ms = int(visibility_s * 1000)

    def push(self, *, node_id: str, items: Sequence[WorkItem]) -> None:
        if not items:
            return
        try:
            self._push(keys=_work_keys(node_id), args=[WORK_KEEP_S, *(encode(i) for i in items)])
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    async def _eval(self, script: str, keys: Sequence[str], *args: Any) -> Any:
        try:
            return await self._redis.client().eval(script, len(keys), *keys, *args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    async def take(self, *, node_id: str, limit: int, wait_s: float) -> list[WorkItem]:
        keys = _work_keys(node_id)
        deadline = time.monotonic() + wait_s
        while True:
            raw = await self._eval(_TAKE, keys[:3], max(1, limit), self._visibility_ms)
            if raw:
                return [_item(r) for r in raw]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            try:  # woken by the next push (or a stale ring: then the list is looked at again)
                await self._waiting.client().blpop([keys[3]], timeout=max(0.01, min(left, 30.0)))
            except redis.RedisError as exc:
                raise _unavailable(exc) from exc

    async def ack(self, *, node_id: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        keys = _work_keys(node_id)
        return int(await self._eval(_ACK, keys[1:3], *ids))

    async def requeue(self, *, node_id: str) -> int:
        return int(await self._eval(_REQUEUE, _work_keys(node_id)))

    def close(self) -> None:
        self._sync.close()
