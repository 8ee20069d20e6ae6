"""Who may do what where: principals, verbs over subtrees of the hierarchy, expiry, and narrowing.

This is the parent rule made enforceable. The right to read, spawn, stop,
supervise, watch or submit is granted over a *subtree* (a Node or an Allocation
and everything under it along PARENT_OF) until an expiry; a holder may derive a
narrower capability (smaller subtree, fewer verbs, sooner expiry) and hand it on,
never a wider one.

Pure: whether a vertex lies in a subtree is decided from its *lineage* (itself,
its parent, ..., its root Node), which the caller looks up in the graph. Parent
links are made only at creation and never change, so a lineage once read stays
true for as long as the vertex exists (callers may cache it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from controlplane.domain.errors import Forbidden, InvalidInput

#: the scope of a capability over the whole namespace (every hierarchy)
EVERYTHING = "*"


class Verb(str, Enum):
    READ = "read"
    SPAWN = "spawn"
    STOP = "stop"
    SUPERVISE = "supervise"
    WATCH = "watch"
    SUBMIT = "submit"
    RAW_QUERY = "raw_query"
    REGISTER = "register"


class Kind(str, Enum):
    """What a principal is."""

    OPERATOR = "operator"  # a person or a script, with a role
    NODE = "node"  # a node agent, for one node
    ALLOCATION = "allocation"  # a running allocation, for one incarnation
    JOIN = "join"  # a join credential: exchanged once (or a few times) for a node credential, nothing else


class Role(str, Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


ACTING = frozenset({Verb.READ, Verb.SPAWN, Verb.STOP, Verb.SUPERVISE, Verb.WATCH})
ROLE_VERBS: dict[Role, frozenset[Verb]] = {
    Role.ADMIN: frozenset(Verb),
    Role.OPERATOR: ACTING | {Verb.SUBMIT},
    Role.VIEWER: frozenset({Verb.READ}),
}
#: a node agent holds no verb of the GraphQL API: it speaks only the agent API (/agent/v1), where every request
#: is about its own Node, its GPUs and the allocations placed on it (node restriction), never about a subtree,
#: since what is created under a node may be placed on any other
NODE_VERBS: frozenset[Verb] = frozenset()
#: a join credential is good for one thing: being exchanged for a node credential at /agent/v1/join
JOIN_VERBS: frozenset[Verb] = frozenset()
#: a running allocation starts, watches and stops its own children
ALLOCATION_VERBS = ACTING
#: the verbs that are only ever granted over everything (they are not about a subtree)
GLOBAL_ONLY = frozenset({Verb.RAW_QUERY})


def parse_verbs(text: str | Iterable[str], *, field: str = "verbs") -> frozenset[Verb]:
    """`read,spawn` -> {READ, SPAWN}; an unknown verb is an error naming the known ones."""
    names = [v.strip().lower() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    if not names:
        raise InvalidInput("give at least one verb", field=field)
    known = {v.value: v for v in Verb}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(f"unknown verb {unknown[0]!r}; verbs are {', '.join(sorted(known))}", field=field)
    return frozenset(known[n] for n in names)


@dataclass(frozen=True, slots=True)
class Capability:
    """Verbs over the subtrees rooted at `roots` (or over everything) until `expires_at` (Unix seconds)."""

    verbs: frozenset[Verb]
    roots: frozenset[str]
    expires_at: float

    @property
    def everything(self) -> bool:
        return EVERYTHING in self.roots

    def covers(self, verb: Verb, lineage: Sequence[str] | None) -> bool:
        """May `verb` be done on the vertex whose lineage (itself first, its root last) is given?

        `lineage` None: the request is about no one vertex (a listing, a raw query): only a
        capability over everything covers it.
        """
        if verb not in self.verbs:
            return False
        if self.everything:
            return True
        if verb in GLOBAL_ONLY or lineage is None:
            return False
        return any(v in self.roots for v in lineage)

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, and what their credential grants.

    `subject`: the operator's name, the node's id, the allocation's id, or the node name a join credential is for
    (`*`: any). An allocation's
    principal holds for one incarnation only. `token_id` and `chain` name the credential
    and the ones it was derived from, so revoking any of them revokes it.
    """

    kind: Kind
    subject: str
    capability: Capability
    role: Role | None = None
    incarnation: int | None = None
    token_id: str = ""
    chain: tuple[str, ...] = field(default=())
    #: a join credential: how many nodes may join with it
    uses: int | None = None

    @property
    def derived(self) -> bool:
        return bool(self.chain)

    @property
    def name(self) -> str:
        """How audit records (`by` of events, refusal logs) name this principal."""
        if self.kind is Kind.ALLOCATION:
            base = f"allocation:{self.subject}#{self.incarnation}"
        elif self.kind is Kind.NODE:
            base = f"node:{self.subject}"
        elif self.kind is Kind.JOIN:
            base = f"join:{self.subject}/{self.token_id[:8]}"
        else:
            base = f"{(self.role or Role.VIEWER).value}:{self.subject}"
        return f"{base}/{self.token_id[:8]}" if self.derived else base


def default_capability(kind: Kind, subject: str, *, role: Role | None, expires_at: float) -> Capability:
    """What a fresh (not derived) credential of this principal grants."""
    if kind is Kind.OPERATOR:
        if role is None:
            raise InvalidInput("an operator has a role: admin, operator or viewer", field="role")
        return Capability(ROLE_VERBS[role], frozenset({EVERYTHING}), expires_at)
    if kind is Kind.NODE:
        return Capability(NODE_VERBS, frozenset({subject}), expires_at)
    if kind is Kind.JOIN:
        return Capability(JOIN_VERBS, frozenset({subject}), expires_at)
    return Capability(ALLOCATION_VERBS, frozenset({subject}), expires_at)


def narrow(
    held: Capability,
    *,
    verbs: frozenset[Verb] | None,
    roots: Sequence[str] | None,
    expires_at: float | None,
    lineages: Mapping[str, Sequence[str]],
) -> Capability:
    """A capability within `held`: fewer verbs, subtrees inside the held ones, an expiry no later.

    `lineages`: the lineage of each requested root (from the graph). Anything wider is
    refused with Forbidden naming what would widen; omitted parts are inherited.
    """
    want_verbs = held.verbs if verbs is None else verbs
    extra = sorted(v.value for v in want_verbs - held.verbs)
    if extra:
        raise Forbidden(f"cannot grant {', '.join(extra)}: the credential deriving it does not hold it", field="verbs")
    want_roots = held.roots if roots is None else frozenset(roots)
    if not want_roots:
        raise InvalidInput("give at least one subtree", field="subtree")
    if EVERYTHING in want_roots and not held.everything:
        raise Forbidden("cannot grant everything: the credential deriving it covers only "
                        f"{', '.join(sorted(held.roots))}", field="subtree")
    if not held.everything:
        if want_verbs & GLOBAL_ONLY:
            raise Forbidden("raw_query is granted only over everything", field="verbs")
        for root in sorted(want_roots - held.roots):  # the held roots themselves need no lineage
            lineage = lineages.get(root)
            if lineage is None or not any(v in held.roots for v in lineage):
                raise Forbidden(f"{root} is outside the subtrees of the credential deriving it "
                                f"({', '.join(sorted(held.roots))})", field="subtree")
    want_expiry = held.expires_at if expires_at is None else expires_at
    if want_expiry > held.expires_at:
        raise Forbidden("cannot outlive the credential deriving it", field="ttl")
    return Capability(frozenset(want_verbs), want_roots, want_expiry)
