"""The credentials of one deployment, from Settings: its keys, its revocation list, the first admin token, the
join and node credentials of node agents, and the token each started allocation gets (issued by the API when its
node's agent claims it: agents hold no signing key).

`controlplane up` (and `controlplane api`) generate the signing key on first start and
write an admin token to `<DATA_DIR>/admin.token` (0600), printed once with a GraphiQL
URL that carries it; the CLI reads it from there or from CONTROLPLANE_TOKEN.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from controlplane.auth.keys import KeyRing, write_private
from controlplane.auth.revocation import FileRevocations
from controlplane.auth.tokens import Tokens
from controlplane.domain.capabilities import (
    ALLOCATION_VERBS,
    EVERYTHING,
    Capability,
    Kind,
    Principal,
    Role,
    default_capability,
)
from controlplane.domain.errors import Unauthenticated
from controlplane.settings import Settings

ADMIN_TOKEN_FILE = "admin.token"
REVOKED_FILE = "revoked.json"


def keys_dir(settings: Settings) -> Path:
    return settings.auth_keys_dir or settings.data_dir / "keys"


def open_tokens(settings: Settings, *, create: bool = False) -> Tokens:
    """This deployment's Tokens; `create`: generate the signing key on first start (the API's process)."""
    ring = KeyRing.load(
        keys_dir(settings),
        create=create,
        signing_pem=settings.auth_signing_key,
        signing_file=settings.auth_signing_key_file,
        verify_files=[Path(p.strip()) for p in (settings.auth_verify_key_files or "").split(",") if p.strip()],
    )
    return Tokens(ring, FileRevocations(settings.data_dir / REVOKED_FILE))


def ensure_admin_token(tokens: Tokens, settings: Settings) -> tuple[str, bool]:
    """The admin token in the data directory, made (and written 0600) if there is none that still works.

    Returns (token, whether it was made now: print it once).
    """
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        existing = path.read_text().strip()
        try:
            tokens.verify(existing)
            return existing, False
        except Unauthenticated:
            path.unlink()
    capability = default_capability(Kind.OPERATOR, "admin", role=Role.ADMIN, expires_at=time.time() + settings.admin_token_ttl_s)
    issued = tokens.issue(Kind.OPERATOR, "admin", capability, role=Role.ADMIN)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not write_private(path, (issued.token + "\n").encode()):  # another process wrote one meanwhile: use it
        return path.read_text().strip(), False
    return issued.token, True


def read_cli_token(settings: Settings) -> str | None:
    """What the CLI sends: CONTROLPLANE_TOKEN, else the admin token of the local data directory."""
    token = os.environ.get("CONTROLPLANE_TOKEN")
    if token:
        return token.strip()
    path = settings.data_dir / ADMIN_TOKEN_FILE
    return path.read_text().strip() if path.exists() else None


def allocation_token(tokens: Tokens, allocation_id: str, incarnation: int, *, ttl_s: float) -> str:
    """A credential for one incarnation of one allocation over its own subtree; it ends when the incarnation does."""
    capability = Capability(ALLOCATION_VERBS, frozenset({allocation_id}), time.time() + ttl_s)
    return tokens.issue(Kind.ALLOCATION, allocation_id, capability, incarnation=incarnation).token


def join_token(tokens: Tokens, *, name: str | None, ttl_s: float, uses: int = 1) -> tuple[str, Principal]:
    """A join credential: exchanged at the agent API for a node credential by at most `uses` agents within `ttl_s`,
    for the node `name` only (None: for a node of any name not yet taken)."""
    subject = name or EVERYTHING
    capability = default_capability(Kind.JOIN, subject, role=None, expires_at=time.time() + ttl_s)
    issued = tokens.issue(Kind.JOIN, subject, capability, uses=uses)
    return issued.token, issued.principal


def node_token(tokens: Tokens, node: str, *, ttl_s: float) -> tuple[str, Principal]:
    """A node's own credential: its identity is the token's id, which the node's vertex is bound to when it first
    registers; it grants nothing at the GraphQL API, only the agent API's routes for that node."""
    capability = default_capability(Kind.NODE, node, role=None, expires_at=time.time() + ttl_s)
    issued = tokens.issue(Kind.NODE, node, capability)
    return issued.token, issued.principal
