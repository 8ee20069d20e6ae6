"""The capability model as a table of situations: which verb on which vertex a capability covers, and which
derivations are narrower (granted) or wider (refused, naming what would widen)."""

from __future__ import annotations

import pytest

from controlplane.domain.capabilities import (
    EVERYTHING,
    ROLE_VERBS,
    Capability,
    Kind,
    Principal,
    Role,
    Verb,
    default_capability,
    narrow,
    parse_verbs,
)
from controlplane.domain.errors import Forbidden, InvalidInput

R, S, ST = Verb.READ, Verb.SPAWN, Verb.STOP
# node n1 -> a -> a1 -> a11 ; n1 -> b (a's sibling) ; node n2 -> c
LINEAGE = {
    "n1": ("n1",), "a": ("a", "n1"), "a1": ("a1", "a", "n1"), "a11": ("a11", "a1", "a", "n1"),
    "b": ("b", "n1"), "n2": ("n2",), "c": ("c", "n2"),
}


def cap(verbs: set[Verb], *roots: str, expires_at: float = 100.0) -> Capability:
    return Capability(frozenset(verbs), frozenset(roots), expires_at)


@pytest.mark.parametrize(
    ("capability", "verb", "target", "covered"),
    [
        (cap({R, S}, "a"), S, "a", True),  # the root of the subtree itself
        (cap({R, S}, "a"), S, "a11", True),  # anything under it
        (cap({R, S}, "a"), S, "b", False),  # a sibling
        (cap({R, S}, "a"), S, "n1", False),  # its parent
        (cap({R, S}, "a"), ST, "a1", False),  # a verb it does not hold
        (cap({R}, "n1"), R, "a11", True),  # a node's subtree holds every allocation it created
        (cap({R}, "n1"), R, "c", False),  # another node's hierarchy
        (cap({R}, "n1", "n2"), R, "c", True),  # several subtrees
        (cap({R}, EVERYTHING), R, "c", True),
        (cap({R}, EVERYTHING), R, None, True),  # a listing needs everything
        (cap({R}, "n1"), R, None, False),
        (cap(set(Verb), "a"), Verb.RAW_QUERY, "a", False),  # raw queries are never about a subtree
    ],
)
def test_a_capability_covers_its_verbs_on_its_subtrees_only(
    capability: Capability, verb: Verb, target: str | None, covered: bool
) -> None:
    assert capability.covers(verb, LINEAGE[target] if target else None) is covered


@pytest.mark.parametrize(
    ("verbs", "roots", "expires_at", "granted"),
    [
        ({R}, ["a1"], 50.0, cap({R}, "a1", expires_at=50.0)),  # fewer verbs, smaller subtree, sooner
        (None, None, None, cap({R, S}, "a")),  # omitted: inherited
        ({R, S}, ["a", "a11"], 100.0, cap({R, S}, "a", "a11")),
    ],
)
def test_a_narrower_capability_is_derived(
    verbs: set[Verb] | None, roots: list[str] | None, expires_at: float | None, granted: Capability
) -> None:
    held = cap({R, S}, "a")
    lineages = {r: LINEAGE[r] for r in roots or []}
    assert narrow(held, verbs=frozenset(verbs) if verbs else None, roots=roots, expires_at=expires_at, lineages=lineages) == granted


@pytest.mark.parametrize(
    ("verbs", "roots", "expires_at", "field"),
    [
        ({R, ST}, None, None, "verbs"),  # a verb it does not hold
        (None, ["b"], None, "subtree"),  # a sibling's subtree
        (None, ["n1"], None, "subtree"),  # its parent's: wider
        (None, [EVERYTHING], None, "subtree"),
        (None, None, 101.0, "ttl"),  # outliving it
        ({Verb.RAW_QUERY}, None, None, "verbs"),
    ],
)
def test_a_wider_capability_is_refused_naming_what_widens(
    verbs: set[Verb] | None, roots: list[str] | None, expires_at: float | None, field: str
) -> None:
    held = cap({R, S}, "a")
    lineages = {r: LINEAGE[r] for r in roots or [] if r in LINEAGE}
    with pytest.raises(Forbidden) as refused:
        narrow(held, verbs=frozenset(verbs) if verbs else None, roots=roots, expires_at=expires_at, lineages=lineages)
    assert refused.value.field == field


def test_roles_grant_what_the_design_says() -> None:
    assert ROLE_VERBS[Role.VIEWER] == {R}
    assert Verb.RAW_QUERY not in ROLE_VERBS[Role.OPERATOR] and Verb.REGISTER not in ROLE_VERBS[Role.OPERATOR]
    assert {Verb.RAW_QUERY, Verb.REGISTER} <= ROLE_VERBS[Role.ADMIN]
    node = default_capability(Kind.NODE, "n1", role=None, expires_at=1.0)
    # a node agent speaks only the agent API, about its own node: no verb of the GraphQL API at all
    assert node.roots == {"n1"} and node.verbs == frozenset()
    join = default_capability(Kind.JOIN, "n1", role=None, expires_at=1.0)
    assert join.roots == {"n1"} and join.verbs == frozenset()
    alloc = default_capability(Kind.ALLOCATION, "a", role=None, expires_at=1.0)
    assert alloc.roots == {"a"} and {S, ST, Verb.WATCH} <= alloc.verbs


def test_audit_names_say_who_and_which_credential() -> None:
    c = cap({R}, "a")
    assert Principal(Kind.ALLOCATION, "a", c, incarnation=2, token_id="t1").name == "allocation:a#2"
    assert Principal(Kind.OPERATOR, "admin", c, role=Role.ADMIN, token_id="0123456789", chain=("t0",)).name == "admin:admin/01234567"


def test_verbs_are_parsed_from_a_comma_list_naming_an_unknown_one() -> None:
    assert parse_verbs("read, spawn") == {R, S}
    with pytest.raises(InvalidInput) as bad:
        parse_verbs("read,fly")
    assert "fly" in bad.value.message and bad.value.field == "verbs"
