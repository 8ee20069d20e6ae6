"""One Gremlin Server connection: submit a bytecode traversal, retry optimistic conflicts, map results.

Why this exists apart from the store: TinkerTransactionGraph (and JanusGraph, Neptune)
detect write-write conflicts at commit and answer with an error instead of waiting on
a lock as Neo4j does. Every mutation of the store is one idempotent traversal whose
precondition is re-read when it runs, so the right answer to a conflict is to run the
same traversal again; that policy, and turning driver errors into the control plane's
errors, live here once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gremlin_python.driver.aiohttp.transport import AiohttpTransport
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource
from gremlin_python.process.traversal import T
from gremlin_python.statics import long

from controlplane.domain.errors import QueryTimeout, Unavailable

#: what TinkerTransactionGraph says when another transaction committed an element first, and
#: what addV says when a concurrent create of the same id committed between our read and our write
_RETRYABLE = ("Conflict: element modified in another transaction", "with id already exists")
_INT32 = range(-(2**31), 2**31)
log = logging.getLogger(__name__)


class _DropConflictLogs(logging.Filter):
    """gremlinpython logs every error answer at ERROR; a conflict we retry is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in record.getMessage() for m in _RETRYABLE)


_FILTER = _DropConflictLogs()


def value(v: Any) -> Any:
    """A Python value as a traversal argument: ints beyond 32 bits travel as Long (GraphBinary)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if v in _INT32 else long(v)
    if isinstance(v, (list, tuple)):
        return [value(x) for x in v]
    if isinstance(v, dict):
        return {k: value(x) for k, x in v.items()}
    return v


def split_element(m: dict[Any, Any]) -> tuple[str, dict[str, Any]]:
    """An elementMap() answer as (label, properties): the same dict the Cypher engines return."""
    props = {k: v for k, v in m.items() if isinstance(k, str)}
    return str(m.get(T.label, "")), props


def props_of(m: dict[Any, Any]) -> dict[str, Any]:
    return split_element(m)[1]


#: gremlinpython's own limit of one message (10 MiB)
DEFAULT_MAX_CONTENT_LENGTH = 10 * 1024 * 1024


@dataclass(frozen=True)
class Access:
    """How a client logs in to a Gremlin Server (SASL PLAIN: a SimpleAuthenticator's user and password) and which
    certificates it trusts over wss:// (a CA file; a client certificate and key for servers that ask for one)."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def options(self, url: str, *, max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH) -> dict[str, Any]:
        """The keyword arguments of gremlinpython's connections and clients for this access to `url` (messages up to
        `max_content_length` bytes)."""
        out: dict[str, Any] = {}
        if self.user:
            out.update(username=self.user, password=self.password or "")
        if (self.tls_ca_file or self.tls_cert_file) and not url.startswith("wss://"):
            raise Unavailable(f"TLS settings are given, but {url} is not a wss:// address")
        if url.startswith("wss://"):  # the system's CAs unless a CA file is given
            context = ssl.create_default_context(cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
            if self.tls_cert_file:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file) if self.tls_key_file else None)
            out["transport_factory"] = functools.partial(
                TlsTransport, ssl_options=context, max_content_length=max_content_length)
        else:
            out["max_content_length"] = max_content_length
        return out


class TlsTransport(AiohttpTransport):  # type: ignore[misc]  # gremlinpython has no types
    """gremlinpython's websocket transport over TLS, closed completely.

    TLS ends with a close_notify exchange, which asyncio runs after the session is closed; gremlinpython closes its
    event loop at once, so every TLS connection it closes leaves its socket open (a ResourceWarning, a file
    descriptor until the garbage collector). This one turns its loop until the socket is really closed (at most
    `CLOSE_WAIT_S`, then the socket is dropped as before).
    """

    CLOSE_WAIT_S = 2.0

    def connect(self, url: str, headers: Any = None) -> None:
        try:
            super().connect(url, headers)
        except BaseException:
            self.close()  # now, not from the garbage collector (which may run inside another loop)
            raise

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def close_and_wait() -> None:
            websocket: Any = getattr(self, "_websocket", None)  # gremlinpython's, untyped
            session: Any = getattr(self, "_client_session", None)
            sock = websocket.get_extra_info("socket") if websocket is not None else None
            if websocket is not None and not websocket.closed:
                await websocket.close()
            if session is not None and not session.closed:
                await session.close()
            self._websocket = self._client_session = None
            deadline = time.monotonic() + self.CLOSE_WAIT_S
            while sock is not None and sock.fileno() != -1 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)

        try:
            self._loop.run_until_complete(close_and_wait())
        finally:
            self._loop.close()


class Remote:
    """A pooled connection to the traversal source `g` of one Gremlin Server.

    Gremlin Server 3.8 sometimes never answers a request whose commit lost a conflict,
    and gremlinpython then keeps that connection checked out for ever; with every
    connection lost that way, the next request would wait for the pool for ever. So
    requests in flight are bounded by the pool size (waiting for a free connection
    cannot block), every answer is awaited at most `answer_timeout_s`, and a request
    that got no answer is sent again on a fresh connection (every write is idempotent).
    """

    def __init__(
        self, url: str, *, traversal_source: str = "g", pool_size: int = 8, retry_for_s: float = 60.0,
        answer_timeout_s: float = 10.0, read_timeout_s: float | None = None, access: Access | None = None,
    ) -> None:
        """`read_timeout_s`: reads carry evaluationTimeout, so Gremlin Server itself stops them after this long;
        `access`: credentials and TLS trust for every connection this makes."""
        logging.getLogger("gremlinpython").addFilter(_FILTER)
        self.url = url
        self.access = access or Access()
        self._source = traversal_source
        self._pool_size = pool_size
        self._retry_for_s = retry_for_s
        self._read_timeout_ms = int(read_timeout_s * 1000) if read_timeout_s else None
        self._answer_timeout_s = max(answer_timeout_s, (read_timeout_s or 0) + 5)
        self._slots = threading.BoundedSemaphore(pool_size)
        self._lock = threading.Lock()
        self._connect()

    def _connect(self) -> None:
        try:
            self._conn = DriverRemoteConnection(
                self.url, self._source, pool_size=self._pool_size,
                **self.access.options(self.url, max_content_length=64 * 1024 * 1024),
            )
        except Exception as exc:  # noqa: BLE001 - any failure to connect is the same to the caller
            raise Unavailable(f"Gremlin Server at {self.url} is unreachable: {exc}") from exc
        self.g: GraphTraversalSource = traversal().with_(self._conn)

    def _reconnect(self, stale: DriverRemoteConnection) -> None:
        with self._lock:
            if self._conn is not stale:
                return  # another thread already did
            log.warning("Gremlin Server at %s did not answer in %.0fs: reconnecting", self.url, self._answer_timeout_s)
            old = self._conn
            self._connect()
        threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()

    def run(self, build: Callable[[GraphTraversalSource], GraphTraversal], *, write: bool = True) -> list[Any]:
        """Build the traversal and iterate it to a list; rerun it when it lost an optimistic conflict
        or got no answer. `build` is called again for each attempt (a traversal cannot be resubmitted).
        """
        deadline = time.monotonic() + self._retry_for_s
        delay = 0.002
        while True:
            conn = self._conn
            source = traversal().with_(conn)
            if not write and self._read_timeout_ms:
                source = source.with_("evaluationTimeout", self._read_timeout_ms)
            try:
                return self._submit(conn, build(source))
            except _NoAnswer:
                if time.monotonic() > deadline:
                    raise Unavailable(f"Gremlin Server at {self.url} did not answer") from None
                self._reconnect(conn)
                continue
            except GremlinServerError as exc:
                if not write and getattr(exc, "status_code", None) == 598:
                    raise QueryTimeout(f"stopped after {(self._read_timeout_ms or 0) / 1000:g}s", field="query") from None
                if not (write and self._retryable(exc)) or time.monotonic() > deadline:
                    raise
            except Exception as exc:
                # aiohttp's client errors are not all OSErrors; a connection the server closed (it died)
                # is a RuntimeError of gremlinpython's transport
                if isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.startswith("aiohttp") or (
                    isinstance(exc, RuntimeError) and "Connection was already closed" in str(exc)
                ):
                    raise Unavailable(f"Gremlin Server at {self.url} is unreachable: {exc}") from exc
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    def _retryable(self, exc: GremlinServerError) -> bool:
        """Whether the server refused a write that a rerun may commit (an engine names its own conflicts)."""
        return _is_retryable(exc)

    def _submit(self, conn: DriverRemoteConnection, t: GraphTraversal) -> list[Any]:
        """Send the bytecode on a free connection and wait for the answer at most answer_timeout_s."""
        if not self._slots.acquire(timeout=self._answer_timeout_s):
            raise _NoAnswer()
        try:
            remote = conn.submit_async(t.bytecode).result(timeout=self._answer_timeout_s)
            out: list[Any] = []
            for traverser in remote.traversers:
                out.extend([traverser.object] * max(1, int(traverser.bulk)))
            return out
        except FutureTimeout:
            raise _NoAnswer() from None
        finally:
            self._slots.release()

    def client(self, traversal_source: str, **kwargs: Any) -> Client:
        """A one-connection script client of this server (raw text queries, a schema script), with the same access."""
        return Client(self.url, traversal_source, pool_size=1, **self.access.options(self.url), **kwargs)

    def one(self, build: Callable[[GraphTraversalSource], GraphTraversal], *, write: bool = True) -> Any:
        rows = self.run(build, write=write)
        return rows[0] if rows else None

    def close(self) -> None:
        self._conn.close()


class _NoAnswer(Exception):
    """The server did not answer in time (or no connection came free)."""


def _close_quietly(conn: DriverRemoteConnection) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a connection we are abandoning
        log.debug("closing an abandoned Gremlin connection failed", exc_info=True)


def _is_retryable(exc: GremlinServerError) -> bool:
    return any(m in str(exc) for m in _RETRYABLE)
