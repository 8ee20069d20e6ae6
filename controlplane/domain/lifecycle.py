"""The allocation lifecycle as an explicit transition table, and the named moves the code makes.

pending -> placed -> starting -> running -> succeeded | failed | stopped,
with `stopping` on the way to `stopped` and `lost` when the node is lost.
A restart begins a new incarnation (back to `placed`) from a terminal state.

`TRANSITIONS` is the single source of legal moves. Every state change the
services, agents and supervisors make is one of the `Move`s below, and a Move
can only be built from pairs the table allows (anything else raises
IllegalTransition when the module is imported, long before it could reach the
store). The store applies a move as a guarded change: the current state picks
its step, or the change is refused. docs/lifecycle.md draws this table
(`python -m controlplane.domain.lifecycle` prints it; a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from controlplane.domain.errors import IllegalTransition, InvalidInput


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

TRANSITIONS: Mapping[State, frozenset[State]] = MappingProxyType({
    State.PENDING: frozenset({State.PLACED, State.STOPPED, State.FAILED}),
    State.PLACED: frozenset({State.STARTING, State.STOPPED, State.FAILED, State.LOST}),
    State.STARTING: frozenset({State.RUNNING, State.SUCCEEDED, State.FAILED, State.STOPPING, State.LOST}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.STOPPING, State.LOST}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED, State.LOST}),
    # A terminal incarnation may only be followed by a new incarnation (a restart).
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.STOPPED: frozenset(),
    State.LOST: frozenset(),
})
#: A move that would end `stopped` ends `failed` instead when the allocation is being stopped because it
#: escalated (its own parent then decides): so wherever the table allows `-> stopped`, it allows `-> failed`.
ESCALATED_STOP_ENDS = State.FAILED
#: a restart starts incarnation + 1 in `placed`; allowed from these states
RESTARTABLE: frozenset[State] = TERMINAL


def can_transition(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: State) -> frozenset[State]:
    """Every state from which `target` may be reached: the precondition of a transition."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check_transition(allocation_id: str, current: State, target: State) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(allocation_id, current.value, target.value)


@dataclass(frozen=True, slots=True)
class Move:
    """A named step of the lifecycle: from each source state to its target, all pairs checked against the table."""

    name: str
    steps: Mapping[State, State]

    def __post_init__(self) -> None:
        if not self.steps:
            raise IllegalTransition(f"move {self.name}", "-", "-", reason="a move needs at least one step")
        for current, target in self.steps.items():
            if not can_transition(current, target):
                raise IllegalTransition(f"move {self.name}", current.value, target.value, reason="not in the table")
        object.__setattr__(self, "steps", MappingProxyType(dict(self.steps)))

    @property
    def targets(self) -> frozenset[State]:
        return frozenset(self.steps.values())

    def target(self, current: State) -> State | None:
        return self.steps.get(current)

    def __repr__(self) -> str:
        return f"Move({self.name})"


def _move(name: str, *pairs: tuple[State, State]) -> Move:
    return Move(name, dict(pairs))


S = State
#: creation: a new allocation is written directly as `placed` on its node (its event says pending -> placed)
SPAWN = _move("spawn", (S.PENDING, S.PLACED))
#: the node agent (or, for a native allocation, the supervisor) takes it to start it
CLAIM = _move("claim", (S.PLACED, S.STARTING))
#: its process exists (or its native executor runs)
RUN = _move("run", (S.STARTING, S.RUNNING))
#: its process exited 0; a process that ends while stopping is stopped
EXIT_OK = _move("exit_ok", (S.STARTING, S.SUCCEEDED), (S.RUNNING, S.SUCCEEDED), (S.STOPPING, S.STOPPED))
#: its process exited non-zero or was killed
EXIT_FAILED = _move("exit_failed", (S.STARTING, S.FAILED), (S.RUNNING, S.FAILED), (S.STOPPING, S.STOPPED))
#: its process could not be started (no such executable, an executor error)
START_FAILED = _move("start_failed", (S.PLACED, S.FAILED), (S.STARTING, S.FAILED))
#: a stop asked for: what has not started ends at once, what runs gets its signal
STOP = _move("stop", (S.PENDING, S.STOPPED), (S.PLACED, S.STOPPED), (S.STARTING, S.STOPPING), (S.RUNNING, S.STOPPING))
#: a stopping allocation whose subtree has ended and whose process is gone (or never was)
STOPPED = _move("stopped", (S.STOPPING, S.STOPPED))
#: a new node agent finds what its dead predecessor had started
AGENT_RESTARTED = _move("agent_restarted", (S.STARTING, S.LOST), (S.RUNNING, S.LOST), (S.STOPPING, S.STOPPED))
#: the node agent is stopped deliberately (Ctrl-C on `controlplane up`, a service stop): what it ran is gone with it
AGENT_STOPPED = _move("agent_stopped", (S.STARTING, S.LOST), (S.RUNNING, S.LOST), (S.STOPPING, S.STOPPED))
#: the reconciler: started long ago and never reported running
START_LOST = _move("start_lost", (S.STARTING, S.FAILED))
#: a native executor ends its allocation
NATIVE_SUCCEED = _move("native_succeed", (S.RUNNING, S.SUCCEEDED))
NATIVE_FAIL = _move("native_fail", (S.RUNNING, S.FAILED))
#: a native executor that cannot be loaded or raised
NATIVE_CRASH = _move("native_crash", (S.PLACED, S.FAILED), (S.STARTING, S.FAILED), (S.RUNNING, S.FAILED))
#: its node was declared lost (the reaper; one statement for the whole node)
NODE_LOST = _move("node_lost", *((s, S.LOST) for s in sorted(sources_of(S.LOST), key=list(State).index)))

#: every move the code makes, by name: the table the services, agents and store statements obey
MOVES: Mapping[str, Move] = MappingProxyType({m.name: m for m in (
    SPAWN, CLAIM, RUN, EXIT_OK, EXIT_FAILED, START_FAILED, STOP, STOPPED, AGENT_RESTARTED, AGENT_STOPPED, START_LOST,
    NATIVE_SUCCEED, NATIVE_FAIL, NATIVE_CRASH, NODE_LOST,
)})


def exit_move(exit_code: int) -> Move:
    return EXIT_OK if exit_code == 0 else EXIT_FAILED


def parse_state(value: str, *, field: str = "state") -> State:
    try:
        return State(value)
    except ValueError:
        raise InvalidInput(
            f"unknown state {value!r}; expected one of {', '.join(s.value for s in State)}", field=field
        ) from None


def mermaid() -> str:
    """The table as a Mermaid state diagram (docs/lifecycle.md)."""
    order = list(State)
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    for current in order:
        for target in sorted(TRANSITIONS[current], key=order.index):
            names = [m.name for m in MOVES.values() if m.target(current) is target]
            if target is ESCALATED_STOP_ENDS:
                names += [f"{m.name} (escalated)" for m in MOVES.values() if m.target(current) is State.STOPPED]
            lines.append(f"    {current.value} --> {target.value}" + (f": {', '.join(names)}" if names else ""))
    for terminal in sorted(RESTARTABLE, key=order.index):
        lines.append(f"    {terminal.value} --> placed: restart (incarnation + 1)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
