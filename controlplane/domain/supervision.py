"""Supervision, Akka/OTP style: policies, and the pure decision `decide(situation, now)`.

A parent's policy governs its children. When children terminate, the parent's
supervisor builds a Situation (policy, restart history, children, failures)
and `decide` returns a Decision: which children to restart (in order, each
after its backoff delay), which to stop, or that the parent itself must fail
(escalation). No I/O, deterministic (jitter is seeded by the child id and
incarnation), so recorded histories replay to the same decisions.

Defaults, and why:
- restart type `transient` (restart only after an abnormal exit): most
  allocations here are batch work that should end when it succeeds; services
  ask for `permanent`. (OTP defaults to permanent, Akka restarts on failure.)
- intensity 3 restarts in 60 s: OTP's 1 in 5 s is tuned for in-process
  restarts that take microseconds; a remote restart takes a placement and a
  process start, so a window of seconds would never see a second failure.
  Akka's unlimited restarts loop forever on a spec that always crashes.
  Nomad's 2 in 30 min is for long-lived services and delays escalation of
  batch failures by half an hour. 3 in 60 s escalates a crash loop within
  about a minute and rides out a flaky start.
- backoff 0.5 s doubling to 30 s with 20 % jitter, reset after 60 s of stable
  running: the first retry is quick, a crash loop backs off, and a correlated
  failure does not restart a hundred children at the same instant.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.domain.text import Line, Text


class Strategy(str, Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Directive(str, Enum):
    RESTART = "restart"
    RESUME = "resume"  # leave it as it is: no restart, no escalation, its subtree lives on
    STOP = "stop"  # leave it ended and stop its subtree
    ESCALATE = "escalate"  # the parent fails; its own parent decides


class RestartType(str, Enum):
    PERMANENT = "permanent"  # always restarted, even after a normal exit
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted


class ChildPolicy(str, Enum):
    CASCADE = "cascade"  # when a parent ends, its children are stopped
    ABANDON = "abandon"  # they live on, marked as orphans


START_ERROR_PREFIX = "could not start: "
#: how an exit's error starts when the kernel killed the allocation at its memory limit
OOM_KILLED = "oom_killed"


class FailureKind(str, Enum):
    NORMAL = "normal"  # exit code 0
    EXIT = "exit"  # a non-zero exit code
    SIGNAL = "signal"  # killed by a signal
    OOM_KILLED = "oom_killed"  # killed by the kernel at its memory limit
    ERROR = "error"  # could not start (executor error)
    LOST = "lost"  # its node was lost
    ESCALATED = "escalated"  # a child escalated to it: it failed as a supervisor


_CODES = re.compile(r"^\s*-?\d+(\s*-\s*-?\d+)?(\s*,\s*-?\d+(\s*-\s*-?\d+)?)*\s*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeciderRule(_Model):
    """`directive` for failures of kind `on` (and, for exits, exit codes in `exit_codes`, e.g. "1-3,7")."""

    on: Annotated[Literal["exit", "signal", "oom_killed", "error", "lost", "escalated", "any"],
                  Field(description="the kind of failure this rule is about")] = "any"
    exit_codes: Annotated[str | None, Line(max_length=200),
                          Field(description='only these exit codes and ranges, e.g. "1-3,7"')] = None
    error_contains: Annotated[str | None, Text(max_length=200),
                              Field(description="only failures whose error contains this text")] = None
    directive: Annotated[Directive, Field(description="what the parent does about a failure this rule matches")]

    @field_validator("exit_codes")
    @classmethod
    def _codes(cls, v: str | None) -> str | None:
        if v is not None and not _CODES.fullmatch(v):
            raise ValueError("must be a list of codes and ranges like '1-3,7'")
        return v

    def matches(self, kind: FailureKind, exit_code: int | None, error: str | None) -> bool:
        if self.on != "any" and self.on != kind.value:
            return False
        if self.exit_codes is not None:
            if exit_code is None or not any(lo <= exit_code <= hi for lo, hi in _ranges(self.exit_codes)):
                return False
        if self.error_contains is not None and self.error_contains not in (error or ""):
            return False
        return True


def _ranges(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        m = re.match(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*$", part)
        assert m is not None
        lo = int(m.group(1))
        out.append((lo, int(m.group(2)) if m.group(2) is not None else lo))
    return out


class Backoff(_Model):
    """Delays between restarts of a child: min_s, then times factor up to max_s, each varied by jitter."""

    min_s: Annotated[float, Field(ge=0, le=3600, description="the first delay, in seconds")] = 0.5
    max_s: Annotated[float, Field(ge=0, le=86400, description="the longest delay, in seconds")] = 30.0
    factor: Annotated[float, Field(ge=1, le=100, description="each delay is the previous one times this")] = 2.0
    jitter: Annotated[float, Field(ge=0, le=1, description="random variation, as a fraction of the delay")] = 0.2
    reset_after_s: Annotated[float, Field(ge=0, le=86400, description="back to min_s after running this long")] = 60.0

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.max_s < self.min_s:
            raise ValueError("max_s: must be at least min_s")
        return self

    def delay(self, level: int, *, seed: str) -> float:
        base = min(self.max_s, self.min_s * self.factor ** max(0, level))
        if self.jitter and base:
            base *= 1 + random.Random(seed).uniform(-self.jitter, self.jitter)
        return round(min(self.max_s, max(0.0, base)), 4)


class SupervisionPolicy(_Model):
    """How a parent supervises its children (Akka/OTP style)."""

    strategy: Strategy = Field(default=Strategy.ONE_FOR_ONE, description="which children restart when one fails")
    deciders: list[DeciderRule] = Field(default_factory=list, max_length=32,
                                        description="per failure, the first rule that matches decides")
    default_directive: Directive = Field(default=Directive.RESTART, description="what happens when no decider matches")
    max_restarts: Annotated[int, Field(ge=0, le=10_000, description="restart intensity: at most this many "
                                                                   "restarts within window_s, else the parent fails")] = 3
    window_s: Annotated[float, Field(gt=0, le=86_400 * 7, description="the intensity window, in seconds")] = 60.0
    backoff: Backoff = Field(default_factory=Backoff, description="delays between restarts")
    child_policy: ChildPolicy = Field(default=ChildPolicy.CASCADE, description="what happens to the children when this parent ends")

    def directive_for(self, kind: FailureKind, exit_code: int | None, error: str | None) -> Directive:
        for rule in self.deciders:
            if rule.matches(kind, exit_code, error):
                return rule.directive
        return self.default_directive


DEFAULT_POLICY = SupervisionPolicy()


# --- the decision --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Child:
    id: str
    seq: float  # creation order among siblings
    live: bool
    incarnation: int
    restart_type: RestartType = RestartType.TRANSIENT
    backoff_level: int = 0
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    child_id: str
    incarnation: int
    kind: FailureKind
    exit_code: int | None = None
    error: str | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class Situation:
    parent_id: str
    parent_is_node: bool
    policy: SupervisionPolicy
    restart_log: tuple[float, ...]  # when this parent restarted children (one entry per decision)
    children: tuple[Child, ...]
    failures: tuple[Failure, ...]


@dataclass(frozen=True, slots=True)
class Restart:
    child_id: str
    from_incarnation: int
    delay_s: float
    backoff_level: int  # the level the new incarnation starts at
    was_live: bool  # a sibling still running: stopped first, then restarted


@dataclass(frozen=True, slots=True)
class Decision:
    directive: Directive | None  # None: nothing to do (a normal exit of a transient child, ...)
    reason: str
    restarts: tuple[Restart, ...] = ()
    stops: tuple[str, ...] = ()  # children whose subtree is stopped
    escalate: bool = False  # the parent fails; at a Node the hierarchy below is stopped and reported
    restart_log: tuple[float, ...] = ()
    per_child: dict[str, str] = field(default_factory=dict)  # child id -> directive applied to it

    @property
    def is_noop(self) -> bool:
        return not (self.restarts or self.stops or self.escalate)


def decide(situation: Situation, now: float) -> Decision:
    """What the parent does about these failures of its children (all at once: a correlated failure is one decision)."""
    p = situation.policy
    children = {c.id: c for c in situation.children}
    wanted: dict[str, Directive] = {}
    for f in situation.failures:
        child = children.get(f.child_id)
        if child is None or child.live or child.incarnation != f.incarnation:
            continue  # already restarted, or not a child any more: a stale report
        if f.kind is FailureKind.NORMAL:
            if child.restart_type is RestartType.PERMANENT:
                wanted[f.child_id] = Directive.RESTART
            continue
        if child.restart_type is RestartType.TEMPORARY:
            wanted[f.child_id] = Directive.RESUME
            continue
        wanted[f.child_id] = p.directive_for(f.kind, f.exit_code, f.error)
    log = tuple(t for t in situation.restart_log if t > now - p.window_s)
    if not wanted:
        return Decision(None, "nothing to decide", restart_log=log)
    per_child = {k: v.value for k, v in wanted.items()}
    if Directive.ESCALATE in wanted.values():
        return Decision(Directive.ESCALATE, _why(wanted, Directive.ESCALATE, situation), escalate=True, restart_log=log, per_child=per_child)
    stops = tuple(sorted(k for k, v in wanted.items() if v is Directive.STOP))
    failed_restarts = [k for k, v in wanted.items() if v is Directive.RESTART]
    if not failed_restarts:
        directive = Directive.STOP if stops else Directive.RESUME
        return Decision(directive, _why(wanted, directive, situation), stops=stops, restart_log=log, per_child=per_child)
    if len(log) + 1 > p.max_restarts:
        reason = f"restart intensity exceeded: {len(log)} restarts in the last {p.window_s:g}s (max {p.max_restarts})"
        return Decision(Directive.ESCALATE, reason, escalate=True, restart_log=log, per_child=per_child)
    ordered = sorted(situation.children, key=lambda c: (c.seq, c.id))
    targets: list[Child]
    if p.strategy is Strategy.ONE_FOR_ONE:
        targets = [children[k] for k in failed_restarts]
    elif p.strategy is Strategy.ONE_FOR_ALL:
        targets = [c for c in ordered if c.id in wanted and wanted[c.id] is Directive.RESTART or (c.live and c.restart_type is not RestartType.TEMPORARY)]
    else:  # rest_for_one: the failed ones and every live sibling created after the first of them
        first = min(children[k].seq for k in failed_restarts)
        targets = [
            c for c in ordered
            if (c.id in wanted and wanted[c.id] is Directive.RESTART)
            or (c.live and c.seq > first and c.restart_type is not RestartType.TEMPORARY)
        ]
    targets.sort(key=lambda c: (c.seq, c.id))
    restarts = []
    for c in targets:
        stable = c.started_at is not None and now - c.started_at >= p.backoff.reset_after_s
        level = 0 if stable else c.backoff_level
        delay = p.backoff.delay(level, seed=f"{c.id}:{c.incarnation}")
        restarts.append(Restart(c.id, c.incarnation, delay, level + 1, c.live))
        per_child.setdefault(c.id, Directive.RESTART.value)
    return Decision(
        Directive.RESTART,
        f"{p.strategy.value}: restart {len(restarts)} of {len(ordered)} children ({_why(wanted, Directive.RESTART, situation)})",
        restarts=tuple(restarts),
        stops=stops,
        restart_log=log + (now,),
        per_child=per_child,
    )


#: how many failures a decision's reason names one by one; the rest are counted by kind
REASON_NAMES = 5


def _why(wanted: dict[str, Directive], directive: Directive, situation: Situation) -> str:
    """The failures behind a directive: the first REASON_NAMES by id, then how many more of each kind. A node loss
    fails a thousand children at once: the reason (and each child's `decided` event, which repeats it) stays short,
    while the decision event's data lists every child."""
    failures = {f.child_id: f for f in situation.failures}
    parts = []
    for child_id, d in sorted(wanted.items()):
        if d is directive and child_id in failures:
            f = failures[child_id]
            parts.append((child_id, f"exit {f.exit_code}" if f.kind is FailureKind.EXIT else f.kind.value))
    if not parts:
        return directive.value
    named = ", ".join(f"{child_id} {detail}" for child_id, detail in parts[:REASON_NAMES])
    rest = Counter(detail for _, detail in parts[REASON_NAMES:])
    if not rest:
        return named
    return f"{named} and {len(parts) - REASON_NAMES} more: " + ", ".join(f"{n} {detail}" for detail, n in sorted(rest.items()))


def classify(state: str, exit_code: int | None, error: str | None) -> FailureKind:
    """How a terminal child ended, from what the graph recorded."""
    if state == "lost":
        return FailureKind.LOST
    if state == "succeeded":
        return FailureKind.NORMAL
    if error and error.startswith("escalated"):
        return FailureKind.ESCALATED
    if exit_code is None or (error or "").startswith(START_ERROR_PREFIX):
        return FailureKind.ERROR
    if (error or "").startswith(OOM_KILLED):
        return FailureKind.OOM_KILLED
    if exit_code < 0:
        return FailureKind.SIGNAL
    return FailureKind.EXIT if exit_code != 0 else FailureKind.NORMAL


def restart_type_of(value: str | None) -> RestartType:
    try:
        return RestartType(value) if value else RestartType.TRANSIENT
    except ValueError:
        return RestartType.TRANSIENT


def policy_from_json(raw: str | None) -> SupervisionPolicy:
    return SupervisionPolicy.model_validate_json(raw) if raw else DEFAULT_POLICY


def sequence_of(children: Sequence[Child]) -> list[str]:
    return [c.id for c in sorted(children, key=lambda c: (c.seq, c.id))]
