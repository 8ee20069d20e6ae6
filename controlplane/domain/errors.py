"""One root error with a machine-readable code, and a shallow tree under it.

Every error names the field it is about (when there is one), so the API can
answer "spec.resources.cpu: must be > 0" instead of a stack trace.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    NOT_FOUND = "NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    CONFLICT = "CONFLICT"
    NO_CAPACITY = "NO_CAPACITY"
    UNAVAILABLE = "UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    BUSY = "BUSY"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"


class ControlPlaneError(Exception):
    """Root of every error the control plane raises on purpose."""

    code: ErrorCode = ErrorCode.CONFLICT

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.value}, field={self.field!r}, message={self.message!r})"


class NotFound(ControlPlaneError):
    code = ErrorCode.NOT_FOUND


class InvalidInput(ControlPlaneError):
    code = ErrorCode.INVALID_INPUT


class Unsatisfiable(InvalidInput):
    """No node of the cluster could ever meet this demand, even empty: fix the request or add such a node.

    Not "no room now" (NoCapacity): a label no node carries, a GPU model nobody owns, more cpu than
    any node has. A restart that meets it waits (a node may join); a spawn is refused.
    """


class Conflict(ControlPlaneError):
    code = ErrorCode.CONFLICT


class NoCapacity(ControlPlaneError):
    code = ErrorCode.NO_CAPACITY


class Unavailable(ControlPlaneError):
    """A backing server (graph, broker) cannot be reached; retrying later may work."""

    code = ErrorCode.UNAVAILABLE


class QueryTimeout(ControlPlaneError):
    """A query ran past its time limit and was stopped."""

    code = ErrorCode.TIMEOUT


class Busy(ControlPlaneError):
    """Too many expensive queries run at once; retry shortly (control traffic keeps its share)."""

    code = ErrorCode.BUSY


class Unauthenticated(ControlPlaneError):
    """No credential, or one that does not verify (expired, tampered, unknown key, revoked, ended)."""

    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ControlPlaneError):
    """A valid credential that does not cover this verb on this subtree."""

    code = ErrorCode.FORBIDDEN


class IllegalTransition(Conflict):
    """A lifecycle transition that the table does not allow, or whose precondition no longer holds."""

    def __init__(self, allocation_id: str, current: str, target: str, *, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"allocation {allocation_id} cannot go from {current} to {target}{detail}", field="state"
        )
        self.allocation_id = allocation_id
        self.current = current
        self.target = target
