"""An in-memory broker for in-process tests: every message is held until the test delivers it, once or again.

Celery delivers at least once (acks_late, reject_on_worker_lost): a task may run
twice, concurrently or long after the first run. `HeldBroker` is a Dispatcher
that makes that deterministic: the services send to it as they send to Celery,
and the test decides when each message arrives, how often, and in which order.
Delivering calls the same service a supervisor's Celery task calls (see
workers/tasks.py). There is no node agent in-process: `run` and `stop`
messages are held for the test to look at, never delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.ports.dispatch import Key, RestartKey
from controlplane.services import ControlPlane
from workers.dispatch import RESTART, RUN, START_NATIVE, STOP, TERMINATED


@dataclass(frozen=True)
class Message:
    """One task as sent: its name (workers/dispatch.py), its arguments and its delay."""

    task: str
    args: tuple[Any, ...]
    countdown: float = 0.0


class HeldBroker:
    def __init__(self) -> None:
        self.held: list[Message] = []
        self._handlers: dict[str, Callable[..., object]] = {}

    def bind(self, control: ControlPlane) -> HeldBroker:
        """Deliver to these services: what a supervisor worker's tasks call."""
        self._handlers = {
            TERMINATED: control.supervisor.on_terminated,
            RESTART: control.supervisor.restart,
            START_NATIVE: control.native.start,
        }
        return self

    # --- the Dispatcher port ---------------------------------------------------------------
    def run(self, *, node_id: str, items: Sequence[Key]) -> None:
        self.held.append(Message(RUN, (node_id, [tuple(i) for i in items])))

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        self.held.append(Message(STOP, (node_id, allocation_id, incarnation)))

    def terminated(self, *, keys: Sequence[Key]) -> None:
        if keys:
            self.held.append(Message(TERMINATED, ([tuple(k) for k in keys],)))

    def start_native(self, *, keys: Sequence[Key]) -> None:
        if keys:
            self.held.append(Message(START_NATIVE, ([tuple(k) for k in keys],)))

    def restart(self, *, parent_id: str, items: Sequence[RestartKey], reason: str, countdown: float) -> None:
        self.held.append(Message(RESTART, (parent_id, [tuple(i) for i in items], reason), countdown=countdown))

    # --- what the test does ----------------------------------------------------------------
    def take(self, task: str) -> list[Message]:
        """Remove and return the held messages of one task, in the order they were sent."""
        taken = [m for m in self.held if m.task == task]
        self.held = [m for m in self.held if m.task != task]
        return taken

    def deliver(self, message: Message) -> None:
        """Run the task of this message now (again, if it was delivered before)."""
        self._handlers[message.task](*message.args)

    def drain(self, *tasks: str, limit: int = 1_000) -> list[Message]:
        """Deliver held messages of these tasks (default: every deliverable one), oldest first, until none is left.

        Returns what was delivered, in order. Messages sent while delivering are delivered too.
        """
        wanted = set(tasks or self._handlers)
        delivered: list[Message] = []
        while True:
            ready = next((m for m in self.held if m.task in wanted), None)
            if ready is None:
                return delivered
            if len(delivered) >= limit:
                raise AssertionError(f"more than {limit} messages: a loop? last: {ready}")
            self.held.remove(ready)
            self.deliver(ready)
            delivered.append(ready)
