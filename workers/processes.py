"""The `process` executor: runs an allocation's argv as a real subprocess and reports its exit once.

All processes are forked by one long-lived thread, which also watches them
through pidfds (one epoll, however many processes). Each child gets
PDEATHSIG=KILL (through util-linux `setpriv`), tied to that thread: if the
node agent dies, its allocations die with it, exactly as when a machine is
lost, and the control plane sees them `lost`, never running unobserved.
Each child leads its own process group so a graceful stop reaches its descendants;
how it is confined (cgroup, user, working directory, log) is workers/isolation's,
and a kill or an exit ends every process of its cgroup, grandchildren that left
the group included.
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
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from workers.isolation import Confinement, Outcome, Reservation, Sandbox, SandboxConfig
from workers.isolation.logs import tail as log_tail
from workers.isolation.sandbox import Prepared

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (allocation id, incarnation)
TAIL_BYTES = 4096


class ExecutableNotFound(Exception):
    pass


@dataclass
class Handle:
    key: Key
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_requested: bool = False
    kill_timer: threading.Timer | None = field(default=None, repr=False)
    confinement: Confinement | None = field(default=None, repr=False)
    #: what the exit adds to its report (oom_killed, measured usage), set once it has ended
    outcome: Outcome = field(default_factory=Outcome, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid


#: called with every exit that happened since the last call, in batches
ExitCallback = Callable[[list[tuple[Handle, int, str]]], None]
MAX_REPORT_BATCH = 500


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    return log_tail(path, limit)


class ProcessManager:
    def __init__(self, log_dir: Path, on_exit: ExitCallback, sandbox: Sandbox | None = None) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.sandbox = sandbox or Sandbox(SandboxConfig(mode="none", user="agent"), node=log_dir.name, data_dir=log_dir)
        self._on_exit = on_exit
        self._handles: dict[Key, Handle] = {}
        self._by_fd: dict[int, Handle] = {}
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[Key, list[str], dict[str, str], Future[Handle], Prepared] | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._exits: queue.SimpleQueue[tuple[Handle, int, str] | None] = queue.SimpleQueue()
        #: ending a confinement (kill leftovers, read counters, remove cgroup and directory) for several exits at once
        self._finisher = ThreadPoolExecutor(4, thread_name_prefix="exit-finisher")
        #: moving new processes into their cgroups, off the forking thread
        self._admitter = ThreadPoolExecutor(4, thread_name_prefix="cgroup-admitter")
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="process-manager", daemon=True)
        self._thread.start()
        self._reporter = threading.Thread(target=self._report_loop, name="exit-reporter", daemon=True)
        self._reporter.start()

    # --- API used by the node agent ----------------------------------------------------
    def start(self, key: Key, argv: list[str], env: dict[str, str]) -> Handle:
        """Start argv; returns once the process exists. Idempotent per key while it runs."""
        return self.start_many([(key, argv, env)])[0].result(timeout=60)

    def start_many(
        self, requests: list[tuple[Key, list[str], dict[str, str]]], reservations: Mapping[Key, Reservation] | None = None,
    ) -> list[Future[Handle]]:
        """Start many processes, each confined to its reservation; each future holds the handle or why it could not start."""
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
            try:
                prepared = self.sandbox.prepare(key, (reservations or {}).get(key, Reservation()))
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                fut.set_exception(exc)
                continue
            self._requests.put((key, [exe, *argv[1:]], env, fut, prepared))
            os.write(self._wake_w, b"x")  # fork this one while the next is prepared
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
        self._admitter.shutdown(wait=True)
        self._finisher.shutdown(wait=True)
        self.sandbox.close()

    # --- the manager thread ------------------------------------------------------------
    @staticmethod
    def _signal(handle: Handle, sig: int) -> None:
        if handle.confinement is not None:
            handle.confinement.signal(sig)
            return
        try:
            os.killpg(handle.pid, sig)
        except ProcessLookupError:
            pass

    def _spawn(self, key: Key, argv: list[str], env: dict[str, str], fut: Future[Handle], prepared: Prepared) -> None:
        log_path = self.log_dir / f"{key[0]}.{key[1]}.log"
        try:
            confinement = self.sandbox.launch(prepared, argv, env, log_path)
            handle = Handle(key=key, proc=confinement.proc, log_path=log_path, confinement=confinement)
            fd = os.pidfd_open(handle.pid)
            with self._lock:
                self._handles[key] = handle
                self._by_fd[fd] = handle
            self._selector.register(fd, selectors.EVENT_READ)
            if confinement.admitted:
                fut.set_result(handle)
            else:
                self._admitter.submit(self._admit, handle, fut)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            fut.set_exception(exc)

    @staticmethod
    def _admit(handle: Handle, fut: Future[Handle]) -> None:
        assert handle.confinement is not None
        try:
            handle.confinement.admit()
            fut.set_result(handle)
        except BaseException as exc:  # noqa: BLE001 - it never ran its argv; its exit cleans up as any other
            handle.proc.kill()
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
        self._exits.put((handle, code, ""))  # the reporter ends its confinement, then reads the tail

    @staticmethod
    def _finish(handle: Handle, code: int) -> str:
        if handle.confinement is not None:
            try:
                handle.outcome = handle.confinement.finish(code, stop_requested=handle.stop_requested)
            except Exception:
                log.exception("could not clean up after %s", handle.key)
        return read_tail(handle.log_path)

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
            tails = list(self._finisher.map(lambda item: self._finish(item[0], item[1]), batch))
            batch = [(h, code, tail) for (h, code, _), tail in zip(batch, tails, strict=True)]
            try:
                self._on_exit(batch)
            except Exception:
                log.exception("could not report %d exits", len(batch))
            finally:
                with self._lock:
                    for handle, _, _ in batch:
                        self._handles.pop(handle.key, None)
