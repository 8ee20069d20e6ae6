"""The GraphQL schema: queries, mutations and subscriptions, each a thin call to one ControlPlane use case.

Resolvers parse their arguments, call the service in a worker thread and return
its records; types.py and jobs.py map records to GraphQL. No query text lives
here: the generic traversal is built by the domain (`build_traversal`) and
compiled by the store; a raw query is the client's own text, run read-only by
the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated, Any, cast

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.scalars import JSON

from controlplane.api.auth import Authenticated, arg, guarded, job_targets, requires
from controlplane.api.context import Info, wanted_fields
from controlplane.api.errors import ControlPlaneSchema, ErrorMapping, SafeParserCache, renamed_field
from controlplane.api.execution import InlineLeafExecutionContext
from controlplane.api.inputs import AllocationSpecInput, Filter, JobSpecInput, NodeInput, SupervisionPolicyInput, to_spec
from controlplane.api.limits import PAGED, QueryCost
from controlplane.api.live import follow_events
from controlplane.api.metrics import ApiMetrics, OperationMetrics
from controlplane.api.raw import DEFAULT_LIMIT, DEFAULT_TIMEOUT_S, RawResult
from controlplane.api.tokens import NodeCredentialMutations, TokenMutations, TokenQueries
from controlplane.api.types import (
    DEFAULT_PAGE,
    Allocation,
    AllocationState,
    Connection,
    Direction,
    EdgeType,
    Event,
    Node,
    Vertex,
    connection,
)
from controlplane.domain.capabilities import Verb
from controlplane.domain.specs import NodeSpec, parse
from controlplane.domain.traversal import MAX_TRAVERSAL_ROWS, build_traversal
from controlplane.jobs.api import Job
from controlplane.jobs.spec import job_json_schema

MAX_ALIASES = 50
MAX_TOKENS = 10_000
CACHED_DOCUMENTS = 256


READ, SPAWN, STOP, SUPERVISE, WATCH, SUBMIT, RAW, REGISTER = (
    Verb.READ, Verb.SPAWN, Verb.STOP, Verb.SUPERVISE, Verb.WATCH, Verb.SUBMIT, Verb.RAW_QUERY, Verb.REGISTER)


@strawberry.type
class Query(TokenQueries):
    @strawberry.field(description="A node by id (its name).", permission_classes=requires(READ, arg("id")))
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        return cast(Node, info.context.seen(await info.context.call(info.context.control.queries.node, id)))

    @strawberry.field(description="Nodes ordered by id, optionally only those with `status`.", permission_classes=requires(READ))
    async def nodes(
        self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None, status: str | None = None
    ) -> Connection[Node]:
        ctx = info.context
        rows, more = await ctx.page(lambda a, n: ctx.control.queries.nodes(after=a, limit=n, status=status), first=first, after=after)
        for row in rows:
            ctx.seen(row)
        return cast(Connection[Node], connection(rows, more))

    @strawberry.field(description="An allocation by id.", permission_classes=requires(READ, arg("id")))
    async def allocation(self, info: Info, id: strawberry.ID) -> Allocation | None:
        return cast(Allocation, info.context.seen(await info.context.call(info.context.control.queries.allocation, id)))

    @strawberry.field(description="Allocations ordered by id, optionally in one `state` and/or on one `node`.",
                      permission_classes=requires(READ))
    async def allocations(
        self,
        info: Info,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
        state: AllocationState | None = None,
        node: strawberry.ID | None = None,
    ) -> Connection[Allocation]:
        ctx = info.context
        status = state.value if state else None
        rows, more = await ctx.page(
            lambda a, n: ctx.control.queries.allocations(after=a, limit=n, state=status, node_id=node),
            first=first,
            after=after,
            wanted=wanted_fields(info, "edges", "node"),
        )
        return cast(Connection[Allocation], connection(rows, more))

    @strawberry.field(
        description="A generic walk: from a vertex over typed edges in a direction, between minDepth and maxDepth "
        "hops, keeping the vertices that pass every filter (and carry `label`), ordered by id; `after` is the "
        "last id of the previous page.",
        permission_classes=requires(READ),
    )
    async def traverse(
        self,
        info: Info,
        from_: Annotated[strawberry.ID, strawberry.argument(name="from")],
        edge_types: list[EdgeType],
        direction: Direction = Direction.OUT,
        max_depth: int = 1,
        min_depth: int = 1,
        where: list[Filter] | None = None,
        label: str | None = None,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
    ) -> list[Vertex]:
        spec = build_traversal(
            start_id=from_,
            edge_types=[t.value for t in edge_types],
            direction=direction.value,
            max_depth=max_depth,
            min_depth=min_depth,
            filters=[(f.property, f.op.value, f.value) for f in where or []],
            target_label=label,
            limit=first,
            after=after,
        )
        return cast(list[Vertex], await info.context.call(info.context.control.queries.traverse, spec))

    @strawberry.field(
        description="The ordered history: transitions, supervision decisions, Terminated (death watch), of one "
        "allocation or node, or of all; oldest first, after `since` (Unix seconds).",
        permission_classes=requires(READ, arg("allocation")),
    )
    async def events(
        self, info: Info, allocation: strawberry.ID | None = None, since: float | None = None, first: int = DEFAULT_PAGE
    ) -> list[Event]:
        return cast(list[Event], await info.context.call(info.context.control.queries.events, allocation, since=since, limit=first))

    @strawberry.field(description="A job by id.", permission_classes=requires(READ, job_targets))
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        return cast(Job, await info.context.call(info.context.control.jobs.job, id))

    @strawberry.field(description="Jobs ordered by id, optionally only those in `state` (submitted, running, succeeded, ...).",
                      permission_classes=requires(READ))
    async def jobs(
        self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None, state: str | None = None
    ) -> Connection[Job]:
        ctx = info.context
        rows, more = await ctx.page(lambda a, n: ctx.control.jobs.jobs(after=a, limit=n, state=state), first=first, after=after)
        return cast(Connection[Job], connection(rows, more))

    @strawberry.field(description="The JSON Schema of the job spec that `submitJob` takes.", permission_classes=requires(None))
    def job_schema(self) -> JSON:
        return cast(JSON, job_json_schema())

    @strawberry.field(
        description="A read-only query in the engine's own language (Cypher on FalkorDB and Neo4j, Gremlin on "
        "Gremlin Server), for graph browsers and scripts. Writes are refused; past `timeoutS` it is stopped (TIMEOUT); "
        "at most `limit` rows come back.",
        permission_classes=requires(RAW),
    )
    async def raw_query(
        self, info: Info, query: str, timeout_s: float = DEFAULT_TIMEOUT_S, limit: int = DEFAULT_LIMIT
    ) -> RawResult:
        return cast(RawResult, await info.context.call(info.context.control.queries.raw_query, query, timeout_s=timeout_s, limit=limit))


@strawberry.type
class Mutation(TokenMutations, NodeCredentialMutations):
    @strawberry.mutation(description="Register a machine, or update it when it registers again.",
                         permission_classes=requires(REGISTER, lambda _ctx, kw: [str(kw["input"].name)]))
    async def register_node(self, info: Info, input: NodeInput) -> Node:
        spec = parse(NodeSpec, to_spec(input), field="input")
        return cast(Node, await info.context.call(info.context.control.nodes.register, spec))

    @strawberry.mutation(description="Link two nodes both ways (NEIGHBOR_OF); answers node `a`.",
                         permission_classes=requires(REGISTER, arg("a", "b")))
    async def connect_neighbors(
        self, info: Info, a: strawberry.ID, b: strawberry.ID, rtt_ms: float, bandwidth: float = 0.0
    ) -> Node:
        ctx = info.context
        await ctx.call(ctx.control.nodes.connect, a, b, rtt_ms=rtt_ms, bandwidth=bandwidth)
        return cast(Node, ctx.seen(await ctx.call(ctx.control.queries.node, a)))

    @strawberry.mutation(description="Cordon a node: nothing new is placed on it; what runs there stays.",
                         permission_classes=requires(REGISTER, arg("id")))
    async def cordon_node(self, info: Info, id: strawberry.ID) -> Node:
        return cast(Node, await info.context.call(info.context.control.nodes.cordon, id))

    @strawberry.mutation(description="Allow placements on a cordoned or drained node again.",
                         permission_classes=requires(REGISTER, arg("id")))
    async def uncordon_node(self, info: Info, id: strawberry.ID) -> Node:
        return cast(Node, await info.context.call(info.context.control.nodes.uncordon, id))

    @strawberry.mutation(
        description="Drain a node: cordon it and move its allocations off, each by its restart type (permanent and "
        "transient ones restarted elsewhere by their parents, temporary ones stopped), each stopped within `deadlineS`.",
        permission_classes=requires(REGISTER, arg("id")),
    )
    async def drain_node(self, info: Info, id: strawberry.ID, deadline_s: float = 30.0) -> Node:
        return cast(Node, await info.context.call(info.context.control.nodes.drain, id, deadline_s=deadline_s))

    @strawberry.mutation(
        description="Remove a node with no live work from the graph (with its GPUs); refused (CONFLICT) with the "
        "count while allocations run on it or were created by it and live. Answers its id.",
        permission_classes=requires(REGISTER, arg("id")),
    )
    async def deregister_node(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        await info.context.call(info.context.control.nodes.deregister, id)
        return id

    @strawberry.mutation(
        description="Create one allocation under `parent` (a Node or an Allocation). Repeating a `requestId` "
        "answers the allocation it created instead of creating another.",
        permission_classes=requires(SPAWN, arg("parent")),
    )
    async def spawn_allocation(
        self, info: Info, parent: strawberry.ID, spec: AllocationSpecInput, request_id: str | None = None
    ) -> Allocation:
        ctx = info.context
        [created] = await ctx.call(ctx.control.allocations.spawn, parent, [to_spec(spec)], request_id=request_id, field="spec", by=ctx.by)
        return cast(Allocation, created)

    @strawberry.mutation(description="Create several allocations under `parent`: all of them, or none.",
                         permission_classes=requires(SPAWN, arg("parent")))
    async def spawn_allocations(
        self, info: Info, parent: strawberry.ID, specs: list[AllocationSpecInput], request_id: str | None = None
    ) -> list[Allocation]:
        ctx = info.context
        created = await ctx.call(ctx.control.allocations.spawn, parent, to_spec(specs), request_id=request_id, field="specs", by=ctx.by)
        return cast(list[Allocation], created)

    @strawberry.mutation(description="Stop an allocation; stopping one already stopped or stopping changes nothing.",
                         permission_classes=requires(STOP, arg("id")))
    async def stop_allocation(self, info: Info, id: strawberry.ID, reason: str = "stop requested") -> Allocation:
        return cast(Allocation, await info.context.call(info.context.control.allocations.stop, id, reason=reason, by=info.context.by))

    @strawberry.mutation(
        description="Death watch: when `target` terminates, `watcher` gets a `terminated` event (at once if it "
        "already has). Answers the target.",
        permission_classes=requires(WATCH, arg("watcher")),
    )
    async def watch(self, info: Info, watcher: strawberry.ID, target: strawberry.ID) -> Allocation:
        return cast(Allocation, await info.context.call(info.context.control.allocations.watch, watcher, target))

    @strawberry.mutation(description="Stop watching; false when `watcher` was not watching `target`.",
                         permission_classes=requires(WATCH, arg("watcher")))
    async def unwatch(self, info: Info, watcher: strawberry.ID, target: strawberry.ID) -> bool:
        return await info.context.call(info.context.control.allocations.unwatch, watcher, target)

    @strawberry.mutation(
        description="Change how a node or a live allocation supervises its children (omitted fields: the defaults).",
        permission_classes=requires(SUPERVISE, arg("id")),
    )
    async def set_supervision(self, info: Info, id: strawberry.ID, policy: SupervisionPolicyInput) -> bool:
        await info.context.call(info.context.control.supervisor.set_policy, id, to_spec(policy))
        return True

    @strawberry.mutation(
        description="Submit a job from `node` (default: the first ready node). Repeating a `requestId` answers "
        "the job it created instead of creating another. `jobSchema` is the same spec as a JSON Schema, for files.",
        permission_classes=requires(SUBMIT, arg("node")),
    )
    async def submit_job(
        self, info: Info, spec: JobSpecInput, node: strawberry.ID | None = None, request_id: str | None = None
    ) -> Job:
        with renamed_field("spec", domain="job"):
            job = await info.context.call(info.context.control.jobs.submit, to_spec(spec), node=node, request_id=request_id,
                                          by=info.context.by)
        return cast(Job, job)

    @strawberry.mutation(description="Cancel a job: its root and every task allocation are stopped. A finished job stays as it is.",
                         permission_classes=requires(STOP, job_targets))
    async def cancel_job(self, info: Info, id: strawberry.ID) -> Job:
        return cast(Job, await info.context.call(info.context.control.jobs.cancel, id, by=info.context.by))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Events as they happen, of one allocation or node or of all, in order, from the moment of "
        "subscribing; with `since` (Unix seconds), first the history after it (`since: 0`: all that is kept), then "
        "each new one.",
        permission_classes=requires(READ, arg("allocation")),
    )
    async def events(
        self, info: Info, allocation: strawberry.ID | None = None, since: float | None = None
    ) -> AsyncGenerator[Event, None]:
        ctx = info.context
        stream = guarded(ctx, follow_events(ctx.control, allocation, since, redis_url=ctx.events_redis_url))
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield cast(Event, event)


def build_schema(*, max_depth: int, max_descendants: int, metrics: ApiMetrics) -> strawberry.Schema:
    paged = {**PAGED, "descendants": (max_descendants, max_descendants), "traverse": (DEFAULT_PAGE, MAX_TRAVERSAL_ROWS)}
    # Built once, so that a document validated before is not validated again (ValidationCache keys on the rules).
    rules = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    ]
    extensions: list[Any] = [  # the first listed sees the result last
        partial(OperationMetrics, metrics),
        ErrorMapping,
        Authenticated,
        partial(QueryCost, paged=paged),
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(AddValidationRules, rules),
        partial(SafeParserCache, maxsize=CACHED_DOCUMENTS),
        partial(ValidationCache, maxsize=CACHED_DOCUMENTS),
    ]
    return ControlPlaneSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=InlineLeafExecutionContext,
    )
