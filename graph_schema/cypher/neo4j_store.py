"""Neo4j through the official driver: the production engine.

Neo4j runs transactions at read-committed isolation, so each statement first
"touches" the vertices it checks (REMOVE of a property that never exists) to
take their write locks before reading them (see statements.py). Writes run as
managed transactions, which the driver retries on transient errors (deadlocks
included); every statement is idempotent, so a retry never doubles an effect.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path as FilePath
from typing import Any

from neo4j import READ_ACCESS, GraphDatabase, Query, RoutingControl, TrustCustomCAs
from neo4j.exceptions import (
    ClientError,
    ConstraintError,
    CypherSyntaxError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from neo4j.graph import Node as NNode
from neo4j.graph import Path, Relationship

from controlplane.domain.errors import InvalidInput, QueryTimeout, Unavailable
from controlplane.domain.records import RawResult
from graph_schema import raw_elements
from graph_schema.cypher.base import CypherStore, Row

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE CONSTRAINT actor_id IF NOT EXISTS FOR (n:Actor) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT node_id IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT allocation_id IF NOT EXISTS FOR (n:Allocation) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT gpu_id IF NOT EXISTS FOR (n:Gpu) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT event_id IF NOT EXISTS FOR (n:Event) REQUIRE n.id IS UNIQUE",
    "CREATE INDEX event_allocation IF NOT EXISTS FOR (n:Event) ON (n.allocation_id)",
    "CREATE INDEX event_at IF NOT EXISTS FOR (n:Event) ON (n.at)",
    "CREATE INDEX allocation_updated IF NOT EXISTS FOR (n:Allocation) ON (n.updated_at)",
    "CREATE CONSTRAINT job_id IF NOT EXISTS FOR (n:Job) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT task_id IF NOT EXISTS FOR (n:Task) REQUIRE n.id IS UNIQUE",
    "CREATE INDEX task_job IF NOT EXISTS FOR (n:Task) ON (n.job_id)",
    "CREATE INDEX node_cpu_free IF NOT EXISTS FOR (n:Node) ON (n.cpu_free)",
    "CREATE INDEX allocation_state IF NOT EXISTS FOR (n:Allocation) ON (n.state)",
    "CREATE INDEX allocation_node IF NOT EXISTS FOR (n:Allocation) ON (n.node_id)",
    "CREATE INDEX allocation_parent IF NOT EXISTS FOR (n:Allocation) ON (n.parent_id)",
    "CREATE INDEX node_status IF NOT EXISTS FOR (n:Node) ON (n.status)",
)


def _browse(value: Any) -> Any:
    if isinstance(value, NNode):
        return raw_elements.vertex(value.element_id, value.labels, dict(value.items()))
    if isinstance(value, Relationship):
        start, end = value.start_node, value.end_node
        return raw_elements.edge(value.element_id, value.type, start.element_id if start is not None else None,
                                 end.element_id if end is not None else None, dict(value.items()))
    if isinstance(value, Path):
        return raw_elements.path([_browse(n) for n in value.nodes], [_browse(r) for r in value.relationships])
    if isinstance(value, dict):
        return {k: _browse(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_browse(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (NNode, Relationship)):
        return dict(value.items())
    return value


class Neo4jStore(CypherStore):
    engine = "neo4j"

    def __init__(
        self, uri: str, *, user: str | None = None, password: str | None = None, database: str | None = None,
        read_timeout_s: float | None = None, tls_ca_file: FilePath | None = None,
    ) -> None:
        """`read_timeout_s`: reads run as transactions that Neo4j itself stops after this long; `tls_ca_file`: Bolt over
        TLS, the server's certificate checked against these CAs (bolt+s:// and neo4j+s:// alone trust the system's)."""
        super().__init__()
        self.uri = uri
        auth = (user, password) if user and password else None
        tls: dict[str, Any] = {}
        if tls_ca_file is not None:
            # the driver takes custom CAs only with the plain schemes and encrypted=True
            scheme, rest = uri.split("://", 1)
            uri = f"{scheme.split('+', 1)[0]}://{rest}"
            tls = {"encrypted": True, "trusted_certificates": TrustCustomCAs(str(tls_ca_file))}
        self._driver = GraphDatabase.driver(uri, auth=auth, max_connection_pool_size=64, **tls)
        self._database = database
        self._read_timeout_s = read_timeout_s

    def _run(self, routing: RoutingControl, query: str, params: dict[str, Any]) -> list[Row]:
        timeout = self._read_timeout_s if routing is RoutingControl.READ else None
        try:
            records, _, _ = self._driver.execute_query(
                Query(self._dialect(query), timeout=timeout), params, database_=self._database, routing_=routing
            )
        except (ServiceUnavailable, SessionExpired) as exc:
            raise Unavailable(f"Neo4j is unreachable: {exc}") from exc
        except ClientError as exc:
            if timeout is not None and "TransactionTimedOut" in (exc.code or ""):
                raise QueryTimeout(f"stopped after {timeout:g}s", field="query") from None
            raise
        return [[_plain(v) for v in r.values()] for r in records]

    def _read(self, query: str, params: dict[str, Any]) -> list[Row]:
        return self._run(RoutingControl.READ, query, params)

    def _write(self, query: str, params: dict[str, Any]) -> list[Row]:
        try:
            return self._run(RoutingControl.WRITE, query, params)
        except ConstraintError:
            # A concurrent repeat of the same create committed first: report "nothing written";
            # the caller reads back what exists.
            return []

    def raw_query(self, *, text: str, timeout_s: float, limit: int) -> RawResult:
        started = time.perf_counter()
        try:
            with self._driver.session(database=self._database, default_access_mode=READ_ACCESS) as session:
                result = session.run(Query(text, timeout=timeout_s))
                columns = tuple(result.keys())
                rows: list[tuple[Any, ...]] = []
                truncated = False
                for record in result:
                    if len(rows) == limit:
                        truncated = True
                        break
                    rows.append(tuple(_browse(v) for v in record.values()))
                result.consume()
        except (ServiceUnavailable, SessionExpired) as exc:
            raise Unavailable(f"Neo4j is unreachable: {exc}") from exc
        except CypherSyntaxError as exc:
            raise InvalidInput(exc.message or str(exc), field="query") from None
        except ClientError as exc:
            code = exc.code or ""
            if "AccessMode" in code or "ForbiddenDueToTransactionType" in code:
                raise InvalidInput(f"read-only: this endpoint never writes ({exc.message})", field="query") from None
            if "TransactionTimedOut" in code or "Terminated" in code:
                raise QueryTimeout(f"stopped after {timeout_s:g}s", field="query") from None
            raise InvalidInput(exc.message or str(exc), field="query") from None
        except TransientError as exc:
            if "Timeout" in (exc.code or "") or "Terminated" in (exc.code or ""):
                raise QueryTimeout(f"stopped after {timeout_s:g}s", field="query") from None
            raise
        return RawResult(engine=self.engine, language="cypher", columns=columns, rows=tuple(rows),
                         truncated=truncated, elapsed_ms=(time.perf_counter() - started) * 1000)

    def bootstrap(self) -> None:
        for statement in _SCHEMA:
            self._driver.execute_query(statement, database_=self._database)
        self._driver.execute_query("CALL db.awaitIndexes(60)", database_=self._database)

    def clear(self) -> None:
        self._write("MATCH (n) DETACH DELETE n", {})

    def close(self) -> None:
        try:
            self._driver.close()
        except (BufferError, OSError) as exc:
            # a query still running in another thread (a live subscription's last read) while the
            # driver says goodbye on the same connection: the connection is gone either way
            log.debug("Neo4j driver closed with a query in flight: %s", exc)

