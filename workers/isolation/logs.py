"""Bounded output logs: every allocation's stdout and stderr go through a pipe that the agent copies into a rotated file.

Why a pipe and not the file itself: a process writing to its log file directly can fill the disk between two
checks, and truncating a file another process appends to loses lines. Through a pipe the agent sees every byte:
past `max_bytes` the file is rotated (`.1`, `.2`, ... up to `backups`), so one incarnation never holds more than
`max_bytes * (backups + 1)` on disk. One thread with one epoll copies for every allocation; a writer faster than
the disk is slowed by the full pipe, never by memory growing in the agent.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class RotatingLog:
    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max(1024, max_bytes)
        self.backups = max(0, backups)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_bytes - self._size
            if room <= 0:
                self._rotate()
                continue
            piece, data = data[:room], data[room:]
            os.write(self._fd, piece)
            self._size += len(piece)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._size = 0

    def close(self) -> None:
        os.close(self._fd)


def tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of output, across the last rotation."""
    chunks: list[bytes] = []
    want = limit
    for p in (path, path.with_name(f"{path.name}.1")):
        try:
            with p.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - want))
                data = f.read()
        except OSError:
            break
        chunks.insert(0, data)
        want -= len(data)
        if want <= 0:
            break
    return b"".join(chunks).decode("utf-8", "replace")


class LogPump:
    """Copies pipes into their rotating logs; `add` returns an event set once the pipe's writers have all gone."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._adds: queue.SimpleQueue[tuple[int, RotatingLog, threading.Event] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="log-pump", daemon=True)
        self._thread.start()

    def add(self, fd: int, sink: RotatingLog) -> threading.Event:
        done = threading.Event()
        self._adds.put((fd, sink, done))
        os.write(self._wake_w, b"x")
        return done

    def close(self) -> None:
        self._adds.put(None)
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            for key, _ in self._selector.select(timeout=1.0):
                if key.fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                sink, done = key.data
                try:
                    data = os.read(key.fd, CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    try:
                        sink.write(data)
                    except OSError as exc:  # a full disk: drop output rather than block the allocation
                        log.warning("cannot write %s: %s", sink.path, exc)
                    continue
                self._selector.unregister(key.fd)
                os.close(key.fd)
                sink.close()
                done.set()
            while True:
                try:
                    item = self._adds.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    return
                fd, sink, done = item
                os.set_blocking(fd, False)
                self._selector.register(fd, selectors.EVENT_READ, (sink, done))
