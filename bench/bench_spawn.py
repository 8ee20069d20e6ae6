"""Allocations committed to the graph per second through the batch spawn (target: >= 1,500/s), in the service and
through GraphQL over HTTP with authentication off and on.

    python -m bench.bench_spawn [--engines falkordb,neo4j,gremlin,janusgraph] [--total 20000] [--batch 500] [--singles 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx

from bench.api import delta, graph_uri, redis_url, running_api
from bench.engines import open_engine
from controlplane.wiring import assemble


def run(engine: str, total: int, batch: int, nodes: int, singles: int = 200) -> None:
    with open_engine(engine) as (store, server):
        store.clear()
        cp = assemble(store)
        for i in range(nodes):
            cp.nodes.register({"name": f"n{i}", "cpu_milli": 1_000_000, "memory_mib": 10_000_000})
        [root] = cp.allocations.spawn("n0", [{"name": "root", "argv": ["true"], "resources": {"cpu_milli": 1, "memory_mib": 1}}])
        spec = {"name": "w", "argv": ["true"], "resources": {"cpu_milli": 10, "memory_mib": 4}}
        latencies = []
        started = time.perf_counter()
        done = 0
        while done < total:
            t = time.perf_counter()
            created = cp.allocations.spawn(root.id, [spec] * batch)
            latencies.append(time.perf_counter() - t)
            done += len(created)
        elapsed = time.perf_counter() - started
        print(
            f"{engine:9s} batch spawn: {done} allocations in {elapsed:.2f}s = {done / elapsed:,.0f}/s "
            f"(batch {batch}: p50 {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms)"
        )
        t = time.perf_counter()
        for _ in range(singles):
            cp.allocations.spawn(root.id, [spec])
        single = singles / (time.perf_counter() - t)
        print(f"{engine:9s} single spawn: {single:,.0f}/s (one request per allocation)")
        over_http(engine, store, server, root.id, total=min(total, 5000), batch=batch)


SPAWN_MANY = "mutation($p: ID!, $s: [AllocationSpecInput!]!) { spawnAllocations(parent: $p, specs: $s) { id } }"
SPAWN_ONE = "mutation($p: ID!, $s: AllocationSpecInput!) { spawnAllocation(parent: $p, spec: $s) { id } }"


def over_http(engine: str, store: Any, server: Any, parent: str, *, total: int, batch: int) -> None:
    """The same batch spawn through GraphQL over HTTP with authentication off and on: both APIs run at once and
    take turns, so that a busy machine slows both alike."""
    spec = {"name": "w", "argv": ["true"], "resources": {"cpuMilli": 10, "memoryMib": 4}}
    spent = {False: [0.0, 0.0], True: [0.0, 0.0]}  # seconds in batch requests, in single ones
    with running_api(engine, graph_uri(store, server), redis_url(server), auth=False) as off, \
            running_api(engine, graph_uri(store, server), redis_url(server), auth=True) as on, \
            httpx.Client(timeout=60) as client:
        apis = ((False, off), (True, on))

        def post(api: tuple[str, dict[str, str]], query: str, **variables: Any) -> float:
            t = time.perf_counter()
            r = client.post(api[0], json={"query": query, "variables": variables}, headers=api[1])
            elapsed = time.perf_counter() - t
            assert r.status_code == 200 and "errors" not in r.json(), r.text[:300]
            return elapsed

        for _, api in apis:
            post(api, SPAWN_ONE, p=parent, s=spec)  # warm-up
        for _ in range(max(1, total // batch)):
            for auth, api in apis:
                spent[auth][0] += post(api, SPAWN_MANY, p=parent, s=[spec] * batch)
        for _ in range(200):
            for auth, api in apis:
                spent[auth][1] += post(api, SPAWN_ONE, p=parent, s=spec)
    rates = {auth: (max(1, total // batch) * batch / b, 200 / o) for auth, (b, o) in spent.items()}
    for auth in (False, True):
        print(f"{engine:9s} over HTTP, auth {'on ' if auth else 'off'}: batch spawn {rates[auth][0]:,.0f}/s, "
              f"single spawn {rates[auth][1]:,.0f}/s")
    (m_off, o_off), (m_on, o_on) = rates[False], rates[True]
    print(f"{engine:9s} over HTTP: authentication changes throughput by {delta(m_on, m_off)} (batch), {delta(o_on, o_off)} (single)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", default="falkordb,neo4j,gremlin")
    p.add_argument("--total", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--singles", type=int, default=200, help="single spawns, one request each")
    args = p.parse_args()
    for engine in args.engines.split(","):
        run(engine, args.total, args.batch, args.nodes, args.singles)


if __name__ == "__main__":
    main()
