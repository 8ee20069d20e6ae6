"""Prometheus metrics of the API: GraphQL operations by root field, their outcome, duration and error codes.

Each app has its own registry, so building several apps in one process (tests)
never collides. Operations are labelled by the root fields they ask for (bounded
by the schema), not by client-chosen operation names (unbounded).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from graphql import FieldNode, OperationDefinitionNode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from strawberry.extensions import SchemaExtension

BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "controlplane_graphql_operations",
            "GraphQL operations by root fields and outcome (ok or error).",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "controlplane_graphql_operation_seconds",
            "Time to answer a GraphQL operation, by root fields.",
            ["operation"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "controlplane_graphql_errors", "GraphQL errors returned, by code.", ["code"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class OperationMetrics(SchemaExtension):
    """Times every operation and counts it; must run outside ErrorMapping to see the final error codes."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        ctx = self.execution_context
        operation = _root_fields(ctx.graphql_document, ctx.operation_name)
        errors = getattr(ctx.result, "errors", None) or []
        self.metrics.seconds.labels(operation).observe(time.perf_counter() - started)
        self.metrics.operations.labels(operation, "error" if errors else "ok").inc()
        for e in errors:
            self.metrics.errors.labels(str((e.extensions or {}).get("code", "UNKNOWN"))).inc()


def _root_fields(document: object, operation_name: str | None) -> str:
    definitions = getattr(document, "definitions", None)
    if not definitions:
        return "(invalid)"
    for d in definitions:
        if isinstance(d, OperationDefinitionNode) and (operation_name is None or (d.name and d.name.value == operation_name)):
            names = sorted({s.name.value for s in d.selection_set.selections if isinstance(s, FieldNode)})
            return f"{d.operation.value}:{'+'.join(names[:4]) or '(fragments)'}"
    return "(unknown)"
