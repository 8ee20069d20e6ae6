"""Property: under concurrent job submissions no node's capacity goes negative and no GPU is claimed twice.

Hypothesis draws a topology and a set of jobs; threads submit them at once on a
real engine; then the graph must add up exactly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.lifecycle import HOLDS_RESOURCES
from controlplane.ports.store import GraphStore
from controlplane.wiring import assemble

MODELS = ["A100", "T4"]

nodes_st = st.lists(
    st.tuples(st.integers(1, 8), st.lists(st.sampled_from(MODELS), max_size=3)),  # cores, GPU models
    min_size=1, max_size=4,
)
task_st = st.tuples(
    st.integers(0, 3000),  # millicores
    st.integers(0, 2),  # GPUs
    st.sampled_from([None, *MODELS]),  # model
    st.integers(1, 3),  # replicas
)
jobs_st = st.lists(st.lists(task_st, min_size=1, max_size=4), min_size=2, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(topology=nodes_st, jobs=jobs_st)
def test_concurrent_submissions_never_overcommit(store: GraphStore, topology: list[tuple[int, list[str]]], jobs: list[list[dict[str, Any]]]) -> None:
    store.clear()
    cp = assemble(store)
    for i, (cores, models) in enumerate(topology):
        cp.nodes.register({"name": f"n{i}", "cpu_milli": cores * 1000, "memory_mib": 4096, "gpus": [{"model": m} for m in models]})

    def submit(j: int) -> None:
        tasks = jobs[j]
        spec = {"name": f"job{j}", "tasks": [
            {"name": f"t{k}", "argv": ["sleep", "100"], "replicas": replicas,
             "resources": {"cpu_milli": cpu, "memory_mib": 16, "gpus": gpus, "gpu_model": model}}
            for k, (cpu, gpus, model, replicas) in enumerate(tasks)]}
        try:
            cp.jobs.submit(spec, node="n0")
        except ControlPlaneError:
            pass  # infeasible or no room right now: refused, which is fine

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        list(pool.map(submit, range(len(jobs))))

    live = [a for a in store.list_allocations(after=None, limit=1000) if a.state in HOLDS_RESOURCES]
    for n in store.list_nodes(after=None, limit=100):
        held = [a for a in live if a.node_id == n.id]
        assert n.cpu_free == n.cpu - sum(a.cpu for a in held) >= 0
        assert n.memory_free == n.memory - sum(a.memory for a in held) >= 0
        gpus = store.gpus(node_id=n.id)
        claimed = [g for g in gpus if g.claimed_by]
        assert len(claimed) == sum(a.gpus for a in held)
        for a in held:
            mine = [g for g in claimed if g.claimed_by == a.id]
            assert len(mine) == a.gpus and sorted(g.id for g in mine) == sorted(a.gpu_ids)
            assert all(a.gpu_model in (None, g.model) for g in mine)
