"""Why nothing fits, decided in the pure core: a table of situations, each with the code, field and words a user reads.

"Could never" (no node, whatever its status, could take the demand even empty) is INVALID_INPUT naming the
field; "not now" (some node could, none can now) is NO_CAPACITY saying what stands in the way.
"""

from __future__ import annotations

import pytest

from controlplane.domain.errors import NoCapacity, Unsatisfiable
from controlplane.domain.placement import Demand, NodeInventory, explain, waiting_for
from controlplane.domain.resources import Resources


def inv(node_id: str, cpu: int = 4000, memory: int = 8192, *, status: str = "ready", labels: tuple[str, ...] = (),
        gpus: tuple[str, ...] = (), free_gpus: tuple[str, ...] | None = None, cpu_free: int | None = None,
        memory_free: int | None = None) -> NodeInventory:
    return NodeInventory(node_id=node_id, status=status, labels=labels, cpu=cpu, memory=memory,
                         cpu_free=cpu if cpu_free is None else cpu_free, memory_free=memory if memory_free is None else memory_free,
                         gpu_models=gpus, free_gpu_models=gpus if free_gpus is None else free_gpus)


EU = inv("eu-1", labels=("zone=eu",), gpus=("A100",))
US = inv("us-1", cpu=8000, labels=("zone=us",))

NEVER = [
    ("a label nobody carries", Demand(Resources(100, 64), labels=("zone=mars",)), [EU, US],
     "spec.node_labels", "no node has zone=mars"),
    ("a GPU model nobody owns", Demand(Resources(100, 64, 1, "H100")), [EU, US],
     "spec.resources.gpu_model", "no node has a GPU of model H100"),
    ("more GPUs than any node owns", Demand(Resources(100, 64, 2, "A100")), [EU, US],
     "spec.resources.gpus", "no node has 2 A100 (at most 1)"),
    ("more cpu than the largest node", Demand(Resources(999_000, 64)), [EU, US],
     "spec.resources.cpu_milli", "no node offers cpu=999000m (the largest has 8000m)"),
    ("more memory than any labelled node", Demand(Resources(100, 9000), labels=("zone=eu",)), [EU, US],
     "spec.resources.memory_mib", "no node with zone=eu offers memory=9000MiB (the largest has 8192MiB)"),
    ("cpu on one node, memory on another", Demand(Resources(8000, 9000)), [inv("a", 8000, 1024), inv("b", 1000, 9000)],
     "spec.resources", "no node offers cpu=8000m and memory=9000MiB together"),
    ("a GPU on a node too small for the rest", Demand(Resources(6000, 64, 1)), [EU, US],
     "spec.resources.cpu_milli", "no node offers cpu=6000m (the largest has 4000m)"),
    ("a pinned node that left", Demand(Resources(100, 64), node_id="gone"), [EU],
     "spec.node", "no node gone is registered"),
    ("a pinned node without the label", Demand(Resources(100, 64), node_id="us-1", labels=("zone=eu",)), [EU, US],
     "spec.node_labels", "node us-1 does not have zone=eu"),
    ("a pinned node too small", Demand(Resources(5000, 64), node_id="eu-1"), [EU, US],
     "spec.resources.cpu_milli", "node eu-1 offers cpu=4000m, not cpu=5000m"),
    ("isolation no node enforces", Demand(Resources(100, 64), labels=("isolation=cgroup", "zone=eu")), [EU, US],
     "spec.require_isolation", "no node with zone=eu enforces isolation (label isolation=cgroup)"),
    ("a pinned node that does not enforce isolation", Demand(Resources(100, 64), node_id="eu-1", labels=("isolation=cgroup",)),
     [EU], "spec.require_isolation", "node eu-1 does not enforce isolation (label isolation=cgroup)"),
    ("no node near the parent", Demand(Resources(100, 64), max_rtt_ms=5), [EU, US],
     "spec.max_rtt_ms", "no node is within 5 ms of the parent's node"),
]


@pytest.mark.parametrize(("situation", "demand", "nodes", "field", "message"), NEVER, ids=[n[0] for n in NEVER])
def test_what_no_node_could_ever_take_is_invalid_input_naming_the_field(
    situation: str, demand: Demand, nodes: list[NodeInventory], field: str, message: str,
) -> None:
    why = explain(demand, nodes, rtt_ms={"eu-1": 20.0, "us-1": 90.0})
    assert isinstance(why, Unsatisfiable)
    assert (why.code.value, why.field, why.message) == ("INVALID_INPUT", field, message)


NOT_NOW = [
    ("its only node is lost", Demand(Resources(100, 64), labels=("zone=eu",)), [inv("eu-1", status="lost", labels=("zone=eu",))],
     "no ready node with zone=eu and room for cpu=100m memory=64MiB now: eu-1 is lost"),
    ("its nodes are full", Demand(Resources(1000, 64)), [inv("a", cpu_free=500), inv("b", cpu_free=200, memory_free=10)],
     "no ready node with room for cpu=1000m memory=64MiB now: a has 500m cpu free; b has 200m cpu and 10MiB memory free"),
    ("its GPUs are claimed", Demand(Resources(100, 64, 1, "A100")), [inv("g", gpus=("A100",), free_gpus=())],
     "no ready node with 1 A100 and room for cpu=100m memory=64MiB now: g has 0 A100 free"),
    ("its node is cordoned", Demand(Resources(100, 64)), [NodeInventory("c", "ready", (), 4000, 8192, 4000, 8192, cordoned=True)],
     "no ready node with room for cpu=100m memory=64MiB now: c is cordoned"),
    ("a pinned node draining", Demand(Resources(100, 64), node_id="eu-1"), [inv("eu-1", status="draining")],
     "node eu-1 cannot take cpu=100m memory=64MiB now: eu-1 is draining"),
    ("many nodes, the likeliest named", Demand(Resources(1000, 64)), [inv(f"n{i}", cpu_free=i) for i in range(6)],
     "no ready node with room for cpu=1000m memory=64MiB now: n5 has 5m cpu free; n4 has 4m cpu free; "
     "n3 has 3m cpu free; 3 more"),
]


@pytest.mark.parametrize(("situation", "demand", "nodes", "message"), NOT_NOW, ids=[n[0] for n in NOT_NOW])
def test_what_some_node_could_take_but_none_can_now_is_no_capacity_saying_what_stands_in_the_way(
    situation: str, demand: Demand, nodes: list[NodeInventory], message: str,
) -> None:
    why = explain(demand, nodes)
    assert isinstance(why, NoCapacity) and not isinstance(why, Unsatisfiable)
    assert (why.code.value, why.field, why.message) == ("NO_CAPACITY", "spec", message)


def test_the_room_taken_by_the_rest_of_a_batch_is_said_so() -> None:
    why = explain(Demand(Resources(3000, 64)), [inv("a", cpu=4000)], field="specs[1]", placed_before=1)
    assert why.message == "no ready node with room for cpu=3000m memory=64MiB left for specs[1] after the 1 before it: " \
                          "a has cpu=4000m memory=8192MiB free"


@pytest.mark.parametrize(("demand", "text"), [
    (Demand(Resources(500, 256, 1, "A100"), labels=("zone=eu",)),
     "a ready node with zone=eu, 1 A100 and room for cpu=500m memory=256MiB"),
    (Demand(Resources(0, 0)), "a ready node"),
    (Demand(Resources(100, 64, 2)), "a ready node with 2 GPUs and room for cpu=100m memory=64MiB"),
    (Demand(Resources(100, 64), node_id="n9"), "node n9 to be ready with room for cpu=100m memory=64MiB"),
    (Demand(Resources(100, 64), max_rtt_ms=10), "a ready node within 10 ms of the parent's node with room for cpu=100m memory=64MiB"),
])
def test_what_a_waiting_demand_waits_for_reads_as_a_sentence(demand: Demand, text: str) -> None:
    assert waiting_for(demand) == text
