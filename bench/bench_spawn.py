"""Allocations committed to the graph per second through the batch spawn (target: >= 1,500/s).

    python -m bench.bench_spawn [--engines falkordb,neo4j,gremlin,janusgraph] [--total 20000] [--batch 500] [--singles 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.engines import open_engine
from controlplane.wiring import assemble


def run(engine: str, total: int, batch: int, nodes: int, singles: int = 200) -> None:
    with open_engine(engine) as (store, _):
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
