"""`controlplane up` as a user runs it: it supervises what it starts, and stops all of it on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controlplane.ports.store import GraphStore
from graph_schema.falkordb_server import find_free_port
from tests.stack import wait_for

pytestmark = pytest.mark.slow


class Up:
    def __init__(self, tmp: Path, **env_overrides: str) -> None:
        self.port = find_free_port()
        self.data_dir = tmp / "data"
        env = {**os.environ, "HEARTBEAT_S": "0.5", "NODE_GRACE_S": "3", **env_overrides}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "up", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--node", "up-node"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        token = (self.data_dir / "admin.token").read_text().strip()  # written 0600 by `up` on its first start
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql", data=body,
                                         headers={"content-type": "application/json", "accept": "application/json",
                                                  "authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = dict(json.loads(r.read()))
        assert not answer.get("errors"), answer
        return dict(answer["data"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as err:
            return dict(json.loads(err.read()))

    def child(self, word: str) -> int:
        """The pid of the child process of `up` whose command line has `word`."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-f", word], capture_output=True, text=True).stdout.split()
        assert out, f"no child {word!r} of controlplane up"
        return int(out[0])

    def descendants(self) -> list[int]:
        """Every process under `up` (the redis-servers run in sessions of their own, so by parent, not group)."""
        rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
        children: dict[int, list[int]] = {}
        for row in rows:
            if row.strip():
                pid, ppid = (int(x) for x in row.split())
                children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.proc.pid]
        while todo:
            for kid in children.get(todo.pop(), []):
                found.append(kid)
                todo.append(kid)
        return found


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    u = Up(tmp_path)
    try:
        wait_for(lambda: u.health().get("status") == "ok", 90, "controlplane up to be healthy", every=0.5)
        yield u
    finally:
        if u.proc.poll() is None:
            u.proc.send_signal(signal.SIGINT)
            try:
                u.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(u.proc.pid, signal.SIGKILL)
                u.proc.wait()
        u.reader.join(timeout=10)
        if u.proc.stdout is not None:
            u.proc.stdout.close()


def test_a_crashed_scheduler_is_restarted_and_health_says_so_meanwhile(up: Up) -> None:
    # Given a healthy stack
    old = up.child("scheduler")
    # When its scheduler is killed
    os.kill(old, signal.SIGKILL)
    # Then health reports the component down, up prints the restart, and a new scheduler runs
    degraded = wait_for(lambda: (h := up.health())["status"] == "degraded" and h, 20, "health to say degraded")
    assert any("scheduler is down" in r for r in degraded["reasons"]), degraded
    wait_for(lambda: any("scheduler restarted" in line for line in up.lines), 30, "the restart to be printed")
    new = wait_for(lambda: up.child("scheduler"), 10, "a new scheduler")
    assert new != old
    wait_for(lambda: up.health()["status"] == "ok", 30, "health to be ok again")


def test_sigterm_stops_every_process_it_started(up: Up) -> None:
    # Given the stack's processes: supervisor, scheduler, node agent, two redis-servers
    started = up.descendants()
    assert len(started) >= 5, started
    # When it is asked to stop as a service manager would
    up.proc.send_signal(signal.SIGTERM)
    up.proc.wait(timeout=40)
    # Then nothing it started is left running
    time.sleep(0.5)
    left = [p for p in started if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()]
    assert left == [], f"left running: {left}"
    assert not (up.data_dir / "stack.json").exists()


def test_the_embedded_stores_take_only_their_generated_passwords(up: Up) -> None:
    # Given a healthy stack, started with no password given
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    secrets_dir = up.data_dir / "secrets"
    files = sorted(secrets_dir.iterdir())
    # Then it made four passwords (each server's administrator and control plane user), 0600 in a 0700 directory
    assert [f.name for f in files] == ["broker-admin.password", "broker.password", "graph-admin.password", "graph.password"]
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    passwords = [f.read_text().strip() for f in files]
    assert len(set(passwords)) == 4 and all(len(p) >= 32 for p in passwords)
    # and stack.json (0600) names the secrets instead of holding them
    stack_file = up.data_dir / "stack.json"
    stack = json.loads(stack_file.read_text())
    assert stack_file.stat().st_mode & 0o777 == 0o600
    assert (stack["graph_secret"], stack["broker_secret"]) == ("graph", "broker")
    # and no password is in stack.json, in anything the stack printed, or on a command line of what it started
    time.sleep(1)  # the children's start-up lines
    shown = "\n".join([stack_file.read_text(), *up.lines])
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in up.descendants() if Path(f"/proc/{p}").exists()]
    for password in passwords:
        assert password not in shown
        assert all(password.encode() not in c for c in cmdlines)
    assert any(line.split()[:2] == ["graph", f"redis://controlplane:***@{stack['graph_uri'].split('@')[1]}"]
               for line in up.lines), up.lines
    # and a client of either server without the password, or with a wrong one, is refused
    for url in (stack["graph_uri"], stack["broker_url"]):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url.replace("controlplane@", ""), retry=Retry(NoBackoff(), 0)).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url.replace("controlplane@", "controlplane:wrong@"), retry=Retry(NoBackoff(), 0)).ping()
    # and the graph user may not reconfigure its server
    graph_pw = (secrets_dir / "graph.password").read_text().strip()
    graph_client = redis.Redis.from_url(stack["graph_uri"].replace("controlplane@", f"controlplane:{graph_pw}@"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        graph_client.config_set("dir", "/tmp")
    # while the CLI, given only the data directory, finds the stack (its API) and the admin token
    env = {k: v for k, v in os.environ.items() if k not in ("GRAPH_URI", "REDIS_URL")}
    status = subprocess.run([sys.executable, "-m", "controlplane", "status", "--data-dir", str(up.data_dir)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "up-node" in status.stdout


SPAWN = """mutation($spec: AllocationSpecInput!) { spawnAllocation(parent: "up-node", spec: $spec) { id } }"""
STATE = """query($id: ID!) { allocation(id: $id) { state incarnation } }"""


@pytest.fixture
def engine_env(store: GraphStore, request: pytest.FixtureRequest) -> dict[str, str]:
    """`up` on the engine under test: the embedded FalkorDB, or the test's Neo4j or Gremlin Server."""
    if store.engine == "falkordb":
        return {}
    uri = request.getfixturevalue({"neo4j": "neo4j_uri", "gremlin": "gremlin_url"}[store.engine])
    store.clear()
    return {"GRAPH_BACKEND": store.engine, "GRAPH_URI": uri}


def test_ctrl_c_is_a_power_off_and_the_next_up_restarts_what_the_policies_say(tmp_path: Path, engine_env: dict[str, str]) -> None:
    # Given a stack running a permanent and a temporary allocation
    first = Up(tmp_path, **engine_env)
    try:
        wait_for(lambda: first.health().get("status") == "ok", 90, "controlplane up", every=0.5)
        kinds = {}
        for restart in ("permanent", "temporary"):
            spec = {"name": restart, "argv": ["sleep", "600"], "restart": restart,
                    "resources": {"cpuMilli": 10, "memoryMib": 16}}
            kinds[restart] = first.graphql(SPAWN, spec=spec)["spawnAllocation"]["id"]
        for a in kinds.values():
            wait_for(partial(lambda i: first.graphql(STATE, id=i)["allocation"]["state"] == "RUNNING", a), 60, f"{a} running")
        passwords = {f.name: f.read_text() for f in (first.data_dir / "secrets").iterdir()} if not engine_env else {}
    finally:
        # When the user presses Ctrl-C
        first.stop()
    # Then the next `up` finds them ended with the node agent, and their parent decides as for a lost node:
    # the permanent one runs again as a new incarnation, the temporary one stays ended
    second = Up(tmp_path, **engine_env)
    try:
        wait_for(lambda: second.health().get("status") == "ok", 90, "controlplane up again", every=0.5)
        again = wait_for(lambda: (s := second.graphql(STATE, id=kinds["permanent"])["allocation"])["state"] == "RUNNING" and s,
                         60, "the permanent one running again")
        assert again["incarnation"] == 2
        assert second.graphql(STATE, id=kinds["temporary"])["allocation"] == {"state": "LOST", "incarnation": 1}
        if not engine_env:  # the embedded stores kept their passwords: the same files, read again
            assert passwords == {f.name: f.read_text() for f in (second.data_dir / "secrets").iterdir()}
    finally:
        second.stop()
