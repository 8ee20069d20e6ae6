"""The GraphQL router of the API: the offline GraphiQL page, and websockets whose connection_init must carry a
credential (unless the upgrade did), checked by controlplane.api.auth.

Apart from auth.py so that the trust layer needs nothing of the HTTP router (no import cycle).
"""

from __future__ import annotations

from typing import Any

from strawberry.exceptions import ConnectionRejectionError

from controlplane.api.auth import audit, connection_token
from controlplane.api.graphiql import OfflineGraphQLRouter
from controlplane.domain.errors import Unauthenticated


class AuthGraphQLRouter(OfflineGraphQLRouter):
    """GraphQL over HTTP and websockets where connection_init must carry a credential (unless the upgrade did)."""

    async def on_ws_connect(self, context: Any) -> Any:
        if context.principal is None:
            try:
                context.principal = context.guard.authenticate(connection_token(context.connection_params))
            except Unauthenticated as exc:
                audit.warning("refused websocket connection_init: %s", exc.message)
                raise ConnectionRejectionError({"code": exc.code.value, "message": exc.message}) from None
        return await super().on_ws_connect(context)
