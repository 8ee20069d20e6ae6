"""An allocation's output on the machine its node agent runs on: where the file is, and reading or following it.

The node agent writes each incarnation's stdout and stderr to `<data_dir>/runs/<node>/<id>.<incarnation>.log`
(workers/processes.py) and may rotate it: the current file keeps its name, older parts are renamed `.1` (the most
recent), `.2`, ... This module is the one reader of that layout, for the CLI (`controlplane logs`) and for the
API (`Allocation.output`), which run on the agent's machine in embedded mode. It opens only paths it builds
itself from a directory it was given and validated names, never a path read from the graph.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 64 * 1024
#: node names and allocation ids as the control plane makes them: no path separators, no '..'
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def log_file(runs_dir: Path, node: str, allocation_id: str, incarnation: int) -> Path | None:
    """Where the agent of `node` writes that incarnation's output under `runs_dir` (<data_dir>/runs); None for
    names that could not be the control plane's."""
    if not (_SAFE.match(node) and _SAFE.match(allocation_id)) or ".." in node or ".." in allocation_id or incarnation < 1:
        return None
    return runs_dir / node / f"{allocation_id}.{int(incarnation)}.log"


def parts(path: Path) -> list[Path]:
    """The files holding the log, oldest first: rotated parts (`.N` ... `.1`), then the current file."""
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        prefix = path.name + "."
        for p in path.parent.iterdir():
            suffix = p.name[len(prefix):] if p.name.startswith(prefix) else ""
            if suffix.isdigit():
                rotated.append((int(suffix), p))
    found = [p for _, p in sorted(rotated, reverse=True)]
    return found + ([path] if path.exists() else [])


def exists(path: Path) -> bool:
    return bool(parts(path))


def read_all(path: Path) -> Iterator[bytes]:
    """Everything still on disk, oldest first, in chunks."""
    for p in parts(path):
        try:
            with p.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except FileNotFoundError:  # rotated away while we read: its content is in the next part
            continue


def tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of the log, across rotations."""
    chunks: list[bytes] = []
    want = limit
    for p in reversed(parts(path)):
        try:
            with p.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - want))
                data = f.read()
        except FileNotFoundError:
            continue
        chunks.insert(0, data)
        want -= len(data)
        if want <= 0:
            break
    return b"".join(chunks)[-limit:] if limit > 0 else b""


def follow(path: Path, *, done: Callable[[], bool], poll_s: float = 0.2, from_start: bool = True) -> Iterator[bytes]:
    """What is on disk (from the start, or from now), then what is written, until `done()` says the writer has
    finished and everything is read. Follows a rotation: the renamed file is read to its end, then the new one."""
    if from_start:
        for p in parts(path)[:-1] if path.exists() else parts(path):
            try:
                yield p.read_bytes()
            except FileNotFoundError:
                continue
    f = None
    try:
        while True:
            if f is None:
                try:
                    f = path.open("rb")
                except FileNotFoundError:
                    if done():
                        return
                    time.sleep(poll_s)
                    continue
                if not from_start:
                    f.seek(0, os.SEEK_END)
                    from_start = True  # a file that appears later is read from its start
            data = f.read(CHUNK)
            if data:
                yield data
                continue
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is None or now.st_ino != os.fstat(f.fileno()).st_ino:  # rotated: the rest is in the new file
                f.close()
                f = None
                continue
            if now.st_size < f.tell():  # truncated in place
                f.seek(0)
                continue
            if done():
                rest = f.read()
                if rest:
                    yield rest
                return
            time.sleep(poll_s)
    finally:
        if f is not None:
            f.close()
