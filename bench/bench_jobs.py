"""Jobs: a 1,000-task DAG (10 deep, 100 wide, argv `true`) through real node agents and supervisors,
and the placement decision on a graph of 10,000 nodes.

Target: every task placed within 1 s of its dependencies being met.

    python -m bench.bench_jobs [--depth 10] [--width 100] [--nodes 10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from controlplane.domain.placement import Demand
from controlplane.domain.resources import Resources
from controlplane.wiring import assemble
from graph_schema.falkordb_server import FalkorDBServer
from tests.stack import Stack, wait_for
from tests.store_passwords import server_config


def dag(depth: int, width: int) -> dict[str, Any]:
    tasks = []
    for level in range(depth):
        for i in range(width):
            needs = [] if level == 0 else [f"t{level - 1}-{i}", f"t{level - 1}-{(i + 1) % width}"]
            tasks.append({"name": f"t{level}-{i}", "argv": ["true"], "needs": needs,
                          "resources": {"cpu_milli": 0, "memory_mib": 1}})
    return {"name": "bench", "tasks": tasks}


def job_run(depth: int, width: int, agents: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = FalkorDBServer(server_config(Path(tmp) / "db")).start()
        stack = Stack(server, Path(tmp), graph="jobs")
        try:
            stack.start("supervisor", "supervisor", "--concurrency", "4")
            stack.start("scheduler", "scheduler")
            for i in range(agents):
                stack.agent(f"agent{i}")
            total = depth * width
            t0 = time.time()
            job = stack.control.jobs.submit(dag(depth, width), node="agent0")
            submitted = time.time() - t0
            wait_for(lambda: stack.control.jobs.job(job.id).state in ("succeeded", "failed"), 600, "the job", every=0.2)
            finished = time.time() - t0
            state = stack.control.jobs.job(job.id).state
            tasks = {t.path: t for t in stack.control.jobs.tasks(job.id)}
            placed_at, done_at = {}, {}
            for path, t in tasks.items():
                aid = t.runs[0].allocation_id
                for e in stack.store.events(allocation_id=aid, since=None, limit=100):
                    if e.to_state == "placed" and path not in placed_at:
                        placed_at[path] = e.at
                    if e.to_state == "succeeded":
                        done_at[path] = e.at
            spec = dag(depth, width)["tasks"]
            waits = []
            for t in spec:
                ready_at = max((done_at[n] for n in t["needs"]), default=t0)
                waits.append(placed_at[t["name"]] - ready_at)
            all_placed = max(placed_at.values()) - t0
            print(f"job of {total} tasks ({depth} deep x {width} wide, 2 needs each), {agents} agents: {state}")
            print(f"  submit call {submitted * 1000:.0f} ms; last task placed {all_placed:.2f} s, job done {finished:.2f} s after submit")
            print(f"  placed after its needs were met: p50 {statistics.median(waits) * 1000:.0f} ms, "
                  f"p99 {statistics.quantiles(waits, n=100)[98] * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms")
        finally:
            stack.close()
            server.stop()


def placement_run(nodes: int, samples: int) -> None:
    from bench.engines import falkordb_store

    with falkordb_store(graph="placement") as (store, _):
        store.clear()
        cp = assemble(store)
        t = time.perf_counter()
        for i in range(nodes):
            gpus = [{"model": "A100"}] * 2 if i % 10 == 0 else []
            cp.nodes.register({"name": f"n{i:05d}", "cpu_milli": 4000 + (i % 7) * 1000, "memory_mib": 16384,
                              "labels": {"zone": f"z{i % 5}"}, "gpus": gpus})
        for i in range(0, nodes - 1, 1):
            if i % 100:
                cp.nodes.connect(f"n{i:05d}", f"n{i + 1:05d}", rtt_ms=float(i % 13), bandwidth=1e9)
        seeded = time.perf_counter() - t
        shapes = {
            "cpu+memory": Demand(Resources(500, 256)),
            "label zone=z3": Demand(Resources(500, 256), labels=("zone=z3",)),
            "1 GPU A100": Demand(Resources(500, 256, 1, "A100")),
            "near parent (<= 5 ms)": Demand(Resources(500, 256), max_rtt_ms=5.0),
            "spread": Demand(Resources(500, 256), spread_key="web"),
        }
        print(f"placement decision on {nodes} nodes ({seeded:.0f} s to seed), {samples} decisions each:")
        for name, demand in shapes.items():
            times = []
            for k in range(samples):
                t = time.perf_counter()
                cp.allocations.placer.place([demand], f"n{(k * 101) % nodes:05d}", field="spec")  # the decision alone
                times.append(time.perf_counter() - t)
            print(f"  {name:24s} p50 {statistics.median(times) * 1000:.1f} ms, p99 {statistics.quantiles(times, n=100)[98] * 1000:.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--skip-job", action="store_true")
    p.add_argument("--skip-placement", action="store_true")
    args = p.parse_args()
    if not args.skip_job:
        job_run(args.depth, args.width, args.agents)
    if not args.skip_placement:
        placement_run(args.nodes, args.samples)


if __name__ == "__main__":
    main()
