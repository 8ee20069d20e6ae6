"""GraphQL for credentials: who am I, derive a narrower token, revoke one; join credentials for node agents, and the
revocation of a node's own credential.

A holder derives a token within its own capability (smaller subtree, fewer verbs,
sooner expiry; `controlplane.domain.capabilities.narrow` refuses anything wider)
and hands it on; a derived token names the tokens it came from, so revoking any of
them revokes it. Revoking by id is for admins; anyone holding a token may revoke it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import strawberry

from controlplane.api.auth import arg, audit, requires
from controlplane.api.context import Info
from controlplane.auth.bootstrap import join_token
from controlplane.auth.tokens import MAX_TTL_S
from controlplane.domain.capabilities import EVERYTHING, ROLE_VERBS, Principal, Role, Verb, narrow, parse_verbs
from controlplane.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from controlplane.domain.specs import NAME_RE

DEFAULT_TTL_S = 3600.0
DEFAULT_JOIN_TTL_S = 900.0
MAX_JOIN_TTL_S = 7 * 86400.0
MAX_JOIN_USES = 1000


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


@strawberry.type(description="A join credential: what a new node agent exchanges, once, for its own node credential.")
class JoinCredential:
    token: str
    token_id: strawberry.ID
    name: str = strawberry.field(description="The node it admits (`*`: one of any name not taken yet).")
    uses: int
    expires_at: float = strawberry.field(description="Unix time, in seconds.")


@strawberry.type
class NodeCredentialMutations:
    @strawberry.mutation(
        description="Make a join credential for a node agent: `name` (default: any name not taken yet), `ttlS` (default "
        "900, at most 7 days), `uses` (how many agents may join with it, default 1). The agent exchanges it at "
        "/agent/v1/join for its own node credential. Needs register on the node (admins).",
        permission_classes=requires(Verb.REGISTER, arg("name"), what="createJoinToken"),
    )
    async def create_join_token(self, info: Info, name: str | None = None, ttl_s: float = DEFAULT_JOIN_TTL_S,
                                uses: int = 1) -> JoinCredential:
        ctx = info.context
        tokens = ctx.guard.tokens
        if tokens is None or not tokens.can_sign:
            raise InvalidInput("this API issues no tokens (authentication is off, or it holds no signing key)", field="token")
        if name is not None and not NAME_RE.fullmatch(name):
            raise InvalidInput("must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
                               field="name")
        if not 0 < ttl_s <= MAX_JOIN_TTL_S:
            raise InvalidInput(f"must be between 0 and {MAX_JOIN_TTL_S:.0f} seconds: a join credential is short-lived",
                               field="ttlS")
        if not 1 <= uses <= MAX_JOIN_USES:
            raise InvalidInput(f"must be between 1 and {MAX_JOIN_USES}", field="uses")
        token, principal = await ctx.call(lambda: join_token(tokens, name=name, ttl_s=ttl_s, uses=uses))
        audit.warning("%s made a join credential %s for node %s (%d uses, %g s)", ctx.by, principal.token_id[:8],
                      name or "*", uses, ttl_s)
        return JoinCredential(token=token, token_id=strawberry.ID(principal.token_id), name=principal.subject, uses=uses,
                              expires_at=principal.capability.expires_at)

    @strawberry.mutation(
        description="Revoke the credential a node's agent registered it with: that agent is refused from its next "
        "request on (it stops, and the reaper declares the node lost), and never comes back with it. The name stays "
        "taken until the node is deregistered. Needs register on the node.",
        permission_classes=requires(Verb.REGISTER, arg("id"), what="revokeNodeCredential"),
    )
    async def revoke_node_credential(self, info: Info, id: strawberry.ID) -> bool:
        ctx = info.context
        tokens = ctx.guard.tokens
        if tokens is None:
            raise InvalidInput("authentication is off", field="token")
        node = await ctx.call(ctx.control.queries.node, str(id))
        identity = node.extra.get("identity")
        if not identity:
            raise NotFound(f"node {id} was registered by no node credential (an operator registered it)", field="id")
        tokens.revocations.revoke(str(identity), until=tokens.clock() + MAX_TTL_S)
        await ctx.call(lambda: ctx.control.nodes.credential_revoked(str(id), identity=str(identity), by=ctx.by))
        audit.warning("%s revoked the credential %s of node %s", ctx.by, str(identity)[:8], id)
        return True
