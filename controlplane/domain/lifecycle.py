"""The allocation lifecycle as an explicit transition table.

pending -> placed -> starting -> running -> succeeded | failed | stopped,
with `stopping` on the way to `stopped` and `lost` when the node is lost.
A restart begins a new incarnation (back to `placed`) from a terminal state.
Anything not in the table is refused with IllegalTransition, never applied.
"""

from __future__ import annotations

from enum import Enum

from controlplane.domain.errors import IllegalTransition


class State(str, Enum):
    PENDING = "pending"
    PLACED = "placed"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"


TERMINAL: frozenset[State] = frozenset({State.SUCCEEDED, State.FAILED, State.STOPPED, State.LOST})
LIVE: frozenset[State] = frozenset(set(State) - TERMINAL)
#: states in which the allocation holds cpu, memory and GPUs on its node
HOLDS_RESOURCES: frozenset[State] = frozenset({State.PLACED, State.STARTING, State.RUNNING, State.STOPPING})
#: states a parent may be in to accept new children
ACCEPTS_CHILDREN: frozenset[State] = frozenset({State.PENDING, State.PLACED, State.STARTING, State.RUNNING})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.PLACED, State.STOPPED, State.FAILED}),
    State.PLACED: frozenset({State.STARTING, State.STOPPING, State.STOPPED, State.FAILED, State.LOST}),
    State.STARTING: frozenset({State.RUNNING, State.SUCCEEDED, State.FAILED, State.STOPPING, State.LOST}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.STOPPING, State.LOST}),
    # a stop ends `failed` instead of `stopped` when the allocation is stopped because it escalated
    State.STOPPING: frozenset({State.STOPPED, State.FAILED, State.LOST}),
    # A terminal incarnation may only be followed by a new incarnation (a restart).
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.STOPPED: frozenset(),
    State.LOST: frozenset(),
}
#: a restart starts incarnation + 1 in `placed`; allowed from these states
RESTARTABLE: frozenset[State] = frozenset({State.FAILED, State.LOST, State.STOPPED, State.SUCCEEDED})


def can_transition(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: State) -> frozenset[State]:
    """Every state from which `target` may be reached: the precondition of a transition."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check_transition(allocation_id: str, current: State, target: State) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(allocation_id, current.value, target.value)


def parse_state(value: str, *, field: str = "state") -> State:
    from controlplane.domain.errors import InvalidInput

    try:
        return State(value)
    except ValueError:
        raise InvalidInput(
            f"unknown state {value!r}; expected one of {', '.join(s.value for s in State)}", field=field
        ) from None
