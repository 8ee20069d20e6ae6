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

Backend = Literal["falkordb", "neo4j", "gremlin", "janusgraph"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    graph_backend: Backend = "falkordb"
    #: falkordb: redis://host:port ; neo4j: bolt://host:port or neo4j://... ; gremlin: ws://host:port/gremlin ;
    #: janusgraph: ws://host:port/gremlin, or several JanusGraph Servers comma-separated (clients spread, fail over).
    #: Empty: the embedded server (FalkorDB only).
    graph_uri: str | None = None
    graph_user: str | None = None
    graph_password: str | None = None
    graph_name: str = "controlplane"
    #: Celery's broker. Empty: the embedded FalkorDB server, database 1.
    redis_url: str | None = None
    data_dir: Path = Path(".controlplane")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    heartbeat_s: float = Field(1.0, gt=0, le=60)
    #: a node whose last heartbeat is older than this is declared lost by the reaper
    node_grace_s: float = Field(3.0, gt=0, le=3600)
    #: how often the (single, locked) scheduler reaps nodes and reconciles stuck allocations
    scheduler_interval_s: float = Field(0.5, gt=0, le=60)
    #: an allocation stuck in `placed` this long is dispatched again; in `starting` this long, failed
    placed_deadline_s: float = Field(30.0, gt=0)
    starting_deadline_s: float = Field(60.0, gt=0)
    #: GraphQL query depth limit (nesting of fields) and traversal limits
    max_query_depth: int = Field(12, ge=2, le=64)
    max_descendants: int = Field(10_000, ge=1, le=1_000_000)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top; errors name the field."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]).upper() or "settings"
        raise InvalidInput(f"{err['msg']} (got {err.get('input')!r})", field=field) from None
