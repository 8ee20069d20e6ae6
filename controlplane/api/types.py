"""The GraphQL output types, resolved straight from the service's records.

A `Node` is answered from a NodeRecord, an `Allocation` from an
AllocationRecord, and so on: plain fields are read off the record by name (no
copy, no per-field resolver), so a list of a thousand allocations costs one
query. Only relations (`node`, `parent`, `children`, ...) call the service;
supervision fields read the record's extra properties.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import strawberry
from strawberry import Parent
from strawberry.scalars import JSON

from controlplane.api import access
from controlplane.api.context import Info, wanted_fields, wanted_properties
from controlplane.api.output import DEFAULT_TAIL_BYTES, AllocationOutput, read_output
from controlplane.domain.errors import InvalidInput
from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord, GpuRecord, NeighborRecord, NodeRecord
from controlplane.domain.records import Event as EventRecord
from controlplane.domain.records import Vertex as VertexRecord
from controlplane.domain.traversal import Op, build_traversal
from controlplane.domain.vocabulary import Direction as VocabularyDirection
from controlplane.domain.vocabulary import EdgeType as VocabularyEdgeType
from controlplane.domain.vocabulary import Label

T = TypeVar("T")
DEFAULT_PAGE = 100
DEFAULT_DESCENDANTS_DEPTH = 64
MAX_WATCHING = 1_000


# --- enums: built from the domain's, so the two cannot drift ------------------------------
def _mirror(domain: type[Enum], name: str, description: str) -> Any:
    mirrored: type[Enum] = Enum(name, {m.name: m.value for m in domain})  # type: ignore[misc]  # a functional Enum
    return strawberry.enum(mirrored, description=description)


if TYPE_CHECKING:  # to the type checker, the mirrors are the domain's enums (whatever order it reads the modules in)
    AllocationState = State
    EdgeType = VocabularyEdgeType
    Direction = VocabularyDirection
    FilterOp = Op
else:
    AllocationState = _mirror(State, "AllocationState", "Lifecycle state of an allocation.")
    EdgeType = _mirror(VocabularyEdgeType, "EdgeType", "Edge types a traversal may follow.")
    Direction = _mirror(VocabularyDirection, "Direction", "Which way a traversal follows edges.")
    FilterOp = _mirror(Op, "FilterOp", "How a traversal filter compares a property with its value.")


# --- connections -------------------------------------------------------------------------
@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of a listing ordered by id; pass `endCursor` as `after` for the next page.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def connection(rows: list[Any], has_next: bool) -> Any:
    edges = [Edge(cursor=r.id, node=r) for r in rows]
    return Connection(edges=edges, page_info=PageInfo(has_next_page=has_next, end_cursor=rows[-1].id if rows else None))


# --- actors ------------------------------------------------------------------------------
@strawberry.interface(description="What can be a parent: a Node (the root of a hierarchy) or an Allocation.")
class Actor:
    id: strawberry.ID
    name: str

    @strawberry.field(description="Allocations this actor created, ordered by id.")
    async def children(
        self, root: Parent[Any], info: Info, first: int = DEFAULT_PAGE, after: str | None = None
    ) -> Connection[Allocation]:
        ctx = info.context
        wanted = wanted_fields(info, "edges", "node")
        rows, more = await ctx.page(
            lambda a, n: ctx.control.queries.children(root.id, after=a, limit=n), first=first, after=after, wanted=wanted
        )
        return cast(Connection[Allocation], connection(rows, more))

    @strawberry.field(description="Its history (transitions, supervision decisions, Terminated), oldest first, after `since`.")
    async def events(self, root: Parent[Any], info: Info, first: int = DEFAULT_PAGE, since: float | None = None) -> list[Event]:
        return cast(list[Event], await info.context.call(info.context.control.queries.events, root.id, since=since, limit=first))

    @strawberry.field(description="Every allocation below this actor (a node: every hierarchy it roots), down to "
                      "`maxDepth` levels, ordered by id.")
    async def descendants(
        self, root: Parent[Any], info: Info, max_depth: int = DEFAULT_DESCENDANTS_DEPTH, first: int | None = None
    ) -> list[Allocation]:
        ctx = info.context
        limit = ctx.max_descendants if first is None else first
        if not 1 <= limit <= ctx.max_descendants:
            raise InvalidInput(f"must be between 1 and {ctx.max_descendants}", field="first")
        ctx.seen(root)
        rows = await ctx.allocations(
            lambda: ctx.control.queries.descendants(root.id, max_depth=max_depth, limit=limit, fields=wanted_properties(info)),
            wanted_fields(info),
        )
        return cast(list[Allocation], rows)

    @strawberry.field(description="How it supervises the children it creates (SupervisionPolicy, snake_case keys); null: the default policy.")
    def supervision(self, root: Parent[Any]) -> JSON | None:
        raw = root.extra.get("supervision")
        return json.loads(raw) if raw else None


@strawberry.type(description="A machine: the root of the hierarchies it starts. cpu in millicores, memory in MiB.")
class Node(Actor):
    status: str
    labels: list[str]
    cpu: int
    memory: int
    cpu_free: int
    memory_free: int
    heartbeat_at: float = strawberry.field(description="Unix time of the last heartbeat, in seconds.")
    registered_at: float

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, NodeRecord))

    @strawberry.field(description="Cordoned (or draining): no new allocation is placed on it.")
    def cordoned(self, root: Parent[NodeRecord]) -> bool:
        return bool(root.extra.get("cordoned"))

    @strawberry.field
    async def gpus(self, root: Parent[NodeRecord], info: Info) -> list[Gpu]:
        return cast(list[Gpu], await info.context.call(info.context.control.queries.gpus, root.id))

    @strawberry.field(description="Nodes this one is connected to, nearest first.")
    async def neighbors(self, root: Parent[NodeRecord], info: Info) -> list[Neighbor]:
        return cast(list[Neighbor], await info.context.call(info.context.control.queries.neighbors, root.id))

    @strawberry.field(description="Allocations placed on this node (RUNS_ON), ordered by id.")
    async def allocations(
        self,
        root: Parent[NodeRecord],
        info: Info,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
        state: AllocationState | None = None,
    ) -> Connection[Allocation]:
        ctx = info.context
        wanted = wanted_fields(info, "edges", "node")
        status = state.value if state else None
        ctx.seen(root)
        rows, more = await ctx.page(
            lambda a, n: ctx.control.queries.allocations(after=a, limit=n, state=status, node_id=root.id),
            first=first,
            after=after,
            wanted=wanted,
        )
        if not access.reads_everything(ctx):  # placed on this node is not created under it
            rows = [r for r in rows if await access.may_read(ctx, r.id)]
        return cast(Connection[Allocation], connection(rows, more))


@strawberry.type(description="An actor running on a node: a job, or orchestration logic (native executor).")
class Allocation(Actor):
    executor: str
    argv: list[str]
    state: AllocationState
    incarnation: int
    version: int
    exit_code: int | None
    error: str | None
    output_tail: str | None
    pid: int | None
    created_at: float
    updated_at: float
    cpu: int = strawberry.field(description="Reserved cpu in millicores.")
    memory: int = strawberry.field(description="Reserved memory in MiB.")
    gpus: int = strawberry.field(description="How many GPUs it holds.")
    gpu_model: str | None
    gpu_ids: list[str]
    grace_period_s: float
    parent_id: strawberry.ID
    node_id: strawberry.ID

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, AllocationRecord))

    @strawberry.field(description="Its environment; the values are hidden from callers who may not spawn there.")
    async def env(self, root: Parent[AllocationRecord], info: Info) -> JSON:
        if await access.sees_secrets(info.context, root.id):
            return cast(JSON, root.env)
        return cast(JSON, {k: access.HIDDEN for k in root.env})

    # `parent` and `node` are sync: they answer at once when the request knows the record, else an awaitable.
    @strawberry.field(description="The Node or Allocation that created this one.")
    def parent(self, root: Parent[AllocationRecord], info: Info) -> Actor:
        ctx = info.context
        if not access.reads_everything(ctx):
            return cast(Actor, _readable_parent(ctx, root))
        return cast(Actor, ctx.node(root.parent_id) if root.parent_id == root.node_id else ctx.actor(root.parent_id))

    @strawberry.field(description="The node it runs on (RUNS_ON).")
    def node(self, root: Parent[AllocationRecord], info: Info) -> Node:
        return cast(Node, info.context.node(root.node_id))

    @strawberry.field(description="Parent first, up to and including the root Node.")
    async def ancestors(self, root: Parent[AllocationRecord], info: Info) -> list[Actor]:
        vertices = await info.context.call(info.context.control.queries.ancestors, root.id)
        if not access.reads_everything(info.context):
            vertices = [v for v in vertices if await access.may_read(info.context, v.id)]
        return cast(list[Actor], [info.context.seen(actor_from_vertex(v)) for v in vertices])

    # --- supervision ----------------------------------------------------------------------
    @strawberry.field(description="When its parent restarts it: `permanent`, `transient` or `temporary`.")
    def restart_type(self, root: Parent[AllocationRecord]) -> str:
        return str(root.extra.get("restart_type") or "transient")

    @strawberry.field(description="How many times it has been restarted (incarnations after the first).")
    def restarts(self, root: Parent[AllocationRecord]) -> int:
        return int(root.extra.get("restarts") or 0)

    @strawberry.field(description="What happens to its children when it ends: `cascade` (stopped) or `abandon` (orphans).")
    def child_policy(self, root: Parent[AllocationRecord]) -> str:
        return str(root.extra.get("child_policy") or "cascade")

    @strawberry.field(description="Its parent ended with child policy `abandon`, and it lives on.")
    def orphan(self, root: Parent[AllocationRecord]) -> bool:
        return bool(root.extra.get("orphan"))

    @strawberry.field(description="Unix time of a decided restart that is waiting for its backoff; null if none.")
    def restart_at(self, root: Parent[AllocationRecord]) -> float | None:
        value = root.extra.get("restart_at")
        return float(value) if value is not None else None

    @strawberry.field(
        description="What its restart waits for when no node can take it, e.g. \"waiting for a ready node with "
        "zone=eu, 1 A100 and room for cpu=500m memory=256MiB\" (retried; each change is a `waiting` event saying "
        "what stands in the way); null when it waits for nothing. `stopAllocation` ends the wait."
    )
    def waiting(self, root: Parent[AllocationRecord]) -> str | None:
        value = root.extra.get("waiting")
        return str(value) if value is not None else None

    @strawberry.field(description="The file its node agent writes the current incarnation's output to, on its node; "
                      "null before it starts (see `output`).")
    def log_path(self, root: Parent[AllocationRecord]) -> str | None:
        value = root.extra.get("log_path")
        return str(value) if value is not None else None

    @strawberry.field(
        description="An incarnation's output (default: the current one): its node, its log file there, and its last "
        "`tailBytes` bytes. Null for a native allocation (no process, no output)."
    )
    async def output(
        self, root: Parent[AllocationRecord], info: Info, incarnation: int | None = None, tail_bytes: int = DEFAULT_TAIL_BYTES,
    ) -> AllocationOutput | None:
        if root.executor != "process":
            return None
        ctx = info.context
        return await ctx.call(lambda: read_output(ctx.control.queries.log_of(root.id, incarnation), ctx.runs_dir, tail_bytes))

    @strawberry.field(description="Why it failed as a supervisor (a child escalated to it); null if it did not.")
    def escalated(self, root: Parent[AllocationRecord]) -> str | None:
        value = root.extra.get("escalated")
        return str(value) if value is not None else None

    @strawberry.field(description="The job whose task it runs, or whose root it is.")
    def job_id(self, root: Parent[AllocationRecord]) -> strawberry.ID | None:
        value = root.extra.get("job_id") or root.extra.get("root_of")
        return strawberry.ID(str(value)) if value else None

    @strawberry.field(description="The job task it runs.")
    def task_id(self, root: Parent[AllocationRecord]) -> strawberry.ID | None:
        value = root.extra.get("task_id")
        return strawberry.ID(str(value)) if value else None

    @strawberry.field(description="For executor `native`: which native executor runs it (`job`, `replicas`, a plugin's).")
    def native(self, root: Parent[AllocationRecord]) -> str | None:
        value = root.extra.get("native")
        return str(value) if value else None

    @strawberry.field(description="Allocations watching this one (death watch): they get a `terminated` event when it ends.")
    async def watchers(self, root: Parent[AllocationRecord], info: Info) -> list[Allocation]:
        ids = await info.context.watchers(root.id)
        if not access.reads_everything(info.context):
            ids = [i for i in ids if await access.may_read(info.context, i)]
        return cast(list[Allocation], await asyncio.gather(*(maybe_await(info.context.actor(i)) for i in ids)))

    @strawberry.field(description="Allocations this one watches (death watch), ordered by id.")
    async def watching(self, root: Parent[AllocationRecord], info: Info) -> list[Allocation]:
        spec = build_traversal(
            start_id=root.id, edge_types=[VocabularyEdgeType.WATCHES.value], direction=VocabularyDirection.OUT.value,
            target_label=Label.ALLOCATION.value, limit=MAX_WATCHING,
        )
        vertices = await info.context.call(info.context.control.queries.traverse, spec)
        if not access.reads_everything(info.context):
            vertices = [v for v in vertices if await access.may_read(info.context, v.id)]
        return cast(list[Allocation], [info.context.seen(actor_from_vertex(v)) for v in vertices])


async def _readable_parent(ctx: Any, root: AllocationRecord) -> Any:
    from controlplane.domain.errors import Forbidden

    if not await access.may_read(ctx, root.parent_id):
        raise Forbidden(f"the parent of {root.id} is outside the subtrees this credential covers", field="parent")
    return await maybe_await(ctx.node(root.parent_id) if root.parent_id == root.node_id else ctx.actor(root.parent_id))


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def actor_from_vertex(v: VertexRecord) -> NodeRecord | AllocationRecord:
    if v.label == Label.NODE.value:
        return NodeRecord.from_props(v.properties)
    props = dict(v.properties)
    if isinstance(props.get("env"), dict):  # the store decodes env for generic vertices; the record decodes it itself
        props["env"] = json.dumps(props["env"])
    return AllocationRecord.from_props(props)


@strawberry.type(description="A GPU device owned by a node; a live allocation claims it exclusively.")
class Gpu:
    id: strawberry.ID
    model: str
    memory: int = strawberry.field(description="Memory in MiB.")
    node_id: strawberry.ID

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, GpuRecord))

    @strawberry.field(description="The allocation holding this GPU, if any.")
    async def claimed_by(self, root: Parent[GpuRecord], info: Info) -> Allocation | None:
        if root.claimed_by is None:
            return None
        return cast(Allocation, await maybe_await(info.context.actor(root.claimed_by)))


@strawberry.type(description="A NEIGHBOR_OF link: the other node, round-trip time and bandwidth.")
class Neighbor:
    rtt_ms: float
    bandwidth: float

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, NeighborRecord))

    @strawberry.field
    def node(self, root: Parent[NeighborRecord], info: Info) -> Node:
        return cast(Node, info.context.node(root.node_id))


@strawberry.type(description="Any vertex a traversal reaches: its label, id and properties.")
class Vertex:
    label: str
    id: strawberry.ID

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, VertexRecord))

    @strawberry.field(description="Its stored properties; an allocation's env values hidden from callers who may not spawn there.")
    async def properties(self, root: Parent[VertexRecord], info: Info) -> JSON:
        props = root.properties
        if root.label == Label.ALLOCATION.value and props.get("env") and not await access.sees_secrets(info.context, root.id):
            env = props["env"]
            keys = json.loads(env) if isinstance(env, str) else env
            props = {**props, "env": {k: access.HIDDEN for k in keys}}
        return cast(JSON, props)


@strawberry.type(description="A transition or a supervision decision, in the order it happened.")
class Event:
    id: strawberry.ID
    kind: str = strawberry.field(description="`transition`, `decision`, `terminated` (death watch), `escalated`, ...")
    allocation_id: strawberry.ID
    incarnation: int | None
    from_state: str | None = strawberry.field(description="The state it left (transitions).")
    to_state: str | None = strawberry.field(description="The state it entered (transitions; for `terminated`, the watched one's).")
    at: float = strawberry.field(description="Unix time, in seconds.")
    reason: str | None
    by: str | None = strawberry.field(description="Who decided: a user, a node agent, or the supervising parent's id.")
    data: JSON = strawberry.field(description="Anything else recorded with it (`target` of a `terminated`, `directive` of a decision, ...).")

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, EventRecord))
