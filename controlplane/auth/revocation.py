"""Revoked token ids, checked on every request from memory (no round trip), kept until the tokens expire.

Revoking a token revokes every token derived from it: a derived token carries the ids
of the tokens it came from (`chain`), and each is checked. `FileRevocations` keeps the
list in the data directory (0600) and reloads it when another process changed it, so
the API, the CLI and supervisors on one machine agree; entries past their expiry are dropped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol


class Revocations(Protocol):
    def revoke(self, token_id: str, *, until: float) -> None: ...

    def any_revoked(self, token_ids: Iterable[str]) -> bool: ...


class MemoryRevocations:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock

    def revoke(self, token_id: str, *, until: float) -> None:
        self._until[token_id] = max(until, self._until.get(token_id, 0.0))

    def any_revoked(self, token_ids: Iterable[str]) -> bool:
        return any(t in self._until for t in token_ids)


class FileRevocations(MemoryRevocations):
    #: how often the file's mtime is looked at, at most
    CHECK_S = 0.5

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._checked = 0.0
        self._reload()

    def revoke(self, token_id: str, *, until: float) -> None:
        with self._lock:
            self._reload(force=True)
            super().revoke(token_id, until=until)
            now = self._clock()
            self._until = {t: u for t, u in self._until.items() if u > now}
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")  # write aside, then rename over it
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps(self._until, sort_keys=True).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self._mtime = self.path.stat().st_mtime

    def any_revoked(self, token_ids: Iterable[str]) -> bool:
        now = time.monotonic()
        if now - self._checked > self.CHECK_S:
            self._checked = now
            self._reload()
        return super().any_revoked(token_ids)

    def _reload(self, *, force: bool = False) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if not force and mtime == self._mtime:
            return
        try:
            loaded = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return  # half-written by another process: keep what we know, read again next time
        self._until = {str(k): float(v) for k, v in loaded.items()}
        self._mtime = mtime
