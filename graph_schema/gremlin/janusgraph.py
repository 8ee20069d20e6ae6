"""JanusGraph (over Cassandra, or any storage backend) as the fourth engine: the Gremlin adapter, where JanusGraph differs.

Every traversal is GremlinStore's (the same bytecode runs on TinkerGraph and JanusGraph);
what differs lives here and in janusgraph_schema.py:

- **Isolation by locks.** A sessionless traversal is one JanusGraph transaction, but over an
  eventually consistent store it detects no conflict unless the keys it writes are declared
  with ConsistencyModifier.LOCK. bootstrap() declares them (janusgraph_schema.py says which
  and why); a commit that loses a lock or finds a locked value changed since it was read is
  refused, and the remote reruns the traversal, which re-reads its precondition.
- **Schema.** Property keys with types, vertex and edge labels, composite indexes for the
  equality lookups, a unique locked index on `id`: created by bootstrap() through
  JanusGraph's management API (a Groovy script with bindings: the only non-bytecode request).
- **Vertex ids** are the control plane's own strings (graph.set-vertex-id and
  graph.allow-custom-vid-types, set when the graph is created).
- **Lists** travel as JSON text (JanusGraph stores no List; see janusgraph_schema.py).
- **Several servers.** `url` may name several JanusGraph Servers over one storage cluster,
  comma-separated: each store starts on one of them (spread by process) and moves to the
  next when its server stops answering; every write is idempotent, so a write whose answer
  was lost with its server is safely sent again to another one.
- **Client and server versions.** JanusGraph 1.1 is TinkerPop 3.7.3; gremlinpython 3.8 speaks
  GraphBinary 1.0 to it, as to a 3.8 server. Steps added in 3.8 do not exist there, the one
  that matters being `discard()`, which 3.8's `iterate()` appends: the store never calls
  iterate() (it reads every answer through Remote).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.driver.serializer import GraphSONSerializersV3d0
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Scope

from controlplane.domain.errors import Unavailable
from graph_schema.gremlin.janusgraph_schema import BOOTSTRAP_SCRIPT, bootstrap_bindings, decode, encode
from graph_schema.gremlin.raw import READ_ONLY_SOURCE
from graph_schema.gremlin.remote import Access, Remote
from graph_schema.gremlin.store import GremlinStore

log = logging.getLogger(__name__)

#: what a JanusGraph commit says when a lock or an expected value check failed, or when a concurrent
#: create of the same vertex id committed between our read and our write: a rerun may commit
_RETRYABLE = (
    "Lock", "lock", "Expected value mismatch", "Could not commit transaction", "PermanentLockingException",
    "TemporaryLockingException", "TemporaryBackendException", "with given id already exists",
    "Conflict: element modified in another transaction", "unique", "Timed out", "timed out",
)


class _DropRetriedLogs(logging.Filter):
    """gremlinpython logs every error answer at ERROR; a lock conflict we rerun is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in record.getMessage() for m in _RETRYABLE)


class JanusGraphRemote(Remote):
    """A Remote over one of several JanusGraph Servers, moving to the next when one stops answering."""

    def __init__(self, urls: Sequence[str], *, traversal_source: str = "g", pool_size: int = 8, retry_for_s: float = 120.0,
                 answer_timeout_s: float = 60.0, start_at: int | None = None, read_timeout_s: float | None = None,
                 access: Access | None = None) -> None:
        # a 500-allocation create takes one lock per new id: 10-40 s on a busy 2-core machine, so an answer
        # is awaited longer than on TinkerGraph before the request is sent again
        logging.getLogger("gremlinpython").addFilter(_DropRetriedLogs())
        self.urls = list(urls)
        # spread processes over the servers (or start where told)
        self._at = (os.getpid() if start_at is None else start_at) % len(self.urls)
        super().__init__(self.urls[self._at], traversal_source=traversal_source, pool_size=pool_size,
                         retry_for_s=retry_for_s, answer_timeout_s=answer_timeout_s, read_timeout_s=read_timeout_s,
                         access=access)

    def _connect(self) -> None:
        errors: list[str] = []
        for step in range(len(self.urls)):
            at = (self._at + step) % len(self.urls)
            self.url = self.urls[at]
            try:
                super()._connect()
            except Unavailable as exc:
                errors.append(str(exc))
                continue
            if at != self._at:
                log.warning("JanusGraph: moved to %s", self.url)
            self._at = at
            return
        raise Unavailable("no JanusGraph Server answers: " + "; ".join(errors))

    def _failover(self, stale: DriverRemoteConnection) -> None:
        with self._lock:
            if self._conn is not stale:
                return  # another thread already moved
            old = self._conn
            self._at = (self._at + 1) % len(self.urls)
            self._connect()
        try:
            old.close()
        except Exception:  # noqa: BLE001 - a connection to a server that is gone
            pass

    def run(self, build: Callable[[GraphTraversalSource], GraphTraversal], *, write: bool = True) -> list[Any]:
        deadline = time.monotonic() + self._retry_for_s
        while True:
            conn = self._conn
            try:
                return super().run(build, write=write)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
            try:
                self._failover(conn)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _retryable(self, exc: GremlinServerError) -> bool:
        return any(m in str(exc) for m in _RETRYABLE)

    def _submit(self, conn: DriverRemoteConnection, t: GraphTraversal) -> list[Any]:
        t.bytecode = encode(t.bytecode)
        return [decode(x) for x in super()._submit(conn, t)]

    def script(self, text: str, bindings: dict[str, Any]) -> list[Any]:
        """A Groovy script on the current server (the schema bootstrap only)."""
        client = self.client(self._source)
        try:
            return list(client.submit(text, bindings).all().result())
        finally:
            client.close()


class JanusGraphStore(GremlinStore):
    """The GraphStore on JanusGraph Server(s): GremlinStore's traversals, JanusGraph's schema, locks and failover."""

    engine = "janusgraph"

    def __init__(self, url: str | Sequence[str], *, traversal_source: str = "g", pool_size: int = 8,
                 start_at: int | None = None, read_timeout_s: float | None = None, access: Access | None = None) -> None:
        """`url`: one server, or several (a list or comma-separated); `start_at`: which first (default: by process id);
        `access`: credentials and TLS trust, the same for every server."""
        urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
        self._janus = JanusGraphRemote([u for u in urls if u], traversal_source=traversal_source, pool_size=pool_size,
                                        start_at=start_at, read_timeout_s=read_timeout_s, access=access)
        self._remote = self._janus

    @property
    def url(self) -> str:
        """The server this store talks to now."""
        return self._remote.url

    def bootstrap(self) -> None:
        """Property keys (typed, the compare-and-set ones locked), labels, composite indexes; safe to repeat.

        Two processes bootstrapping at once may collide on JanusGraph's own schema locks: the
        loser tries again and then finds the schema in place.
        """
        deadline = time.monotonic() + 120
        while True:
            try:
                self._janus.script(BOOTSTRAP_SCRIPT, bootstrap_bindings())
                break
            except GremlinServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.ping()

    def _raw_client(self) -> Client:
        """GraphSON 3 for operators' raw queries: an element's property and edge ids are JanusGraph
        RelationIdentifiers, a custom GraphBinary type gremlinpython cannot read; in GraphSON they
        arrive as plain typed maps."""
        return self._remote.client(READ_ONLY_SOURCE, message_serializer=GraphSONSerializersV3d0())

    def clear(self) -> None:
        # in small transactions: dropping a vertex drops its locked keys and unique index entry, each a lock
        while self._remote.one(lambda g: g.V().limit(25).fold().side_effect(__.unfold().drop()).count(Scope.local)):
            pass
