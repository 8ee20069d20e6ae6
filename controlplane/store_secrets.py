"""Passwords of the embedded data stores: generated on first start, kept 0600 in the data directory, reused after.

`controlplane up` runs two redis-servers (the FalkorDB graph and the broker). Each gets an
administrator's password (its `default` user: the launcher's health checks and SHUTDOWN only)
and a password for the control plane's own user of that server (redis_acl.py says what that
user may do). Every process the stack starts gets its URL, with the password, through its
environment; `stack.json` names the secret instead of holding it, and the CLI reads it here.

Rotating one: stop the stack, delete its file, start again (a new one is generated, the servers
take it at start, nothing else holds it).
"""

from __future__ import annotations

import os
import secrets
import stat
import urllib.parse
from pathlib import Path

from controlplane.domain.errors import InvalidInput

SECRETS_DIR = "secrets"
#: the secrets `up` makes: the graph server's administrator and control plane user, the broker's
GRAPH_ADMIN, GRAPH, BROKER_ADMIN, BROKER = "graph-admin", "graph", "broker-admin", "broker"
#: the control plane's user name on both servers
USER = "controlplane"


def secrets_dir(data_dir: Path) -> Path:
    return data_dir / SECRETS_DIR


def store_secret(data_dir: Path, name: str) -> str:
    """The password `name` of this data directory: read, or made now (32 random bytes, URL-safe) and kept 0600.

    A file others may read, or that someone else owns, is refused rather than used."""
    directory = secrets_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _private(directory, 0o700)
    path = directory / f"{name}.password"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        _private(path, 0o600)
        value = path.read_text().strip()
        if not value:
            raise InvalidInput(f"{path} is empty: delete it and start again for a new password", field="DATA_DIR") from None
        return value
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def read_secret(data_dir: Path, name: str) -> str | None:
    """The password `name` if this data directory has it (the CLI, next to a running stack); never makes one."""
    path = secrets_dir(data_dir) / f"{name}.password"
    if not path.exists():
        return None
    _private(path, 0o600)
    return path.read_text().strip() or None


def with_password(url: str, password: str) -> str:
    """`url` logging in with `password` (its user name kept)."""
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.quote(urllib.parse.unquote(parts.username or ""), safe="")
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def without_password(url: str) -> str:
    """`url` with its password taken out (user name kept): what may be written down or printed."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    auth, host = parts.netloc.rsplit("@", 1)
    user = auth.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def redact(url: str) -> str:
    """`url` as it may be shown: any password replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc or ":" not in parts.netloc.rsplit("@", 1)[0]:
        return url
    auth, host = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth.split(':', 1)[0]}:***@{host}"))


def _private(path: Path, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise InvalidInput(f"{path} is a symbolic link: refusing it as a secret", field="DATA_DIR")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise InvalidInput(f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}, owner {info.st_uid}): "
                           f"make it {mode:o} and yours, or delete it for a new one", field="DATA_DIR")
