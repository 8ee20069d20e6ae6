"""How the CLI's operator commands reach the control plane: the GraphQL API, with the caller's own credential.

As kubectl talks to the API server and never to etcd, `controlplane spawn`, `tree`,
`events`, `stop`, `drain` ... ask the API and nothing else: the same deny-by-default
check, the same capability over a subtree and the same audit as every other caller, and
no graph or broker password is needed (or read) on the operator's machine. The API is
CONTROLPLANE_API_URL, else the local stack's (`stack.json` in the data directory); the
credential is CONTROLPLANE_TOKEN, else the local admin token `controlplane up` wrote.

Why plain urllib: one JSON POST per command, no connection pool to keep, nothing to
install on an operator's laptop beyond the package itself.

Answers come back as the domain's records (camelCase fields snake-cased), so the views
that print them are the ones the records always had; errors come back as the domain's
errors, with the code and the field the API named.
"""

from __future__ import annotations

import json
import os
import re
import typing
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from controlplane.domain import errors as domain_errors
from controlplane.domain.errors import ControlPlaneError, Unauthenticated, Unavailable
from controlplane.domain.records import AllocationRecord, Event, NodeRecord
from controlplane.settings import STACK_FILE, Settings

TIMEOUT_S = 60.0
PAGE = 1000

#: an error code of the API as the domain's error class (INVALID_QUERY and INTERNAL have none: Conflict's root)
_ERRORS: dict[str, type[ControlPlaneError]] = {
    cls.code.value: cls for cls in (
        domain_errors.NotFound, domain_errors.InvalidInput, domain_errors.Conflict, domain_errors.NoCapacity,
        domain_errors.Unavailable, domain_errors.QueryTimeout, domain_errors.Busy, domain_errors.Unauthenticated,
        domain_errors.Forbidden,
    )
}

#: the fields of an Allocation that the CLI's views read
ALLOCATION_FIELDS = ("id name executor state incarnation version parentId nodeId cpu memory gpus gpuIds gracePeriodS "
                     "createdAt updatedAt exitCode error pid restarts orphan logPath waiting")
EVENT_FIELDS = "id kind allocationId incarnation fromState toState at reason by data"
NODE_FIELDS = "id name status labels cpu memory cpuFree memoryFree heartbeatAt registeredAt cordoned"


def api_url(settings: Settings) -> str | None:
    """The API's address: CONTROLPLANE_API_URL, API_PUBLIC_URL, else the local stack's; None when none is known."""
    url = os.environ.get("CONTROLPLANE_API_URL") or settings.api_public_url
    stack = settings.data_dir / STACK_FILE
    if not url and stack.exists():  # only its address: the stores' secrets stay unread
        try:
            url = json.loads(stack.read_text()).get("api_url")
        except (OSError, ValueError) as exc:
            raise Unavailable(f"cannot read {stack}: {exc}", field="api") from None
    return str(url).rstrip("/") if url else None


class ApiClient:
    """GraphQL operations against the API with the CLI's credential; failures raise the domain's errors."""

    def __init__(self, settings: Settings) -> None:
        from controlplane.auth.bootstrap import read_cli_token

        url = api_url(settings)
        if url is None:
            raise Unavailable("no API found: run `controlplane up`, or set CONTROLPLANE_API_URL", field="api")
        token = read_cli_token(settings)
        if not token:
            raise Unauthenticated(f"no token: set CONTROLPLANE_TOKEN, or run `controlplane up` "
                                  f"(it writes {settings.data_dir / 'admin.token'})", field="token")
        self.url = url
        self._token = token

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": f"Bearer {self._token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
                body: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 4xx/5xx with a GraphQL answer (401, 403, 400 ...)
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                raise Unavailable(f"the API at {self.url} answered {exc.code} without a GraphQL body") from None
        except OSError as exc:
            raise Unavailable(f"the API at {self.url} does not answer: {exc}") from None
        for error in body.get("errors") or []:
            raise api_error(error)
        return dict(body.get("data") or {})

    def pages(self, field: str, selection: str, **variables: Any) -> Iterator[dict[str, Any]]:
        """Every node of a connection field (`nodes`, `allocations`, `jobs`), a page at a time."""
        after: str | None = None
        while True:
            answer = self(f"query($first: Int!, $after: String) {{ {field}(first: $first, after: $after) "
                          f"{{ edges {{ node {{ {selection} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
                          first=PAGE, after=after, **variables)[field]
            for edge in answer["edges"]:
                yield edge["node"]
            if not answer["pageInfo"]["hasNextPage"]:
                return
            after = answer["pageInfo"]["endCursor"]


def api_error(error: Mapping[str, Any]) -> ControlPlaneError:
    """A GraphQL error as the domain error of its code, its field named (the message already starts with it)."""
    extensions = error.get("extensions") or {}
    field = extensions.get("field")
    message = str(error.get("message") or "")
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2:]
    code = str(extensions.get("code") or "")
    known = _ERRORS.get(code)
    if known is None:  # INVALID_QUERY, INTERNAL: no domain error of their own, said as the API said them
        return ControlPlaneError(f"{code}: {message}" if code else message, field=field)
    return known(message, field=field)


def snake(answer: Mapping[str, Any]) -> dict[str, Any]:
    """GraphQL's camelCase field names as the records' snake_case ones (values untouched)."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in answer.items()}


def allocation(answer: Mapping[str, Any]) -> AllocationRecord:
    p = snake(answer)
    p["state"] = state(p["state"])
    return AllocationRecord.from_props(p)


def state(value: str) -> str:
    """An AllocationState of the API (`RUNNING`) as the lifecycle's value (`running`)."""
    return str(value).lower()


def event(answer: Mapping[str, Any]) -> Event:
    p = snake(answer)
    return Event(id=str(p["id"]), kind=str(p["kind"]), allocation_id=str(p["allocation_id"]), at=float(p["at"]),
                 incarnation=p.get("incarnation"), from_state=p.get("from_state"), to_state=p.get("to_state"),
                 reason=p.get("reason"), by=p.get("by"), data=dict(p.get("data") or {}))


def node(answer: Mapping[str, Any]) -> NodeRecord:
    return NodeRecord.from_props(snake(answer))


def graphql_input(model: type[BaseModel], data: Any) -> Any:
    """A spec as a file spells it (snake_case, as the domain's pydantic model names its fields) in GraphQL's
    spelling (camelCase), field by field down the model: maps the model holds as values (env, labels, config) are
    left as they are, and keys the model does not know are passed on for the API to name in its refusal."""
    if isinstance(data, list):
        return [graphql_input(model, d) for d in data]
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        found = model.model_fields.get(str(key))
        inner = _model_in(found.annotation) if found is not None else None
        out[camel(str(key))] = graphql_input(inner, value) if inner is not None else value
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`X`, `X | None`, `list[X]`), or None (a scalar or a map)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (dict, Mapping):
        return None
    return next((m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None), None)


def camel(name: str) -> str:
    """snake_case as strawberry spells a field in GraphQL (`cpu_milli` -> `cpuMilli`)."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() if part else "_" for part in rest)
