"""The GraphQL API (strawberry on FastAPI): thin resolvers over the ControlPlane use cases.

Public surface: `create_app(control, *, tokens, browsers=None, health_checks=None, max_depth=12, max_descendants=10_000,
events_redis_url=None)`.
"""

from controlplane.api.app import create_app

__all__ = ["create_app"]
