"""Allocation ids: time-ordered (sortable by creation), or derived from a caller's request id (idempotent)."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time

_counter = itertools.count()
_lock = threading.Lock()


def new_ids(n: int, *, request_id: str | None = None, parent_id: str = "") -> list[str]:
    if request_id:
        digest = hashlib.sha256(f"{parent_id}\x00{request_id}".encode()).hexdigest()[:16]
        return [f"a{digest}{i:05x}" for i in range(n)]
    with _lock:
        start = next(_counter)
        for _ in range(n - 1):
            next(_counter)
    ms = time.time_ns() // 1_000_000
    rand = os.urandom(3).hex()
    return [f"a{ms:011x}{rand}{(start + i) % 0xFFFFF:05x}" for i in range(n)]
