"""Who an allocation runs as: a user of its own per allocation (when the agent is root), a fixed uid:gid, or the agent's.

Why a user per allocation: a private working directory is private only against other users, and a process can
signal or trace every process of its own user. So each live allocation gets a uid (and a gid of the same number)
from a range no account uses, claimed machine-wide by creating a file `<claims>/<uid>` exclusively: agents of
several nodes on one machine never hand out the same uid. The claim names its owner; a new agent of the same
owner (after a crash) releases the claims of the one before once it has killed what they ran. The claims live on
/run (tmpfs) by default: they end with the processes, at reboot.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from workers.isolation.cgroups import IsolationError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int
    claimed: bool  # a per-allocation uid to give back


class UserPolicy:
    """`mode`: "auto" (per allocation when root, else the agent's), "per-allocation", "agent", or "UID:GID"."""

    def __init__(self, mode: str, *, owner: str, claims_dir: Path, uid_base: int, uid_count: int) -> None:
        self.owner = owner
        self.claims_dir = claims_dir
        self.uid_base, self.uid_count = uid_base, uid_count
        self.fixed: Identity | None = None
        root = os.geteuid() == 0
        if mode == "auto":
            mode = "per-allocation" if root else "agent"
        if mode == "agent":
            self.kind = "agent"
        elif mode == "per-allocation":
            if not root:
                raise ValueError("isolation_user: per-allocation users need the agent to run as root")
            self.kind = "per-allocation"
            self.claims_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            uid, _, gid = mode.partition(":")
            if not uid.isdigit() or not (gid or uid).isdigit():
                raise ValueError(f"isolation_user: give auto, per-allocation, agent or UID:GID, got {mode!r}")
            if not root and int(uid) != os.geteuid():
                raise ValueError("isolation_user: running as another uid needs the agent to run as root")
            self.kind = "fixed"
            self.fixed = Identity(int(uid), int(gid or uid), claimed=False)
        # each owner starts its search elsewhere in the range, so agents rarely contend for a file
        self._next = int(hashlib.sha256(owner.encode()).hexdigest()[:8], 16) % max(1, uid_count)

    @property
    def switches_user(self) -> bool:
        return self.kind != "agent" and not (self.fixed is not None and self.fixed.uid == os.geteuid())

    def describe(self) -> str:
        if self.kind == "per-allocation":
            return f"a user per allocation (uids {self.uid_base}-{self.uid_base + self.uid_count - 1})"
        if self.fixed is not None:
            return f"uid {self.fixed.uid} gid {self.fixed.gid}"
        return f"the agent's user (uid {os.geteuid()})"

    def acquire(self, key: str) -> Identity:
        if self.fixed is not None:
            return self.fixed
        if self.kind == "agent":
            return Identity(os.geteuid(), os.getegid(), claimed=False)
        for _ in range(self.uid_count):
            uid = self.uid_base + self._next
            self._next = (self._next + 1) % self.uid_count
            try:
                fd = os.open(self.claims_dir / str(uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                os.write(fd, f"{self.owner}\n{key}\n".encode())
            finally:
                os.close(fd)
            return Identity(uid, uid, claimed=True)
        raise IsolationError(f"no free uid left in {self.uid_base}-{self.uid_base + self.uid_count - 1}")

    def release(self, identity: Identity) -> None:
        if identity.claimed:
            try:
                (self.claims_dir / str(identity.uid)).unlink()
            except FileNotFoundError:
                pass

    def release_owned(self) -> int:
        """Give back every uid this owner claimed (its processes must be gone); returns how many."""
        if self.kind != "per-allocation":
            return 0
        released = 0
        for p in self.claims_dir.iterdir():
            try:
                if p.read_text().split("\n", 1)[0] == self.owner:
                    p.unlink()
                    released += 1
            except OSError:
                continue
        return released


_nnp = threading.local()


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS on the calling thread (once): every process it forks inherits it, and no execve can
    grant privileges again (set-uid bits, file capabilities). The agent's other threads are not affected."""
    if getattr(_nnp, "set", False):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise IsolationError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    _nnp.set = True


def setpriv_args(setpriv: str, identity: Identity | None, *, switch: bool) -> list[str]:
    """util-linux setpriv: the new user (groups cleared), no_new_privs, killed with its agent.

    Root's capabilities go with the change to a non-zero uid (permitted, effective and ambient sets are cleared),
    and no_new_privs makes file capabilities and set-uid bits inert, so nothing can bring them back."""
    args = [setpriv]
    if switch and identity is not None:
        args += [f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups"]
    return args + ["--no-new-privs", "--pdeathsig", "KILL", "--"]
