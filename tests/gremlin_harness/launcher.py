"""Start a real Gremlin Server (TinkerPop 3.8, in-memory TinkerTransactionGraph) from Maven Central for tests.

Usage from tests::

    from tests.gremlin_harness.launcher import start_gremlin

    with start_gremlin(tmp_path / "gremlin") as server:
        store = GremlinStore(server.url)   # ws://127.0.0.1:<port>/gremlin

The JVM (``harness.GremlinHarnessMain``, built by ``prepare.sh``) prints ``READY ws://...`` once the
port is bound, and exits when its stdin reaches EOF or the Python process that started it is gone, so
no JVM outlives the test run even if pytest is killed. ``start_gremlin`` returns only after a real
traversal (``g.inject(1)``) answered through gremlinpython.

For humans: ``python -m tests.gremlin_harness.launcher`` starts one server and prints its URL until
Ctrl-C. Environment overrides: ``GREMLIN_HARNESS_JAVA`` (java binary), ``GREMLIN_HARNESS_JVM_OPTS``
(extra JVM flags, shell-split).
"""

from __future__ import annotations

import atexit
import collections
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Deque, Sequence

HERE = Path(__file__).resolve().parent
TARGET = HERE / "target"
CLASSES_DIR = TARGET / "classes"
MAIN_CLASS_FILE = CLASSES_DIR / "harness" / "GremlinHarnessMain.class"
CLASSPATH_FILE = TARGET / "classpath.txt"
PREPARE_STAMP = TARGET / ".prepared"
PREPARE_SH = HERE / "prepare.sh"
SERVER_YAML = HERE / "gremlin-server.yaml"
GRAPH_PROPERTIES = HERE / "tinkergraph.properties"
PLAIN_GRAPH_PROPERTIES = HERE / "tinkergraph-plain.properties"
MAIN_CLASS = "harness.GremlinHarnessMain"
DEFAULT_JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")

#: vertex property keys TinkerGraph indexes for equality lookups: what the store filters on
#: (the Cypher engines' indexes: Node.status, Allocation.state/node_id/parent_id; events by allocation;
#: allocations by spread key; tasks by job)
VERTEX_INDEXES = ("status", "state", "node_id", "parent_id", "allocation_id", "spread_key", "job_id")

READY_RE = re.compile(r"^READY (ws://(\S+):(\d+)/gremlin)\s*$")

BASE_JVM_OPTS = [
    "-XX:+UseSerialGC",  # small heap, few cores: least memory and threads
    "-XX:TieredStopAtLevel=1",  # C1 only: the server is up sooner; tests are short
    "-XX:+ExitOnOutOfMemoryError",
    "-Dfile.encoding=UTF-8",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.logFile=System.err",
]

_live: set[GremlinServerHandle] = set()
_live_lock = threading.Lock()


class GremlinServerHandle:
    """A running Gremlin Server JVM. ``url`` is ``ws://127.0.0.1:<port>/gremlin``; ``stop()`` is idempotent."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, log_path: Path, output: Deque[str]) -> None:
        self.process = process
        self.url = ""
        self.port = 0
        self.workdir = workdir
        self.log_path = log_path
        self.startup_seconds = 0.0
        self._output = output
        self._reader: threading.Thread | None = None
        self._stop_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output_tail(self, lines: int = 60) -> str:
        """The last lines the JVM printed (stdout and stderr merged)."""
        return "\n".join(list(self._output)[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """Close the JVM's stdin (clean shutdown), wait up to ``timeout`` s, then kill it."""
        with self._stop_lock:
            proc = self.process
            try:
                if proc.stdin and not proc.stdin.closed:
                    proc.stdin.close()
            except OSError:
                pass
            if proc.poll() is None:
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if self._reader is not None:
                self._reader.join(timeout=5)
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> GremlinServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited({self.process.returncode})"
        return f"<GremlinServerHandle {self.url or '(starting)'} pid={self.pid} {state}>"


def _build_is_fresh() -> bool:
    if not (MAIN_CLASS_FILE.is_file() and CLASSPATH_FILE.is_file() and PREPARE_STAMP.is_file()):
        return False
    stamp = PREPARE_STAMP.stat().st_mtime
    sources = [HERE / "pom.xml", PREPARE_SH, *HERE.joinpath("src").rglob("*.java")]
    if not all(p.stat().st_mtime <= stamp for p in sources if p.exists()):
        return False
    return all(Path(j).is_file() for j in CLASSPATH_FILE.read_text().strip().split(os.pathsep) if j)


def ensure_built() -> None:
    """Run prepare.sh unless its output is present and up to date (no network needed then)."""
    if _build_is_fresh():
        return
    res = subprocess.run(["bash", str(PREPARE_SH)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{PREPARE_SH} failed (exit {res.returncode}):\n{res.stdout[-4000:]}")


def classpath() -> str:
    jars = CLASSPATH_FILE.read_text().strip()
    return os.pathsep.join([str(CLASSES_DIR), jars]) if jars else str(CLASSES_DIR)


def find_java() -> str:
    if os.environ.get("GREMLIN_HARNESS_JAVA"):
        return os.environ["GREMLIN_HARNESS_JAVA"]
    candidates = [DEFAULT_JAVA_HOME / "bin" / "java"]
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("java")
    if not found:
        raise RuntimeError("no java found (TinkerPop 3.8 needs Java 11+; set GREMLIN_HARNESS_JAVA)")
    return found


def _pump(stream: IO[bytes], output: Deque[str], log_path: Path, ready: threading.Event, found: list[str]) -> None:
    """Drain the JVM's output (so it never blocks on a full pipe), spotting the READY line."""
    with open(log_path, "a", encoding="utf-8") as log:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                output.append(line)
                log.write(line + "\n")
                log.flush()
                if not found and (m := READY_RE.match(line)):
                    found.append(m.group(1))
                    ready.set()
        finally:
            ready.set()  # also wakes the waiter when the JVM exits without READY
            stream.close()


def _verify(url: str, deadline: float) -> None:
    """A real traversal through gremlinpython, the client the adapter uses."""
    from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
    from gremlin_python.process.anonymous_traversal import traversal

    last: BaseException | None = None
    while time.monotonic() < deadline:
        conn = None
        try:
            conn = DriverRemoteConnection(url, "g")
            if traversal().with_(conn).inject(1).to_list() == [1]:
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        finally:
            if conn is not None:
                conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"Gremlin Server at {url} printed READY but g.inject(1) did not answer: {last!r}")


def start_gremlin(
    workdir: Path,
    *,
    timeout: float = 120.0,
    port: int = 0,
    heap: str = "512m",
    jvm_opts: Sequence[str] = (),
    graph_properties: Path = GRAPH_PROPERTIES,
) -> GremlinServerHandle:
    """Start Gremlin Server with an empty in-memory graph; return once ``g.inject(1)`` answers.

    ``graph_properties`` picks the graph: TinkerTransactionGraph by default (tinkergraph.properties);
    tinkergraph-plain.properties is a TinkerGraph without transactions.

    ``port=0`` (the default) lets the kernel choose a free port inside the JVM (no race between
    picking and binding). Raises RuntimeError, with the tail of the JVM's output, if the server is
    not ready within ``timeout`` seconds.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_built()

    extra = [*shlex.split(os.environ.get("GREMLIN_HARNESS_JVM_OPTS", "")), *jvm_opts]
    base = [o for o in BASE_JVM_OPTS if not (o == "-XX:+UseSerialGC" and any(re.fullmatch(r"-XX:\+Use\w+GC", x) for x in extra))]
    cmd = [
        find_java(), f"-Xmx{heap}", *base, *extra, "-cp", classpath(), MAIN_CLASS,
        "--config", str(SERVER_YAML), "--graph", str(Path(graph_properties).resolve()),
        "--port", str(port), "--watch-pid", str(os.getpid()), "--vertex-index", ",".join(VERTEX_INDEXES),
    ]
    log_path = workdir / "gremlin-server.log"
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=str(workdir), close_fds=True)
    output: Deque[str] = collections.deque(maxlen=400)
    ready = threading.Event()
    found: list[str] = []
    server = GremlinServerHandle(proc, workdir, log_path, output)
    assert proc.stdout is not None
    server._reader = threading.Thread(target=_pump, args=(proc.stdout, output, log_path, ready, found),
                                      name=f"gremlin-harness-output-{proc.pid}", daemon=True)
    server._reader.start()
    with _live_lock:
        _live.add(server)

    def fail(reason: str) -> RuntimeError:
        server.stop(timeout=5)
        return RuntimeError(f"Gremlin Server {reason} (pid {proc.pid}, exit code {proc.returncode}); "
                            f"log {log_path}; last output:\n{server.output_tail()}")

    while not ready.wait(0.1):
        if time.monotonic() >= deadline:
            raise fail(f"did not print READY within {timeout:.0f}s")
    if not found:
        raise fail("exited before it was ready")
    server.url = found[0]
    server.port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    try:
        _verify(server.url, deadline)
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    server.startup_seconds = time.monotonic() - t0
    return server


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for s in servers:
        try:
            s.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import signal
    import tempfile

    ap = argparse.ArgumentParser(description="Run a Gremlin Server (TinkerPop 3.8, TinkerGraph) until Ctrl-C.")
    ap.add_argument("--workdir", type=Path, help="log directory (default: a temp dir)")
    ap.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="gremlin-harness-")
    workdir = args.workdir or Path(tmp or ".")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = start_gremlin(workdir, timeout=args.timeout, port=args.port)
    print(server.url, flush=True)
    print(f"Gremlin Server up in {server.startup_seconds:.1f}s (pid {server.pid}, log {server.log_path}); Ctrl-C to stop",
          file=sys.stderr, flush=True)
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
