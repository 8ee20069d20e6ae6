"""Descendants of a 1,100-allocation subtree through GraphQL over HTTP (target p50 <= 20 ms), beside the raw store time.

The API runs as its own process (`controlplane api`, uvicorn) on the engine; this
process is the HTTP client.

    python -m bench.bench_descendants [--engines falkordb,neo4j] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from bench.engines import open_engine
from controlplane.services import ControlPlane
from controlplane.wiring import assemble
from graph_schema.falkordb_server import find_free_port

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
    with open_engine(engine) as (store, server), tempfile.TemporaryDirectory() as tmp:
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
        port = find_free_port()
        env = {**os.environ, "GRAPH_BACKEND": engine, "GRAPH_URI": _uri(store, server), "GRAPH_NAME": "bench",
               "REDIS_URL": server.redis_url(3) if server else "redis://127.0.0.1:1/0", "DATA_DIR": tmp}
        api = subprocess.Popen([sys.executable, "-m", "controlplane", "api", "--port", str(port)], env=env)
        try:
            url = f"http://127.0.0.1:{port}/graphql"
            with httpx.Client(timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.get(f"http://127.0.0.1:{port}/healthz")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                http = []
                for i in range(requests + 10):
                    t = time.perf_counter()
                    r = client.post(url, json={"query": QUERY, "variables": {"id": root}})
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 200 and len(r.json()["data"]["allocation"]["descendants"]) == 1100, r.text[:300]
                    if i >= 10:  # warm-up
                        http.append(elapsed)
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=20)
        print(
            f"{engine:9s} descendants(1,100) over HTTP: p50 {statistics.median(http) * 1000:.1f} ms, "
            f"p99 {statistics.quantiles(http, n=100)[98] * 1000:.1f} ms; raw store p50 {statistics.median(projected) * 1000:.1f} ms "
            f"for the fields asked (id, name, state), {statistics.median(raw) * 1000:.1f} ms for whole records"
        )


def _uri(store: Any, server: Any) -> str:
    if server is not None:
        return str(server.url)
    return str(store.uri if hasattr(store, "uri") else store.remote.url)  # Neo4j, Gremlin


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", default="falkordb,neo4j,gremlin")
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    for engine in args.engines.split(","):
        run(engine, args.requests)


if __name__ == "__main__":
    main()
