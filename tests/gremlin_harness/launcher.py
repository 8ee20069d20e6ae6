"""Start a real Gremlin Server (TinkerPop 3.8, in-memory TinkerTransactionGraph) from Maven Central for tests.

Usage from tests::

    from tests.gremlin_harness.launcher import start_gremlin

    with start_gremlin(tmp_path / "gremlin") as server:
        store = GremlinStore(server.url)   # ws://127.0.0.1:<port>/gremlin

The JVM (``harness.GremlinHarnessMain``, built by tests/jvm_harness/prepare.sh) prints ``READY ws://...``
once the port is bound; starting, output, and the promise that no JVM outlives the test run are the
shared harness's (tests/jvm_harness/process.py). ``start_gremlin`` returns only after a real
traversal (``g.inject(1)``) answered through gremlinpython.

For humans: ``python -m tests.gremlin_harness.launcher`` starts one server and prints its URL until
Ctrl-C. Environment overrides: ``GREMLIN_HARNESS_JAVA`` (java binary), ``GREMLIN_HARNESS_JVM_OPTS``
(extra JVM flags, shell-split).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from graph_schema.gremlin.remote import Access
from tests.jvm_harness.process import BASE_JVM_OPTS, Harness, JvmServer, find_java, jvm_options, retry_until, start_jvm

HERE = Path(__file__).resolve().parent
HARNESS = Harness(HERE, main_class_file="harness/GremlinHarnessMain.class")
SERVER_YAML = HERE / "gremlin-server.yaml"
GRAPH_PROPERTIES = HERE / "tinkergraph.properties"
PLAIN_GRAPH_PROPERTIES = HERE / "tinkergraph-plain.properties"
MAIN_CLASS = "harness.GremlinHarnessMain"

#: vertex property keys TinkerGraph indexes for equality lookups: what the store filters on
#: (the Cypher engines' indexes: Node.status, Allocation.state/node_id/parent_id; events by allocation;
#: allocations by spread key; tasks by job)
VERTEX_INDEXES = ("status", "state", "node_id", "parent_id", "allocation_id", "spread_key", "job_id")

JVM_OPTS = (
    *BASE_JVM_OPTS,
    "-XX:TieredStopAtLevel=1",  # C1 only: the server is up sooner; tests are short
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.logFile=System.err",
)

GremlinServerHandle = JvmServer


def _verify(url: str, deadline: float, access: Access | None = None) -> None:
    """A real traversal through gremlinpython, the client the adapter uses (logged in, over TLS, as `access` says)."""
    from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
    from gremlin_python.process.anonymous_traversal import traversal

    options = access.options(url) if access is not None else {}

    def attempt() -> bool:
        conn = DriverRemoteConnection(url, "g", **options)
        try:
            return traversal().with_(conn).inject(1).to_list() == [1]
        finally:
            conn.close()

    retry_until(deadline, f"Gremlin Server at {url} (g.inject(1))", attempt)


def start_gremlin(
    workdir: Path,
    *,
    timeout: float = 120.0,
    port: int = 0,
    heap: str = "512m",
    jvm_opts: Sequence[str] = (),
    graph_properties: Path = GRAPH_PROPERTIES,
    config: Path = SERVER_YAML,
    credentials: Path | None = None,
    access: Access | None = None,
) -> JvmServer:
    """Start Gremlin Server with an empty in-memory graph; return once ``g.inject(1)`` answers.

    ``graph_properties`` picks the graph: TinkerTransactionGraph by default (tinkergraph.properties);
    tinkergraph-plain.properties is a TinkerGraph without transactions. ``config`` is the server's YAML (the
    tests' own by default; deploy/gremlin-server's is the compose one), ``credentials`` the credentials graph of
    its authenticator, and ``access`` how the readiness check logs in and which CA it trusts.

    ``port=0`` (the default) lets the kernel choose a free port inside the JVM (no race between
    picking and binding). Raises RuntimeError, with the tail of the JVM's output, if the server is
    not ready within ``timeout`` seconds.
    """
    HARNESS.ensure_built()
    cmd = [
        find_java("GREMLIN_HARNESS_JAVA"), *jvm_options(heap, JVM_OPTS, "GREMLIN_HARNESS_JVM_OPTS", jvm_opts),
        "-cp", HARNESS.classpath(), MAIN_CLASS,
        "--config", str(Path(config).resolve()), "--graph", str(Path(graph_properties).resolve()),
        "--port", str(port), "--watch-pid", str(os.getpid()), "--vertex-index", ",".join(VERTEX_INDEXES),
        *(["--credentials", str(Path(credentials).resolve())] if credentials else []),
    ]
    server = start_jvm("Gremlin Server", cmd, Path(workdir).resolve(), log_name="gremlin-server.log", timeout=timeout,
                       ready_re=r"^READY (wss?://\S+:\d+/gremlin)\s*$",
                       verify=lambda url, deadline: _verify(url, deadline, access))
    server.url = server.address
    server.port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    return server


def main(argv: Sequence[str] | None = None) -> int:
    from tests.jvm_harness.cli import serve

    return serve("Gremlin Server (TinkerPop 3.8, TinkerGraph)", lambda workdir, port: start_gremlin(workdir, port=port), argv)


if __name__ == "__main__":
    sys.exit(main())
