"""Apache Cassandra 5.0 (cassandra-all from Maven Central) for tests: one node, or a ring on 127.0.0.1/.2/.3.

JanusGraph keeps its graph in Cassandra; these are the storage servers under the
JanusGraph engine's tests (tests/janusgraph_harness). Each node is Cassandra's own daemon
(`org.apache.cassandra.service.CassandraDaemon`) in its own JVM, started by the shared
harness (tests/jvm_harness) under `harness.Lifeline`: READY when its CQL port listens,
gone when the test process is.

- Cassandra 5.0 runs on Java 17 with the module flags of its own `jvm17-server.options`
  (below); 4.1 would need Java 11.
- Each node binds its own loopback address (127.0.0.2 and .3 work on Linux without
  setup), so every node uses the same storage and CQL ports; the ports are picked free on
  every address of the ring at once.
- A ring gets one token per node, evenly spaced (no token allocation, no bootstrap
  streaming: `auto_bootstrap: false` on empty nodes), so three nodes start in seconds.
- A node killed with SIGKILL is restarted on the same data directory (`restart()`): the
  commit log is replayed and hints from the other nodes catch it up.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path

from tests.jvm_harness.process import (
    BASE_JVM_OPTS,
    Harness,
    RestartableJvm,
    find_java,
    jvm_options,
    lifeline_cmd,
    start_jvm,
)

HERE = Path(__file__).resolve().parent
HARNESS = Harness(HERE)
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
CLUSTER = "controlplane-test"

#: Cassandra's conf/jvm17-server.options: what it reaches into inside the JDK
JAVA17_MODULE_FLAGS = tuple(
    f"--add-{kind}={mod}=ALL-UNNAMED"
    for kind, mods in (
        ("exports", ("java.base/jdk.internal.misc", "java.base/jdk.internal.ref", "java.base/sun.nio.ch",
                     "java.management.rmi/com.sun.jmx.remote.internal.rmi", "java.rmi/sun.rmi.registry",
                     "java.rmi/sun.rmi.server", "java.sql/java.sql")),
        ("opens", ("java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
                   "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
                   "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal",
                   "java.base/sun.nio.ch", "java.base/java.io", "java.base/java.nio", "java.base/java.util.concurrent",
                   "java.base/java.util", "java.base/java.util.concurrent.atomic", "java.base/java.lang",
                   "java.base/java.math", "java.base/java.lang.reflect", "java.base/java.net")),
    )
    for mod in mods
)
JVM_OPTS = (
    *BASE_JVM_OPTS,
    "-Xss512k",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",  # a test ring is small and local: no 30 s settle
    "-Dcassandra.ring_delay_ms=1000",
    *JAVA17_MODULE_FLAGS,
)

_LOGBACK = """<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level [%thread] %date{HH:mm:ss.SSS} %logger{0}: %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
  <logger name="org.apache.cassandra.service.CassandraDaemon" level="INFO"/>
  <logger name="org.apache.cassandra.gms.Gossiper" level="INFO"/>
  <logger name="org.apache.cassandra.service.StartupChecks" level="ERROR"/>
</configuration>
"""


def _yaml(node: Path, address: str, seeds: Sequence[str], token: int, storage_port: int, cql_port: int) -> str:
    d = node / "data"
    return f"""cluster_name: {CLUSTER}
num_tokens: 1
initial_token: {token}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [{d}/data]
commitlog_directory: {d}/commitlog
saved_caches_directory: {d}/saved_caches
hints_directory: {d}/hints
cdc_raw_directory: {d}/cdc_raw
# the commit log is fsynced every 100 ms (the default 10 s is for real disks under load)
commitlog_sync: periodic
commitlog_sync_period: 100ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{",".join(f"{s}:{storage_port}" for s in seeds)}"
listen_address: {address}
rpc_address: {address}
storage_port: {storage_port}
native_transport_port: {cql_port}
start_native_transport: true
endpoint_snitch: SimpleSnitch
auto_bootstrap: false
# a node that was down gets the writes it missed from the others' hints when it is back
hinted_handoff_enabled: true
max_hint_window: 3h
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 2
concurrent_materialized_view_writes: 2
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
# JanusGraph's locks and id blocks are small writes that must not wait behind a slow test machine
write_request_timeout: 5000ms
# JanusGraph commits a transaction as one logged (atomic) batch: a 500-allocation spawn is a few MB
batch_size_warn_threshold: 16MiB
batch_size_fail_threshold: 64MiB
read_request_timeout: 5000ms
"""


def free_port(addresses: Sequence[str]) -> int:
    """A TCP port free on every one of `addresses` (picked on the first, checked on the rest)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        try:
            for a in addresses[1:]:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {addresses}")


def free_ports(addresses: Sequence[str]) -> tuple[int, int]:
    """Two distinct ports free on every address: storage (gossip) and CQL."""
    storage = free_port(addresses)
    cql = free_port(addresses)
    while cql == storage:
        cql = free_port(addresses)
    return storage, cql


class CassandraNode(RestartableJvm):
    """One Cassandra node: its address, ports and data directory; started, killed and restarted in place."""

    def __init__(self, workdir: Path, *, address: str, seeds: Sequence[str], token: int, storage_port: int,
                 cql_port: int, heap: str = "384m") -> None:
        self.workdir = Path(workdir).resolve()
        self.address = address
        self.cql_port = cql_port
        self.heap = heap
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cassandra.yaml").write_text(_yaml(self.workdir, address, seeds, token, storage_port, cql_port))
        (self.workdir / "logback.xml").write_text(_LOGBACK)

    @property
    def contact_point(self) -> str:
        return f"{self.address}:{self.cql_port}"

    def start(self, *, timeout: float = 180.0) -> CassandraNode:
        HARNESS.ensure_built()
        opts = [
            *jvm_options(self.heap, JVM_OPTS, "CASSANDRA_HARNESS_JVM_OPTS", ()),
            f"-Dcassandra.config=file://{self.workdir / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.workdir / 'data'}",
            f"-Dlogback.configurationFile={self.workdir / 'logback.xml'}",
        ]
        cmd = lifeline_cmd(find_java("CASSANDRA_HARNESS_JAVA"), opts, HARNESS.classpath(), MAIN_CLASS, [],
                           ready=[self.contact_point])
        self.server = start_jvm(f"Cassandra {self.address}", cmd, self.workdir, log_name="cassandra.log", timeout=timeout)
        self.server.url = self.contact_point
        self.server.port = self.cql_port
        return self



#: evenly spaced Murmur3 tokens, one per node
def tokens(n: int) -> list[int]:
    return [-(2**63) + i * (2**64 // n) for i in range(n)]


class CassandraRing:
    """`size` nodes on 127.0.0.1 .. 127.0.0.<size>, the first the seed; `stop()` ends them all."""

    def __init__(self, workdir: Path, *, size: int = 3, heap: str = "384m") -> None:
        addresses = [f"127.0.0.{i + 1}" for i in range(size)]
        storage, cql = free_ports(addresses)
        self.nodes = [
            CassandraNode(Path(workdir) / f"node{i + 1}", address=a, seeds=addresses[:1], token=t,
                          storage_port=storage, cql_port=cql, heap=heap)
            for i, (a, t) in enumerate(zip(addresses, tokens(size), strict=True))
        ]

    @property
    def contact_points(self) -> list[str]:
        return [n.contact_point for n in self.nodes]

    def start(self, *, timeout: float = 240.0) -> CassandraRing:
        try:
            self.nodes[0].start(timeout=timeout)
            for n in self.nodes[1:]:  # one at a time: each joins the ring through the seed's gossip
                n.start(timeout=timeout)
            time.sleep(2)  # gossip has told every node about every other
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()


def start_cassandra(workdir: Path, *, heap: str = "384m", timeout: float = 180.0) -> CassandraNode:
    """A single node on 127.0.0.1 (free ports), for the ordinary suite."""
    storage, cql = free_ports(["127.0.0.1"])
    node = CassandraNode(workdir, address="127.0.0.1", seeds=["127.0.0.1"], token=tokens(1)[0],
                         storage_port=storage, cql_port=cql, heap=heap)
    return node.start(timeout=timeout)
