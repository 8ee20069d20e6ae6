"""What a credential may see of what a query reaches: relations that lead out of its subtrees, and secrets.

Root fields are checked by their permission (controlplane.api.auth); these helpers are
for the relations under them (`parent`, `ancestors`, `watchers`, a node's allocations)
and for env values, which only callers who may spawn there see. A principal that reads
everything takes the fast path: one attribute test per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controlplane.domain.capabilities import Verb
from controlplane.domain.errors import NotFound

if TYPE_CHECKING:
    from controlplane.api.context import ApiContext

HIDDEN = "<hidden>"


def reads_everything(ctx: ApiContext) -> bool:
    principal = ctx.principal
    return principal is not None and Verb.READ in principal.capability.verbs and principal.capability.everything


async def _covers(ctx: ApiContext, verb: Verb, actor_id: str) -> bool:
    """Whether the caller's credential grants `verb` on `actor_id` (no caller, or no such actor: not)."""
    principal = ctx.principal
    if principal is None:
        return False
    try:
        return await ctx.guard.covers(principal, verb, actor_id)
    except NotFound:
        return False


async def may_read(ctx: ApiContext, actor_id: str) -> bool:
    """Whether a relation may lead to `actor_id` (out of the subtree the credential covers: not)."""
    return await _covers(ctx, Verb.READ, actor_id)


async def sees_secrets(ctx: ApiContext, allocation_id: str) -> bool:
    """Env values are for those who could start a command there (spawn on it), not for readers."""
    return await _covers(ctx, Verb.SPAWN, allocation_id)
