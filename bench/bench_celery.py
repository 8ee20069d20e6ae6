"""spawn -> running -> succeeded through Celery with the process executor (argv `true`); target >= 300/s.

Starts the embedded FalkorDB and real node agents (`controlplane worker`), spawns
N allocations in batches and waits until every one has succeeded.

    python -m bench.bench_celery [--total 3000] [--agents 1] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controlplane.services import ControlPlane
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
from workers.app import configure
from workers.dispatch import CeleryDispatcher


def count(store: FalkorDBStore, state: str) -> int:
    return int(store._read("MATCH (a:Allocation) WHERE a.state = $s RETURN count(a)", {"s": state})[0][0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--total", type=int, default=3000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--agents", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = FalkorDBServer(FalkorDBServerConfig(data_dir=Path(tmp) / "db")).start()
        store = FalkorDBStore(server.url, graph="bench")
        store.bootstrap()
        env = {**os.environ, "GRAPH_URI": server.url, "GRAPH_NAME": "bench", "REDIS_URL": server.redis_url(1), "DATA_DIR": tmp}
        agents = [
            subprocess.Popen([sys.executable, "-m", "controlplane", "worker", "--node", f"agent{i}", "--concurrency", str(args.concurrency)], env=env)
            for i in range(args.agents)
        ]
        try:
            cp = ControlPlane(store, CeleryDispatcher(configure(server.redis_url(1))))
            while len(store.list_nodes(after=None, limit=100)) < args.agents:
                time.sleep(0.1)
            spec = {"name": "t", "argv": ["true"], "resources": {"cpu_milli": 0, "memory_mib": 1}}
            started = time.perf_counter()
            for i in range(0, args.total, args.batch):
                cp.spawn(f"agent{(i // args.batch) % args.agents}", [spec] * min(args.batch, args.total - i))
            spawned = time.perf_counter() - started
            while count(store, "succeeded") < args.total:
                failed = count(store, "failed")
                if failed:
                    raise SystemExit(f"{failed} allocations failed")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            print(
                f"celery+process: {args.total} allocations spawn->running->succeeded in {elapsed:.2f}s = "
                f"{args.total / elapsed:,.0f}/s ({args.agents} agent(s) x {args.concurrency} threads; spawning took {spawned:.2f}s)"
            )
        finally:
            for a in agents:
                a.send_signal(signal.SIGTERM)
            for a in agents:
                a.wait(timeout=30)
            store.close()
            server.stop()


if __name__ == "__main__":
    main()
