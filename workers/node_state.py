"""What a node agent keeps for itself, and keeps from the workloads it runs: its credential, its session, its lock.

In the agent's state directory (default `<DATA_DIR>/nodes/<node>`, mode 0700, files 0600):

- `node.token`: the node credential it got when it joined (or CONTROLPLANE_NODE_TOKEN);
- `session`: the session of the agent process now running, so that a successor started
  after a crash on the same machine may replace it at once (only it can know it);
- `agent.lock`: held (flock) for the whole life of the agent process, so a second agent of
  the same node on the same machine is refused at once, before it asks anything.

Allocations run as users of their own when the agent is root, so they can read none of
this; and the agent makes itself non-dumpable, so even a workload running as the agent's
own user cannot read its memory or its environment through /proc (the files are the
agent user's, which is why allocations get a user of their own when the agent can).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from controlplane.domain.errors import Conflict

log = logging.getLogger(__name__)

TOKEN_FILE = "node.token"
SESSION_FILE = "session"
LOCK_FILE = "agent.lock"
PR_SET_DUMPABLE = 4


def state_dir(data_dir: Path, node: str, configured: Path | None) -> Path:
    return configured if configured is not None else data_dir / "nodes" / node


def not_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<agent>/{environ,mem,maps,fd} become root's, ptrace by its own user refused."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except OSError:
        return False


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class NodeState:
    """The state directory of one node agent, locked by this process while it runs."""

    path: Path
    node: str
    _lock_fd: int = -1

    @classmethod
    def open(cls, path: Path, node: str) -> NodeState:
        """Create (0700) and lock it; Conflict when another agent process of this node holds it on this machine."""
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Conflict(f"another agent of node {node} runs on this machine (pid {holder}, lock {path / LOCK_FILE}); "
                           "stop it first", field="node") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(path=path, node=node, _lock_fd=fd)

    def token(self) -> str | None:
        p = self.path / TOKEN_FILE
        return p.read_text().strip() or None if p.exists() else None

    def save_token(self, token: str) -> Path:
        p = self.path / TOKEN_FILE
        _write_private(p, token + "\n")
        return p

    def forget_token(self) -> None:
        (self.path / TOKEN_FILE).unlink(missing_ok=True)

    def previous_session(self) -> str | None:
        p = self.path / SESSION_FILE
        return p.read_text().strip() or None if p.exists() else None

    def save_session(self, session: str) -> None:
        _write_private(self.path / SESSION_FILE, session + "\n")

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
