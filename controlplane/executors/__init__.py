"""Native executors: allocations that run orchestration logic instead of a command.

A native executor is a plugin: any installed package can add one under the
entry point group `controlplane.executors` (name = class implementing
`NativeExecutor`); `job` and `replicas` are built in the same way. Hooks run in
supervisor workers, may run more than once for the same fact (at-least-once
delivery) and must be idempotent: spawn with request ids, move with guarded
transitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from controlplane.domain.errors import InvalidInput
from controlplane.domain.records import AllocationRecord

if TYPE_CHECKING:
    from controlplane.services.native import NativeContext

GROUP = "controlplane.executors"


class NativeExecutor(Protocol):
    def validate(self, config: dict[str, Any]) -> None:
        """Raise InvalidInput for a configuration this executor cannot run."""

    def on_start(self, ctx: NativeContext) -> None:
        """The allocation is running: spawn what it orchestrates."""

    def on_children_ended(self, ctx: NativeContext, children: Sequence[AllocationRecord]) -> None:
        """Children reached terminal states (after their supervisor decided about them)."""

    def on_terminated(self, ctx: NativeContext, target: AllocationRecord) -> None:
        """A watched allocation terminated (death watch)."""


@lru_cache(maxsize=1)
def _registry() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted(_registry())


def load(name: str, *, field: str = "native") -> NativeExecutor:
    ep = _registry().get(name)
    if ep is None:
        raise InvalidInput(f"unknown native executor {name!r}; installed: {', '.join(names()) or 'none'}", field=field)
    return ep.load()()  # type: ignore[no-any-return]
