"""One settings object, read once from flags and environment (GRAPH_BACKEND, GRAPH_URI, REDIS_URL, ...).

Nothing reads the environment at import time: `Settings()` is built by the
CLI (or a test) and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.domain.errors import InvalidInput

#: the running embedded stack's addresses, in the data directory (written by `controlplane up`)
STACK_FILE = "stack.json"

Backend = Literal["falkordb", "neo4j", "gremlin", "janusgraph"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    graph_backend: Backend = "falkordb"
    #: falkordb: redis://host:port ; neo4j: bolt://host:port or neo4j://... ; gremlin: ws://host:port/gremlin ;
    #: janusgraph: ws://host:port/gremlin, or several JanusGraph Servers comma-separated (clients spread, fail over).
    #: Empty: the embedded server (FalkorDB only).
    graph_uri: str | None = Field(None, repr=False)
    #: Neo4j's user and password; a Gremlin or JanusGraph Server's (SimpleAuthenticator). FalkorDB and Redis take theirs
    #: in the URL: redis://user:password@host:port (rediss:// over TLS)
    graph_user: str | None = None
    graph_password: str | None = Field(None, repr=False)
    graph_name: str = "controlplane"
    #: Celery's broker, redis://[user:password@]host:port/db (rediss:// over TLS) or sentinel://... Empty: the embedded
    #: broker of `controlplane up`.
    redis_url: str | None = Field(None, repr=False)
    data_dir: Path = Path(".controlplane")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    heartbeat_s: float = Field(1.0, gt=0, le=60)
    #: how often a node agent mirrors its lease (kept in Redis) to the graph's `heartbeat_at`
    heartbeat_mirror_s: float = Field(5.0, gt=0, le=3600)
    #: a node whose last heartbeat is older than this is declared lost by the reaper
    node_grace_s: float = Field(3.0, gt=0, le=3600)
    #: how often the (single, locked) scheduler reaps nodes and reconciles stuck allocations
    scheduler_interval_s: float = Field(0.5, gt=0, le=60)
    #: an allocation stuck in `placed` this long is dispatched again; in `starting` this long, failed
    placed_deadline_s: float = Field(30.0, gt=0)
    starting_deadline_s: float = Field(60.0, gt=0)
    #: user-facing reads (traversals, descendants, events) stop after this long, on the engine itself
    query_timeout_s: float = Field(10.0, gt=0, le=60)
    #: at most this many expensive user queries (raw, traverse, descendants) run at once per API process;
    #: one more waits query_wait_s, then is refused BUSY
    max_concurrent_queries: int = Field(4, ge=1, le=256)
    query_wait_s: float = Field(2.0, ge=0, le=60)
    #: retention: events older than this, or beyond this many (the oldest first), are pruned in the background
    retention_events_max_age_s: float = Field(7 * 86_400.0, gt=0)
    retention_events_max_count: int = Field(1_000_000, ge=1)
    #: ended allocations nothing depends on (no children, no restart due) older than this, or beyond this many
    retention_allocations_max_age_s: float = Field(7 * 86_400.0, gt=0)
    retention_allocations_max_count: int = Field(100_000, ge=1)
    #: how often the leading scheduler prunes, and how many rows one statement deletes at most
    retention_interval_s: float = Field(60.0, gt=0, le=86_400)
    retention_batch: int = Field(500, ge=1, le=10_000)
    #: GraphQL query depth limit (nesting of fields) and traversal limits
    max_query_depth: int = Field(12, ge=2, le=64)
    max_descendants: int = Field(10_000, ge=1, le=1_000_000)
    # --- trust (controlplane.auth): keys, tokens, browsers ---
    #: where the Ed25519 keys live (default <data_dir>/keys): signing.pem (0600) and verify/*.pem
    auth_keys_dir: Path | None = None
    #: the signing key as PEM text, or a file holding it (deployments); else the keys directory's
    auth_signing_key: str | None = None
    auth_signing_key_file: Path | None = None
    #: more public keys whose tokens are accepted (comma-separated files): rotation, other issuers
    auth_verify_key_files: str | None = None
    #: no authentication at all (only to measure its cost): refused unless the API listens on loopback
    auth_disabled: bool = False
    admin_token_ttl_s: float = Field(30 * 86400.0, gt=0)
    #: an allocation's token also ends with its incarnation, whichever comes first
    allocation_token_ttl_s: float = Field(365 * 86400.0, gt=0)
    #: the life of a node credential (what a node agent gets when it joins; revoke it to end it sooner)
    node_token_ttl_s: float = Field(365 * 86400.0, gt=0)
    #: where a node agent keeps its credential (0600), its session and its lock; default <data_dir>/nodes/<node>
    agent_state_dir: Path | None = None
    #: Host names (comma-separated) the API answers to besides its listen address; Origins allowed besides its own
    api_allowed_hosts: str | None = None
    api_allowed_origins: str | None = None
    #: the API address allocations are told (CONTROLPLANE_API_URL); default http://<api_host>:<api_port>
    api_public_url: str | None = None

    # --- the embedded FalkorDB's limits (`controlplane up`; a FalkorDB of your own is limited by its FALKORDB_ARGS) ---
    #: the most memory one query may take (QUERY_MEM_CAPACITY); a query past it fails, the server goes on
    falkordb_query_mem_mib: int = Field(1024, ge=16, le=1_048_576)
    #: no query runs longer than this (TIMEOUT_MAX), reads and writes alike
    falkordb_query_timeout_max_s: float = Field(60.0, ge=1, le=86_400)

    # --- data stores between machines: TLS (docs/deployment.md, "Data stores: passwords, users, TLS") ---
    #: CA certificates (PEM) the graph server's certificate must chain to: FalkorDB over rediss://, Neo4j over Bolt
    #: (bolt:// and neo4j:// become encrypted; +s alone trusts the system's CAs), Gremlin/JanusGraph over wss://
    graph_tls_ca_file: Path | None = None
    #: a client certificate and its key (PEM), for a FalkorDB or Gremlin Server that asks for one (mutual TLS)
    graph_tls_cert_file: Path | None = None
    graph_tls_key_file: Path | None = None
    #: the same for the broker, REDIS_URL=rediss://... (without a CA file: the system's CAs; never unverified)
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None

    # --- isolation: what a node agent enforces on the processes it runs (workers/isolation) ---
    #: auto: cgroup limits where the machine allows them, else none (said at start, `isolation=none` on the Node);
    #: cgroup: refuse to start without them; none: no limits
    isolation: Literal["auto", "cgroup", "none"] = "auto"
    #: auto: v2 for each controller the unified hierarchy offers, v1 for the others; v1 or v2: only that version
    isolation_cgroup_versions: Literal["auto", "v1", "v2"] = "auto"
    #: the cgroup (same path in each hierarchy) under which agents make theirs; empty: the agent's own + /controlplane
    isolation_cgroup_parent: str | None = None
    #: who allocations run as: auto (a user per allocation when the agent is root, else the agent's user),
    #: per-allocation, agent, or a fixed UID:GID
    isolation_user: str = "auto"
    #: the uids (and gids) handed out one per live allocation; claimed machine-wide in isolation_claims_dir
    isolation_uid_base: int = Field(200_000, ge=1000, le=2**31 - 2**20)
    isolation_uid_count: int = Field(60_000, ge=1, le=2**20)
    isolation_claims_dir: Path = Path("/run/controlplane/uids")
    #: where private working directories are made; empty: /var/lib/controlplane/work with per-allocation users, else DATA_DIR/work
    isolation_work_root: Path | None = None
    #: when a working directory outlives its allocation: never, failed (kept sealed for inspection), always
    isolation_keep_workdir: Literal["never", "failed", "always"] = "never"
    #: the most processes (and threads) one allocation may have at once
    isolation_pids_max: int = Field(1024, ge=8, le=4_194_304)
    #: the memory limit is the reservation, but never below this (a process needs a few MiB to exec at all)
    isolation_min_memory_mib: int = Field(8, ge=1, le=1024)
    #: how often each live allocation's measured usage is written to its vertex (0: never)
    usage_period_s: float = Field(10.0, ge=0, le=3600)
    #: output log of one incarnation: rotated past this size, keeping this many older files
    log_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    log_backups: int = Field(2, ge=0, le=100)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top; errors name the field."""
    try:
        return Settings.model_validate({k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]).upper() or "settings"
        raise InvalidInput(f"{err['msg']} (got {err.get('input')!r})", field=field) from None
