"""Supervision writes and reads (restarts, stops, node loss, watches, events) for GremlinStore."""

from __future__ import annotations


class SupervisionMixin:
    pass
