"""The API as its own process (`controlplane api`, uvicorn) for HTTP benchmarks, with authentication on or off.

With it on, the client sends the admin token the API wrote on its first start, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx

from graph_schema.falkordb_server import find_free_port


@contextlib.contextmanager
def running_api(engine: str, graph_uri: str, redis_url: str, *, auth: bool) -> Iterator[tuple[str, dict[str, str]]]:
    """(GraphQL URL, headers to send) of a fresh API process over the given graph."""
    with tempfile.TemporaryDirectory() as tmp:
        port = find_free_port()
        env = {**os.environ, "GRAPH_BACKEND": engine, "GRAPH_URI": graph_uri, "GRAPH_NAME": "bench",
               "REDIS_URL": redis_url, "DATA_DIR": tmp, "AUTH_DISABLED": "false" if auth else "true"}
        api = subprocess.Popen([sys.executable, "-m", "controlplane", "api", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL)
        try:
            with httpx.Client(timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.get(f"http://127.0.0.1:{port}/healthz")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
            headers = {}
            if auth:
                headers["Authorization"] = "Bearer " + (Path(tmp) / "admin.token").read_text().strip()
            yield f"http://127.0.0.1:{port}/graphql", headers
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=20)


def graph_uri(store: Any, server: Any) -> str:
    if server is not None:
        return str(server.url)
    return str(store.uri if hasattr(store, "uri") else store.remote.url)  # Neo4j, Gremlin


def redis_url(server: Any) -> str:
    return str(server.redis_url(3)) if server else "redis://127.0.0.1:1/0"


def delta(on: float, off: float) -> str:
    return f"{(on - off) / off * 100:+.1f}%"


def auth_overhead_us(requests: int = 20_000) -> tuple[float, float]:
    """Microseconds the trust layer adds to one HTTP request, in process (no network, no noise from the graph):
    TrustMiddleware (Host, Origin, bearer token verified, cached after the first) in front of a no-op app,
    (auth on, auth off)."""
    import asyncio

    from controlplane.api.auth import Browsers, Guard, TrustMiddleware
    from controlplane.auth import KeyRing, Tokens
    from controlplane.domain.capabilities import Kind, Role, default_capability

    tokens = Tokens(KeyRing.generate())
    cap = default_capability(Kind.OPERATOR, "admin", role=Role.ADMIN, expires_at=time.time() + 3600)
    token = tokens.issue(Kind.OPERATOR, "admin", cap, role=Role.ADMIN).token

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def measure(tokens_: Tokens | None) -> float:
        mw = TrustMiddleware(inner, Guard(cast(Any, None), tokens_, Browsers.local("127.0.0.1", 8000)))
        scope = {"type": "http", "path": "/graphql", "method": "POST", "query_string": b"",
                 "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {token}".encode()),
                             (b"content-type", b"application/json")]}
        for _ in range(100):
            await mw(dict(scope), None, None)
        t = time.perf_counter()
        for _ in range(requests):
            await mw(dict(scope), None, None)
        return (time.perf_counter() - t) / requests * 1e6

    return asyncio.run(measure(tokens)), asyncio.run(measure(None))
