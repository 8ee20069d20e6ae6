"""GraphQL for credentials: who am I, derive a narrower token, revoke one.

A holder derives a token within its own capability (smaller subtree, fewer verbs,
sooner expiry; `controlplane.domain.capabilities.narrow` refuses anything wider)
and hands it on; a derived token names the tokens it came from, so revoking any of
them revokes it. Revoking by id is for admins; anyone holding a token may revoke it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import strawberry

from controlplane.api.auth import audit, requires
from controlplane.api.context import Info
from controlplane.domain.capabilities import EVERYTHING, ROLE_VERBS, Principal, Role, narrow, parse_verbs
from controlplane.domain.errors import Forbidden, InvalidInput, Unauthenticated

DEFAULT_TTL_S = 3600.0


@strawberry.type(description="A credential: who it speaks for and what it grants.")
class Credential:
    principal: str = strawberry.field(description="How audit records name it, e.g. `admin:admin`, `allocation:a1#2`.")
    kind: str = strawberry.field(description="`operator`, `node` or `allocation`.")
    role: str | None
    token_id: strawberry.ID
    verbs: list[str]
    subtree: list[strawberry.ID] = strawberry.field(description="Roots of the subtrees it covers; `*`: everything.")
    expires_at: float = strawberry.field(description="Unix time, in seconds.")
    token: str | None = strawberry.field(description="The token itself: only when just created.")


def credential(p: Principal, token: str | None = None) -> Credential:
    return Credential(
        principal=p.name, kind=p.kind.value, role=p.role.value if p.role else None, token_id=strawberry.ID(p.token_id),
        verbs=sorted(v.value for v in p.capability.verbs), subtree=[strawberry.ID(r) for r in sorted(p.capability.roots)],
        expires_at=p.capability.expires_at, token=token,
    )


@strawberry.type
class TokenQueries:
    @strawberry.field(description="The credential this request carries.", permission_classes=requires(None))
    def whoami(self, info: Info) -> Credential:
        return credential(cast(Principal, info.context.principal))


@strawberry.type
class TokenMutations:
    @strawberry.mutation(
        description="Derive a narrower credential from yours: `subtree` (Node or Allocation ids; default yours), `verbs` "
        "(default yours), `ttlS` seconds (default 3600, never past yours), `role` for an operator's (admin, operator, "
        "viewer; its verbs by default). Anything wider than yours is FORBIDDEN.",
        permission_classes=requires(None),
    )
    async def create_token(
        self,
        info: Info,
        subtree: list[strawberry.ID] | None = None,
        verbs: list[str] | None = None,
        ttl_s: float | None = None,
        role: str | None = None,
    ) -> Credential:
        ctx = info.context
        held = cast(Principal, ctx.principal)
        tokens = ctx.guard.tokens
        if tokens is None or not tokens.can_sign:
            raise InvalidInput("this API issues no tokens (authentication is off, or it holds no signing key)", field="token")
        new_role = held.role
        if role is not None:
            try:
                new_role = Role(role)
            except ValueError:
                raise InvalidInput("admin, operator or viewer", field="role") from None
            if held.role is None or ROLE_VERBS[new_role] - ROLE_VERBS[held.role]:
                raise Forbidden(f"{held.name} cannot grant the role {role}", field="role")
        wanted = parse_verbs(verbs) if verbs is not None else (
            ROLE_VERBS[new_role] & held.capability.verbs if role is not None and new_role is not None else None)
        roots = [str(s) for s in subtree] if subtree is not None else None
        lineages: dict[str, Sequence[str]] = {}
        if roots is not None and not held.capability.everything:
            for r in roots:
                if r != EVERYTHING:
                    lineages[r] = await ctx.guard.lineage(r)
        if ttl_s is not None and not 0 < ttl_s:
            raise InvalidInput("must be a positive number of seconds", field="ttlS")
        now = tokens.clock()
        expires = now + ttl_s if ttl_s is not None else min(now + DEFAULT_TTL_S, held.capability.expires_at)
        try:
            capability = narrow(held.capability, verbs=wanted, roots=roots, expires_at=expires, lineages=lineages)
        except Forbidden as exc:
            audit.warning("refused %s: derive a token wider than its own (%s: %s)", held.name, exc.field, exc.message)
            ctx.status(403)
            raise
        issued = await ctx.call(tokens.issue, held.kind, held.subject, capability, role=new_role,
                                incarnation=held.incarnation, chain=(*held.chain, held.token_id))
        return credential(issued.principal, issued.token)

    @strawberry.mutation(
        description="Revoke a credential and every one derived from it: give the `token` itself (anyone holding it "
        "may), or its `id` (admins). Answers true once it no longer works.",
        permission_classes=requires(None),
    )
    async def revoke_token(self, info: Info, token: str | None = None, id: strawberry.ID | None = None) -> bool:
        ctx = info.context
        held = cast(Principal, ctx.principal)
        tokens = ctx.guard.tokens
        if tokens is None:
            raise InvalidInput("authentication is off", field="token")
        if token is not None:
            try:
                target = tokens.verify(token)
            except Unauthenticated as exc:
                if "revoked" in exc.message:
                    return True
                raise InvalidInput(exc.message, field="token") from None
            tokens.revoke(target)
            return True
        if id is None:
            raise InvalidInput("give the token or its id", field="token")
        if held.role is not Role.ADMIN or held.derived and "*" not in held.capability.roots:
            raise Forbidden("only an admin revokes a token by id; give the token itself", field="id")
        tokens.revocations.revoke(str(id), until=tokens.clock() + 10 * 365 * 86400)
        return True
