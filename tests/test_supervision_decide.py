"""The supervision decision, as tables of situations (pure: no servers)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.errors import InvalidInput
from controlplane.domain.specs import parse
from controlplane.domain.supervision import (
    Backoff,
    Child,
    DeciderRule,
    Directive,
    Failure,
    FailureKind,
    RestartType,
    Situation,
    Strategy,
    SupervisionPolicy,
    decide,
)

NOW = 1000.0


def kids(n: int, *, failed: tuple[int, ...] = (0,), rt: RestartType = RestartType.TRANSIENT) -> tuple[Child, ...]:
    return tuple(Child(id=f"c{i}", seq=i, live=i not in failed, incarnation=1, restart_type=rt) for i in range(n))


def crash(*idx: int, kind: FailureKind = FailureKind.EXIT, code: int | None = 1) -> tuple[Failure, ...]:
    return tuple(Failure(f"c{i}", 1, kind, code) for i in idx)


def situation(policy: SupervisionPolicy | None = None, children: tuple[Child, ...] | None = None,
              failures: tuple[Failure, ...] | None = None, log: tuple[float, ...] = (), node: bool = False) -> Situation:
    return Situation("p", node, policy or SupervisionPolicy(), log, children or kids(4), failures or crash(0))


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        (Strategy.ONE_FOR_ONE, (1,), ["c1"]),
        (Strategy.ONE_FOR_ALL, (1,), ["c0", "c1", "c2", "c3"]),
        (Strategy.REST_FOR_ONE, (1,), ["c1", "c2", "c3"]),
        (Strategy.REST_FOR_ONE, (3,), ["c3"]),
        (Strategy.REST_FOR_ONE, (2, 1), ["c1", "c2", "c3"]),
        (Strategy.ONE_FOR_ONE, (0, 2), ["c0", "c2"]),
    ],
)
def test_each_strategy_restarts_exactly_its_set_in_creation_order(strategy: Strategy, failed: tuple[int, ...], expected: list[str]) -> None:
    d = decide(situation(SupervisionPolicy(strategy=strategy), kids(4, failed=failed), crash(*failed)), NOW)
    assert d.directive is Directive.RESTART
    assert [r.child_id for r in d.restarts] == expected
    assert {r.child_id for r in d.restarts if r.was_live} == set(expected) - {f"c{i}" for i in failed}


def test_a_correlated_failure_is_one_decision_and_one_restart_in_the_log() -> None:
    children = kids(100, failed=tuple(range(100)))
    d = decide(situation(SupervisionPolicy(strategy=Strategy.ONE_FOR_ALL), children, crash(*range(100), kind=FailureKind.LOST, code=None)), NOW)
    assert len(d.restarts) == 100 and d.restart_log == (NOW,)


@pytest.mark.parametrize(
    ("rt", "kind", "code", "restarted"),
    [
        (RestartType.PERMANENT, FailureKind.NORMAL, 0, True),
        (RestartType.TRANSIENT, FailureKind.NORMAL, 0, False),
        (RestartType.TEMPORARY, FailureKind.NORMAL, 0, False),
        (RestartType.PERMANENT, FailureKind.EXIT, 1, True),
        (RestartType.TRANSIENT, FailureKind.EXIT, 1, True),
        (RestartType.TEMPORARY, FailureKind.EXIT, 1, False),
        (RestartType.TRANSIENT, FailureKind.LOST, None, True),
        (RestartType.TEMPORARY, FailureKind.LOST, None, False),
    ],
)
def test_restart_types(rt: RestartType, kind: FailureKind, code: int | None, restarted: bool) -> None:
    d = decide(situation(children=kids(2, rt=rt), failures=crash(0, kind=kind, code=code)), NOW)
    assert bool(d.restarts) is restarted
    assert not d.escalate


@pytest.mark.parametrize(
    ("rules", "kind", "code", "directive"),
    [
        ([DeciderRule(on="exit", exit_codes="1-9", directive=Directive.STOP)], FailureKind.EXIT, 3, Directive.STOP),
        ([DeciderRule(on="exit", exit_codes="1-9", directive=Directive.STOP)], FailureKind.EXIT, 42, Directive.RESTART),
        ([DeciderRule(on="exit", exit_codes="42", directive=Directive.ESCALATE)], FailureKind.EXIT, 42, Directive.ESCALATE),
        ([DeciderRule(on="lost", directive=Directive.RESUME)], FailureKind.LOST, None, Directive.RESUME),
        ([DeciderRule(on="signal", directive=Directive.STOP)], FailureKind.SIGNAL, -9, Directive.STOP),
        ([], FailureKind.ERROR, -1, Directive.RESTART),
    ],
)
def test_the_decider_maps_failures_to_directives(rules: list[DeciderRule], kind: FailureKind, code: int | None, directive: Directive) -> None:
    d = decide(situation(SupervisionPolicy(deciders=rules), failures=crash(0, kind=kind, code=code)), NOW)
    assert d.directive is directive
    assert d.escalate is (directive is Directive.ESCALATE)
    assert d.stops == (("c0",) if directive is Directive.STOP else ())


def test_intensity_escalates_past_max_restarts_in_the_window() -> None:
    policy = SupervisionPolicy(max_restarts=3, window_s=60)
    ok = decide(situation(policy, log=(NOW - 100, NOW - 30, NOW - 10)), NOW)  # one is outside the window
    assert ok.directive is Directive.RESTART and ok.restart_log == (NOW - 30, NOW - 10, NOW)
    over = decide(situation(policy, log=(NOW - 30, NOW - 20, NOW - 10)), NOW)
    assert over.escalate and "intensity" in over.reason
    never = decide(situation(SupervisionPolicy(max_restarts=0)), NOW)
    assert never.escalate


def test_backoff_grows_caps_and_resets_after_a_stable_run() -> None:
    policy = SupervisionPolicy(backoff=Backoff(min_s=1, max_s=8, factor=2, jitter=0, reset_after_s=60), max_restarts=100)
    delays = []
    for level in range(6):
        child = (Child("c0", 0, False, 1, backoff_level=level, started_at=NOW - 1),)
        delays.append(decide(situation(policy, child), NOW).restarts[0].delay_s)
    assert delays == [1, 2, 4, 8, 8, 8]
    stable = (Child("c0", 0, False, 1, backoff_level=5, started_at=NOW - 61),)
    assert decide(situation(policy, stable), NOW).restarts[0].delay_s == 1


def test_jitter_is_bounded_and_deterministic() -> None:
    policy = SupervisionPolicy(backoff=Backoff(min_s=10, max_s=100, jitter=0.2))
    a = decide(situation(policy), NOW).restarts[0].delay_s
    assert a == decide(situation(policy), NOW).restarts[0].delay_s
    assert 8 <= a <= 12


def test_stale_reports_decide_nothing() -> None:
    children = (Child("c0", 0, live=True, incarnation=2),)  # already restarted
    d = decide(situation(children=children, failures=(Failure("c0", 1, FailureKind.EXIT, 1),)), NOW)
    assert d.is_noop and d.directive is None


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"strategy": "all_for_none"}, "policy.strategy"),
        ({"window_s": -1}, "policy.window_s"),
        ({"max_restarts": -2}, "policy.max_restarts"),
        ({"backoff": {"min_s": -1}}, "policy.backoff.min_s"),
        ({"backoff": {"min_s": 10, "max_s": 1}}, "policy.backoff.max_s"),
        ({"deciders": [{"on": "exit", "directive": "explode"}]}, "policy.deciders[0].directive"),
        ({"deciders": [{"on": "exit", "exit_codes": "1-x", "directive": "stop"}]}, "policy.deciders[0].exit_codes"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(policy: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse(SupervisionPolicy, policy, field="policy")
    assert err.value.field == field


def test_the_reason_of_a_mass_failure_names_a_few_and_counts_the_rest() -> None:
    # A node loss fails a thousand children at once: each child's `decided` event repeats the reason, so it must not
    # grow with the number of children (it did: 1,000 events of 30 KB each made that one write take a second)
    lost, crashed = tuple(range(990)), tuple(range(990, 1000))
    failures = crash(*lost, kind=FailureKind.LOST, code=None) + crash(*crashed, code=3)
    d = decide(situation(children=kids(1000, failed=lost + crashed), failures=failures), NOW)
    assert d.directive is Directive.RESTART and len(d.restarts) == 1000
    assert d.reason == "one_for_one: restart 1000 of 1000 children (c0 lost, c1 lost, c10 lost, c100 lost, c101 lost " \
                       "and 995 more: 10 exit 3, 985 lost)"
    # and a small one still names every failure
    few = decide(situation(children=kids(4, failed=(0, 2)), failures=crash(0, 2)), NOW)
    assert few.reason == "one_for_one: restart 2 of 4 children (c0 exit 1, c2 exit 1)"
