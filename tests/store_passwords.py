"""The tests' own FalkorDB and Redis servers run as `controlplane up` runs its own: passwords on, a user per role.

Every server a test starts for the control plane gets a random administrator's password (its `default`
user: the fixtures' own clients, FLUSHDB between tests) and the two users of the embedded stack: a graph
user that may run only the graph commands (redis_acl.GRAPH_COMMANDS) and a broker user without
administration. The stores, stacks and processes under test log in as those users, so the whole suite
proves that the control plane works with passwords on and with nothing more than those roles allow.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
from graph_schema.redis_acl import CONNECTION_COMMANDS, GRAPH_COMMANDS, RedisUser, broker_user

GRAPH_USER = "graph"
BROKER_USER = "broker"


def any_graph_user(password: str) -> RedisUser:
    """The embedded graph user's commands, on any graph (tests use many graph names on one server)."""
    return RedisUser(GRAPH_USER, password, ("resetchannels", "~*", *(f"+{c}" for c in (*GRAPH_COMMANDS, *CONNECTION_COMMANDS))))


def server_config(data_dir: Path, **kwargs: Any) -> FalkorDBServerConfig:
    """A test server's configuration: passwords of its own for the administrator, the graph and the broker users."""
    users: tuple[RedisUser, ...] = (broker_user(BROKER_USER, secrets.token_urlsafe(12)),)
    if kwargs.get("graph", True):  # a plain Redis has no GRAPH.* commands to grant
        users += (any_graph_user(secrets.token_urlsafe(12)),)
    return FalkorDBServerConfig(data_dir=data_dir, password=secrets.token_urlsafe(12), users=users, **kwargs)


def graph_url(server: FalkorDBServer) -> str:
    """Where the control plane's graph store logs in: the graph user, database 0."""
    return server.user_url(GRAPH_USER)


def broker_url(server: FalkorDBServer, db: int) -> str:
    """Where the control plane's Celery, leases and doorbell log in: the broker user, database `db`."""
    return server.user_url(BROKER_USER, db)
