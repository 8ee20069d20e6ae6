"""Services: the use cases, written against the GraphStore and Dispatcher interfaces only."""

from controlplane.services.control import ControlPlane, Dispatcher
from controlplane.services.agent import AgentService

__all__ = ["AgentService", "ControlPlane", "Dispatcher"]
