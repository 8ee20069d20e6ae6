"""What this worker process serves, set once before Celery starts: the control plane of a supervisor."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.services import ControlPlane

_control: ControlPlane | None = None


def install(*, control: ControlPlane) -> None:
    global _control
    _control = control


def current_control() -> ControlPlane:
    """The control plane of a supervisor process: supervision and native executors."""
    if _control is None:
        raise RuntimeError("no supervisor in this process: start it with `controlplane supervisor`")
    return _control
