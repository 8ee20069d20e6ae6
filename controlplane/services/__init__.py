"""The use cases, and the one place that assembles them.

`build()` wires the services over the ports (a graph store, a job store, a
dispatcher) in dependency order: the placer, supervision, allocations, the
native runner and jobs. Nothing holds a service that holds it back: what
orchestration code hears after supervision comes through `Hooks`, and the
in-process dispatcher is bound to the services it feeds here. Opening the
adapters themselves from settings is controlplane/wiring.py's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controlplane.domain.clock import wall_clock
from controlplane.jobs.executor import JobExecutor
from controlplane.jobs.ports import JobStore
from controlplane.jobs.service import JobService
from controlplane.ports.dispatch import Dispatcher
from controlplane.ports.leases import NodeLeases
from controlplane.ports.store import GraphStore
from controlplane.services.allocations import AllocationService
from controlplane.services.inprocess import InProcessDispatcher
from controlplane.services.leases import GraphLeases
from controlplane.services.native import NativeExecutors, NativeRunner
from controlplane.services.nodes import NodeService
from controlplane.services.placement import Placer
from controlplane.services.queries import GraphQueries, QueryGate
from controlplane.services.repair import RepairService
from controlplane.services.retention import RetentionService
from controlplane.services.supervisor import Hooks, SupervisorService


@dataclass(frozen=True)
class ControlPlane:
    """The assembled use cases: what the API, the CLI, the workers and the tests hold."""

    store: GraphStore
    dispatcher: Dispatcher
    clock: Callable[[], float]
    nodes: NodeService
    queries: GraphQueries
    allocations: AllocationService
    supervisor: SupervisorService
    repair: RepairService
    native: NativeRunner
    jobs: JobService
    retention: RetentionService


def build(
    store: GraphStore,
    jobs: JobStore,
    dispatcher: Dispatcher | None = None,
    *,
    clock: Callable[[], float] = wall_clock,
    notify: Callable[[], None] | None = None,
    leases: NodeLeases | None = None,
    reader: GraphStore | None = None,
    gate: QueryGate | None = None,
) -> ControlPlane:
    """`dispatcher` None: no node agents; supervision runs in this process (tests, tools).
    `leases` None: node liveness read from the graph's heartbeat_at (one process, no broker).
    `reader`: the store user-facing reads go through (its own connections and time limit; None: `store`)."""
    inprocess: InProcessDispatcher | None = None
    if dispatcher is None:
        dispatcher = inprocess = InProcessDispatcher()
    send: Dispatcher = dispatcher
    hooks = Hooks()
    placer = Placer(store)
    supervisor = SupervisorService(store, send, placer, clock=clock, notify=notify, hooks=hooks)
    executors = NativeExecutors({"job": JobExecutor(jobs, store)})
    allocations = AllocationService(store, send, placer, supervisor, executors.get, clock=clock)
    native = NativeRunner(store, send, allocations, supervisor, executors, clock=clock)
    job_service = JobService(jobs, store, allocations, executors.get, clock=clock)
    job_service.advance_root = lambda root: native.notify(root, [])
    hooks.ended += [native.on_ended, job_service.on_ended]
    hooks.watched.append(native.on_watched)
    if inprocess is not None:
        inprocess.bind(terminated=supervisor.on_terminated, restart=supervisor.restart, start_native=native.start)
    return ControlPlane(
        store=store, dispatcher=send, clock=clock,
        nodes=NodeService(store, supervisor, clock=clock),
        queries=GraphQueries(reader or store, gate=gate),
        allocations=allocations,
        supervisor=supervisor,
        repair=RepairService(store, supervisor, send, leases or GraphLeases(store), clock=clock),
        native=native,
        jobs=job_service,
        retention=RetentionService(store, clock=clock),
    )
