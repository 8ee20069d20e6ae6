"""What one GraphQL request carries: the ControlPlane, and per-request loaders for related vertices.

The service is synchronous (it blocks on the graph server), so resolvers hand
each call to a worker thread. Relations that many objects in one answer share
(an allocation's node, its parent, a GPU's claimer) go through DataLoaders: one
lookup per distinct id per request, and records the request already holds are
not fetched again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from controlplane.domain.errors import InvalidInput, NotFound
from controlplane.domain.records import AllocationRecord, NodeRecord
from controlplane.services.control import MAX_PAGE, ControlPlane

R = TypeVar("R")
Actor = NodeRecord | AllocationRecord


class ApiContext(BaseContext):
    def __init__(self, control: ControlPlane, *, max_descendants: int) -> None:
        super().__init__()
        self.control = control
        self.max_descendants = max_descendants
        #: allocations this request already read, by id: a parent among them costs nothing
        self.seen: dict[str, AllocationRecord] = {}
        self.nodes: DataLoader[str, NodeRecord] = DataLoader(load_fn=self._load_nodes)
        self.actors: DataLoader[str, Actor] = DataLoader(load_fn=self._load_actors)

    async def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run one blocking service call in a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)

    def remember(self, records: Sequence[AllocationRecord]) -> Sequence[AllocationRecord]:
        self.seen.update((r.id, r) for r in records)
        return records

    async def _load_nodes(self, ids: list[str]) -> list[NodeRecord | BaseException]:
        return await run_in_threadpool(lambda: [_or_error(self.control.node, i) for i in ids])

    async def _load_actors(self, ids: list[str]) -> list[Actor | BaseException]:
        missing = [i for i in ids if i not in self.seen]
        fetched = dict(zip(missing, await run_in_threadpool(lambda: [self._fetch_actor(i) for i in missing])))
        return [self.seen[i] if i in self.seen else fetched[i] for i in ids]

    def _fetch_actor(self, actor_id: str) -> Actor | BaseException:
        try:
            return self.control.allocation(actor_id)
        except NotFound:
            return _or_error(self.control.node, actor_id)


def _or_error(fn: Callable[[str], R], key: str) -> R | BaseException:
    try:
        return fn(key)
    except NotFound as exc:  # a DataLoader answers each key with its value or its error
        return exc


Info = strawberry.Info[ApiContext, None]


async def page(
    info: Info, fetch: Callable[[str | None, int], list[R]], *, first: int, after: str | None
) -> tuple[list[R], bool]:
    """One page of an id-ordered listing and whether more follow: `first` + 1 rows in one thread hop."""
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE}", field="first")

    def run() -> tuple[list[R], bool]:
        rows = fetch(after, min(first + 1, MAX_PAGE))
        more = len(rows) > first
        if not more and len(rows) == first == MAX_PAGE:  # a full maximal page: look one row further
            more = bool(fetch(getattr(rows[-1], "id"), 1))
        return rows[:first], more

    return await info.context.call(run)
