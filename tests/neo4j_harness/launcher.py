"""Start a real Neo4j 5.26 LTS server (the in-process neo4j-harness from Maven Central) for tests.

Usage from tests::

    from tests.neo4j_harness.launcher import start_neo4j

    with start_neo4j(tmp_path / "neo4j") as server:
        driver = neo4j.GraphDatabase.driver(server.uri, auth=None)

The JVM (``harness.Neo4jHarnessMain``, built by tests/jvm_harness/prepare.sh) prints
``READY bolt://127.0.0.1:<port>`` once Bolt accepts connections; starting, output, and the promise
that no JVM outlives the test run are the shared harness's (tests/jvm_harness/process.py).

For humans: ``python -m tests.neo4j_harness.launcher`` starts one server and prints its URI until
Ctrl-C. Environment overrides: ``NEO4J_HARNESS_JAVA`` (java binary), ``NEO4J_HARNESS_JVM_OPTS``
(extra JVM flags, shell-split).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.jvm_harness.process import BASE_JVM_OPTS, Harness, JvmServer, find_java, jvm_options, retry_until, start_jvm

HERE = Path(__file__).resolve().parent
HARNESS = Harness(HERE, main_class_file="harness/Neo4jHarnessMain.class")
MAIN_CLASS = "harness.Neo4jHarnessMain"

# Flags that Neo4j's own neo4j.conf passes to the JVM on Java 17, plus the shared test-friendly ones.
JVM_OPTS = (
    *BASE_JVM_OPTS,
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
)

Neo4jServer = JvmServer


def _verify(uri: str, deadline: float) -> None:
    import neo4j

    def attempt() -> bool:
        with neo4j.GraphDatabase.driver(uri, auth=None, connection_timeout=10) as drv:
            drv.verify_connectivity()
            records, _, _ = drv.execute_query("RETURN 1 AS one")
            return bool(records[0]["one"] == 1)

    retry_until(deadline, f"Neo4j at {uri} (RETURN 1)", attempt)


def driver(server: JvmServer, **kwargs: Any) -> Any:
    """A new ``neo4j`` driver for this server (auth disabled); the caller closes it."""
    import neo4j

    return neo4j.GraphDatabase.driver(server.uri, auth=None, **kwargs)


def start_neo4j(
    workdir: Path,
    *,
    timeout: float = 120.0,
    port: int = 0,
    heap: str = "512m",
    pagecache_mb: int = 128,
    jvm_opts: Sequence[str] = (),
    verify: bool = True,
) -> JvmServer:
    """Start a Neo4j 5.26 server whose data lives under ``workdir``; return once Bolt answers.

    ``port=0`` (the default) lets the kernel choose a free port inside the JVM (no race between
    picking and binding); the chosen port is in ``server.uri``. Raises RuntimeError, with the tail
    of the JVM's output, if the server is not ready within ``timeout`` seconds.
    """
    HARNESS.ensure_built()
    workdir = Path(workdir).resolve()
    cmd = [
        find_java("NEO4J_HARNESS_JAVA"), *jvm_options(heap, JVM_OPTS, "NEO4J_HARNESS_JVM_OPTS", jvm_opts),
        "-cp", HARNESS.classpath(), MAIN_CLASS,
        "--port", str(port), "--workdir", str(workdir), "--pagecache", str(pagecache_mb), "--watch-pid", str(os.getpid()),
    ]
    server = start_jvm("Neo4j harness", cmd, workdir, log_name="neo4j-harness.log", timeout=timeout,
                       ready_re=r"^READY (bolt://\S+:\d+)\s*$", verify=_verify if verify else None)
    server.url = server.address
    server.port = int(server.url.rsplit(":", 1)[1])
    return server


def main(argv: Sequence[str] | None = None) -> int:
    from tests.jvm_harness.cli import serve

    return serve("Neo4j 5.26 test server", lambda workdir, port: start_neo4j(workdir, port=port), argv)


if __name__ == "__main__":
    sys.exit(main())
