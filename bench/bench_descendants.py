"""Descendants of a 1,100-allocation subtree through GraphQL over HTTP (target p50 <= 20 ms), beside the raw store time,
with authentication off and on (the difference should stay within a few percent).

The API runs as its own process (`controlplane api`, uvicorn) on the engine; this
process is the HTTP client.

    python -m bench.bench_descendants [--engines falkordb,neo4j] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from bench.api import auth_overhead_us, delta, graph_uri, redis_url, running_api
from bench.engines import open_engine
from controlplane.services import ControlPlane
from controlplane.wiring import assemble

QUERY = "query($id: ID!) { allocation(id: $id) { descendants(maxDepth: 10, first: 2000) { id name state } } }"


def build_tree(cp: ControlPlane) -> str:
    cp.nodes.register({"name": "big", "cpu_milli": 4_000_000, "memory_mib": 64_000_000})
    spec = {"name": "x", "argv": ["true"], "resources": {"cpu_milli": 1, "memory_mib": 1}}
    [root] = cp.allocations.spawn("big", [{**spec, "name": "root"}])
    mids = cp.allocations.spawn(root.id, [{**spec, "name": f"mid{i}"} for i in range(10)])
    for m in mids:
        cp.allocations.spawn(m.id, [{**spec, "name": f"leaf-{m.name}-{j}"} for j in range(109)])
    return root.id


def run(engine: str, requests: int) -> None:
    with open_engine(engine) as (store, server):
        store.clear()
        cp = assemble(store)
        root = build_tree(cp)
        assert len(cp.queries.descendants(root, max_depth=10)) == 1100
        raw, projected = [], []
        for _ in range(requests):
            t = time.perf_counter()
            store.descendants(root_id=root, max_depth=10, limit=2000)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.descendants(root_id=root, max_depth=10, limit=2000, fields={"id", "name", "state"})
            projected.append(time.perf_counter() - t)
        # Both APIs run at once and take turns, so that a busy machine slows both alike.
        with running_api(engine, graph_uri(store, server), redis_url(server), auth=False) as off, \
                running_api(engine, graph_uri(store, server), redis_url(server), auth=True) as on, \
                httpx.Client(timeout=30) as client:
            http: dict[bool, list[float]] = {False: [], True: []}
            for i in range(requests + 10):
                for auth, (url, headers) in ((False, off), (True, on)):
                    t = time.perf_counter()
                    r = client.post(url, json={"query": QUERY, "variables": {"id": root}}, headers=headers)
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 200 and len(r.json()["data"]["allocation"]["descendants"]) == 1100, r.text[:300]
                    if i >= 10:  # warm-up
                        http[auth].append(elapsed)
        for auth in (False, True):
            print(
                f"{engine:9s} descendants(1,100) over HTTP, auth {'on ' if auth else 'off'}: p50 {statistics.median(http[auth]) * 1000:.1f} ms, "
                f"p99 {statistics.quantiles(http[auth], n=100)[98] * 1000:.1f} ms; raw store p50 {statistics.median(projected) * 1000:.1f} ms "
                f"for the fields asked (id, name, state), {statistics.median(raw) * 1000:.1f} ms for whole records"
            )
        p50 = {auth: statistics.median(v) for auth, v in http.items()}
        print(f"{engine:9s} descendants over HTTP: authentication costs {delta(p50[True], p50[False])} at p50")
    on_us, off_us = auth_overhead_us()
    print(f"trust layer per request, in process: {on_us:.1f} us with authentication on, {off_us:.1f} us off "
          f"({(on_us - off_us) / 1e6 / statistics.median(http[True]) * 100:.3f}% of the p50 above)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", default="falkordb,neo4j,gremlin")
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    for engine in args.engines.split(","):
        run(engine, args.requests)


if __name__ == "__main__":
    main()
