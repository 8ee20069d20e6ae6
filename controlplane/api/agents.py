"""The agent API (/agent/v1): the only door of a node agent into the control plane, as the API server is a kubelet's.

A node agent holds its node credential and the API's address, nothing else: no graph
password, no broker credential, no signing key. With them it

- joins once (`POST /agent/v1/join` with a join credential an admin made): the answer is
  its node credential, whose id is the node's identity;
- starts (`.../nodes/{node}/start`): takes the node's session (a second agent of the same
  node is refused while the first's lives), and the node is registered under its identity;
- beats (`.../heartbeat`, every HEARTBEAT_S): the session and the node's lease renewed in
  Redis, from the event loop, never queued behind user requests or written to the graph;
- takes its work (`.../work`, a long poll on the node's own work list, which only the
  control plane writes) and acknowledges what it handled (`.../work/ack`);
- reports (`claim`, `running`, `exited`, `failed`, `unstarted`, `gone`, `usage`) and reads
  the allocations placed on it (`allocations`).

Every path names the node; a credential for another node is refused and recorded. Every
request after `start` carries the session (`X-Agent-Session`); one whose session another
agent took is refused (409, "fenced") and the agent stops its processes. The node check
on each report is the service's (controlplane.services.agents), inside the graph request.
Graph work runs on a thread pool of its own, so reports never wait behind user queries.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from controlplane.api.raw import STATUS
from controlplane.auth import Tokens
from controlplane.auth.bootstrap import node_token
from controlplane.domain.capabilities import EVERYTHING, Kind, Principal
from controlplane.domain.errors import Conflict, ControlPlaneError, ErrorCode, Forbidden, InvalidInput, Unauthenticated
from controlplane.domain.records import AllocationRecord, Exit
from controlplane.domain.specs import NAME_RE
from controlplane.ports.agents import JoinUses, NodeSessions, WorkQueue
from controlplane.services.agents import AgentService

audit = logging.getLogger("controlplane.audit")
R = TypeVar("R")

PREFIX = "/agent/v1"
SESSION_HEADER = "x-agent-session"
MAX_WAIT_S = 30.0
MAX_BATCH = 1000


async def until_disconnected(request: Request, waiting: Coroutine[Any, Any, R]) -> R | None:
    """`waiting`'s answer, or None as soon as the caller has gone (a long poll of a dead agent must not hold a
    broker connection for its whole wait, nor hold up the API's shutdown). What a cancelled take had already moved
    to the node's taken list is handed out again when its visibility lapses, as for an agent that died holding it."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    answer, watcher = asyncio.ensure_future(waiting), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({answer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, watcher):
            if not task.done():
                task.cancel()
        await asyncio.gather(answer, watcher, return_exceptions=True)
    return answer.result() if answer.done() and not answer.cancelled() else None


@dataclass
class AgentApi:
    """What the agent routes need: the node-restricted service, sessions and work lists, and the keys."""

    service: AgentService
    sessions: NodeSessions
    work: WorkQueue
    joins: JoinUses
    tokens: Tokens
    #: a session (and so the second agent's wait) lapses this long after its last heartbeat: the node's grace
    session_ttl_s: float = 3.0
    node_token_ttl_s: float = 365 * 86400.0
    #: graph work of agents on threads of its own (API Priority and Fairness, in small)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="agent-api"))

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


# --- bodies ------------------------------------------------------------------------------------
class JoinBody(BaseModel):
    name: str = Field(min_length=1, max_length=63)


class StartBody(BaseModel):
    #: what it registers: cpu_milli, memory_mib, labels, gpus, isolation (a NodeSpec without the name)
    node: dict[str, Any]
    #: the session of the dead agent process this one replaces on the same machine (it kept it 0600)
    replaces: str | None = Field(default=None, max_length=64)


class KeysBody(BaseModel):
    keys: list[tuple[str, int]] = Field(max_length=MAX_BATCH)


class Started(BaseModel):
    id: str
    incarnation: int
    pid: int
    log_path: str | None = None


class RunningBody(BaseModel):
    started: list[Started] = Field(max_length=MAX_BATCH)


class ExitBody(BaseModel):
    id: str
    incarnation: int
    exit_code: int
    output_tail: str = Field(default="", max_length=65536)
    failure: str | None = Field(default=None, max_length=4096)
    fields: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class ExitedBody(BaseModel):
    exits: list[ExitBody] = Field(max_length=MAX_BATCH)


class FailedBody(BaseModel):
    id: str
    incarnation: int
    error: str = Field(max_length=8192)


class UsageItem(BaseModel):
    id: str
    incarnation: int
    fields: dict[str, float | int | None]


class UsageBody(BaseModel):
    usage: list[UsageItem] = Field(max_length=MAX_BATCH)


class IdsBody(BaseModel):
    ids: list[str] = Field(max_length=MAX_BATCH)


#: what of an allocation record an agent needs to run and stop it
def _record(a: AllocationRecord) -> dict[str, Any]:
    return {"id": a.id, "incarnation": a.incarnation, "state": a.state.value, "node_id": a.node_id,
            "parent_id": a.parent_id, "argv": list(a.argv), "env": a.env, "cpu": a.cpu, "memory": a.memory,
            "gpu_ids": list(a.gpu_ids), "grace_period_s": a.grace_period_s, "stop_grace_s": a.extra.get("stop_grace_s")}


# --- errors ------------------------------------------------------------------------------------
def _error(exc: ControlPlaneError) -> JSONResponse:
    status = {ErrorCode.UNAUTHENTICATED: 401, ErrorCode.FORBIDDEN: 403}.get(exc.code) or STATUS.get(exc.code, 409)
    return JSONResponse({"code": exc.code.value, "field": exc.field, "message": exc.message}, status_code=status)


def _principal(request: Request, kind: Kind) -> Principal:
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise Unauthenticated("no credential", field="token")
    if principal.kind is not kind or principal.derived:
        audit.warning("refused %s: %s on the agent API (needs a %s credential)", principal.name, request.url.path, kind.value)
        raise Forbidden(f"{principal.name} may not use the agent API here: it needs a {kind.value} credential"
                        + (" (a node joins with a join credential from `controlplane node join-token`)"
                           if kind is Kind.JOIN else ""), field="token")
    return principal


def agent_router(api: AgentApi) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    service = api.service

    async def node_of(request: Request, node: str, *, what: str) -> Principal:
        """The node credential, for the node in the path and no other."""
        principal = _principal(request, Kind.NODE)
        if node != principal.subject:
            await api.call(_refuse_node, node, principal.subject, what)
        return principal

    def _refuse_node(node: str, by: str, what: str) -> None:
        service.refuse_node(node, by=by, what=what, why=f"its credential is for node {by} only")

    async def in_session(request: Request, node: str, *, what: str) -> Principal:
        principal = await node_of(request, node, what=what)
        session = request.headers.get(SESSION_HEADER)
        if not session:
            raise InvalidInput(f"start the agent first: {what} needs its session ({SESSION_HEADER})", field="session")
        if not await api.sessions.holds(node_id=node, session=session, ttl_s=api.session_ttl_s):
            audit.warning("refused node:%s: %s from a fenced agent (another agent process took the node)", node, what)
            raise Conflict(f"fenced: another agent process of node {node} took it over; this one must stop", field="session")
        return principal

    def route(path: str, method: str = "POST") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            async def handler(request: Request, **kwargs: Any) -> Response:
                try:
                    answer = await fn(request, **kwargs)
                except ControlPlaneError as exc:
                    return _error(exc)
                return answer if isinstance(answer, Response) else JSONResponse(answer)

            handler.__signature__ = _signature(fn)  # type: ignore[attr-defined]  # FastAPI reads the body models
            router.add_api_route(path, handler, methods=[method], response_model=None)
            return fn

        return wrap

    @route("/join")
    async def join(request: Request, body: JoinBody) -> dict[str, Any]:
        principal = _principal(request, Kind.JOIN)
        name = body.name
        if not NAME_RE.fullmatch(name):
            raise InvalidInput("must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
                               field="name")
        if principal.subject not in (EVERYTHING, name):
            audit.warning("refused %s: join as node %s (the join credential is for %s)", principal.name, name, principal.subject)
            raise Forbidden(f"this join credential is for node {principal.subject}, not {name}", field="name")
        if await api.call(service.bound_elsewhere, name, ""):
            audit.warning("refused %s: join as node %s, which belongs to another identity", principal.name, name)
            raise Forbidden(f"node {name} belongs to another identity already; deregister it first "
                            "(`controlplane deregister`), or join under another name", field="name")
        if not await api.joins.use(token_id=principal.token_id, uses=principal.uses or 1, until=principal.capability.expires_at):
            audit.warning("refused %s: join as node %s (the join credential is used up)", principal.name, name)
            raise Unauthenticated("this join credential has been used already; ask an admin for another "
                                  "(`controlplane node join-token`)", field="token")
        token, node_principal = node_token(api.tokens, name, ttl_s=api.node_token_ttl_s)
        audit.warning("node %s joined with %s: its identity is %s", name, principal.name, node_principal.token_id)
        return {"node": name, "token": token, "identity": node_principal.token_id,
                "expires_at": node_principal.capability.expires_at}

    @route("/nodes/{node}/start")
    async def start(request: Request, node: str, body: StartBody) -> dict[str, Any]:
        principal = await node_of(request, node, what="start an agent for")
        if await api.call(service.bound_elsewhere, node, principal.token_id):
            await api.call(_refuse_identity, node)
        session = secrets.token_urlsafe(18)
        opened = await api.sessions.open(node_id=node, session=session, replaces=body.replaces, ttl_s=api.session_ttl_s)
        if opened.refused is not None:
            audit.warning("refused node:%s: a second agent process (%s)", node, opened.refused)
            raise Conflict(f"{opened.refused}; stop the other agent of node {node} first (a restarted agent waits for it)",
                           field="session")
        try:
            requeued = await api.work.requeue(node_id=node)
            record, ended = await api.call(service.start, node, principal.token_id, body.node)
        except BaseException:
            await api.sessions.close(node_id=node, session=session)
            raise
        await api.sessions.renew(node_id=node, session=session, ttl_s=api.session_ttl_s)
        return {"session": session, "node": {"id": record.id, "status": record.status, "cpu": record.cpu,
                                             "memory": record.memory}, "ended": len(ended), "requeued": requeued}

    def _refuse_identity(node: str) -> None:
        service.refuse_node(node, by=node, what="start an agent for", why="the node belongs to another identity")

    @route("/nodes/{node}/register")
    async def register(request: Request, node: str, body: StartBody) -> dict[str, Any]:
        principal = await in_session(request, node, what="register")
        record = await api.call(service.register, node, principal.token_id, body.node)
        return {"id": record.id, "status": record.status}

    @route("/nodes/{node}/heartbeat")
    async def heartbeat(request: Request, node: str) -> Response:
        await node_of(request, node, what="heartbeat")
        session = request.headers.get(SESSION_HEADER)
        if not session:
            raise InvalidInput(f"start the agent first: a heartbeat needs its session ({SESSION_HEADER})", field="session")
        if not await api.sessions.renew(node_id=node, session=session, ttl_s=api.session_ttl_s):
            audit.warning("refused node:%s: heartbeat from a fenced agent", node)
            raise Conflict(f"fenced: another agent process of node {node} took it over; this one must stop", field="session")
        return Response(status_code=204)

    @route("/nodes/{node}/mirror")
    async def mirror(request: Request, node: str) -> dict[str, Any]:
        await in_session(request, node, what="heartbeat")
        return {"status": await api.call(service.mirror, node)}

    @route("/nodes/{node}/stop")
    async def stop(request: Request, node: str) -> Response:
        await node_of(request, node, what="stop the agent of")
        await api.sessions.close(node_id=node, session=request.headers.get(SESSION_HEADER) or "")
        return Response(status_code=204)

    @route("/nodes/{node}/work", method="GET")
    async def work(request: Request, node: str, wait: float = 20.0, limit: int = 64) -> dict[str, Any]:
        await in_session(request, node, what="take the work of")
        items = await until_disconnected(request, api.work.take(
            node_id=node, limit=max(1, min(limit, MAX_BATCH)), wait_s=max(0.0, min(wait, MAX_WAIT_S))))
        return {"items": [{"id": i.id, "kind": i.kind, "keys": [list(k) for k in i.keys]} for i in (items or [])]}

    @route("/nodes/{node}/work/ack")
    async def ack(request: Request, node: str, body: IdsBody) -> dict[str, Any]:
        await in_session(request, node, what="acknowledge the work of")
        return {"acked": await api.work.ack(node_id=node, ids=body.ids)}

    @route("/nodes/{node}/claim")
    async def claim(request: Request, node: str, body: KeysBody) -> dict[str, Any]:
        await in_session(request, node, what="claim allocations of")
        claimed = await api.call(service.claim, node, body.keys)
        return {"claimed": [{**_record(r), "token": token} for r, token in claimed]}

    @route("/nodes/{node}/running")
    async def running(request: Request, node: str, body: RunningBody) -> dict[str, Any]:
        await in_session(request, node, what="report running")
        started = [((s.id, s.incarnation), s.pid) for s in body.started]
        logs = {(s.id, s.incarnation): s.log_path for s in body.started if s.log_path}
        stopped = await api.call(service.running, node, started, logs)
        return {"stopped": [list(k) for k in sorted(stopped)]}

    @route("/nodes/{node}/exited")
    async def exited(request: Request, node: str, body: ExitedBody) -> Response:
        await in_session(request, node, what="report exited")
        exits = [Exit((e.id, e.incarnation), e.exit_code, e.output_tail, e.failure, dict(e.fields)) for e in body.exits]
        await api.call(service.exited, node, exits)
        return Response(status_code=204)

    @route("/nodes/{node}/failed")
    async def failed(request: Request, node: str, body: FailedBody) -> Response:
        await in_session(request, node, what="report failed to start")
        await api.call(service.failed_to_start, node, (body.id, body.incarnation), body.error)
        return Response(status_code=204)

    @route("/nodes/{node}/unstarted")
    async def unstarted(request: Request, node: str, body: KeysBody) -> Response:
        await in_session(request, node, what="report stopped")
        for key in body.keys:
            await api.call(service.stop_unstarted, node, key)
        return Response(status_code=204)

    @route("/nodes/{node}/gone")
    async def gone(request: Request, node: str, body: KeysBody) -> Response:
        await in_session(request, node, what="report agent stopped")
        await api.call(service.gone, node, body.keys)
        return Response(status_code=204)

    @route("/nodes/{node}/usage")
    async def usage(request: Request, node: str, body: UsageBody) -> Response:
        await in_session(request, node, what="report usage")
        await api.call(service.usage, node, [((u.id, u.incarnation), dict(u.fields)) for u in body.usage])
        return Response(status_code=204)

    @route("/nodes/{node}/allocations")
    async def allocations(request: Request, node: str, body: KeysBody) -> dict[str, Any]:
        await in_session(request, node, what="read allocations of")
        return {"allocations": [_record(a) for a in await api.call(service.allocations, node, body.keys)]}

    return router


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The route's parameters (path, query, body models) as FastAPI should read them; the answer is always a Response."""
    return inspect.signature(fn).replace(return_annotation=inspect.Signature.empty)
