"""How failures reach a client: a GraphQL error with a code and a field, never a traceback.

- A ControlPlaneError keeps its message and names its field in GraphQL spelling;
  `extensions` carries `code` (NOT_FOUND, INVALID_INPUT, CONFLICT, NO_CAPACITY,
  UNAVAILABLE, TIMEOUT) and `field`. Where the domain calls a value by another
  name than the argument (a job spec is `job`, the argument `spec`), the path
  is renamed (`renamed_field`).
- A problem with the query document itself (syntax, unknown field, too deep,
  too many aliases, too costly, a variable of the wrong type) keeps its message,
  with code INVALID_QUERY.
- Anything else is a bug: the client gets "internal error" with code INTERNAL;
  the traceback goes to the server log only.

The same mapping applies to every result of a stream (operations over a
websocket, subscription events).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, SchemaExtension
from strawberry.types import ExecutionContext, ExecutionResult

from controlplane.api.context import ApiContext
from controlplane.api.inputs import graphql_field
from controlplane.domain.errors import ControlPlaneError

log = logging.getLogger(__name__)

INVALID_QUERY = "INVALID_QUERY"
INTERNAL = "INTERNAL"
INTERNAL_MESSAGE = "internal error; it has been logged on the server"


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    if isinstance(original, ControlPlaneError):
        return False
    if error.path is None:  # about the document or the variables, found before execution
        return not (original is None or isinstance(original, (GraphQLError, ValueError, TypeError)))
    return True


def client_error(error: GraphQLError) -> GraphQLError:
    """The error as the client may see it."""
    if error.extensions and "code" in error.extensions:  # already mapped
        return error
    original = error.original_error
    if isinstance(original, ControlPlaneError):
        field = graphql_field(original.field)
        message = f"{field}: {original.message}" if field else original.message
        extensions = {"code": original.code.value, "field": field}
    elif is_unexpected(error):
        message, extensions = INTERNAL_MESSAGE, {"code": INTERNAL, "field": None}
    else:
        message, extensions = error.message, {"code": INVALID_QUERY, "field": None}
    return GraphQLError(
        message, nodes=error.nodes, source=error.source, positions=error.positions, path=error.path, extensions=extensions
    )


@contextlib.contextmanager
def renamed_field(argument: str, *, domain: str) -> Iterator[None]:
    """Errors about the value of `argument`, which the domain calls `domain`: `job.tasks[0]` -> `spec.tasks[0]`."""
    try:
        yield
    except ControlPlaneError as exc:
        field = exc.field or ""
        if field != domain and not field.startswith((f"{domain}.", f"{domain}[")):
            raise
        moved = copy.copy(exc)
        moved.field = argument + field[len(domain):]
        raise moved from None


class SafeParserCache(ParserCache):
    """ParserCache whose syntax errors are left to the standard parse, which reports them like any other."""

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        try:
            ctx.graphql_document = self.cached_parse_document(ctx.query, **ctx.parse_options)
        except GraphQLError:
            pass
        yield


class ErrorMapping(SchemaExtension):
    """Rewrites every error of the result with `client_error` (after `process_errors` has logged the originals)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [client_error(e) for e in errors]


class ControlPlaneSchema(strawberry.Schema):
    """Logs only what is unexpected, with its traceback; expected refusals are the client's business.

    `execute` maps errors once more: a failure inside an extension hook ends the
    operation before ErrorMapping can see the result.
    """

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        result = await super().execute(*args, **kwargs)
        if result.errors:
            result.errors = [client_error(e) for e in result.errors]
        return result

    async def stream(self, query: str | None, *args: Any, **kwargs: Any) -> Any:
        """Each operation of a websocket gets its own request-scoped context; each result its errors mapped."""
        if isinstance(kwargs.get("context_value"), ApiContext):
            kwargs["context_value"] = kwargs["context_value"].fresh()
        return _mapped(await super().stream(query, *args, **kwargs))

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            if is_unexpected(error):
                original = error.original_error
                log.error(
                    "unexpected error at %s: %s",
                    ".".join(str(p) for p in error.path or ()) or "(operation)",
                    error.message,
                    exc_info=(type(original), original, original.__traceback__) if original else None,
                )
            else:
                log.debug("refused: %s", error.message)


async def _mapped(results: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
    async with contextlib.aclosing(results):
        async for result in results:
            if isinstance(result, ExecutionResult) and result.errors:
                result.errors = [client_error(e) for e in result.errors]
            yield result
