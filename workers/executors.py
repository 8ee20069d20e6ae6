"""The `process` executor: runs an allocation's argv as a real subprocess and reports its exit once.

All processes are forked by one long-lived thread, which also watches them
through pidfds (one epoll, however many processes). Each child gets
PDEATHSIG=KILL (through util-linux `setpriv`), tied to that thread: if the
node agent dies, its allocations die with it, exactly as when a machine is
lost, and the control plane sees them `lost`, never running unobserved.
Each child leads its own process group so a stop reaches its descendants.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (allocation id, incarnation)
TAIL_BYTES = 4096
_SETPRIV = shutil.which("setpriv")


class ExecutableNotFound(Exception):
    pass


@dataclass
class Handle:
    key: Key
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_requested: bool = False
    kill_timer: threading.Timer | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid


ExitCallback = Callable[[Handle, int, str], None]


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class ProcessManager:
    def __init__(self, log_dir: Path, on_exit: ExitCallback, *, report_threads: int = 4) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._on_exit = on_exit
        self._handles: dict[Key, Handle] = {}
        self._by_fd: dict[int, Handle] = {}
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[Key, list[str], dict[str, str], Future[Handle]] | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._reporters = ThreadPoolExecutor(max_workers=report_threads, thread_name_prefix="exit-report")
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="process-manager", daemon=True)
        self._thread.start()

    # --- API used by the node agent ----------------------------------------------------
    def start(self, key: Key, argv: list[str], env: dict[str, str]) -> Handle:
        """Start argv; returns once the process exists. Idempotent per key while it runs."""
        with self._lock:
            if key in self._handles:
                return self._handles[key]
        if not argv:
            raise ExecutableNotFound("argv is empty")
        exe = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if exe is None:
            raise ExecutableNotFound(f"executable {argv[0]!r} not found on PATH")
        fut: Future[Handle] = Future()
        self._requests.put((key, [exe, *argv[1:]], env, fut))
        os.write(self._wake_w, b"x")
        return fut.result(timeout=60)

    def get(self, key: Key) -> Handle | None:
        with self._lock:
            return self._handles.get(key)

    def running(self) -> list[Key]:
        with self._lock:
            return list(self._handles)

    def stop(self, key: Key, *, grace_s: float) -> bool:
        """SIGTERM the process group, SIGKILL after the grace period. False when not running here."""
        handle = self.get(key)
        if handle is None:
            return False
        handle.stop_requested = True
        self._signal(handle, signal.SIGTERM)
        if handle.kill_timer is None:
            handle.kill_timer = threading.Timer(grace_s, self._signal, args=(handle, signal.SIGKILL))
            handle.kill_timer.daemon = True
            handle.kill_timer.start()
        return True

    def kill_all(self) -> None:
        for key in self.running():
            h = self.get(key)
            if h is not None:
                self._signal(h, signal.SIGKILL)

    def close(self) -> None:
        self._closed = True
        self._requests.put(None)
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._reporters.shutdown(wait=True)

    # --- the manager thread ------------------------------------------------------------
    @staticmethod
    def _signal(handle: Handle, sig: int) -> None:
        try:
            os.killpg(handle.pid, sig)
        except ProcessLookupError:
            pass

    def _spawn(self, key: Key, argv: list[str], env: dict[str, str], fut: Future[Handle]) -> None:
        log_path = self.log_dir / f"{key[0]}.{key[1]}.log"
        try:
            prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
            with log_path.open("ab") as out:
                proc = subprocess.Popen(
                    prefix + argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True, close_fds=True,
                )
            handle = Handle(key=key, proc=proc, log_path=log_path)
            fd = os.pidfd_open(proc.pid)
            with self._lock:
                self._handles[key] = handle
                self._by_fd[fd] = handle
            self._selector.register(fd, selectors.EVENT_READ)
            fut.set_result(handle)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            fut.set_exception(exc)

    def _loop(self) -> None:
        while True:
            for sel_key, _ in self._selector.select(timeout=1.0):
                fd = sel_key.fd
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                self._reap(fd)
            while True:
                try:
                    req = self._requests.get_nowait()
                except queue.Empty:
                    break
                if req is None:
                    return
                self._spawn(*req)

    def _reap(self, fd: int) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        with self._lock:
            handle = self._by_fd.pop(fd)
        code = handle.proc.wait()
        if handle.kill_timer is not None:
            handle.kill_timer.cancel()
        tail = read_tail(handle.log_path)

        def report() -> None:
            try:
                self._on_exit(handle, code, tail)
            except Exception:
                log.exception("could not report the exit of %s", handle.key)
            finally:
                with self._lock:
                    self._handles.pop(handle.key, None)

        self._reporters.submit(report)
