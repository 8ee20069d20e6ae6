"""The conformance suite: every store behaviour, on every engine (see the `store` fixture).

Given / When / Then, asserting on what a user observes: the graph's answers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from controlplane.domain.errors import Conflict, InvalidInput, NoCapacity, NotFound, Unsatisfiable
from controlplane.domain.lifecycle import AGENT_STOPPED, CLAIM, EXIT_FAILED, EXIT_OK, RUN, Move, State
from controlplane.domain.records import TransitionResult
from controlplane.domain.specs import NodeSpec, parse
from controlplane.domain.traversal import build_traversal
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.wiring import assemble


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    return assemble(store)


def node(name: str = "n1", cpu: int = 4000, memory: int = 8192, gpus: int = 0, model: str = "A100", **labels: str) -> dict[str, Any]:
    return {"name": name, "cpu_milli": cpu, "memory_mib": memory, "labels": labels, "gpus": [{"model": model, "memory_mib": 40960}] * gpus}


def job(name: str = "job", cpu: int = 1000, memory: int = 256, gpus: int = 0, **kw: object) -> dict[str, Any]:
    return {"name": name, "argv": ["true"], "resources": {"cpu_milli": cpu, "memory_mib": memory, "gpus": gpus}, **kw}


def allocation_count(store: GraphStore) -> int:
    return len(store.list_allocations(after=None, limit=1000))


# --- nodes ------------------------------------------------------------------------------
def test_register_node_sets_free_capacity_and_gpus(cp: ControlPlane, store: GraphStore) -> None:
    n = cp.nodes.register(node("gpu-box", gpus=2, zone="eu"))
    assert (n.cpu, n.cpu_free, n.memory_free, n.status) == (4000, 4000, 8192, "ready")
    assert n.labels == ("zone=eu",)
    assert [(g.id, g.model, g.claimed_by) for g in store.gpus(node_id="gpu-box")] == [
        ("gpu-box/gpu0", "A100", None),
        ("gpu-box/gpu1", "A100", None),
    ]


def test_reregistering_a_node_keeps_what_its_allocations_hold(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node(cpu=4000))
    cp.allocations.spawn("n1", [job(cpu=1500)])
    again = cp.nodes.register(node(cpu=6000))  # the machine came back bigger
    assert (again.cpu, again.cpu_free) == (6000, 4500)
    assert len(store.list_nodes(after=None, limit=10)) == 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (node(name="x'}) MATCH (n) DETACH DELETE n //"), "node.name"),
        (node(name=""), "node.name"),
        (node(cpu=-1), "node.cpu_milli"),
        (node(memory=10**15), "node.memory_mib"),
        ({**node(), "labels": {"zone": "a b"}}, "node.labels"),
    ],
)
def test_bad_node_is_refused_naming_the_field(cp: ControlPlane, store: GraphStore, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        cp.nodes.register(spec)
    assert err.value.field == field
    assert store.list_nodes(after=None, limit=10) == []


def test_neighbors_are_symmetric_with_rtt(cp: ControlPlane) -> None:
    for n in ("a", "b", "c"):
        cp.nodes.register(node(n))
    cp.nodes.connect("a", "b", rtt_ms=3.5, bandwidth=1e9)
    cp.nodes.connect("a", "c", rtt_ms=20, bandwidth=1e8)
    cp.nodes.connect("a", "b", rtt_ms=4.0, bandwidth=1e9)  # idempotent: updates, no second edge
    assert [(x.node_id, x.rtt_ms) for x in cp.queries.neighbors("a")] == [("b", 4.0), ("c", 20.0)]
    assert [(x.node_id, x.rtt_ms) for x in cp.queries.neighbors("b")] == [("a", 4.0)]
    with pytest.raises(NotFound) as err:
        cp.nodes.connect("a", "zz", rtt_ms=1)
    assert err.value.field == "b"


# --- spawning ---------------------------------------------------------------------------
def test_spawn_under_a_node_reserves_capacity_and_links_parent_and_node(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node(cpu=4000, memory=8192))
    [a] = cp.allocations.spawn("n1", [job(cpu=1500, memory=1000)])
    assert (a.state, a.incarnation, a.parent_id, a.node_id) == (State.PLACED, 1, "n1", "n1")
    n = store.get_node(node_id="n1")
    assert n is not None and (n.cpu_free, n.memory_free) == (2500, 7192)
    assert [c.id for c in cp.queries.children("n1")] == [a.id]


def test_allocations_create_allocations_and_the_tree_is_queryable(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node(cpu=64000, memory=65536))
    [root] = cp.allocations.spawn("n1", [job("root", cpu=100)])
    kids = cp.allocations.spawn(root.id, [job(f"kid{i}", cpu=100) for i in range(3)])
    [grandkid] = cp.allocations.spawn(kids[0].id, [job("grandkid", cpu=100)])
    assert sorted(a.id for a in cp.queries.descendants(root.id)) == sorted([k.id for k in kids] + [grandkid.id])
    assert [a.id for a in cp.queries.descendants(root.id, max_depth=1)] == sorted(k.id for k in kids)
    assert [(v.label, v.id) for v in cp.queries.ancestors(grandkid.id)] == [
        ("Allocation", kids[0].id),
        ("Allocation", root.id),
        ("Node", "n1"),
    ]
    assert [k.name for k in sorted(cp.queries.children(root.id), key=lambda a: a.extra["seq"])] == ["kid0", "kid1", "kid2"]


def test_spawn_under_missing_parent_is_not_found_and_writes_nothing(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node())
    with pytest.raises(NotFound) as err:
        cp.allocations.spawn("no-such-parent", [job()])
    assert err.value.field == "parent"
    assert allocation_count(store) == 0
    assert cp.queries.node("n1").cpu_free == 4000


def test_spawn_under_a_stopped_parent_is_a_conflict(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node())
    [parent] = cp.allocations.spawn("n1", [job(cpu=100)])
    cp.allocations.stop(parent.id)
    with pytest.raises(Conflict) as err:
        cp.allocations.spawn(parent.id, [job(cpu=100)])
    assert err.value.field == "parent"
    assert allocation_count(store) == 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**job(), "executor": "docker"}, "spec.executor"),
        ({**job(), "argv": []}, "spec.argv"),
        (job(cpu=-5), "spec.resources.cpu_milli"),
        (job(memory=10**12), "spec.resources.memory_mib"),
        ({**job(), "env": {"BAD NAME": "x"}}, "spec.env"),
        ({**job(), "colour": "red"}, "spec.colour"),
        ({**job(), "name": ""}, "spec.name"),
    ],
)
def test_bad_spawn_input_is_refused_naming_the_field(cp: ControlPlane, store: GraphStore, spec: dict[str, Any], field: str) -> None:
    cp.nodes.register(node())
    with pytest.raises(InvalidInput) as err:
        cp.allocations.spawn("n1", [spec], field="spec")
    assert err.value.field == field
    assert allocation_count(store) == 0


def test_a_batch_that_does_not_fit_writes_nothing(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node(cpu=2000))
    with pytest.raises(NoCapacity):
        cp.allocations.spawn("n1", [job(cpu=1000), job(cpu=1000), job(cpu=1000)])
    assert allocation_count(store) == 0
    assert cp.queries.node("n1").cpu_free == 2000


def test_resources_no_node_could_ever_offer_are_invalid_input_naming_the_field(cp: ControlPlane, store: GraphStore) -> None:
    # Given nodes of 2 and 4 cores, one with zone=eu and one T4
    cp.nodes.register(node("small", cpu=2000, zone="eu"))
    cp.nodes.register(node("big", cpu=4000, gpus=1, model="T4"))
    # When a spawn asks for what no node could ever offer, even empty, Then it is refused INVALID_INPUT naming the field
    cases = [
        (job(cpu=999_000), "spec.resources.cpu_milli", "no node offers cpu=999000m (the largest has 4000m)"),
        ({**job(), "node_labels": {"zone": "mars"}}, "spec.node_labels", "no node has zone=mars"),
        ({**job(), "resources": {"gpus": 1, "gpu_model": "H100"}}, "spec.resources.gpu_model", "no node has a GPU of model H100"),
        ({**job(), "resources": {"gpus": 2, "gpu_model": "T4"}}, "spec.resources.gpus", "no node has 2 T4 (at most 1)"),
        ({**job(cpu=3000), "node_labels": {"zone": "eu"}}, "spec.resources.cpu_milli",
         "no node with zone=eu offers cpu=3000m (the largest has 2000m)"),
        ({**job(cpu=3000), "node": "small"}, "spec.resources.cpu_milli", "node small offers cpu=2000m, not cpu=3000m"),
    ]
    for spec, field, message in cases:
        with pytest.raises(Unsatisfiable) as err:
            cp.allocations.spawn("small", [spec], field="spec")
        assert (err.value.code.value, err.value.field, err.value.message) == ("INVALID_INPUT", field, message)
    assert allocation_count(store) == 0
    with pytest.raises(NotFound) as err2:
        cp.allocations.spawn("small", [{**job(), "node": "ghost"}], field="spec")
    assert err2.value.field == "spec.node"


def test_a_constraint_only_a_lost_or_full_node_meets_is_no_capacity_saying_what_stands_in_the_way(
    cp: ControlPlane, store: GraphStore,
) -> None:
    # Given two eu nodes: eu-1 full, eu-2 lost
    cp.nodes.register(node("eu-1", cpu=2000, zone="eu"))
    cp.nodes.register(node("eu-2", cpu=2000, zone="eu"))
    cp.nodes.register(node("us-1", cpu=8000, zone="us"))
    cp.allocations.spawn("eu-1", [{**job(cpu=2000), "node": "eu-1"}])
    store.set_actor_fields(actor_id="eu-2", fields={"status": "lost"})
    # When a spawn needs zone=eu, Then it is NO_CAPACITY (some node could, none can now), naming each eu node's state
    with pytest.raises(NoCapacity) as err:
        cp.allocations.spawn("us-1", [{**job(cpu=1000), "node_labels": {"zone": "eu"}}], field="spec")
    assert err.value.field == "spec"
    assert err.value.message == (
        "no ready node with zone=eu and room for cpu=1000m memory=256MiB now: eu-1 has 0m cpu free; eu-2 is lost"
    )
    # And a batch that fits one by one but not together says which one found no room
    with pytest.raises(NoCapacity) as err2:
        cp.allocations.spawn("us-1", [job(cpu=5000), job(cpu=5000)])
    assert (err2.value.field, err2.value.message) == ("specs[1]", (
        "no ready node with room for cpu=5000m memory=256MiB left for specs[1] after the 1 before it: "
        "us-1 has cpu=8000m memory=8192MiB free"))


def test_spawn_with_a_request_id_is_idempotent(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node(cpu=4000))
    first = cp.allocations.spawn("n1", [job(cpu=1000), job(cpu=1000)], request_id="req-1")
    again = cp.allocations.spawn("n1", [job(cpu=1000), job(cpu=1000)], request_id="req-1")
    assert [a.id for a in again] == [a.id for a in first]
    assert allocation_count(store) == 2
    assert cp.queries.node("n1").cpu_free == 2000
    cp.allocations.spawn("n1", [job(cpu=2000)])  # the node is full now
    repeat = cp.allocations.spawn("n1", [job(cpu=1000), job(cpu=1000)], request_id="req-1")
    assert [a.id for a in repeat] == [a.id for a in first]  # still the answer, not NO_CAPACITY


def test_names_full_of_quotes_and_keywords_are_stored_verbatim(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node())
    evil = "x'}) MATCH (n) DETACH DELETE n // \" RETURN 1"
    [a] = cp.allocations.spawn("n1", [{**job(), "name": evil, "env": {"A": evil}, "argv": ["echo", evil]}])
    got = cp.queries.allocation(a.id)
    assert (got.name, got.env, got.argv) == (evil, {"A": evil}, ("echo", evil))
    assert store.get_node(node_id="n1") is not None



@pytest.mark.parametrize("labels", [{}, {"zone": "eu", "disk": "ssd"}], ids=["no-labels", "labels"])
def test_every_list_an_allocation_stores_reads_back_as_a_list(cp: ControlPlane, labels: dict[str, str]) -> None:
    """argv, claimed GPUs and the node-label constraint (empty or not) come back as the lists they were:
    a restart reads the constraint back to place again."""
    cp.nodes.register(node(gpus=1, zone="eu", disk="ssd"))
    [a] = cp.allocations.spawn("n1", [{**job(gpus=1), "argv": ["echo", "a b"], "node_labels": labels}])
    got = cp.queries.allocation(a.id)
    assert got.argv == ("echo", "a b") and len(got.gpu_ids) == 1
    assert sorted(got.node_labels) == sorted(f"{k}={v}" for k, v in labels.items())

# --- GPUs -------------------------------------------------------------------------------
def test_a_gpu_is_claimed_exclusively_and_released_at_the_end(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node("g", gpus=2))
    [a] = cp.allocations.spawn("g", [job(gpus=2)])
    assert sorted(a.gpu_ids) == ["g/gpu0", "g/gpu1"]
    assert {g.claimed_by for g in store.gpus(node_id="g")} == {a.id}
    with pytest.raises(NoCapacity):
        cp.allocations.spawn("g", [job(gpus=1)])
    cp.allocations.stop(a.id)
    assert {g.claimed_by for g in store.gpus(node_id="g")} == {None}
    [b] = cp.allocations.spawn("g", [job(gpus=1)])
    assert b.gpu_ids == ("g/gpu0",)


def test_a_gpu_model_nobody_has_is_invalid_input_and_a_claimed_one_no_capacity(cp: ControlPlane) -> None:
    cp.nodes.register(node("g", gpus=1, model="T4"))
    with pytest.raises(Unsatisfiable) as never:
        cp.allocations.spawn("g", [{**job(), "resources": {"gpus": 1, "gpu_model": "H100"}}])
    assert never.value.field == "specs.resources.gpu_model"
    cp.allocations.spawn("g", [{**job(), "resources": {"gpus": 1, "gpu_model": "T4"}}])
    with pytest.raises(NoCapacity) as now:
        cp.allocations.spawn("g", [{**job(), "resources": {"gpus": 1, "gpu_model": "T4"}}])
    assert now.value.message.endswith("now: g has 0 T4 free")


# --- lifecycle --------------------------------------------------------------------------
def move(store: GraphStore, allocation_id: str, m: Move, now: float, **kw: Any) -> TransitionResult | None:
    return store.transition_many(changes=[Change(allocation_id, m, **kw)], now=now)[0]


def test_lifecycle_moves_only_along_the_table(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node(cpu=4000))
    [a] = cp.allocations.spawn("n1", [job(cpu=1000)])
    t = move(store, a.id, CLAIM, 1.0)
    assert t is not None and t.applied and t.previous is State.PLACED
    refused = move(store, a.id, CLAIM, 2.0)
    assert refused is not None and not refused.applied and refused.allocation.state is State.STARTING
    move(store, a.id, RUN, 3.0)
    done = move(store, a.id, EXIT_OK, 4.0, fields={"exit_code": 0})
    assert done is not None and done.applied and done.allocation.state is State.SUCCEEDED and done.allocation.exit_code == 0
    assert cp.queries.node("n1").cpu_free == 4000
    # repeating the terminal transition (a redelivered task) releases nothing twice
    again = move(store, a.id, EXIT_OK, 5.0)
    assert again is not None and not again.applied
    assert cp.queries.node("n1").cpu_free == 4000
    assert move(store, "missing", EXIT_FAILED, 6.0) is None


def test_a_transition_for_an_old_incarnation_changes_nothing(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node())
    [a] = cp.allocations.spawn("n1", [job()])
    r = move(store, a.id, CLAIM, 1.0, incarnation=7)
    assert r is not None and not r.applied and r.allocation.state is State.PLACED


def test_a_transition_guarded_by_another_node_changes_nothing(cp: ControlPlane, store: GraphStore) -> None:
    # Given an allocation placed on n1, and a second node n2
    cp.nodes.register(node("n1"))
    cp.nodes.register(node("n2"))
    [a] = cp.allocations.spawn("n1", [job()])
    # When n2's agent claims it (node restriction: the move names the reporting node), then n1's does
    refused = move(store, a.id, CLAIM, 1.0, incarnation=1, on_node="n2")
    claimed = move(store, a.id, CLAIM, 2.0, incarnation=1, on_node="n1")
    # Then only n1's claim moved it, and no event records n2's
    assert refused is not None and not refused.applied and refused.allocation.state is State.PLACED
    assert claimed is not None and claimed.applied and claimed.allocation.state is State.STARTING
    assert sorted((e.from_state, e.to_state) for e in cp.queries.events(a.id) if e.kind == "transition") == [
        ("pending", "placed"), ("placed", "starting")]


def test_a_node_report_about_a_native_allocation_changes_nothing(cp: ControlPlane, store: GraphStore) -> None:
    # Given a native executor running on n1 (it runs in a supervisor, never in n1's agent)
    cp.nodes.register(node("n1"))
    [rs] = cp.allocations.spawn("n1", [{"name": "web", "executor": "native", "native": "replicas",
                                        "config": {"count": 1, "template": job("web", cpu=10)}}])
    assert cp.queries.allocation(rs.id).state is State.RUNNING
    # When n1's agent reports it gone with the agent (node restriction: only process allocations are an agent's)
    refused = move(store, rs.id, AGENT_STOPPED, 5.0, incarnation=1, on_node="n1")
    # Then nothing moved
    assert refused is not None and not refused.applied and refused.allocation.state is State.RUNNING
    assert cp.queries.allocation(rs.id).state is State.RUNNING


def test_a_node_bound_to_one_identity_refuses_another(cp: ControlPlane, store: GraphStore) -> None:
    # Given a node registered by a credential with identity id-a
    spec = parse(NodeSpec, node("edge", cpu=2000), field="node")
    first = store.register_node(spec=spec, now=1.0, identity="id-a")
    assert first is not None and first.extra.get("identity") == "id-a"
    # When another identity registers the same name (with other resources)
    other = parse(NodeSpec, node("edge", cpu=64000), field="node")
    # Then it is refused and nothing changed; the first identity and an operator may register it again
    assert store.register_node(spec=other, now=2.0, identity="id-b") is None
    kept = store.get_node(node_id="edge")
    assert kept is not None and (kept.cpu, kept.extra.get("identity"), kept.heartbeat_at) == (2000, "id-a", 1.0)
    again = store.register_node(spec=spec, now=3.0, identity="id-a")
    assert again is not None and again.heartbeat_at == 3.0
    by_operator = store.register_node(spec=other, now=4.0)
    assert by_operator is not None and (by_operator.cpu, by_operator.extra.get("identity")) == (64000, "id-a")
    # And an unbound node is bound by the first identity that registers it
    cp.nodes.register(node("lonely"))
    bound = store.register_node(spec=parse(NodeSpec, node("lonely"), field="node"), now=5.0, identity="id-c")
    assert bound is not None and bound.extra.get("identity") == "id-c"


# --- concurrency ------------------------------------------------------------------------
def test_parallel_spawns_never_overcommit_a_node_nor_claim_a_gpu_twice(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node("small", cpu=5000, memory=100_000, gpus=3))
    cp.nodes.register(node("tiny", cpu=1000, memory=100_000))

    def attempt(i: int) -> str | None:
        try:
            spec = job(f"w{i}", cpu=1000, gpus=1 if i % 2 else 0)
            return cp.allocations.spawn("small", [spec])[0].id
        except NoCapacity:
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(attempt, range(40)))
    created = [r for r in results if r]
    nodes = {n.id: n for n in store.list_nodes(after=None, limit=10)}
    live = store.list_allocations(after=None, limit=1000)
    assert len(created) == len(live) == 6  # 5 cores on small + 1 on tiny
    for n in nodes.values():
        held = sum(a.cpu for a in live if a.node_id == n.id)
        assert n.cpu_free == n.cpu - held >= 0
    claims = [g.claimed_by for g in store.gpus(node_id="small") if g.claimed_by]
    assert len(claims) == len(set(claims)) == sum(1 for a in live if a.gpus)
    assert sum(1 for a in live if a.gpus) <= 3


def test_parallel_stops_and_spawns_keep_capacity_exact(cp: ControlPlane, store: GraphStore) -> None:
    cp.nodes.register(node("n1", cpu=8000, memory=100_000))
    first = cp.allocations.spawn("n1", [job(f"a{i}", cpu=500) for i in range(8)])

    def churn(i: int) -> None:
        if i < 8:
            cp.allocations.stop(first[i].id)
        else:
            try:
                cp.allocations.spawn("n1", [job(f"b{i}", cpu=500)])
            except NoCapacity:
                pass

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(churn, range(30)))
    n = store.get_node(node_id="n1")
    live = [a for a in store.list_allocations(after=None, limit=1000) if not a.is_terminal]
    assert n is not None and n.cpu_free == 8000 - sum(a.cpu for a in live) >= 0


# --- traversals -------------------------------------------------------------------------
def test_generic_traversal_with_direction_depth_and_filters(cp: ControlPlane) -> None:
    cp.nodes.register(node("n1", cpu=64000, memory=65536))
    [root] = cp.allocations.spawn("n1", [job("root", cpu=10)])
    kids = cp.allocations.spawn(root.id, [job(f"k{i}", cpu=10) for i in range(4)])
    cp.allocations.stop(kids[1].id)
    spec = build_traversal(
        start_id=root.id, edge_types=["PARENT_OF"], direction="out", max_depth=3,
        filters=[("state", "eq", "placed")],
    )
    got = cp.queries.traverse(spec)
    assert sorted(v.id for v in got) == sorted(k.id for i, k in enumerate(kids) if i != 1)
    up = cp.queries.traverse(build_traversal(start_id=kids[0].id, edge_types=["PARENT_OF"], direction="in", max_depth=5, target_label="Node"))
    assert [v.id for v in up] == ["n1"]
    on_node = cp.queries.traverse(build_traversal(start_id="n1", edge_types=["RUNS_ON"], direction="in", filters=[("name", "in", ["k0", "k2"])]))
    assert sorted(v.properties["name"] for v in on_node) == ["k0", "k2"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"edge_types": ["PARENT_OF) DETACH DELETE (x"]}, "edgeTypes[0]"),
        ({"edge_types": ["PARENT_OF"], "max_depth": 50}, "maxDepth"),
        ({"edge_types": ["PARENT_OF"], "direction": "sideways"}, "direction"),
        ({"edge_types": ["PARENT_OF"], "filters": [("x.id = 1 OR true", "eq", 1)]}, "where[0].property"),
        ({"edge_types": ["PARENT_OF"], "filters": [("state", "like", 1)]}, "where[0].op"),
    ],
)
def test_bad_traversals_are_refused(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        build_traversal(start_id="x", **kwargs)
    assert err.value.field == field
