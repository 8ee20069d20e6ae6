"""How a node agent talks to the control plane: the agent API over HTTP, with its node credential and nothing else.

Why httpx: one thread-safe client with a pool of keep-alive connections (the agent's
threads report concurrently), per-request timeouts (a long poll waits longer than a
report), and plain synchronous calls that fit the agent's threads; it is the HTTP
client FastAPI's own test client is built on, so the project already trusts it.

Answers map to what the agent does next: 2xx goes on; 401 (`Revoked`: the credential
expired or was revoked) and 409 on the session (`Fenced`: another agent process took
the node) end the agent; 403 is a refusal the agent logs; a refused connection or a 5xx
is `Unavailable`, retried by the caller (every report is idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from controlplane.domain.errors import ControlPlaneError, Forbidden, InvalidInput, Unavailable
from controlplane.domain.records import Exit

log = logging.getLogger(__name__)

Key = tuple[str, int]
T = TypeVar("T")
PREFIX = "/agent/v1"
SESSION_HEADER = "X-Agent-Session"
TIMEOUT_S = 30.0
#: the most items the agent API takes in one report (its MAX_BATCH): longer lists go in several requests
MAX_BATCH = 1000


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), MAX_BATCH):
        yield items[i : i + MAX_BATCH]


class Revoked(ControlPlaneError):
    """The API refuses this node credential (expired, revoked, or not one it knows): the agent must stop."""


class Fenced(ControlPlaneError):
    """Another agent process of this node took it over: this one must stop its processes and exit."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """What the agent needs to start one claimed incarnation, and the token it runs with (None: the API gives none)."""

    id: str
    incarnation: int
    parent_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cpu: int
    memory: int
    gpu_ids: tuple[str, ...]
    grace_period_s: float
    token: str | None = None
    stop_grace_s: float | None = None
    state: str = "starting"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.id, self.incarnation)

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Claimed:
        return cls(id=str(d["id"]), incarnation=int(d["incarnation"]), parent_id=str(d.get("parent_id") or ""),
                   argv=tuple(d.get("argv") or ()), env=dict(d.get("env") or {}), cpu=int(d.get("cpu") or 0),
                   memory=int(d.get("memory") or 0), gpu_ids=tuple(d.get("gpu_ids") or ()),
                   grace_period_s=float(d.get("grace_period_s") or 10.0), token=d.get("token"),
                   stop_grace_s=float(d["stop_grace_s"]) if d.get("stop_grace_s") is not None else None,
                   state=str(d.get("state") or "starting"))


def _raise(r: httpx.Response, what: str) -> None:
    try:
        body = r.json()
    except ValueError:
        body = {}
    message = str(body.get("message") or r.text[:200] or r.reason_phrase)
    field_name = body.get("field")
    if r.status_code == 401:
        raise Revoked(f"the API refuses this node's credential ({what}): {message}", field="token")
    if r.status_code == 409 and field_name == "session" and message.startswith("fenced"):
        raise Fenced(message, field="session")
    if r.status_code == 403:
        raise Forbidden(message, field=field_name)
    if r.status_code >= 500 or r.status_code == 429:
        raise Unavailable(f"the API could not {what} ({r.status_code}): {message}")
    if r.status_code == 409:
        from controlplane.domain.errors import Conflict

        raise Conflict(message, field=field_name)
    raise InvalidInput(f"{what}: {message}", field=field_name)


def join(api_url: str, join_token: str, node: str, *, timeout_s: float = TIMEOUT_S) -> tuple[str, str]:
    """Exchange a join credential for this node's own credential: (token, identity)."""
    try:
        r = httpx.post(f"{api_url.rstrip('/')}{PREFIX}/join", json={"name": node}, timeout=timeout_s,
                       headers={"Authorization": f"Bearer {join_token}"})
    except httpx.TransportError as exc:
        raise Unavailable(f"the API at {api_url} does not answer: {exc}") from exc
    if r.status_code != 200:
        _raise(r, "join")
    body = r.json()
    return str(body["token"]), str(body["identity"])


class ApiLink:
    """The agent API for one node, with its credential; `session` once the agent process has started."""

    def __init__(self, api_url: str, token: str, node: str, *, timeout_s: float = TIMEOUT_S, connections: int = 64) -> None:
        self.api_url = api_url.rstrip("/")
        self.node = node
        self.session: str | None = None
        self._client = httpx.Client(
            base_url=f"{self.api_url}{PREFIX}/nodes/{node}", timeout=timeout_s,
            headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def _call(self, method: str, path: str, what: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
              timeout_s: float | None = None) -> Any:
        headers = {SESSION_HEADER: self.session} if self.session else {}
        try:
            r = self._client.request(method, path, json=json, params=params, headers=headers,
                                     timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise Unavailable(f"the API at {self.api_url} does not answer ({what}): {exc}") from exc
        if r.status_code >= 300:
            _raise(r, what)
        return r.json() if r.status_code != 204 and r.content else None

    # --- the agent process -------------------------------------------------------------------
    def start(self, *, spec: Mapping[str, Any], replaces: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("POST", "/start", "start", json={"node": dict(spec), "replaces": replaces})
        self.session = str(answer["session"])
        return answer

    def register(self, *, spec: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("POST", "/register", "register", json={"node": dict(spec)})
        return answer

    def heartbeat(self) -> None:
        self._call("POST", "/heartbeat", "heartbeat", timeout_s=5.0)

    def mirror(self) -> str | None:
        status = self._call("POST", "/mirror", "heartbeat")["status"]
        return str(status) if status is not None else None

    def stop_session(self) -> None:
        self._call("POST", "/stop", "stop", timeout_s=5.0)

    # --- work ----------------------------------------------------------------------------------
    def take(self, *, wait_s: float, limit: int) -> list[tuple[str, str, list[Key]]]:
        """(item id, kind, keys) of the node's work, waiting up to `wait_s` for some."""
        items = self._call("GET", "/work", "take work", params={"wait": wait_s, "limit": limit}, timeout_s=wait_s + 15)["items"]
        return [(str(i["id"]), str(i["kind"]), [(str(a), int(n)) for a, n in i["keys"]]) for i in items]

    def ack(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(ids):
            self._call("POST", "/work/ack", "acknowledge work", json={"ids": list(chunk)})

    # --- reports -------------------------------------------------------------------------------
    def claim(self, keys: Sequence[Key]) -> list[Claimed]:
        return [Claimed.of(c) for chunk in _chunks(keys)
                for c in self._call("POST", "/claim", "claim", json={"keys": [list(k) for k in chunk]})["claimed"]]

    def running(self, started: Sequence[tuple[Key, int]], log_paths: Mapping[Key, str]) -> set[Key]:
        stopped: set[Key] = set()
        for chunk in _chunks(started):
            body = {"started": [{"id": k[0], "incarnation": k[1], "pid": pid, "log_path": log_paths.get(k)} for k, pid in chunk]}
            stopped |= {(str(i), int(n)) for i, n in self._call("POST", "/running", "report running", json=body)["stopped"]}
        return stopped

    def exited(self, exits: Sequence[Exit]) -> None:
        for chunk in _chunks(exits):
            body = {"exits": [{"id": e.key[0], "incarnation": e.key[1], "exit_code": e.exit_code, "output_tail": e.output_tail,
                               "failure": e.failure, "fields": dict(e.fields)} for e in chunk]}
            self._call("POST", "/exited", "report exits", json=body)

    def failed_to_start(self, key: Key, error: str) -> None:
        self._call("POST", "/failed", "report a failed start", json={"id": key[0], "incarnation": key[1], "error": error[:8000]})

    def stop_unstarted(self, key: Key) -> None:
        self._call("POST", "/unstarted", "report a stop", json={"keys": [list(key)]})

    def gone(self, keys: Sequence[Key]) -> None:
        for chunk in _chunks(keys):
            self._call("POST", "/gone", "report the agent stopped", json={"keys": [list(k) for k in chunk]}, timeout_s=10.0)

    def usage(self, usage: Sequence[tuple[Key, Mapping[str, Any]]]) -> None:
        for chunk in _chunks(usage):
            body = {"usage": [{"id": k[0], "incarnation": k[1], "fields": dict(f)} for k, f in chunk]}
            self._call("POST", "/usage", "report usage", json=body)

    def allocations(self, keys: Sequence[Key]) -> list[Claimed]:
        """The current records of these incarnations, if they are still this node's (stale ones are left out)."""
        return [Claimed.of(a) for chunk in _chunks(keys) for a in
                self._call("POST", "/allocations", "read allocations", json={"keys": [list(k) for k in chunk]})["allocations"]]

    def close(self) -> None:
        self._client.close()
