"""What this worker process serves, set once before Celery starts: a node agent and/or a supervisor."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.services.supervisor import SupervisorService
    from workers.agent import NodeAgent

_agent: NodeAgent | None = None
_supervisor: SupervisorService | None = None


def install(*, agent: NodeAgent | None = None, supervisor: SupervisorService | None = None) -> None:
    global _agent, _supervisor
    if agent is not None:
        _agent = agent
    if supervisor is not None:
        _supervisor = supervisor


def current_agent() -> NodeAgent:
    if _agent is None:
        raise RuntimeError("no node agent in this process: start it with `controlplane worker --node NAME`")
    return _agent


def current_supervisor() -> SupervisorService:
    if _supervisor is None:
        raise RuntimeError("no supervisor in this process: start it with `controlplane supervisor`")
    return _supervisor
