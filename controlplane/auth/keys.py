"""Signing and verification keys: Ed25519, generated on first start, kept 0600 in the data directory.

Layout of the keys directory (default `<DATA_DIR>/keys`, mode 0700):

- `signing.pem`: the private key new tokens are signed with (0600);
- `verify/<kid>.pem`: public keys whose tokens are still accepted: the previous signing
  keys after a rotation, or another issuer's.

A deployment may instead give the signing key as PEM text (`AUTH_SIGNING_KEY`) or a file
(`AUTH_SIGNING_KEY_FILE`), and extra verification keys as files (`AUTH_VERIFY_KEY_FILES`).
A process that only verifies (or that must not sign) loads without the private key.
Every key is named by its `kid`: the first 16 hex digits of the SHA-256 of its raw public key.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.domain.errors import InvalidInput

log = logging.getLogger(__name__)

SIGNING_FILE = "signing.pem"
VERIFY_DIR = "verify"


def kid_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private(path: Path, data: bytes) -> bool:
    """Create `path` with mode 0600 holding `data`, atomically; False if it already exists (another process won)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if it exists: never two different keys under one name
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _load_private(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"not a PEM private key: {exc}", field=where) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput("the signing key must be Ed25519", field=where)
    return key


def _load_public(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        key = _load_private(data, where).public_key()  # a private key file verifies too
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("verification keys must be Ed25519", field=where)
    return key


@dataclass
class KeyRing:
    """The key new tokens are signed with (if this process signs) and every key whose tokens are accepted."""

    signing: Ed25519PrivateKey | None = None
    verifying: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @property
    def signing_kid(self) -> str | None:
        return kid_of(self.signing.public_key()) if self.signing else None

    @classmethod
    def generate(cls) -> KeyRing:
        """A fresh in-memory ring (tests, tools)."""
        key = Ed25519PrivateKey.generate()
        return cls(signing=key, verifying={kid_of(key.public_key()): key.public_key()})

    @classmethod
    def load(
        cls,
        keys_dir: Path,
        *,
        create: bool = False,
        signing_pem: str | None = None,
        signing_file: Path | None = None,
        verify_files: Iterable[Path] = (),
    ) -> KeyRing:
        """The ring of this deployment; with `create`, a signing key is generated in `keys_dir` if there is none."""
        ring = cls()
        if signing_pem:
            ring.signing = _load_private(signing_pem.encode(), "AUTH_SIGNING_KEY")
        elif signing_file is not None:
            ring.signing = _load_private(_read(signing_file, "AUTH_SIGNING_KEY_FILE"), "AUTH_SIGNING_KEY_FILE")
        else:
            path = keys_dir / SIGNING_FILE
            if not path.exists() and create:
                if write_private(path, _private_pem(Ed25519PrivateKey.generate())):
                    log.warning("generated a new token signing key in %s", path)
            if path.exists():
                _check_private_mode(path)
                ring.signing = _load_private(path.read_bytes(), str(path))
        if ring.signing is not None:
            ring.verifying[kid_of(ring.signing.public_key())] = ring.signing.public_key()
        extra = sorted((keys_dir / VERIFY_DIR).glob("*.pem")) if (keys_dir / VERIFY_DIR).is_dir() else []
        for path in [*extra, *verify_files]:
            key = _load_public(_read(path, "AUTH_VERIFY_KEY_FILES"), str(path))
            ring.verifying[kid_of(key)] = key
        if not ring.verifying:
            raise InvalidInput(f"no token keys: none in {keys_dir}, and none given (AUTH_SIGNING_KEY_FILE, "
                               "AUTH_VERIFY_KEY_FILES)", field="AUTH_SIGNING_KEY_FILE")
        return ring


def rotate_signing_key(keys_dir: Path) -> tuple[str | None, str]:
    """Sign with a new key from now on; the old one stays a verification key until retired. Returns (old kid, new kid)."""
    path = keys_dir / SIGNING_FILE
    old_kid = None
    if path.exists():
        old = _load_private(path.read_bytes(), str(path))
        old_kid = kid_of(old.public_key())
        verify = keys_dir / VERIFY_DIR
        verify.mkdir(parents=True, exist_ok=True, mode=0o700)
        (verify / f"{old_kid}.pem").write_bytes(_public_pem(old.public_key()))
    new = Ed25519PrivateKey.generate()
    tmp = keys_dir / f".{SIGNING_FILE}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, _private_pem(new))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return old_kid, kid_of(new.public_key())


def retire_key(keys_dir: Path, kid: str) -> bool:
    """Stop accepting tokens signed by a previous key."""
    path = keys_dir / VERIFY_DIR / f"{kid}.pem"
    if not path.exists():
        return False
    path.unlink()
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field=what) from None


def _check_private_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise InvalidInput(f"{path} is readable by others (mode {mode:o}); chmod 600 it", field="AUTH_SIGNING_KEY_FILE")
