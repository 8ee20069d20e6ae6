"""Native executors: allocations that run orchestration logic instead of a command.

An executor gets a `NativeContext`: what a native allocation may do (spawn,
watch and stop allocations, end itself). Hooks run in supervisor workers, may
run more than once for the same fact (at-least-once delivery) and must be
idempotent: spawn with request ids, move with guarded transitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from controlplane.domain.records import AllocationRecord


class NativeContext(Protocol):
    @property
    def allocation(self) -> AllocationRecord: ...

    @property
    def config(self) -> dict[str, Any]: ...

    def now(self) -> float: ...

    def spawn(
        self,
        specs: Sequence[dict[str, Any]],
        *,
        request_id: str | None = None,
        parent_id: str | None = None,
        extra: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[AllocationRecord]:
        """Create allocations under this one (or under `parent_id`, one of its descendants)."""

    def children(self) -> list[AllocationRecord]: ...

    def watch(self, target_id: str) -> None: ...

    def stop(self, allocation_id: str, reason: str) -> None: ...

    def succeed(self, reason: str) -> bool: ...

    def fail(self, reason: str) -> bool: ...


class NativeExecutor(Protocol):
    def validate(self, config: dict[str, Any]) -> None:
        """Raise InvalidInput for a configuration this executor cannot run."""

    def on_start(self, ctx: NativeContext) -> None:
        """The allocation is running: spawn what it orchestrates. May run again after a redelivery."""

    def on_children_ended(self, ctx: NativeContext, children: Sequence[AllocationRecord]) -> None:
        """Children reached terminal states (after their supervisor decided about them)."""

    def on_terminated(self, ctx: NativeContext, target: AllocationRecord) -> None:
        """A watched allocation terminated (death watch)."""
