"""A job end to end on every engine: real node agents, a real supervisor, real processes.

Given node agents with zones and GPUs, and neighbour links, when the demo job
is submitted, then its DAG unwraps into the hierarchy and every task runs as a
process, in dependency order, placed as its constraints say.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml

from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from controlplane.ports.store import GraphStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-job.yaml"


@pytest.fixture
def stack(store: GraphStore, falkordb_server: FalkorDBServer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    uri = {"neo4j": "neo4j_uri", "gremlin": "gremlin_url", "janusgraph": "janusgraph_url"}.get(store.engine)
    uri = request.getfixturevalue(uri) if uri else None
    graph = "e2e"
    if store.engine == "falkordb":
        from graph_schema.cypher.falkordb_store import FalkorDBStore

        store = FalkorDBStore(falkordb_server.url, graph=graph)
        store.bootstrap()
        store.clear()
    falkordb_server.client(db=4).flushdb()
    s = Stack(falkordb_server, tmp_path, graph=graph, store=store, graph_uri=uri)
    s.use_broker(falkordb_server.redis_url(4))
    s.start("supervisor", "supervisor")
    for name, args in (
        ("eu1", ["--cpus", "4", "--gpu", "A100", "--gpu", "A100", "--label", "zone=eu"]),
        ("eu2", ["--cpus", "4", "--label", "zone=eu"]),
        ("us1", ["--cpus", "4", "--gpu", "T4", "--label", "zone=us"]),
    ):
        s.start_agent(name, *args)
    for name in ("eu1", "eu2", "us1"):
        wait_for(partial(s.store.get_node, node_id=name), 60, f"{name} registered")
    s.control.nodes.connect("eu1", "eu2", rtt_ms=2)
    s.control.nodes.connect("eu1", "us1", rtt_ms=80)
    yield s
    s.close()


def test_the_demo_job_runs_end_to_end(stack: Stack) -> None:
    spec = yaml.safe_load(DEMO.read_text())
    job = stack.control.jobs.submit(spec, node="eu1")
    done = wait_for(lambda: (j := stack.control.jobs.job(job.id)).state in ("succeeded", "failed") and j, 90, "the job to end")
    assert done.state == "succeeded", done.error
    tasks = {t.path: t for t in stack.control.jobs.tasks(job.id)}
    assert set(tasks) == {"fetch", "preprocess", "train", "train/worker", "report"}
    runs = {p: [stack.control.queries.allocation(r.allocation_id) for r in t.runs] for p, t in tasks.items()}
    assert all(a.state is State.SUCCEEDED and a.exit_code == 0 for rs in runs.values() for a in rs)
    # placement: the GPU task on the only A100 node in zone eu; shards spread; workers near train
    [train] = runs["train"]
    assert train.node_id == "eu1" and len(train.gpu_ids) == 1
    assert len({a.node_id for a in runs["preprocess"]}) == 3
    assert all(w.parent_id == train.id and w.node_id in ("eu1", "eu2") for w in runs["train/worker"])
    # order: a task starts only after everything it needs has succeeded
    def first(a: AllocationRecord, to: str) -> float:
        return min(e.at for e in stack.control.queries.events(a.id) if e.to_state == to)
    assert first(runs["preprocess"][0], "placed") >= first(runs["fetch"][0], "succeeded")
    assert first(runs["report"][0], "placed") >= first(train, "succeeded")
    root_id = done.root_id
    assert root_id is not None
    root = wait_for(lambda: (r := stack.control.queries.allocation(root_id)).state is State.SUCCEEDED and r, 10, "the root to end")
    assert root.executor == "native" and root.parent_id == "eu1"
    assert "accuracy=0.93" in (runs["report"][0].output_tail or "")
