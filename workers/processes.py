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
from concurrent.futures import Future
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


#: called with every exit that happened since the last call, in batches
ExitCallback = Callable[[list[tuple[Handle, int, str]]], None]
MAX_REPORT_BATCH = 500


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
    def __init__(self, log_dir: Path, on_exit: ExitCallback) -> None:
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
        self._exits: queue.SimpleQueue[tuple[Handle, int, str] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="process-manager", daemon=True)
        self._thread.start()
        self._reporter = threading.Thread(target=self._report_loop, name="exit-reporter", daemon=True)
        self._reporter.start()

    # --- API used by the node agent ----------------------------------------------------
    def start(self, key: Key, argv: list[str], env: dict[str, str]) -> Handle:
        """Start argv; returns once the process exists. Idempotent per key while it runs."""
        return self.start_many([(key, argv, env)])[0].result(timeout=60)

    def start_many(self, requests: list[tuple[Key, list[str], dict[str, str]]]) -> list[Future[Handle]]:
        """Start many processes; each future holds the handle or the reason it could not start."""
        futures: list[Future[Handle]] = []
        for key, argv, env in requests:
            fut: Future[Handle] = Future()
            futures.append(fut)
            with self._lock:
                running = self._handles.get(key)
            if running is not None:
                fut.set_result(running)
                continue
            exe = shutil.which(argv[0], path=env.get("PATH", os.defpath)) if argv else None
            if exe is None:
                fut.set_exception(ExecutableNotFound(f"executable {argv[0] if argv else ''!r} not found on PATH"))
                continue
            self._requests.put((key, [exe, *argv[1:]], env, fut))
        os.write(self._wake_w, b"x")
        return futures

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

    def kill(self, key: Key) -> bool:
        handle = self.get(key)
        if handle is None:
            return False
        handle.stop_requested = True
        self._signal(handle, signal.SIGKILL)
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
        self._exits.put(None)
        self._reporter.join(timeout=30)

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
        self._exits.put((handle, code, read_tail(handle.log_path)))

    def _report_loop(self) -> None:
        while True:
            first = self._exits.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_REPORT_BATCH:
                try:
                    item = self._exits.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._exits.put(None)
                    break
                batch.append(item)
            try:
                self._on_exit(batch)
            except Exception:
                log.exception("could not report %d exits", len(batch))
            finally:
                with self._lock:
                    for handle, _, _ in batch:
                        self._handles.pop(handle.key, None)
