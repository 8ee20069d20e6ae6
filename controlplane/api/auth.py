"""Who is asking and may they: the API's authentication and authorization, deny by default.

- `Guard` verifies credentials (signature and expiry from the token alone, revocation
  from memory), and decides each verb on each target from the principal's capability
  and the target's lineage in the PARENT_OF hierarchy (cached: parent links never
  change). An allocation's credential holds only while its incarnation is live.
  Every refusal is logged (logger `controlplane.audit`) with principal and reason.
- `TrustMiddleware` (ASGI) refuses foreign Host headers (DNS rebinding) and Origins
  not allowed (cross-site pages, websocket hijacking), requires a credential on every
  path but /healthz, and logs GraphiQL in from `?token=` (a cookie, as Jupyter does).
- `requires(verb, target)` is the permission of each root field: resolvers stay thin.
- `Authenticated` re-checks the credential on each operation (a websocket outlives tokens);
  controlplane/api/router.py checks connection_init.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission
from strawberry.types import Info as StrawberryInfo

from controlplane.auth import Tokens
from controlplane.domain.capabilities import EVERYTHING, Capability, Kind, Principal, Role, Verb
from controlplane.domain.errors import ControlPlaneError, Forbidden, NotFound, Unauthenticated
from controlplane.domain.lifecycle import LIVE
from controlplane.domain.vocabulary import Label

if TYPE_CHECKING:
    from controlplane.api.context import ApiContext
    from controlplane.services import ControlPlane

audit = logging.getLogger("controlplane.audit")

COOKIE = "controlplane_token"
LINEAGE_CACHE = 100_000
OPEN_PATHS = frozenset({"/healthz"})
#: node agents: a bearer credential in the header only (never the cookie a browser sends by itself), so the Host
#: check against DNS rebinding is not needed there, and agents on other machines may use any name of the API
AGENT_PATHS = "/agent/v1/"
#: pages a browser opens with `?token=` (the addresses `controlplane up` prints): the token becomes a cookie
LOGIN_PAGES = frozenset({"/graphql", "/browser"})
#: what each plain HTTP path needs beyond a credential (GraphQL decides per field)
PATH_VERBS = {"/query": Verb.RAW_QUERY, "/metrics": Verb.READ}
HOW = ("send `Authorization: Bearer <token>` (the token `controlplane up` printed and wrote to "
       "<DATA_DIR>/admin.token, or one from `controlplane token create`)")


@dataclass(frozen=True)
class Browsers:
    """Which Host headers name this API, and which Origins may call it from a browser."""

    hosts: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def local(cls, host: str, port: int, *, extra_hosts: Iterable[str] = (), extra_origins: Iterable[str] = ()) -> Browsers:
        """The API's own names (its listen address, and localhost when local) and its own origins."""
        names = {host, *extra_hosts}
        if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        if host in ("0.0.0.0", "::"):  # every interface: the machine's own names too
            names |= {socket.gethostname(), socket.getfqdn()}
        names -= {"0.0.0.0", "::"}
        hosts = {n if ":" not in n or n.startswith("[") else f"[{n}]" for n in names}
        with_port = {f"{h}:{port}" for h in hosts} | hosts
        origins = {f"{scheme}://{h}" for h in with_port for scheme in ("http", "https")}
        return cls(hosts=frozenset(with_port), origins=frozenset(origins | set(extra_origins)))


class Guard:
    """Authentication and authorization for one API; `tokens` None: authentication is off (benchmarks only)."""

    def __init__(self, control: ControlPlane, tokens: Tokens | None, browsers: Browsers) -> None:
        self.control = control
        self.tokens = tokens
        self.browsers = browsers
        self._lineage: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    # --- who -----------------------------------------------------------------------------
    def authenticate(self, token: str | None) -> Principal:
        if self.tokens is None:
            return ANONYMOUS
        if not token:
            raise Unauthenticated(f"no credential: {HOW}", field="token")
        return self.tokens.verify(token)

    async def still_valid(self, principal: Principal) -> None:
        """Expiry and revocation again (for long connections), and an allocation's incarnation is still live."""
        if self.tokens is None:
            return
        now = self.tokens.clock()
        if not principal.capability.live(now):
            raise Unauthenticated("the token has expired; ask for a new one", field="token")
        if self.tokens.revocations.any_revoked((principal.token_id, *principal.chain)):
            raise Unauthenticated("the token has been revoked", field="token")
        if principal.kind is Kind.ALLOCATION:
            a = await run_in_threadpool(self.control.store.get_allocation, allocation_id=principal.subject)
            if a is None or a.incarnation != principal.incarnation or a.state not in LIVE:
                where = "gone" if a is None else f"at incarnation {a.incarnation}, {a.state.value}"
                raise Unauthenticated(f"the token of allocation {principal.subject} incarnation {principal.incarnation} "
                                      f"ended with it (now {where})", field="token")

    # --- may they ------------------------------------------------------------------------
    async def authorize(self, principal: Principal, verb: Verb, targets: Sequence[str] | None, *, what: str) -> None:
        """Forbidden unless the capability covers `verb` on every target (None: on everything)."""
        cap = principal.capability
        if verb in cap.verbs and cap.everything:
            return
        if verb not in cap.verbs:
            self.refuse(principal, verb, what, f"its credential does not grant {verb.value}")
        if targets is None:
            if not cap.covers(verb, None):
                self.refuse(principal, verb, what, "needs it over everything")
            return
        for target in targets:
            # a node is its own root, registered or not yet
            lineage = (target,) if verb is Verb.REGISTER else await self.lineage(target)
            if not cap.covers(verb, lineage):
                self.refuse(principal, verb, what, f"{target} is not in its subtrees ({', '.join(sorted(cap.roots))})")

    def refuse(self, principal: Principal, verb: Verb, what: str, why: str) -> None:
        audit.warning("refused %s: %s %s (%s)", principal.name, verb.value, what, why)
        raise Forbidden(f"{principal.name} may not {verb.value} {what}: {why}", field="token")

    async def covers(self, principal: Principal, verb: Verb, target: str) -> bool:
        cap = principal.capability
        if verb in cap.verbs and cap.everything:
            return True
        return verb in cap.verbs and cap.covers(verb, await self.lineage(target))

    async def lineage(self, actor_id: str) -> tuple[str, ...]:
        """The actor, its parent, ..., its root Node; a Node is its own root; an unknown id is NotFound."""
        found = self._lineage.get(actor_id)
        if found is None:
            found = await run_in_threadpool(self._read_lineage, actor_id)
            self._lineage[actor_id] = found
            if len(self._lineage) > LINEAGE_CACHE:
                self._lineage.popitem(last=False)
        return found

    def _read_lineage(self, actor_id: str) -> tuple[str, ...]:
        store = self.control.store
        label = store.actor_label(actor_id=actor_id)
        if label == Label.NODE.value:
            return (actor_id,)
        if label != Label.ALLOCATION.value:
            raise NotFound(f"no node or allocation {actor_id!r}", field="id")
        return (actor_id, *(v.id for v in store.ancestors(allocation_id=actor_id)))


ANONYMOUS = Principal(kind=Kind.OPERATOR, subject="anonymous", role=Role.ADMIN,
                      capability=Capability(frozenset(Verb), frozenset({EVERYTHING}), float("inf")))


# --- GraphQL: the permission of each root field -------------------------------------------
Targets = Callable[["ApiContext", dict[str, Any]], Awaitable[Sequence[str] | None] | Sequence[str] | None]


class _Requires(BasePermission):
    verb: Verb | None = None
    targets: Targets | None = None
    what: str = ""

    async def has_permission(self, source: Any, info: StrawberryInfo, **kwargs: Any) -> bool:
        ctx: ApiContext = info.context
        principal = ctx.principal
        if principal is None:  # Authenticated ends the operation first; never reached with a credential missing
            raise Unauthenticated(f"no credential: {HOW}", field="token")
        if self.verb is None:
            return True
        targets = self.targets(ctx, kwargs) if self.targets else None
        if targets is not None and not isinstance(targets, (list, tuple)):
            targets = await targets  # type: ignore[misc]
        try:
            await ctx.guard.authorize(principal, self.verb, targets, what=self.what or info.field_name)
        except Forbidden:
            ctx.status(403)
            raise
        return True


def requires(verb: Verb | None, targets: Targets | None = None, what: str = "") -> list[type[BasePermission]]:
    """The permission of a root field: `verb` on the ids `targets` picks from its arguments (None: everything).

    `verb` None: any valid credential (static answers such as the job schema).
    """
    name = f"Requires_{verb.value if verb else 'credential'}"
    return [type(name, (_Requires,), {"verb": verb, "targets": staticmethod(targets) if targets else None, "what": what})]


def arg(*names: str) -> Targets:
    """Targets named by arguments: `arg("parent")`; a missing (optional) argument means everything."""

    def pick(_ctx: ApiContext, kwargs: dict[str, Any]) -> Sequence[str] | None:
        ids = [str(kwargs[n]) for n in names if kwargs.get(n) is not None]
        return ids if len(ids) == len(names) else None

    return pick


class Authenticated(SchemaExtension):
    """Every operation needs a valid credential, checked again for each operation of a websocket."""

    async def on_execute(self) -> Any:
        ctx = self.execution_context.context
        principal = getattr(ctx, "principal", None)
        if principal is None:
            ctx.status(401)
            raise Unauthenticated(f"no credential: {HOW}", field="token")
        try:
            await ctx.guard.still_valid(principal)
        except Unauthenticated as exc:
            ctx.status(401)
            audit.warning("refused %s: %s", principal.name, exc.message)
            raise
        yield


# --- ASGI: Host, Origin, and a credential on every path but /healthz -----------------------
class TrustMiddleware:
    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        agent = scope.get("path", "").startswith(AGENT_PATHS)
        refusal = self._browser_refusal(headers, agent=agent)
        if refusal is not None:
            audit.warning("refused %s %s from %s: %s", scope["type"], scope.get("path"), _client(scope), refusal)
            await _deny(scope, receive, send, 403, "FORBIDDEN", refusal, field="origin" if "Origin" in refusal else "host")
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["type"] == "http" and path in LOGIN_PAGES and scope.get("method") == "GET" and "token" in query:
            await self._log_in(scope, receive, send, query)
            return
        token = _credential(headers, cookie=not agent)
        if scope["type"] == "websocket" and token is None:
            await self.app(scope, receive, send)  # the credential may come with connection_init
            return
        try:
            principal = self.guard.authenticate(token)
            verb = PATH_VERBS.get(path)
            if verb is not None:
                await self.guard.authorize(principal, verb, None, what=path)
        except ControlPlaneError as exc:
            if token is not None and isinstance(exc, Unauthenticated):  # a Forbidden is logged where it is decided
                audit.warning("refused %s %s from %s: %s", scope["type"], path, _client(scope), exc.message)
            status = 401 if isinstance(exc, Unauthenticated) else 403
            await _deny(scope, receive, send, status, exc.code.value, exc.message, field=exc.field, html=_wants_html(headers))
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _browser_refusal(self, headers: Headers, *, agent: bool = False) -> str | None:
        if not self.guard.enabled:
            return None
        host = headers.get("host", "")
        if agent:
            return "node agents send no Origin: the agent API is not for browsers" if "origin" in headers else None
        if host.lower() not in self.guard.browsers.hosts:
            return f"Host {host!r} is not a name of this API (API_ALLOWED_HOSTS)"
        origin = headers.get("origin")
        if origin is not None and origin not in self.guard.browsers.origins:
            return f"Origin {origin!r} may not call this API (API_ALLOWED_ORIGINS)"
        return None

    async def _log_in(self, scope: dict[str, Any], receive: Any, send: Any, query: dict[str, list[str]]) -> None:
        """GraphiQL or the graph browser from the URL `controlplane up` printed: the token becomes an HttpOnly,
        SameSite cookie, and the address loses it."""
        token = query.pop("token")[0]
        try:
            principal = self.guard.authenticate(token)
        except Unauthenticated as exc:
            await _deny(scope, receive, send, 401, exc.code.value, exc.message, field="token", html=True)
            return
        jar = Response()
        max_age = principal.capability.expires_at - time.time()
        jar.set_cookie(COOKIE, token, max_age=int(min(max_age, 10 * 365 * 86400)), httponly=True, samesite="strict", path="/")
        if scope["path"] == "/browser":  # the page takes the token from its address itself (sessionStorage, bearer)
            cookie = [(k, v) for k, v in jar.raw_headers if k == b"set-cookie"]

            async def send_with_cookie(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *cookie]}
                await send(message)

            scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send_with_cookie)
            return
        rest = urlencode({k: v[0] for k, v in query.items()})
        response: Response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
        response.raw_headers.extend((k, v) for k, v in jar.raw_headers if k == b"set-cookie")
        await response(scope, receive, send)


def _credential(headers: Headers, *, cookie: bool = True) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else auth.strip()
    sent = headers.get("cookie") if cookie else None
    if sent:
        jar: SimpleCookie = SimpleCookie()
        jar.load(sent)
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


def connection_token(params: dict[str, Any] | None) -> str | None:
    """The credential in a graphql-transport-ws connection_init payload: {"authorization": "Bearer ..."}."""
    for key in ("authorization", "Authorization", "token"):
        value = (params or {}).get(key)
        if isinstance(value, str) and value:
            scheme, _, rest = value.partition(" ")
            return rest.strip() if scheme.lower() == "bearer" and rest else value.strip()
    return None


def _wants_html(headers: Headers) -> bool:
    return "text/html" in headers.get("accept", "")


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


async def _deny(scope: dict[str, Any], receive: Any, send: Any, status: int, code: str, message: str, *,
                field: str | None, html: bool = False) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4403 if status == 403 else 4401, "reason": f"{code}: {message}"[:120]})
        return
    response: Response
    if html:
        response = HTMLResponse(
            f"<!doctype html><title>controlplane: {code}</title><h1>{code}</h1><p>{_escape(message)}</p>"
            "<p>Open the GraphiQL address <code>controlplane up</code> printed (it carries <code>?token=</code>), "
            "or make one with <code>controlplane token create</code>.</p>", status_code=status)
    elif scope.get("path") == "/graphql":
        response = JSONResponse({"data": None, "errors": [{"message": f"{field}: {message}" if field else message,
                                                           "extensions": {"code": code, "field": field}}]}, status_code=status)
    else:
        response = JSONResponse({"code": code, "field": field, "message": message}, status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="controlplane"'
    await response(scope, receive, send)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")



async def job_targets(ctx: ApiContext, kwargs: dict[str, Any]) -> Sequence[str] | None:
    """A job is covered where its root allocation is (or the node it was submitted from, before the root exists)."""
    principal = ctx.principal
    if principal is not None and principal.capability.everything:
        return None
    job = await ctx.call(ctx.control.jobs.job, str(kwargs["id"]))
    return [job.root_id or job.submitted_by]


def browsers_from(settings: Any) -> Browsers:
    """The allowed Hosts and Origins of Settings (API_ALLOWED_HOSTS, API_ALLOWED_ORIGINS)."""
    def split(text: str | None) -> list[str]:
        return [p.strip() for p in (text or "").split(",") if p.strip()]

    return Browsers.local(settings.api_host, settings.api_port, extra_hosts=split(settings.api_allowed_hosts),
                          extra_origins=split(settings.api_allowed_origins))


async def guarded(ctx: ApiContext, stream: Any, *, every_s: float = 1.0) -> Any:
    """A subscription's stream that ends (UNAUTHENTICATED) once its credential expires, is revoked, or its
    allocation's incarnation ends: checked again before an event is sent, at most every `every_s`."""
    checked = time.monotonic()
    try:
        async for item in stream:
            if ctx.principal is not None and time.monotonic() - checked >= every_s:
                await ctx.guard.still_valid(ctx.principal)
                checked = time.monotonic()
            yield item
    finally:
        await stream.aclose()
