"""Signed, expiring tokens (JWS, EdDSA over Ed25519) that carry a principal and its capability.

Why PyJWT with Ed25519: every request is verified from the token alone (signature,
expiry, audience) with no database round trip; Ed25519 signatures are small and fast
to check (tens of microseconds with `cryptography`); PyJWT is the most used and best
kept JWT library for Python and pins the algorithm we accept (no `alg: none`, no
RSA/HMAC confusion). Delegation is done by the API, not offline: a holder asks for a
narrower token, the API checks it is narrower against the graph and signs it, and the
derived token names the tokens it came from, so revoking one revokes its descendants.

Claims: `sub` (operator name, node id, allocation id, or the node name a join
credential is for), `knd`, `rol`, `inc` (allocation incarnation), `vrb` (verbs), `scp`
(subtree roots, or `*`), `chn` (ids of the tokens it was derived from), `use` (how many
nodes a join credential admits), `jti`, `iat`, `exp`, `aud`, `iss`; header `kid`.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.auth.keys import KeyRing
from controlplane.auth.revocation import MemoryRevocations, Revocations
from controlplane.domain.capabilities import Capability, Kind, Principal, Role, Verb
from controlplane.domain.errors import InvalidInput, Unauthenticated

AUDIENCE = "controlplane"
ISSUER = "controlplane"
ALGORITHM = "EdDSA"
#: verified tokens remembered by their exact text (signature checked once; expiry and revocation every time)
CACHE_SIZE = 4096
MAX_TTL_S = 10 * 365 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    principal: Principal


class Tokens:
    """Issues tokens (if the ring has a signing key) and verifies them."""

    def __init__(self, keys: KeyRing, revocations: Revocations | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.revocations: Revocations = revocations if revocations is not None else MemoryRevocations(clock)
        self.clock = clock
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    @property
    def can_sign(self) -> bool:
        return self.keys.signing is not None

    # --- issuing -------------------------------------------------------------------------
    def issue(
        self,
        kind: Kind,
        subject: str,
        capability: Capability,
        *,
        role: Role | None = None,
        incarnation: int | None = None,
        chain: tuple[str, ...] = (),
        uses: int | None = None,
    ) -> Issued:
        signing: Ed25519PrivateKey | None = self.keys.signing
        if signing is None:
            raise InvalidInput("this process holds no signing key", field="AUTH_SIGNING_KEY_FILE")
        now = self.clock()
        if not now < capability.expires_at <= now + MAX_TTL_S:
            raise InvalidInput(f"the lifetime must be between 0 and {MAX_TTL_S:.0f} seconds", field="ttl")
        token_id = secrets.token_hex(12)
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "knd": kind.value,
            "vrb": sorted(v.value for v in capability.verbs), "scp": sorted(capability.roots),
            "jti": token_id, "iat": int(now), "exp": capability.expires_at,
        }
        if role is not None:
            claims["rol"] = role.value
        if incarnation is not None:
            claims["inc"] = incarnation
        if chain:
            claims["chn"] = list(chain)
        if uses is not None:
            claims["use"] = uses
        token = jwt.encode(claims, signing, algorithm=ALGORITHM, headers={"kid": self.keys.signing_kid})
        principal = Principal(kind=kind, subject=subject, capability=capability, role=role,
                              incarnation=incarnation, token_id=token_id, chain=chain, uses=uses)
        return Issued(token=token, principal=principal)

    # --- verifying -----------------------------------------------------------------------
    def verify(self, token: str) -> Principal:
        """The principal this token speaks for, or Unauthenticated saying why not."""
        principal = self._verified.get(token)
        if principal is None:
            principal = self._decode(token)
            self._verified[token] = principal
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        if not principal.capability.live(self.clock()):
            raise Unauthenticated("the token has expired; ask for a new one", field="token")
        if self.revocations.any_revoked((principal.token_id, *principal.chain)):
            raise Unauthenticated("the token has been revoked", field="token")
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the token is malformed (not a signed JWT)", field="token") from None
        kid = header.get("kid")
        key = self.keys.verifying.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated(f"the token is signed by an unknown key {kid!r}", field="token")
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(f"the token's algorithm {header.get('alg')!r} is not accepted", field="token")
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "jti"], "verify_exp": False})
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify (altered, or not ours)", field="token") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is invalid: {exc}", field="token") from None
        try:
            kind = Kind(claims["knd"])
            capability = Capability(frozenset(Verb(v) for v in claims["vrb"]), frozenset(str(s) for s in claims["scp"]),
                                    float(claims["exp"]))
            role = Role(claims["rol"]) if "rol" in claims else None
            incarnation = int(claims["inc"]) if "inc" in claims else None
            uses = int(claims["use"]) if "use" in claims else None
        except (KeyError, ValueError, TypeError):
            raise Unauthenticated("the token's claims are not ours", field="token") from None
        if kind is Kind.ALLOCATION and incarnation is None:
            raise Unauthenticated("an allocation's token names its incarnation", field="token")
        return Principal(kind=kind, subject=str(claims["sub"]), capability=capability, role=role, incarnation=incarnation,
                         token_id=str(claims["jti"]), chain=tuple(str(c) for c in claims.get("chn", ())), uses=uses)

    def revoke(self, principal: Principal) -> None:
        self.revocations.revoke(principal.token_id, until=principal.capability.expires_at)
