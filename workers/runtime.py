"""The node agent of this worker process, set once by `controlplane worker` before Celery starts."""

from __future__ import annotations

from workers.agent import NodeAgent

_agent: NodeAgent | None = None


def install(agent: NodeAgent) -> None:
    global _agent
    _agent = agent


def current_agent() -> NodeAgent:
    if _agent is None:
        raise RuntimeError("no node agent in this process: start it with `controlplane worker --node NAME`")
    return _agent
