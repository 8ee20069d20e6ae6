"""Day-2 node operations on every engine: cordon, drain, uncordon, deregister (service, GraphQL and CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controlplane.cli import app as cli
from controlplane.domain.errors import Conflict, NoCapacity, NotFound
from controlplane.domain.lifecycle import CLAIM, RUN, State
from controlplane.domain.records import AllocationRecord
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane
from controlplane.wiring import assemble
from graph_schema.falkordb_server import FalkorDBServer


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    control = assemble(store)
    for name in ("n1", "n2"):
        control.nodes.register({"name": name, "cpu_milli": 4000, "memory_mib": 4096, "labels": {"pool": "a"},
                                "gpus": [{"model": "T4"}]})
    return control


def spec(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": ["sleep", "600"], "resources": {"cpu_milli": 500, "memory_mib": 64}, **kw}


def run(cp: ControlPlane, *allocs: AllocationRecord) -> None:
    cp.store.transition_many(changes=[Change(a.id, CLAIM) for a in allocs], now=cp.clock())
    cp.store.transition_many(changes=[Change(a.id, RUN) for a in allocs], now=cp.clock())


def test_a_cordoned_node_takes_nothing_new_and_keeps_what_runs(cp: ControlPlane) -> None:
    # Given an allocation running on n1
    [kept] = cp.allocations.spawn("n1", [spec("kept", node="n1")])
    run(cp, kept)
    # When n1 is cordoned
    node = cp.nodes.cordon("n1")
    # Then it is marked, new work goes to n2 only, work pinned to n1 has no room, and what ran stays
    assert node.extra.get("cordoned") is True and node.status == "ready"
    placed = cp.allocations.spawn("n1", [spec(f"new{i}") for i in range(3)])
    assert {a.node_id for a in placed} == {"n2"}
    with pytest.raises(NoCapacity):
        cp.allocations.spawn("n1", [spec("pinned", node="n1")])
    assert cp.queries.allocation(kept.id).state is State.RUNNING
    assert [e.reason for e in cp.queries.events("n1") if e.kind == "node"] == ["cordoned: no new placements"]
    # ... and a re-registration (its agent restarting) keeps the cordon
    cp.nodes.register({"name": "n1", "cpu_milli": 4000, "memory_mib": 4096, "labels": {"pool": "a"}})
    assert cp.queries.node("n1").extra.get("cordoned") is True
    # When it is uncordoned, it takes work again
    cp.nodes.uncordon("n1")
    [back] = cp.allocations.spawn("n1", [spec("back", node="n1")])
    assert back.node_id == "n1"


def test_a_drain_moves_work_off_by_restart_type_within_its_deadline(cp: ControlPlane) -> None:
    # Given a parent on n2 and three children on n1 (placed while n2 was cordoned): permanent, transient, temporary
    [parent] = cp.allocations.spawn("n2", [spec("parent", node="n2")])
    run(cp, parent)
    cp.nodes.cordon("n2")
    on_n1 = cp.allocations.spawn(parent.id, [
        spec("perm", restart="permanent", node_labels={"pool": "a"}, grace_period_s=60),
        spec("trans", restart="transient", node_labels={"pool": "a"}),
        spec("temp", restart="temporary", node_labels={"pool": "a"}),
    ])
    assert {k.node_id for k in on_n1} == {"n1"}
    cp.nodes.uncordon("n2")
    run(cp, *on_n1)
    # When n1 is drained with a 5 s deadline
    node = cp.nodes.drain("n1", deadline_s=5)
    # Then it is draining and cordoned; permanent and transient ones run again elsewhere, the temporary one stopped
    assert (node.status, node.extra.get("cordoned")) == ("draining", True)
    after = {k.name: cp.queries.allocation(k.id) for k in on_n1}
    for name, a in after.items():
        if a.extra.get("restart_type") == "temporary":
            assert a.state is State.STOPPED, name
        else:
            assert (a.state, a.incarnation, a.node_id) == (State.PLACED, 2, "n2"), name
    # ... each was stopped first, its stop bounded by the deadline (perm's own grace is 60 s)
    for a in on_n1:
        moves = [(e.incarnation, e.to_state) for e in cp.queries.events(a.id) if e.kind == "transition"]
        assert (1, "stopping") in moves, (a.name, moves)
    assert after["perm"].extra.get("stop_grace_s") is None  # a new incarnation starts without the drain's deadline
    assert cp.queries.node("n1").status == "draining"
    cp.nodes.register({"name": "n1", "cpu_milli": 4000, "memory_mib": 4096, "labels": {"pool": "a"}})
    assert cp.queries.node("n1").status == "draining"  # its agent re-registering does not end the drain
    cp.nodes.uncordon("n1")
    assert (cp.queries.node("n1").status, cp.queries.node("n1").extra.get("cordoned")) == ("ready", False)


def test_deregister_is_refused_with_live_work_and_removes_an_idle_node(cp: ControlPlane) -> None:
    # Given n1 running two allocations
    work = cp.allocations.spawn("n1", [spec("a", node="n1"), spec("b", node="n1")])
    # When it is deregistered, it is refused with the count, and nothing changes
    with pytest.raises(Conflict) as refused:
        cp.nodes.deregister("n1")
    assert "2 live allocation(s)" in refused.value.message and refused.value.field == "id"
    assert cp.queries.node("n1").status == "ready" and len(cp.queries.gpus("n1")) == 1
    # When its work has ended, it leaves the graph with its GPU; the other node is untouched
    for a in work:
        cp.allocations.stop(a.id)
    cp.nodes.deregister("n1")
    with pytest.raises(NotFound):
        cp.queries.node("n1")
    assert cp.queries.gpus("n1") == []
    assert cp.queries.node("n2").status == "ready" and cp.queries.neighbors("n2") == []
    with pytest.raises(NotFound):
        cp.nodes.deregister("n1")


@pytest.fixture
def cli_env(falkordb_server: FalkorDBServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ControlPlane]:
    """The API (authentication on) over a graph of its own, and the CLI pointed at it with the admin's token."""
    from controlplane.api import create_app
    from controlplane.api.auth import Browsers
    from graph_schema.cypher.falkordb_store import FalkorDBStore
    from graph_schema.falkordb_server import find_free_port
    from tests.credentials import first_start
    from tests.http import serving

    store = FalkorDBStore(falkordb_server.url, graph="cli")
    store.bootstrap()
    store.clear()
    control = assemble(store)
    control.nodes.register({"name": "c1", "cpu_milli": 1000, "memory_mib": 1024})
    tokens, admin = first_start(tmp_path / "data")
    port = find_free_port()
    with serving(create_app(control, tokens=tokens, browsers=Browsers.local("127.0.0.1", port)), port=port) as url:
        monkeypatch.setenv("CONTROLPLANE_API_URL", url)
        monkeypatch.setenv("CONTROLPLANE_TOKEN", admin)
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
        yield control
    store.close()


def test_the_cli_cordons_drains_uncordons_and_deregisters(cli_env: ControlPlane) -> None:
    runner = CliRunner()
    for args, says, status in ((["cordon", "c1"], "cordoned", "ready"), (["drain", "c1", "--deadline", "3"], "draining", "draining"),
                               (["uncordon", "c1"], "ready", "ready")):
        got = runner.invoke(cli, args)
        assert got.exit_code == 0 and says in got.output, got.output
        assert cli_env.queries.node("c1").status == status
    [a] = cli_env.allocations.spawn("c1", [spec("w", node="c1")])
    refused = runner.invoke(cli, ["deregister", "c1"])
    assert refused.exit_code == 1 and "CONFLICT" in refused.output and "1 live allocation" in refused.output
    cli_env.allocations.stop(a.id)
    done = runner.invoke(cli, ["deregister", "c1"])
    assert done.exit_code == 0 and "deregistered" in done.output
    missing = runner.invoke(cli, ["cordon", "c1"])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
