"""The transition table is the single source of legal moves: in the code, in the store, and in the docs."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain.errors import IllegalTransition
from controlplane.domain.lifecycle import (
    MOVES,
    RESTARTABLE,
    TRANSITIONS,
    Move,
    State,
    can_transition,
    check_transition,
    mermaid,
)
from controlplane.domain.records import Exit, TransitionResult
from controlplane.ports.store import Change, GraphStore
from controlplane.services import ControlPlane, build
from controlplane.services.reports import AgentReports
from controlplane.wiring import job_store

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [ROOT / "controlplane", ROOT / "workers", ROOT / "graph_schema"]
#: functions of the lifecycle module that pick one of its moves
MOVE_CHOOSERS = {"exit_move"}


def test_every_named_move_is_in_the_table() -> None:
    assert MOVES, "the code makes moves"
    for move in MOVES.values():
        for current, target in move.steps.items():
            assert target in TRANSITIONS[current], f"{move.name}: {current.value} -> {target.value}"


def test_a_move_outside_the_table_cannot_even_be_built() -> None:
    with pytest.raises(IllegalTransition) as err:
        Move("teleport", {State.SUCCEEDED: State.RUNNING})
    assert "succeeded" in str(err.value) and "running" in str(err.value)
    with pytest.raises(IllegalTransition):
        check_transition("a1", State.LOST, State.RUNNING)
    assert not can_transition(State.PLACED, State.SUCCEEDED)


def test_terminal_states_have_no_moves_only_restarts() -> None:
    for s in RESTARTABLE:
        assert TRANSITIONS[s] == frozenset()


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def test_every_change_the_product_makes_names_a_move_of_the_table() -> None:
    # Given every module of the product
    sources = [p for root in PRODUCT for p in root.rglob("*.py")]
    named = {name for name, m in vars(__import__("controlplane.domain.lifecycle", fromlist=["x"])).items()
             if isinstance(m, Move)}
    changes = 0
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        # Then no move is made up outside the lifecycle module
        if path.name != "lifecycle.py":
            assert not _calls(tree, "Move"), f"{path}: builds a Move of its own"
        for call in _calls(tree, "Change"):
            changes += 1
            arg = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "move"), None)
            # ... and every Change names one of the table's moves (or is handed one by its caller)
            if isinstance(arg, ast.Call):  # the lifecycle's own choice of move (exit code -> exit_ok | exit_failed)
                assert getattr(arg.func, "id", None) in MOVE_CHOOSERS, f"{path}:{call.lineno}: a move from outside the table"
                continue
            assert isinstance(arg, ast.Name), f"{path}:{call.lineno}: the move of a Change is a named constant"
            assert arg.id in named or arg.id in {"move", "m"}, f"{path}:{call.lineno}: {arg.id} is not a move of the table"
    assert changes >= 12


def test_the_docs_draw_the_table_the_code_obeys() -> None:
    doc = (ROOT / "docs" / "lifecycle.md").read_text()
    assert mermaid() in doc, "docs/lifecycle.md is out of date: regenerate it with `python -m controlplane.domain.lifecycle`"


class Recording:
    """The real store, noting every transition it applied (the state left and the state reached)."""

    def __init__(self, store: GraphStore) -> None:
        self._store = store
        self.seen: list[tuple[State, State, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def transition_many(self, *, changes: Sequence[Change], now: float) -> list[TransitionResult | None]:
        results = self._store.transition_many(changes=changes, now=now)
        for c, r in zip(changes, results, strict=True):
            if r is not None and r.applied and r.previous is not None:
                self.seen.append((r.previous, r.allocation.state, c.move.name))
        return results


def test_what_the_services_and_agents_do_stays_in_the_table(store: GraphStore) -> None:
    # Given a control plane over the real engine, every transition observed
    rec = Recording(store)
    cp: ControlPlane = build(rec, job_store(store))
    cp.nodes.register({"name": "n1", "cpu_milli": 8000, "memory_mib": 8192})
    agent = AgentReports(rec, node="n1")
    spec = {"name": "w", "argv": ["true"], "resources": {"cpu_milli": 10, "memory_mib": 8}}
    # When allocations are started, run, exit both ways, fail to start, are stopped, recovered and their node lost
    ok, bad, never, stopped, running, orphaned = cp.allocations.spawn("n1", [spec] * 6)
    agent.claim([(a.id, 1) for a in (ok, bad, stopped, running, orphaned)])
    agent.running([((a.id, 1), 100 + i) for i, a in enumerate((ok, bad, stopped, running, orphaned))])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in agent.exited([Exit((ok.id, 1), 0, ""), Exit((bad.id, 1), 3, "")])])
    agent.failed_to_start((never.id, 1), error="no such file")
    cp.allocations.stop(stopped.id)
    agent.stop_unstarted((stopped.id, 1))
    agent.recover()
    [native] = cp.allocations.spawn("n1", [{"name": "r", "executor": "native", "native": "replicas",
                                            "config": {"count": 0, "template": spec}}])
    # Then every move made is one of the table's
    assert cp.queries.allocation(native.id).state is State.SUCCEEDED
    moves = {name for _, _, name in rec.seen}
    assert {"claim", "run", "exit_ok", "exit_failed", "start_failed", "stop", "stopped", "agent_restarted",
            "native_succeed"} <= moves
    for current, target, name in rec.seen:
        assert target in TRANSITIONS[current] or (target is State.FAILED and State.STOPPED in TRANSITIONS[current]), \
            f"{name}: {current.value} -> {target.value}"
