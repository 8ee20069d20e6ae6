"""A user's stop is the end, even of an allocation its parent restarted a moment ago (real supervisor, scheduler
and agent on FalkorDB: the in-process suites cannot show what the order of a vertex's properties does).

FalkorDB 4.16 removed the wrong properties when one update removed several (FalkorDB #1787): the new
incarnation kept the decision's `restart_at`, and the reconciler restarted it after the user stopped it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.domain.lifecycle import State
from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.slow


def spec(name: str, argv: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": name, "argv": argv, "resources": {"cpu_milli": 10, "memory_mib": 8}, "grace_period_s": 1.0, **kw}


@pytest.fixture
def stack(falkordb_server: FalkorDBServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    falkordb_server.client(db=7).flushdb()
    s = Stack(falkordb_server, tmp_path_factory.mktemp("stop-after-restart"), graph="stop_after_restart", redis_db=7,
              grace_s=3.0)
    s.store.clear()
    with s.serving("n"):
        yield s


def test_a_restarted_child_stopped_by_its_user_stays_stopped(stack: Stack) -> None:
    # Given a child that fails once and is restarted by its parent
    cp = stack.control
    [p] = cp.allocations.spawn("n", [spec("p", ["sleep", "600"], node="n")])
    wait_for(lambda: cp.queries.allocation(p.id).state is State.RUNNING, 30, "the parent running")
    once = '[ "$CONTROLPLANE_INCARNATION" = 1 ] && exit 3; exec sleep 600'
    [kid] = cp.allocations.spawn(p.id, [spec("kid", ["sh", "-c", once], node="n")])
    wait_for(lambda: (k := cp.queries.allocation(kid.id)).incarnation == 2 and k.state is State.RUNNING, 30,
             "the kid running again")
    # Then the new incarnation carries no restart of its own ...
    assert "restart_at" not in cp.queries.allocation(kid.id).extra
    # When the user stops it
    cp.allocations.stop(kid.id)
    wait_for(lambda: cp.queries.allocation(kid.id).state is State.STOPPED, 30, "the kid stopped")
    # Then it stays stopped past the time the old decision's restart would have been due (its delay + 5 s)
    time.sleep(7)
    after = cp.queries.allocation(kid.id)
    assert (after.state, after.incarnation) == (State.STOPPED, 2), [
        (e.incarnation, e.from_state, e.to_state, e.reason) for e in cp.queries.events(kid.id, limit=100)]
