"""REDIS_URL may name a Redis, or the Sentinels of a replicated one: one parser, one client factory for both.

The broker (Celery), the event doorbell and the scheduler's lease all live in Redis. A
plain `redis://host:port/db` is one server: if it dies, they wait for it. With a replica
watched by Sentinels the URL names the Sentinels and the name of the primary they watch:

    sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/1?master=controlplane

(`sentinel://:password@...` when the Redis servers ask for one.) Every client then asks the
Sentinels where the primary is, and asks again when its connection to it breaks, so after a
failover it writes to the promoted replica. Celery gets the same as kombu's own
`sentinel://` transport (`celery_broker`).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from controlplane.domain.errors import InvalidInput

DEFAULT_MASTER = "controlplane"


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None


def parse_sentinel(url: str) -> SentinelURL | None:
    """The Sentinels of a `sentinel://` URL; None for any other URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "sentinel":
        return None
    password = None
    hosts = parts.netloc
    if "@" in hosts:
        auth, hosts = hosts.rsplit("@", 1)
        password = urllib.parse.unquote(auth.split(":", 1)[1]) if ":" in auth else None
    sentinels = []
    for hp in hosts.split(","):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput(f"a Sentinel address is host:port, got {hp!r}", field="REDIS_URL")
        sentinels.append((host, int(port)))
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise InvalidInput(f"the database is a number, got {db!r}", field="REDIS_URL")
    master = urllib.parse.parse_qs(parts.query).get("master", [DEFAULT_MASTER])[0]
    return SentinelURL(tuple(sentinels), master, int(db), password)


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client of the Redis `url` names (through its Sentinels: of the current primary)."""
    s = parse_sentinel(url)
    if s is None:
        return redis.Redis.from_url(url, **kwargs)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")}
    sentinel: Any = Sentinel(list(s.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)
    return cast(redis.Redis, sentinel.master_for(s.master, db=s.db, password=s.password))


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    s = parse_sentinel(url)
    if s is None:
        return aioredis.Redis.from_url(url, **kwargs)
    sentinel: Any = AsyncSentinel(list(s.sentinels), **kwargs)
    return cast(aioredis.Redis, sentinel.master_for(s.master, db=s.db, password=s.password))


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """The broker URL and transport options for Celery: kombu's `sentinel://a;sentinel://b` form for Sentinels."""
    s = parse_sentinel(url)
    if s is None:
        return url, {}
    auth = f":{urllib.parse.quote(s.password)}@" if s.password else ""
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{s.db}" for host, port in s.sentinels)
    return broker, {"master_name": s.master}
