"""One shape for the vertices, edges and paths a raw query returns, whatever the engine.

FalkorDB, Neo4j and Gremlin Server each hand back their own element objects (with
integer ids, element-id strings or T.id values, labels as a set or one string, edge
ends as ids or as half-filled vertices). A graph browser draws the answer of any of
them, so every adapter turns its elements into these plain dicts:

- vertex: {"~element": "vertex", "id", "labels", "properties"}
- edge:   {"~element": "edge", "id", "type", "source", "target", "properties"}
- path:   {"~element": "path", "vertices", "edges"}

`id`, `source` and `target` are the engine's own element ids as text (the `id`
property is the control plane's id, in `properties`); `source` and `target` are
the ids of the vertices the edge goes out of and into. The "~" keeps an answer's
own maps (`RETURN {labels: ...}`) from being taken for elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ELEMENT = "~element"


def vertex(id: Any, labels: Iterable[str] | None, properties: Mapping[str, Any]) -> dict[str, Any]:
    return {ELEMENT: "vertex", "id": str(id), "labels": sorted(labels or ()), "properties": dict(properties)}


def edge(id: Any, type: str, source: Any, target: Any, properties: Mapping[str, Any]) -> dict[str, Any]:
    return {ELEMENT: "edge", "id": str(id), "type": type, "source": str(source), "target": str(target),
            "properties": dict(properties)}


def path(vertices: Iterable[dict[str, Any]], edges: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {ELEMENT: "path", "vertices": list(vertices), "edges": list(edges)}
