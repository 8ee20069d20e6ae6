"""What this worker process serves, set once before Celery starts: a node agent and/or a supervisor."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.services import ControlPlane
    from workers.agent import NodeAgent

_agent: NodeAgent | None = None
_control: ControlPlane | None = None


def install(*, agent: NodeAgent | None = None, control: ControlPlane | None = None) -> None:
    global _agent, _control
    if agent is not None:
        _agent = agent
    if control is not None:
        _control = control


def current_agent() -> NodeAgent:
    if _agent is None:
        raise RuntimeError("no node agent in this process: start it with `controlplane worker --node NAME`")
    return _agent


def current_control() -> ControlPlane:
    """The control plane of a supervisor process: supervision and native executors."""
    if _control is None:
        raise RuntimeError("no supervisor in this process: start it with `controlplane supervisor`")
    return _control
