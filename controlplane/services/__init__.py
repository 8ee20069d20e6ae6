"""Services: the use cases, written against the GraphStore and Dispatcher interfaces only."""

from controlplane.services.agent import AgentService
from controlplane.services.control import ControlPlane, InProcessDispatcher
from controlplane.services.supervisor import ControlDispatcher, SupervisorService

__all__ = ["AgentService", "ControlDispatcher", "ControlPlane", "InProcessDispatcher", "SupervisorService"]
