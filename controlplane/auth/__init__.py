"""Credentials: Ed25519 keys kept in the data directory, signed expiring tokens, revocation.

An adapter package (cryptography, PyJWT, files): the capability model itself is
pure and lives in `controlplane.domain.capabilities`; enforcement in the API is
`controlplane.api.auth`.
"""

from controlplane.auth.keys import KeyRing, rotate_signing_key
from controlplane.auth.revocation import FileRevocations, MemoryRevocations, Revocations
from controlplane.auth.tokens import Issued, Tokens

__all__ = ["FileRevocations", "Issued", "KeyRing", "MemoryRevocations", "Revocations", "Tokens", "rotate_signing_key"]
