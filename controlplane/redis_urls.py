"""REDIS_URL may name a Redis, or the Sentinels of a replicated one: one parser, one client factory for both.

The broker (Celery), the event doorbell and the scheduler's lease all live in Redis. A
plain `redis://host:port/db` is one server: if it dies, they wait for it. With a replica
watched by Sentinels the URL names the Sentinels and the name of the primary they watch:

    sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/1?master=controlplane

(`sentinel://:password@...` when the Redis servers ask for one.) Every client then asks the
Sentinels where the primary is, and asks again when its connection to it breaks, so after a
failover it writes to the promoted replica. Celery gets the same as kombu's own
`sentinel://` transport (`celery_broker`).

Over TLS the URL is `rediss://`, and the certificates to trust travel in it as redis-py's own
query arguments (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs=required`), which
`with_tls` adds from the settings: every redis-py client reads them from the URL, and
`celery_ssl` turns them into Celery's `broker_use_ssl` (kombu would otherwise accept any
certificate at all).
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
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


_TLS_ARGS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


def with_tls(url: str, *, ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None,
             field: str = "REDIS_URL") -> str:
    """A rediss:// URL carrying the certificates to trust (and to show) as redis-py query arguments, always verifying.

    TLS files given for a plain redis:// URL are a mistake to say, not to ignore."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "rediss":
        if ca_file or cert_file or key_file:
            raise InvalidInput(f"TLS certificates are set, but the address is {parts.scheme}://: use rediss://", field=field)
        return url
    query = dict(urllib.parse.parse_qsl(parts.query))
    given = {"ssl_ca_certs": ca_file, "ssl_certfile": cert_file, "ssl_keyfile": key_file}
    query |= {k: str(v) for k, v in given.items() if v is not None}
    query["ssl_cert_reqs"] = "required"
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def celery_ssl(url: str) -> tuple[str, dict[str, Any] | None]:
    """The broker URL without its TLS query arguments, and Celery's `broker_use_ssl` for them (None: no TLS)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "rediss":
        return url, None
    query = dict(urllib.parse.parse_qsl(parts.query))
    options: dict[str, Any] = {k: query.pop(k) for k in _TLS_ARGS if k in query}
    requirement = options.get("ssl_cert_reqs", "required")
    options["ssl_cert_reqs"] = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(requirement, ssl.CERT_REQUIRED)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), options
