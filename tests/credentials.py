"""Credentials for API tests, made the way a user gets them: the admin token `controlplane up` writes on first
start (keys generated in a fresh data directory), and narrower ones asked of the API with `createToken`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane.api import create_app
from controlplane.api.auth import Browsers
from controlplane.auth import Tokens
from controlplane.auth.bootstrap import ensure_admin_token, open_tokens
from controlplane.services import ControlPlane
from controlplane.settings import Settings
from tests.http import TestClient

#: the Host header of starlette's TestClient
TEST_HOST = "testserver"


def first_start(data_dir: Path) -> tuple[Tokens, str]:
    """What `controlplane up` does on first start: keys in the data dir, an admin token written beside them."""
    settings = Settings(data_dir=data_dir)
    tokens = open_tokens(settings, create=True)
    token, _ = ensure_admin_token(tokens, settings)
    return tokens, token


def app_with_auth(cp: ControlPlane, data_dir: Path, **kw: Any) -> tuple[Any, str]:
    """The API with authentication on, and the admin token of its first start."""
    tokens, admin = first_start(data_dir)
    return create_app(cp, tokens=tokens, browsers=Browsers.local(TEST_HOST, 80), **kw), admin


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(app: Any, token: str | None) -> TestClient:
    return TestClient(app, headers=bearer(token) if token else None)


def derive(c: TestClient, *, subtree: list[str] | None = None, verbs: list[str] | None = None, ttl_s: float | None = None,
           role: str | None = None) -> str:
    """A narrower token asked of the API with the client's own credential."""
    r = c.post("/graphql", json={
        "query": "mutation($s: [ID!], $v: [String!], $t: Float, $r: String) "
                 "{ createToken(subtree: $s, verbs: $v, ttlS: $t, role: $r) { token } }",
        "variables": {"s": subtree, "v": verbs, "t": ttl_s, "r": role},
    })
    body = r.json()
    assert "errors" not in body, body
    token: str = body["data"]["createToken"]["token"]
    return token
