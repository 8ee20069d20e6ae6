"""Redis users per role (Redis ACLs): what each client of a Redis or FalkorDB server may run, and on which keys.

Why this exists: a password alone makes whoever holds it the server's superuser: CONFIG SET (which
can make Redis write files anywhere it may), MODULE LOAD, SHUTDOWN, FLUSHALL, DEBUG, and for
FalkorDB GRAPH.CONFIG, GRAPH.UDF (code run by the server) and GRAPH.DEBUG. The control plane needs
none of that, so its clients log in as users that cannot, and only the launcher (the `default`
user, for its health checks and SHUTDOWN) holds the administrator's password.

Passwords are given to the server as SHA-256 hashes (`#<hex>`), so neither its configuration nor
`ACL LIST` ever holds one in clear.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

#: what the graph store sends (graph_schema/cypher/falkordb_store.py, the `falkordb` client): queries,
#: read-only queries, the schema's constraints, plans (raw queries are checked for LOAD CSV), listing
#: and deleting graphs; and what every client does on connecting. Not GRAPH.CONFIG (it could lift the
#: memory and time limits), GRAPH.UDF (server-side code), GRAPH.DEBUG, GRAPH.BULK, GRAPH.COPY,
#: GRAPH.RESTORE, GRAPH.PASSWORD.
GRAPH_COMMANDS = (
    "GRAPH.QUERY", "GRAPH.RO_QUERY", "GRAPH.CONSTRAINT", "GRAPH.EXPLAIN", "GRAPH.LIST", "GRAPH.DELETE",
    "GRAPH.INFO", "GRAPH.MEMORY",
)
CONNECTION_COMMANDS = (
    "PING", "HELLO", "AUTH", "ECHO", "RESET", "CLIENT|SETINFO", "CLIENT|SETNAME", "CLIENT|GETNAME", "CLIENT|ID",
    "INFO|server",  # the `falkordb` client asks whether it talks to a Sentinel or a cluster; no other section
)

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RULE = re.compile(r"^[^\s\"'#>]+$")


@dataclass(frozen=True)
class RedisUser:
    """One ACL user: its name, its password (never printed), and its rules (keys, channels, commands)."""

    name: str
    password: str = field(repr=False)
    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"a Redis user name is 1-64 letters, digits, '_', '.' or '-': {self.name!r}")
        bad = [r for r in self.rules if not _RULE.match(r)]
        if bad:
            raise ValueError(f"ACL rules are single words without quotes, '#' or '>': {bad}")
        if not self.password:
            raise ValueError(f"user {self.name} needs a password")

    def config_line(self) -> str:
        """The `user` directive of a Redis configuration: everything reset first, the password hashed."""
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        return " ".join(["user", self.name, "reset", "on", f"#{digest}", *self.rules])


def graph_user(name: str, password: str, *, graphs: tuple[str, ...]) -> RedisUser:
    """A FalkorDB client that may run the control plane's GRAPH.* commands on these graphs' keys, and nothing else:
    no plain Redis command, no other key, no other database (no SELECT), no pub/sub channel."""
    bad = [g for g in graphs if not _NAME.match(g)]
    if bad:
        raise ValueError(f"graph names given to an ACL are 1-64 letters, digits, '_', '.' or '-': {bad}")
    keys = tuple(f"~{g}" for g in graphs)
    return RedisUser(name, password, ("resetchannels", *keys, *(f"+{c}" for c in (*GRAPH_COMMANDS, *CONNECTION_COMMANDS))))


#: Redis' own command categories, all of them but @admin and @dangerous (taken out again below, since a command
#: may be in several). A module's commands (FalkorDB's GRAPH.*) are in none of them, so they are not granted.
DATA_CATEGORIES = (
    "read", "write", "keyspace", "string", "list", "hash", "set", "sortedset", "bitmap", "hyperloglog", "geo", "stream",
    "pubsub", "scripting", "transaction", "connection", "blocking", "fast", "slow",
)


def broker_user(name: str, password: str) -> RedisUser:
    """The control plane on its broker (Celery's queues, node leases, the events doorbell): every key and channel
    and every data command, but no administration (CONFIG, MODULE, SHUTDOWN, ACL, DEBUG, REPLICAOF, ...), nothing
    Redis calls dangerous (FLUSHALL, KEYS, MIGRATE, INFO, ...) and no module command (on a FalkorDB server that is
    also the broker, this user cannot query the graph)."""
    return RedisUser(name, password, ("~*", "&*", *(f"+@{c}" for c in DATA_CATEGORIES), "-@admin", "-@dangerous"))

