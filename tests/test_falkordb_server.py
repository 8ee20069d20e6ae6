"""Tests for the embedded FalkorDB launcher (real redis-server + module, no mocks)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import cast

import falkordb
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from graph_schema import falkordb_server as fs
from graph_schema.falkordb_server import (
    FalkorDBServer,
    FalkorDBServerConfig,
    FalkorDBServerError,
    find_free_port,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


def _graph(server: FalkorDBServer, name: str = "g") -> falkordb.Graph:
    return falkordb.FalkorDB(host=server.host, port=server.port).select_graph(name)


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[FalkorDBServer]:
    srv = FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "data"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_start_is_healthy_and_urls(server: FalkorDBServer, tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    assert server.pid is not None and _alive(server.pid)
    assert server.host == "127.0.0.1"
    assert server.url == f"redis://127.0.0.1:{server.port}"
    assert server.redis_url(3) == f"redis://127.0.0.1:{server.port}/3"

    client = redis.Redis.from_url(server.url)
    assert client.ping() is True
    info = client.info("server")
    assert info["process_id"] == server.pid
    assert pathlib.Path(str(client.config_get("dir")["dir"])) == data_dir
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    assert client.config_get("daemonize")["daemonize"] == "no"
    modules = client.execute_command("MODULE", "LIST")
    assert "graph" in fs._module_names(modules)
    client.close()

    # a Celery-style db number is an ordinary Redis database
    other = redis.Redis.from_url(server.redis_url(2))
    other.set("k", "v")
    assert other.get("k") == b"v"
    assert redis.Redis.from_url(server.redis_url(0)).get("k") is None

    assert _graph(server).query("RETURN 1").result_set == [[1]]
    assert (data_dir / "falkordb.log").is_file()
    lock = json.loads((data_dir / "falkordb.lock").read_text())
    assert lock["server_pid"] == server.pid and lock["launcher_pid"] == os.getpid()


def test_persistence_across_stop_start(tmp_path: pathlib.Path) -> None:
    cfg = FalkorDBServerConfig(data_dir=tmp_path / "d")
    with FalkorDBServer(cfg) as srv:
        _graph(srv).query("CREATE (:Actor {name: 'alice'})")
    assert (tmp_path / "d" / "appendonlydir").is_dir()

    # a brand-new launcher object (new port) on the same data dir sees the node
    with FalkorDBServer(cfg) as srv2:
        rows = _graph(srv2).query("MATCH (a:Actor) RETURN a.name").result_set
        assert rows == [["alice"]]


def test_restart_same_port_keeps_data(server: FalkorDBServer) -> None:
    port, old_pid = server.port, server.pid
    _graph(server).query("CREATE (:Actor {name: 'bob'})")
    server.restart()
    assert server.port == port
    assert server.pid is not None and server.pid != old_pid
    assert _graph(server).query("MATCH (a:Actor) RETURN a.name").result_set == [["bob"]]

    # after a hard kill the AOF (everysec) still brings back what was written earlier
    killed = server.pid
    server.kill_hard()
    assert cast(int | None, server.pid) is None and _wait_dead(killed)  # (mypy keeps the narrowing above)
    server.restart()
    assert server.port == port
    assert _graph(server).query("MATCH (a:Actor) RETURN count(a)").result_set == [[1]]


def test_second_launcher_on_same_data_dir_is_refused(server: FalkorDBServer, tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    other = FalkorDBServer(FalkorDBServerConfig(data_dir=data_dir))
    with pytest.raises(FalkorDBServerError) as excinfo:
        other.start(timeout=5)
    assert str(data_dir) in str(excinfo.value)
    assert other.pid is None
    # the first server is untouched
    assert redis.Redis.from_url(server.url).ping()


def test_stale_lock_is_taken_over(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "stale"
    data_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data_dir / "falkordb.lock").write_text(json.dumps({"launcher_pid": dead.pid, "server_pid": dead.pid}))
    with FalkorDBServer(FalkorDBServerConfig(data_dir=data_dir)) as srv:
        assert redis.Redis.from_url(srv.url).ping()
        assert json.loads((data_dir / "falkordb.lock").read_text())["server_pid"] == srv.pid


def test_stop_is_idempotent(tmp_path: pathlib.Path) -> None:
    srv = FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "s"))
    srv.stop()  # never started: no-op
    srv.start()
    pid = srv.pid
    assert pid is not None
    srv.stop()
    assert srv.pid is None and _wait_dead(pid, timeout=0.5)
    srv.stop()
    srv.stop(timeout=0.1)
    # lock released: another launcher may now use the dir
    with FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "s")) as again:
        assert again.pid is not None


def test_start_from_short_lived_thread_survives_thread_exit(tmp_path: pathlib.Path) -> None:
    # PR_SET_PDEATHSIG is tied to the forking *thread*; the launcher must not
    # let the server die when the thread that called start() ends.
    srv = FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "t"))
    t = threading.Thread(target=srv.start)
    t.start()
    t.join()
    try:
        time.sleep(0.3)
        assert srv.pid is not None
        assert redis.Redis.from_url(srv.url).ping()
    finally:
        srv.stop()


def test_port_race_retries_with_another_port(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: the first "free" port handed out is already taken by a
    # listener (as if somebody grabbed it between pick and bind).
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = fs.find_free_port
    handed: list[int] = []

    def racy(host: str = "127.0.0.1") -> int:
        port = taken if not handed else real(host)
        handed.append(port)
        return port

    monkeypatch.setattr(fs, "find_free_port", racy)
    try:
        with FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "r")) as srv:
            assert handed[0] == taken and len(handed) >= 2
            assert srv.port != taken
            assert redis.Redis.from_url(srv.url).ping()
    finally:
        squatter.close()


def test_fixed_port_in_use_fails_with_log_tail(tmp_path: pathlib.Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        srv = FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "f", port=port))
        with pytest.raises(FalkorDBServerError, match="Address already in use"):
            srv.start(timeout=10)
        assert srv.pid is None
    finally:
        squatter.close()
    # the failed start released the data-dir lock
    with FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "f")) as srv2:
        assert srv2.pid is not None


def test_password(tmp_path: pathlib.Path) -> None:
    pw = 'p@ss:w/"rd'
    with FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path / "p", password=pw)) as srv:
        assert redis.Redis.from_url(srv.url).ping()
        assert redis.Redis.from_url(srv.redis_url(1)).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=srv.host, port=srv.port, retry=Retry(NoBackoff(), 0)).ping()
        # the secret is not on the command line
        assert pw.encode() not in pathlib.Path(f"/proc/{srv.pid}/cmdline").read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_no_orphan_after_parent_sigkill(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "orphan"
    script = textwrap.dedent(
        f"""
        import pathlib, sys, time
        from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
        srv = FalkorDBServer(FalkorDBServerConfig(data_dir=pathlib.Path({str(data_dir)!r}))).start()
        import falkordb
        falkordb.FalkorDB(host=srv.host, port=srv.port).select_graph("g").query("CREATE (:N {{v: 7}})")
        print(srv.pid, srv.port, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, "child launcher did not start the server"
        server_pid, port = map(int, line.split())
        assert _alive(server_pid)
        assert b"redis-server" in pathlib.Path(f"/proc/{server_pid}/cmdline").read_bytes()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)
        assert _wait_dead(server_pid, timeout=5), "redis-server outlived its SIGKILLed launcher"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

    # the dead launcher's lock is stale now; SIGTERM made redis flush the AOF
    with FalkorDBServer(FalkorDBServerConfig(data_dir=data_dir)) as srv:
        assert _graph(srv).query("MATCH (n:N) RETURN n.v").result_set == [[7]]


def test_cli_foreground_prints_url_and_stops_on_sigint(tmp_path: pathlib.Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "graph_schema.falkordb_server", "--data-dir", str(tmp_path / "cli")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(url)
        server_pid = client.info("server")["process_id"]
        client.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert _wait_dead(server_pid, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_find_free_port_is_bindable() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
