"""The broker's primary dies mid-run: Redis with a replica and three Sentinels under real agents and supervisors.

Given node agents, a supervisor and the scheduler whose Celery broker, event doorbell and
scheduler lease reach Redis through its Sentinels, while allocations are being spawned and
run, when the primary is killed with SIGKILL, then the Sentinels promote the replica, every
process reconnects to it, and every allocation runs to success exactly once: none lost
(a run message the primary had not yet replicated is dispatched again by the reconciler),
none started twice (a redelivered run finds its allocation already past `placed`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain.errors import ControlPlaneError, InvalidInput
from controlplane.domain.lifecycle import State
from controlplane.redis_urls import SentinelURL, celery_broker, parse_sentinel, sync_client
from graph_schema.falkordb_server import FalkorDBServer
from tests.sentinel_harness import ReplicatedRedis
from tests.stack import Stack, wait_for

pytestmark = pytest.mark.slow
SPAWNS = 24


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    r = ReplicatedRedis(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture
def stack(falkordb_server: FalkorDBServer, broker: ReplicatedRedis, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(falkordb_server, tmp_path / "stack", graph="sentinel")
    s.store.clear()
    s.use_broker(broker.url, notify=True)
    with s.serving("alpha", "beta"):
        yield s


def spawn(stack: Stack, i: int, drop: Path) -> str:
    # every run leaves a file of its own (runs are users of their own: none could append to another's file)
    spec = {"name": f"job{i}", "argv": ["sh", "-c", f"mktemp {drop}/job{i}.XXXXXX; sleep 0.5"],
            "resources": {"cpu_milli": 10, "memory_mib": 8}}
    deadline = time.monotonic() + 60
    while True:  # a spawn whose dispatch hit the dying primary is asked again: the request id makes it the same one
        try:
            [a] = stack.control.allocations.spawn("alpha" if i % 2 else "beta", [spec], request_id=f"sentinel-{i}")
            return a.id
        except (ControlPlaneError, OSError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_killing_the_redis_primary_loses_no_allocation_and_starts_none_twice(
    stack: Stack, broker: ReplicatedRedis, tmp_path: Path, isolation_work_root: Path
) -> None:
    # a directory every allocation user may write to (and the tests' temporary directories are not)
    drop = isolation_work_root / tmp_path.name
    drop.mkdir()
    drop.chmod(0o1777)
    ids = [spawn(stack, i, drop) for i in range(SPAWNS // 2)]
    wait_for(lambda: any(stack.control.queries.allocation(a).state is State.SUCCEEDED for a in ids), 60, "the first runs")
    # When the primary dies mid-run (half the spawns done, some of them still running)
    old_primary = broker.primary.port
    broker.kill_primary()
    ids += [spawn(stack, i, drop) for i in range(SPAWNS // 2, SPAWNS)]
    new_primary = broker.wait_for_failover()
    # Then every allocation succeeds, each started once, and the broker is the promoted replica
    done = wait_for(lambda: all((x := stack.control.queries.allocation(a)).state is State.SUCCEEDED for a in ids) and x, 120,
                    "every allocation to succeed")
    assert done
    assert new_primary != old_primary
    for a in ids:
        rec = stack.control.queries.allocation(a)
        starts = [e for e in stack.control.queries.events(a) if e.to_state == "starting"]
        assert (rec.incarnation, rec.exit_code, len(starts)) == (1, 0, 1), (
            a, [(e.incarnation, e.from_state, e.to_state, e.reason, e.by) for e in stack.control.queries.events(a)])
    ran = Counter(p.name.split(".")[0] for p in drop.iterdir())
    assert ran == Counter(f"job{i}" for i in range(SPAWNS))  # each process ran exactly once
    # a client through the Sentinels (the doorbell's, the lease's) now writes to the promoted replica
    client = sync_client(broker.url, socket_timeout=2)
    pool: Any = client.connection_pool  # a SentinelConnectionPool
    assert pool.get_master_address()[1] == new_primary
    assert client.info("replication")["role"] == "master"


def test_a_sentinel_url_names_its_sentinels_database_and_primary() -> None:
    s = parse_sentinel("sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/3?master=prod")
    assert s == SentinelURL(sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), master="prod", db=3, password="pw")
    broker, options = celery_broker("sentinel://a:1,b:2/3?master=prod")
    assert (broker, options) == ("sentinel://a:1/3;sentinel://b:2/3", {"master_name": "prod"})
    assert parse_sentinel("redis://127.0.0.1:6379/1") is None and celery_broker("redis://h:1/2") == ("redis://h:1/2", {})


@pytest.mark.parametrize("url", ["sentinel://h1,h2:1/0", "sentinel://h:1/x"])
def test_a_bad_sentinel_url_is_refused_naming_redis_url(url: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_sentinel(url)
    assert err.value.field == "REDIS_URL"
