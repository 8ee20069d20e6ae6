"""Start a real Neo4j 5.26 LTS server (the in-process neo4j-harness from Maven Central) for tests.

Usage from tests::

    from tests.neo4j_harness.launcher import start_neo4j

    with start_neo4j(tmp_path / "neo4j") as server:
        driver = neo4j.GraphDatabase.driver(server.uri, auth=None)

The JVM (``harness.Neo4jHarnessMain``, built by ``prepare.sh``) prints ``READY bolt://127.0.0.1:<port>``
once Bolt accepts connections and exits when its stdin reaches EOF, so it dies with the Python
process that started it even if that process is killed. It also watches the parent's PID.

For humans: ``python -m tests.neo4j_harness.launcher`` (or running this file) starts one server and
prints its URI until Ctrl-C.

Only the standard library and the ``neo4j`` driver are used. Environment overrides:
``NEO4J_HARNESS_JAVA`` (java binary), ``NEO4J_HARNESS_JVM_OPTS`` (extra JVM flags, shell-split).
"""

from __future__ import annotations

import atexit
import collections
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Deque, List, Optional, Sequence

HERE = pathlib.Path(__file__).resolve().parent
TARGET = HERE / "target"
CLASSES_DIR = TARGET / "classes"
MAIN_CLASS_FILE = CLASSES_DIR / "harness" / "Neo4jHarnessMain.class"
CLASSPATH_FILE = TARGET / "classpath.txt"
PREPARE_STAMP = TARGET / ".prepared"
PREPARE_SH = HERE / "prepare.sh"
MAIN_CLASS = "harness.Neo4jHarnessMain"
DEFAULT_JAVA_HOME = pathlib.Path("/usr/lib/jvm/java-17-openjdk-amd64")

READY_RE = re.compile(r"^READY (bolt://(\S+):(\d+))\s*$")

# Flags that Neo4j's own neo4j.conf passes to the JVM on Java 17, plus test-friendly ones.
BASE_JVM_OPTS = [
    "-XX:+UseSerialGC",  # small heap, 2 cores: least memory and threads
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-Dfile.encoding=UTF-8",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
]

_live_servers: "set[Neo4jServer]" = set()
_live_lock = threading.Lock()


class Neo4jServer:
    """A running harness JVM. ``uri`` is ``bolt://127.0.0.1:<port>``; ``stop()`` is idempotent."""

    def __init__(
        self,
        process: subprocess.Popen,
        uri: str,
        workdir: pathlib.Path,
        log_path: pathlib.Path,
        output: Deque[str],
        reader: threading.Thread,
    ) -> None:
        self.process = process
        self.uri = uri
        self.port = int(uri.rsplit(":", 1)[1])
        self.workdir = workdir
        self.log_path = log_path
        self._output = output
        self._reader = reader
        self._stop_lock = threading.Lock()
        self.startup_seconds = 0.0  # from start_neo4j() call to a verified server

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output_tail(self, lines: int = 60) -> str:
        """The last lines the JVM printed (stdout and stderr merged)."""
        return "\n".join(list(self._output)[-lines:])

    def driver(self, **kwargs):
        """A new ``neo4j`` driver for this server (auth disabled); the caller closes it."""
        import neo4j

        return neo4j.GraphDatabase.driver(self.uri, auth=None, **kwargs)

    def stop(self, timeout: float = 20.0) -> None:
        """Close the JVM's stdin (clean shutdown), wait up to ``timeout`` s, then kill it."""
        with self._stop_lock:
            proc = self.process
            if proc.poll() is None:
                try:
                    if proc.stdin and not proc.stdin.closed:
                        proc.stdin.close()
                except OSError:
                    pass
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            elif proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            self._reader.join(timeout=5)
            with _live_lock:
                _live_servers.discard(self)

    def __enter__(self) -> "Neo4jServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited({self.process.returncode})"
        return f"<Neo4jServer {self.uri} pid={self.pid} {state}>"


def _build_is_fresh() -> bool:
    if not (MAIN_CLASS_FILE.is_file() and CLASSPATH_FILE.is_file() and PREPARE_STAMP.is_file()):
        return False
    stamp = PREPARE_STAMP.stat().st_mtime
    sources = [HERE / "pom.xml", PREPARE_SH, *HERE.joinpath("src").rglob("*.java")]
    return all(p.stat().st_mtime <= stamp for p in sources if p.exists())


def ensure_built() -> None:
    """Run prepare.sh unless its output is present and up to date (no network needed then)."""
    if _build_is_fresh():
        return
    res = subprocess.run(
        ["bash", str(PREPARE_SH)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{PREPARE_SH} failed (exit {res.returncode}):\n{res.stdout[-4000:]}")


def classpath() -> str:
    jars = CLASSPATH_FILE.read_text().strip()
    return os.pathsep.join([str(CLASSES_DIR), jars]) if jars else str(CLASSES_DIR)


def find_java() -> str:
    env = os.environ.get("NEO4J_HARNESS_JAVA")
    if env:
        return env
    candidates = [DEFAULT_JAVA_HOME / "bin" / "java"]
    if os.environ.get("JAVA_HOME"):
        candidates.append(pathlib.Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("java")
    if not found:
        raise RuntimeError("no java found (need Java 17+; set NEO4J_HARNESS_JAVA)")
    return found


def _pump(stream, output: Deque[str], log_file, ready: threading.Event, found: List[str]) -> None:
    """Drain the JVM's output (so it never blocks on a full pipe), spotting the READY line."""
    try:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            output.append(line)
            if log_file is not None:
                try:
                    log_file.write(line + "\n")
                    log_file.flush()
                except (OSError, ValueError):
                    pass
            if not found:
                m = READY_RE.match(line)
                if m:
                    found.append(m.group(1))
                    ready.set()
    finally:
        ready.set()  # also wakes the waiter when the JVM exits without READY
        try:
            stream.close()
        except OSError:
            pass
        if log_file is not None:
            try:
                log_file.close()
            except OSError:
                pass


def _verify(uri: str, deadline: float) -> None:
    import neo4j

    last: Optional[BaseException] = None
    while True:
        try:
            with neo4j.GraphDatabase.driver(uri, auth=None, connection_timeout=10) as drv:
                drv.verify_connectivity()
                records, _, _ = drv.execute_query("RETURN 1 AS one")
                if records[0]["one"] != 1:
                    raise RuntimeError(f"unexpected RETURN 1 result: {records!r}")
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        if time.monotonic() >= deadline:
            raise RuntimeError(f"Neo4j at {uri} printed READY but did not answer: {last!r}")
        time.sleep(0.2)


def start_neo4j(
    workdir: pathlib.Path,
    *,
    timeout: float = 120.0,
    port: int = 0,
    heap: str = "512m",
    pagecache_mb: int = 128,
    jvm_opts: Sequence[str] = (),
    verify: bool = True,
) -> Neo4jServer:
    """Start a Neo4j 5.26 server whose data lives under ``workdir``; return once Bolt answers.

    ``port=0`` (the default) lets the kernel choose a free port inside the JVM (no race between
    picking and binding); the chosen port is in ``server.uri``. Raises RuntimeError, with the tail
    of the JVM's output, if the server is not ready within ``timeout`` seconds.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_built()

    extra = [*shlex.split(os.environ.get("NEO4J_HARNESS_JVM_OPTS", "")), *jvm_opts]
    base = list(BASE_JVM_OPTS)
    if any(re.fullmatch(r"-XX:\+Use\w+GC", o) for o in extra):
        base.remove("-XX:+UseSerialGC")  # the caller picked a collector; two make the JVM refuse
    cmd = [
        find_java(),
        f"-Xmx{heap}",
        *base,
        *extra,
        "-cp",
        classpath(),
        MAIN_CLASS,
        "--port",
        str(port),
        "--workdir",
        str(workdir),
        "--pagecache",
        str(pagecache_mb),
        "--watch-pid",
        str(os.getpid()),
    ]
    log_path = workdir / "neo4j-harness.log"
    log_file = open(log_path, "a", encoding="utf-8")
    log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(cmd[:2])} ...\n")
    log_file.flush()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(workdir),
        close_fds=True,
    )
    output: Deque[str] = collections.deque(maxlen=400)
    ready = threading.Event()
    found: List[str] = []
    reader = threading.Thread(
        target=_pump,
        args=(proc.stdout, output, log_file, ready, found),
        name=f"neo4j-harness-output-{proc.pid}",
        daemon=True,
    )
    reader.start()
    server = Neo4jServer(proc, "bolt://127.0.0.1:0", workdir, log_path, output, reader)
    with _live_lock:
        _live_servers.add(server)

    def fail(reason: str) -> RuntimeError:
        server.stop(timeout=5)
        tail = server.output_tail()
        return RuntimeError(
            f"Neo4j harness {reason} (pid {proc.pid}, exit code {proc.returncode}); "
            f"log {log_path}; last output:\n{tail}"
        )

    while not ready.wait(0.1):
        if time.monotonic() >= deadline:
            raise fail(f"did not print READY within {timeout:.0f}s")
    if not found:
        reader.join(timeout=2)
        raise fail("exited before it was ready")

    server.uri = found[0]
    server.port = int(server.uri.rsplit(":", 1)[1])
    if verify:
        try:
            _verify(server.uri, deadline)
        except RuntimeError as exc:
            raise fail(str(exc)) from None
    server.startup_seconds = time.monotonic() - t0
    return server


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for s in servers:
        try:
            s.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    import signal
    import tempfile

    ap = argparse.ArgumentParser(description="Run a Neo4j 5.26 test server until Ctrl-C.")
    ap.add_argument("--workdir", type=pathlib.Path, help="data directory (default: a temp dir)")
    ap.add_argument("--port", type=int, default=0, help="Bolt port (default: any free port)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="neo4j-harness-")
        workdir = pathlib.Path(tmp)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = start_neo4j(workdir, timeout=args.timeout, port=args.port)
    print(server.uri, flush=True)
    print(
        f"Neo4j 5.26 up in {server.startup_seconds:.1f}s (pid {server.pid}, auth disabled, "
        f"log {server.log_path}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        while server.is_running():
            time.sleep(0.5)
        print(f"server exited ({server.process.returncode}):\n{server.output_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
