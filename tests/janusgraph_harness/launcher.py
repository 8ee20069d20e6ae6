"""JanusGraph Server 1.1 (from Maven Central) over Cassandra 5.0 for tests: one of each, or two servers over a ring.

The fourth engine's servers: JanusGraph's own `org.janusgraph.graphdb.server.JanusGraphServer`
in a JVM of its own (its classpath apart from Cassandra's, tests/cassandra_harness), under the
shared harness (tests/jvm_harness): READY when its WebSocket port listens, verified with a real
gremlinpython traversal, gone when the test process is.

Usage from tests::

    from tests.janusgraph_harness.launcher import start_single

    with start_single(tmp_path) as stack:      # one Cassandra node + one JanusGraph Server
        store = JanusGraphStore(stack.url)      # ws://127.0.0.1:<port>/gremlin

For humans: ``python -m tests.janusgraph_harness.launcher`` starts both until Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from tests.cassandra_harness.launcher import CassandraNode, CassandraRing, free_port, start_cassandra
from tests.jvm_harness.process import (
    BASE_JVM_OPTS,
    Harness,
    RestartableJvm,
    find_java,
    jvm_options,
    lifeline_cmd,
    retry_until,
    start_jvm,
)

HERE = Path(__file__).resolve().parent
HARNESS = Harness(HERE)
MAIN_CLASS = "org.janusgraph.graphdb.server.JanusGraphServer"
SERVER_YAML = HERE / "janusgraph-server.yaml"
GRAPH_PROPERTIES = HERE / "janusgraph-cql.properties"
INIT_SCRIPT = HERE / "init.groovy"
KEYSPACE = "controlplane"

JVM_OPTS = (
    *BASE_JVM_OPTS,
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.logFile=System.err",
    # the id-block and lock-expiry warnings a killed peer causes are expected in fault tests
    "-Dorg.slf4j.simpleLogger.log.org.janusgraph.diskstorage.locking=error",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
)


def _verify(url: str, deadline: float) -> None:
    """g.inject(1) through gremlinpython 3.8, the client the adapter uses (GraphBinary 1.0)."""
    from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
    from gremlin_python.process.anonymous_traversal import traversal

    def attempt() -> bool:
        conn = DriverRemoteConnection(url, "g")
        try:
            return traversal().with_(conn).inject(1).to_list() == [1]
        finally:
            conn.close()

    retry_until(deadline, f"JanusGraph Server at {url} (g.inject(1))", attempt)


class JanusGraphServer(RestartableJvm):
    """One JanusGraph Server process over the given Cassandra contact points; stoppable and restartable in place."""

    def __init__(self, workdir: Path, *, cql_hosts: Sequence[str], cql_port: int, replication_factor: int,
                 consistency: str = "QUORUM", keyspace: str = KEYSPACE, heap: str = "512m") -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(["127.0.0.1"])
        self.url = f"ws://127.0.0.1:{self.port}/gremlin"
        self.heap = heap
        props = self.workdir / "janusgraph.properties"
        props.write_text(GRAPH_PROPERTIES.read_text() + "\n".join([
            f"storage.hostname={','.join(cql_hosts)}",
            f"storage.port={cql_port}",
            f"storage.cql.keyspace={keyspace}",
            f"storage.cql.replication-factor={replication_factor}",
            f"storage.cql.read-consistency-level={consistency}",
            f"storage.cql.write-consistency-level={consistency}",
            "",
        ]))
        yaml = (SERVER_YAML.read_text().replace("@HOST@", "127.0.0.1").replace("@PORT@", str(self.port))
                .replace("@GRAPH_PROPERTIES@", str(props)).replace("@INIT_SCRIPT@", str(INIT_SCRIPT)))
        (self.workdir / "janusgraph-server.yaml").write_text(yaml)

    def start(self, *, timeout: float = 180.0) -> JanusGraphServer:
        HARNESS.ensure_built()
        opts = jvm_options(self.heap, JVM_OPTS, "JANUSGRAPH_HARNESS_JVM_OPTS", ())
        cmd = lifeline_cmd(find_java("JANUSGRAPH_HARNESS_JAVA"), opts, HARNESS.classpath(), MAIN_CLASS,
                           [str(self.workdir / "janusgraph-server.yaml")], ready=[f"127.0.0.1:{self.port}"])
        self.server = start_jvm(f"JanusGraph Server :{self.port}", cmd, self.workdir, log_name="janusgraph-server.log",
                                timeout=timeout, verify=lambda _address, deadline: _verify(self.url, deadline),
                                fail_re=r"JanusGraph Server was unable to start")
        self.server.url = self.url
        self.server.port = self.port
        return self



class SingleStack:
    """One Cassandra node and one JanusGraph Server over it: what the ordinary suite runs on."""

    def __init__(self, cassandra: CassandraNode, janusgraph: JanusGraphServer) -> None:
        self.cassandra = cassandra
        self.janusgraph = janusgraph
        self.url = janusgraph.url

    def stop(self) -> None:
        self.janusgraph.stop()
        self.cassandra.stop()

    def __enter__(self) -> SingleStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_single(workdir: Path, *, timeout: float = 240.0) -> SingleStack:
    workdir = Path(workdir).resolve()
    cassandra = start_cassandra(workdir / "cassandra", timeout=timeout)
    try:
        janus = JanusGraphServer(workdir / "janusgraph", cql_hosts=[cassandra.address], cql_port=cassandra.cql_port,
                                 replication_factor=1).start(timeout=timeout)
    except BaseException:
        cassandra.stop()
        raise
    return SingleStack(cassandra, janus)


class RingStack:
    """A 3-node Cassandra ring (RF 3, QUORUM reads and writes) and two JanusGraph Servers in front of it."""

    def __init__(self, workdir: Path, *, servers: int = 2) -> None:
        self.workdir = Path(workdir).resolve()
        self.ring = CassandraRing(self.workdir / "cassandra", size=3)
        hosts = [n.address for n in self.ring.nodes]
        self.janusgraphs = [
            JanusGraphServer(self.workdir / f"janusgraph{i + 1}", cql_hosts=hosts, cql_port=self.ring.nodes[0].cql_port,
                             replication_factor=3, consistency="QUORUM")
            for i in range(servers)
        ]

    @property
    def urls(self) -> list[str]:
        return [j.url for j in self.janusgraphs]

    def start(self, *, timeout: float = 300.0) -> RingStack:
        self.ring.start(timeout=timeout)
        try:
            for attempt in range(15):
                # The first server creates the keyspace and the graph's tables one after the other, and
                # uses each at once; on a busy ring a node that has not applied the new table yet answers
                # "table ... does not exist" and the server gives up. Each start gets further (the tables
                # made so far stay); a few starts make them all (nine tables: at most one start each).
                try:
                    self.janusgraphs[0].start(timeout=timeout)
                    break
                except RuntimeError:
                    if attempt == 14:
                        raise
            for j in self.janusgraphs[1:]:
                j.start(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for j in self.janusgraphs:
            j.stop()
        self.ring.stop()


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile
    import time

    with tempfile.TemporaryDirectory(prefix="janusgraph-harness-") as tmp, start_single(Path(tmp)) as stack:
        print(stack.url, flush=True)
        print(f"JanusGraph over Cassandra {stack.cassandra.contact_point}; Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            while stack.janusgraph.is_running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
