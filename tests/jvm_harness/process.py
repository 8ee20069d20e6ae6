"""One way to run a JVM test server: build its classpath, start it, wait until it answers, and never leak it.

Neo4j, Gremlin Server, Cassandra and JanusGraph Server all run on the machine's Java
from jars that Maven fetched (`prepare.sh` beside this file, one script for every harness
directory). Each launcher only says what differs (main class, flags, how to check it
answers); this module does the rest, the same way for all:

- the JVM prints one line `READY <address>` on stdout when it is listening (the Neo4j and
  Gremlin harness mains print it themselves; `harness.Lifeline` prints it for servers that
  know nothing of tests, such as Cassandra's daemon and JanusGraph Server);
- its output is drained by a thread into a log file and a short in-memory tail (a JVM never
  blocks on a full pipe; a failure to start reports the tail);
- it exits when its stdin reaches EOF or the Python process that started it is gone, so no
  JVM outlives a test run even if pytest is killed; `stop()` closes stdin and waits, then
  kills; `kill9()` is for fault tests; an atexit hook stops whatever is still running.
"""

from __future__ import annotations

import atexit
import collections
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
PREPARE_SH = HERE / "prepare.sh"
LIFELINE_CLASSES = HERE / "target" / "classes"
LIFELINE_MAIN = "harness.Lifeline"
DEFAULT_JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")

#: flags every test JVM gets: small heap, few cores, fail fast
BASE_JVM_OPTS = (
    "-XX:+UseSerialGC",  # least memory and threads on a 2-core machine
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-Dfile.encoding=UTF-8",
)

_live: set[JvmServer] = set()
_live_lock = threading.Lock()


class Harness:
    """A directory with a pom.xml (and maybe Java sources) whose classpath prepare.sh resolves."""

    def __init__(self, directory: Path, *, main_class_file: str | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.target = self.dir / "target"
        self.classes = self.target / "classes"
        self.classpath_file = self.target / "classpath.txt"
        self.stamp = self.target / ".prepared"
        self.main_class_file = self.classes / main_class_file if main_class_file else None

    def is_fresh(self) -> bool:
        if not (self.classpath_file.is_file() and self.stamp.is_file()):
            return False
        if self.main_class_file is not None and not self.main_class_file.is_file():
            return False
        if not (LIFELINE_CLASSES / "harness" / "Lifeline.class").is_file():
            return False
        stamp = self.stamp.stat().st_mtime
        sources = [self.dir / "pom.xml", PREPARE_SH, *self.dir.joinpath("src").rglob("*.java")]
        if not all(p.stat().st_mtime <= stamp for p in sources if p.exists()):
            return False
        return all(Path(j).is_file() for j in self.classpath_file.read_text().strip().split(os.pathsep) if j)

    def ensure_built(self) -> None:
        """Run prepare.sh unless the build is present and up to date (no network needed then)."""
        if self.is_fresh():
            return
        res = subprocess.run(["bash", str(PREPARE_SH), str(self.dir)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{PREPARE_SH} {self.dir} failed (exit {res.returncode}):\n{res.stdout[-4000:]}")

    def classpath(self) -> str:
        """The harness's own classes (if any), harness.Lifeline, then the resolved jars."""
        parts = [str(self.classes)] if self.classes.is_dir() else []
        parts.append(str(LIFELINE_CLASSES))
        jars = self.classpath_file.read_text().strip()
        return os.pathsep.join([*parts, jars] if jars else parts)


def find_java(env_var: str) -> str:
    """`env_var` if set, else Java 17 (what every harness is tested on), else JAVA_HOME, else PATH."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    candidates = [DEFAULT_JAVA_HOME / "bin" / "java"]
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("java")
    if not found:
        raise RuntimeError(f"no java found (need Java 17; set {env_var})")
    return found


def jvm_options(heap: str, base: Sequence[str], extra_env: str, extra: Sequence[str]) -> list[str]:
    """-Xmx, the base flags, then the caller's (from `extra_env`, shell-split, and `extra`)."""
    more = [*shlex.split(os.environ.get(extra_env, "")), *extra]
    flags = list(base)
    if any(re.fullmatch(r"-XX:\+Use\w+GC", o) for o in more):
        flags = [f for f in flags if f != "-XX:+UseSerialGC"]  # the caller picked a collector; two make the JVM refuse
    return [f"-Xmx{heap}", *flags, *more]


class JvmServer:
    """A running test JVM. `address` is what its READY line named; `stop()` is idempotent."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], workdir: Path, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.workdir = workdir
        self.log_path = log_path
        self.address = ""
        #: the address as its clients name it (ws://.../gremlin, bolt://...), and its port; set by the launcher
        self.url = ""
        self.port = 0
        self.startup_seconds = 0.0
        self._output: collections.deque[str] = collections.deque(maxlen=400)
        self._ready = threading.Event()
        self._failed = ""  # the line that said the server will not start
        self._reader: threading.Thread | None = None
        self._stop_lock = threading.Lock()

    @property
    def uri(self) -> str:
        """`url` under the name Neo4j's callers use."""
        return self.url

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output_tail(self, lines: int = 60) -> str:
        """The last lines the JVM printed (stdout and stderr merged)."""
        return "\n".join(list(self._output)[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """Close the JVM's stdin (clean shutdown), wait up to `timeout` s, then kill it."""
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

    def kill9(self) -> None:
        """SIGKILL, for fault tests: no shutdown hook runs, nothing is flushed."""
        if self.process.poll() is None:
            self.process.kill()
        self.stop(timeout=10)

    def __enter__(self) -> JvmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited({self.process.returncode})"
        return f"<{self.name} {self.address or '(starting)'} pid={self.pid} {state}>"

    def _pump(self, stream: IO[bytes], ready_re: re.Pattern[str], found: list[str], fail_re: re.Pattern[str] | None) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            try:
                for raw in iter(stream.readline, b""):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    self._output.append(line)
                    log.write(line + "\n")
                    log.flush()
                    if not found and (m := ready_re.match(line)):
                        found.append(m.group(1))
                        self._ready.set()
                    elif not found and fail_re is not None and fail_re.search(line):
                        self._failed = line
                        self._ready.set()
            finally:
                self._ready.set()  # also wakes the waiter when the JVM exits without READY
                stream.close()


class RestartableJvm:
    """A server of a ring or stack that is started, killed and started again in place: `server` is its JVM of the
    moment (None before the first start)."""

    server: JvmServer | None = None

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def is_running(self) -> bool:
        return self.server is not None and self.server.is_running()

    def kill9(self) -> None:
        if self.server is not None:
            self.server.kill9()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=30)


def start_jvm(
    name: str,
    cmd: Sequence[str],
    workdir: Path,
    *,
    log_name: str,
    timeout: float,
    ready_re: str = r"^READY (\S+)\s*$",
    verify: Callable[[str, float], None] | None = None,
    env: dict[str, str] | None = None,
    fail_re: str | None = None,
) -> JvmServer:
    """Start `cmd`, wait for its READY line, then for `verify(address, deadline)` (a real request).

    `fail_re`: a line saying the server gave up starting (some stay alive after that, never ready).

    Raises RuntimeError with the tail of the JVM's output if it is not ready within `timeout`.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / log_name
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {shlex.join(cmd)}\n")
    proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=str(workdir), close_fds=True, env=env)
    server = JvmServer(name, proc, workdir, log_path)
    found: list[str] = []
    assert proc.stdout is not None
    server._reader = threading.Thread(target=server._pump, args=(proc.stdout, re.compile(ready_re), found, re.compile(fail_re) if fail_re else None),
                                      name=f"{name}-output-{proc.pid}", daemon=True)
    server._reader.start()
    with _live_lock:
        _live.add(server)

    def fail(reason: str) -> RuntimeError:
        server.stop(timeout=5)
        return RuntimeError(f"{name} {reason} (pid {proc.pid}, exit code {proc.returncode}); "
                            f"log {log_path}; last output:\n{server.output_tail()}")

    while not server._ready.wait(0.1):
        if time.monotonic() >= deadline:
            raise fail(f"did not print READY within {timeout:.0f}s")
    if server._failed:
        raise fail(f"gave up starting: {server._failed}")
    if not found:
        raise fail("exited before it was ready")
    server.address = found[0]
    if verify is not None:
        try:
            verify(server.address, deadline)
        except RuntimeError as exc:
            raise fail(str(exc)) from None
    server.startup_seconds = time.monotonic() - t0
    return server


def lifeline_cmd(java: str, jvm_opts: Sequence[str], classpath: str, main_class: str, args: Sequence[str],
                 *, ready: Sequence[str]) -> list[str]:
    """A command running `main_class` under harness.Lifeline: READY once every `ready` host:port listens."""
    return [java, *jvm_opts, "-cp", classpath, LIFELINE_MAIN, "--watch-pid", str(os.getpid()),
            "--ready", ",".join(ready), "--", main_class, *args]


def retry_until(deadline: float, what: str, attempt: Callable[[], bool]) -> None:
    """Call `attempt` until it returns True or the deadline passes (then RuntimeError naming the last error)."""
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if attempt():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer: {last!r}")


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for s in servers:
        try:
            s.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass
