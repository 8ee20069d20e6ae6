"""spawn -> running -> succeeded through the node agents' work lists and the agent API, with the process executor (argv `true`); target >= 300/s.

Starts the graph engine, the embedded FalkorDB as Redis (the broker) and real
API and node agents (`controlplane worker`, joined, node restriction on), spawns N allocations in batches and waits
until every one has succeeded. `--isolation off,on` runs it without the agents'
isolation (ISOLATION=none, the agent's user) and with it (a cgroup, a user and a
working directory per allocation), one line each.

    python -m bench.bench_celery [--engines falkordb,neo4j,gremlin] [--total 3000] [--agents 1] [--concurrency 16]
                                 [--isolation off,on]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engines import open_engine
from controlplane.domain.lifecycle import State
from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack
from tests.store_passwords import server_config


def _uri(store: Any) -> str:
    """Where a worker process finds the engine: Neo4j's bolt URI, or the Gremlin Server's."""
    return str(store.uri if hasattr(store, "uri") else store.remote.url)


ISOLATION_ENV = {
    "off": {"ISOLATION": "none", "ISOLATION_USER": "agent"},
    "on": {"ISOLATION": "auto", "ISOLATION_USER": "auto"},
}


def _cpu_s(pid: int) -> float:
    """cpu time of a process and of its reaped children (an agent's allocation processes are its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run(engine: str, total: int, batch: int, agents: int, concurrency: int, isolation: str = "off") -> None:
    with open_engine(engine) as (store, graph_server), tempfile.TemporaryDirectory() as tmp:
        store.clear()
        broker = graph_server or FalkorDBServer(server_config(Path(tmp) / "redis")).start()
        uri = broker.url if engine == "falkordb" else _uri(store)
        # the API, and agents that joined with a join credential and talk to it only (node restriction on)
        stack = Stack(broker, Path(tmp), graph="bench", store=store, graph_uri=uri, redis_db=1, heartbeat_s=1.0,
                      grace_s=30.0)
        extra = {"ISOLATION_WORK_ROOT": f"{tmp}/work", **ISOLATION_ENV[isolation]}
        stack.env.update(extra)
        procs = [stack.start_agent(f"agent{i}", "--concurrency", str(concurrency)) for i in range(agents)]
        try:
            cp = stack.control
            while len(store.list_nodes(after=None, limit=100)) < agents:
                time.sleep(0.1)
            spec = {"name": "t", "argv": ["true"], "resources": {"cpu_milli": 0, "memory_mib": 1}}
            cpu_before = sum(_cpu_s(p.pid) for p in procs)
            started = time.perf_counter()
            ids = []
            for i in range(0, total, batch):
                ids += [a.id for a in cp.allocations.spawn(f"agent{(i // batch) % agents}", [spec] * min(batch, total - i))]
            spawned = time.perf_counter() - started
            pending = set(ids)
            while pending:
                page = [a for a in store.get_allocations(allocation_ids=list(pending)[:2000])]
                if any(a.state is State.FAILED for a in page):
                    raise SystemExit("an allocation failed")
                pending -= {a.id for a in page if a.state is State.SUCCEEDED}
                time.sleep(0.25)  # a light probe: the graph serves the workers, not the benchmark
            elapsed = time.perf_counter() - started
            cpu_ms = (sum(_cpu_s(p.pid) for p in procs) - cpu_before) / total * 1000
            node = store.get_node(node_id="agent0")
            enforced = node.extra.get("isolation") if node else None
            print(f"{engine:9s} celery+process isolation {isolation:3s} ({enforced}): {total} allocations "
                  f"spawn->running->succeeded in {elapsed:.2f}s = "
                  f"{total / elapsed:,.0f}/s ({agents} agent(s) x {concurrency} threads; spawning took {spawned:.2f}s; "
                  f"agent cpu {cpu_ms:.1f} ms per allocation, its processes included)")
        finally:
            stack.close()
            if graph_server is None:
                broker.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", default="falkordb,neo4j,gremlin")
    p.add_argument("--total", type=int, default=3000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--agents", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--isolation", default="off,on", help="off, on, or both in turn (off,on)")
    args = p.parse_args()
    for engine in args.engines.split(","):
        for isolation in args.isolation.split(","):
            run(engine, args.total, args.batch, args.agents, args.concurrency, isolation)


if __name__ == "__main__":
    main()
