"""What one GraphQL request carries: the ControlPlane, and what it already knows about related vertices.

The service is synchronous (it blocks on the graph server), so resolvers hand
each call to a worker thread. Relations shared by many objects of one answer
(an allocation's node, its parent, a GPU's claimer) are looked up once per
distinct id per request:

- a listing that will be asked for `node` or `parent` fetches those in the
  same worker-thread hop (look-ahead), so a thousand allocations cost one
  hop and one lookup per distinct node, not a thousand awaits;
- anything still unknown goes through a DataLoader (batched, de-duplicated);
- a record the request already holds is answered at once, without an await.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext
from strawberry.utils.str_converters import to_snake_case

from controlplane.api.auth import Browsers, Guard
from controlplane.domain.capabilities import Principal
from controlplane.domain.errors import InvalidInput, NotFound
from controlplane.domain.records import AllocationRecord, NodeRecord
from controlplane.services import ControlPlane
from controlplane.services.queries import MAX_PAGE

R = TypeVar("R")
Actor = NodeRecord | AllocationRecord


class ApiContext(BaseContext):
    def __init__(
        self,
        control: ControlPlane,
        *,
        max_descendants: int,
        events_redis_url: str | None = None,
        guard: Guard | None = None,
        principal: Principal | None = None,
        runs_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.control = control
        #: authentication and authorization (controlplane.api.auth); `principal`: who is asking (None: no credential yet)
        self.guard = guard if guard is not None else Guard(control, None, Browsers(frozenset(), frozenset()))
        self.principal = principal
        self.max_descendants = max_descendants
        #: where live event subscriptions hear the doorbell (None: they poll)
        self.events_redis_url = events_redis_url
        #: where the node agents of this machine write their allocations' output (None: no local logs)
        self.runs_dir = runs_dir
        self._forget()

    def _forget(self) -> None:
        self.allocations_seen: dict[str, AllocationRecord] = {}
        self.nodes_seen: dict[str, NodeRecord] = {}
        self._nodes: DataLoader[str, NodeRecord] = DataLoader(load_fn=self._load_nodes)
        self._actors: DataLoader[str, Actor] = DataLoader(load_fn=self._load_actors)
        self._watchers: DataLoader[str, list[str]] = DataLoader(load_fn=self._load_watchers)

    def fresh(self) -> ApiContext:
        """The same connection with nothing known yet: one websocket carries many operations, each sees the graph anew."""
        other = copy.copy(self)
        other._forget()
        return other

    @property
    def by(self) -> str:
        """The principal's name, for the `by` of the events its mutations cause."""
        return self.principal.name if self.principal is not None else "anonymous"

    def status(self, code: int) -> None:
        """The HTTP status of this answer, where the transport has one."""
        if self.response is not None and hasattr(self.response, "status_code"):
            self.response.status_code = code

    async def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run one blocking service call in a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)

    # --- relations: the record now if known, else an awaitable ------------------------------
    def node(self, node_id: str) -> NodeRecord | Awaitable[NodeRecord]:
        return self.nodes_seen.get(node_id) or self._nodes.load(node_id)

    def actor(self, actor_id: str) -> Actor | Awaitable[Actor]:
        return self.allocations_seen.get(actor_id) or self.nodes_seen.get(actor_id) or self._actors.load(actor_id)

    def watchers(self, allocation_id: str) -> Awaitable[list[str]]:
        """Ids of the allocations watching this one (batched over the whole answer)."""
        return self._watchers.load(allocation_id)

    def seen(self, record: R) -> R:
        if isinstance(record, AllocationRecord):
            self.allocations_seen[record.id] = record
        elif isinstance(record, NodeRecord):
            self.nodes_seen[record.id] = record
        return record

    # --- listings ---------------------------------------------------------------------------
    async def allocations(self, fetch: Callable[[], list[AllocationRecord]], wanted: set[str]) -> list[AllocationRecord]:
        """Run `fetch` in a worker thread, then look up the nodes and parents the answer will ask for."""
        return await run_in_threadpool(lambda: self._prefetch(fetch(), wanted))

    async def page(
        self,
        fetch: Callable[[str | None, int], list[R]],
        *,
        first: int,
        after: str | None,
        wanted: set[str] | None = None,
    ) -> tuple[list[R], bool]:
        """One page of an id-ordered listing and whether more follow: `first` + 1 rows, one thread hop.

        With `wanted`, the rows are allocations and their nodes and parents are looked up in the same hop.
        """
        if not 1 <= first <= MAX_PAGE:
            raise InvalidInput(f"must be between 1 and {MAX_PAGE}", field="first")
        more = False

        def rows() -> list[R]:
            nonlocal more
            found = fetch(after, min(first + 1, MAX_PAGE))
            more = len(found) > first
            if not more and len(found) == first == MAX_PAGE:  # a full maximal page: look one row further
                more = bool(fetch(cast(Any, found[-1]).id, 1))
            if wanted is not None:
                self._prefetch(cast(list[AllocationRecord], found[:first]), wanted)
            return found[:first]

        return await run_in_threadpool(rows), more

    def _prefetch(self, rows: list[AllocationRecord], wanted: set[str]) -> list[AllocationRecord]:
        self.allocations_seen.update((r.id, r) for r in rows)
        node_ids = {r.node_id for r in rows}
        if "node" in wanted:
            self._fetch_nodes(node_ids)
        if "parent" in wanted:
            for parent_id in {r.parent_id for r in rows}:
                if parent_id not in self.allocations_seen and parent_id not in self.nodes_seen:
                    found = self._fetch_actor(parent_id, maybe_node=parent_id in node_ids)
                    if not isinstance(found, BaseException):
                        self.seen(found)
        return rows

    # --- loaders ----------------------------------------------------------------------------
    def _fetch_nodes(self, ids: Iterable[str]) -> None:
        for node_id in ids:
            if node_id not in self.nodes_seen:
                found = _or_error(self.control.queries.node, node_id)
                if not isinstance(found, BaseException):
                    self.nodes_seen[node_id] = found

    async def _load_nodes(self, ids: list[str]) -> list[NodeRecord | BaseException]:
        found = await run_in_threadpool(lambda: [_or_error(self.control.queries.node, i) for i in ids])
        return [self.seen(f) for f in found]

    async def _load_actors(self, ids: list[str]) -> list[Actor | BaseException]:
        found = await run_in_threadpool(lambda: [self._fetch_actor(i) for i in ids])
        return [self.seen(f) for f in found]

    async def _load_watchers(self, ids: list[str]) -> list[list[str]]:
        found = await run_in_threadpool(lambda: self.control.queries.watchers(ids))
        return [sorted(found.get(i, [])) for i in ids]

    def _fetch_actor(self, actor_id: str, *, maybe_node: bool = False) -> Actor | BaseException:
        if maybe_node:  # an allocation's parent with its node's id is that node (actors share one id space)
            node = _or_error(self.control.queries.node, actor_id)
            if not isinstance(node, BaseException):
                return node
        try:
            return self.control.queries.allocation(actor_id)
        except NotFound:
            return _or_error(self.control.queries.node, actor_id)


def _or_error(fn: Callable[[str], R], key: str) -> R | BaseException:
    try:
        return fn(key)
    except NotFound as exc:  # a DataLoader answers each key with its value or its error
        return exc


Info = strawberry.Info[ApiContext, None]


def wanted_fields(info: Info, *path: str) -> set[str]:
    """Names selected on the objects this field answers; `path` walks into e.g. edges -> node."""
    selections: Sequence[Any] = info.selected_fields
    for step in ("", *path):
        names: list[Any] = []
        for sel in _flatten(selections):
            if not step or getattr(sel, "name", None) == step:
                names.extend(sel.selections)
        selections = names
    return {s.name for s in _flatten(selections) if hasattr(s, "name") and not hasattr(s, "type_condition")}


#: fields computed from more than the property of the same name
_READS = {"job_id": ("job_id", "root_of")}


def wanted_properties(info: Info) -> set[str]:
    """The stored properties the selected fields read: GraphQL names in snake_case (relations need only the core)."""
    return {p for name in wanted_fields(info) for p in _READS.get(to_snake_case(name), (to_snake_case(name),))}


def _flatten(selections: Sequence[Any]) -> Iterable[Any]:
    for sel in selections:
        if hasattr(sel, "type_condition"):  # a fragment: its fields count as selected here
            yield from _flatten(sel.selections)
        else:
            yield sel
