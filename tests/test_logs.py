"""Looking at allocations with real node agents and processes: `controlplane logs`, `tree`, `events`, and the
GraphQL output field, as a user runs them on the machine of the agent.

Given a stack of real processes (FalkorDB, a node agent, a supervisor), when allocations print and end, then the
commands show what they printed, where their logs are, their pids, and their Terminated and decision events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from graph_schema.falkordb_server import FalkorDBServer
from tests.credentials import app_with_auth
from tests.credentials import client as client_with
from tests.stack import Stack, wait_for
from tests.store_passwords import server_config

pytestmark = pytest.mark.slow
NODE = "logbox"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = FalkorDBServer(server_config(tmp_path_factory.mktemp("logs-db"))).start()
    s = Stack(server, tmp_path_factory.mktemp("logs"), graph="logs")
    s.store.clear()
    s.start("supervisor", "supervisor")
    s.agent(NODE)
    yield s
    s.close()
    server.stop()


def spec(name: str, script: str, **kw: object) -> dict[str, Any]:
    return {"name": name, "argv": ["sh", "-c", script], "resources": {"cpu_milli": 10, "memory_mib": 8},
            "grace_period_s": 1.0, **kw}


def cli(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`controlplane <args>` as a user runs it on the agent's machine: through the stack's API, with the admin token
    of its data directory (DATA_DIR), where the agent writes its logs."""
    stack.api()
    # a wide terminal: rich wraps lines at the terminal's width
    env = {**stack.env, "COLUMNS": "400", "CONTROLPLANE_API_URL": stack.api_url}
    return subprocess.run([sys.executable, "-m", "controlplane", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def until(stack: Stack, allocation_id: str, ok: Any, what: str, timeout: float = 30) -> AllocationRecord:
    return cast(AllocationRecord, wait_for(lambda: (a := stack.control.queries.allocation(allocation_id)) and ok(a) and a,
                                           timeout, what))


def test_logs_prints_what_a_running_allocation_wrote_and_tree_shows_its_pid_and_log(stack: Stack) -> None:
    # Given a running allocation that printed to stdout and stderr
    [a] = stack.control.allocations.spawn(NODE, [spec("talker", "echo hello out; echo hello err >&2; sleep 600")])
    running = until(stack, a.id, lambda r: r.state is State.RUNNING and r.pid, "talker running")
    log_path = Path(str(running.extra["log_path"]))
    wait_for(lambda: log_path.exists() and b"hello err" in log_path.read_bytes(), what="its output in its log")
    # When the user asks for its logs, Then both streams are printed, in order
    out = cli(stack, "logs", a.id)
    assert (out.returncode, out.stdout) == (0, "hello out\nhello err\n"), out.stderr
    # And the log is where the agent's layout says, under the data dir
    assert log_path == stack.data_dir.absolute() / "runs" / NODE / f"{a.id}.1.log"
    # And `tree` shows its node, pid and log location
    tree = cli(stack, "tree", NODE)
    line = next(line for line in tree.stdout.splitlines() if a.id in line)
    assert f"on {NODE} pid={running.pid}" in line and f"{a.id}.1.log" in line, tree.stdout
    stack.control.allocations.stop(a.id)


def test_logs_follow_prints_lines_as_they_come_and_ends_with_the_process(stack: Stack) -> None:
    # Given an allocation that prints a line every 0.3 s, then exits
    [a] = stack.control.allocations.spawn(NODE, [spec("ticker", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.3; done")])
    until(stack, a.id, lambda r: r.state is State.RUNNING, "ticker running")
    # When the user follows its logs
    started = time.monotonic()
    out = cli(stack, "logs", a.id, "--follow")
    # Then every line is printed, and the command ends by itself once the process has
    assert (out.returncode, out.stdout) == (0, "".join(f"tick {i}\n" for i in range(1, 6))), out.stderr
    assert stack.control.queries.allocation(a.id).state is State.SUCCEEDED
    assert time.monotonic() - started < 30


def test_logs_of_an_earlier_incarnation_and_events_read_as_sentences(stack: Stack) -> None:
    # Given a parent watching a child that fails once and then runs
    [parent] = stack.control.allocations.spawn(NODE, [spec("boss", "sleep 600")])
    until(stack, parent.id, lambda r: r.state is State.RUNNING, "boss running")
    [kid] = stack.control.allocations.spawn(parent.id, [spec(
        "flaky", 'echo "run $CONTROLPLANE_INCARNATION"; [ "$CONTROLPLANE_INCARNATION" -gt 1 ] && sleep 600; exit 3',
        restart="permanent")])
    stack.control.allocations.watch(parent.id, kid.id)
    until(stack, kid.id, lambda r: r.incarnation == 2 and r.state is State.RUNNING, "flaky restarted")
    # When the user asks for each incarnation's logs, Then each prints what that incarnation wrote
    first, second = cli(stack, "logs", kid.id, "--incarnation", "1"), cli(stack, "logs", kid.id)
    assert (first.returncode, first.stdout, second.stdout) == (0, "run 1\n", "run 2\n"), first.stderr
    bad = cli(stack, "logs", kid.id, "--incarnation", "7")
    assert bad.returncode == 1 and "INVALID_INPUT" in bad.stderr and "incarnation" in bad.stderr
    # And `events` tells the exit, the parent's decision and nothing in Python reprs
    child_events = cli(stack, "events", kid.id).stdout
    assert "running -> failed" in child_events and "exited with code 3" in child_events
    assert "decision: restart" in child_events
    # And the watcher's history shows a readable Terminated event naming the child and how it ended
    parent_events = cli(stack, "events", parent.id).stdout
    assert f"Terminated({kid.id}: failed)" in parent_events and f"watched {kid.id} failed" in parent_events
    stack.control.allocations.stop(parent.id)


def test_logs_that_are_not_on_this_machine_say_where_they_are_and_show_the_stored_tail(stack: Stack) -> None:
    # Given an allocation that ended, whose log is not on the machine the user is on
    [a] = stack.control.allocations.spawn(NODE, [spec("gone", "echo last words")])
    done = until(stack, a.id, lambda r: r.state is State.SUCCEEDED, "gone succeeded")
    log_path = Path(str(done.extra["log_path"]))
    log_path.unlink()
    # When the user asks for its logs, Then it says which node and file hold it, and prints what the graph kept
    out = cli(stack, "logs", a.id)
    assert out.returncode == 0 and out.stdout == "last words\n"
    assert f"is on node {NODE} at {log_path}" in " ".join(out.stderr.split()) and "kept in the graph" in out.stderr


def test_graphql_output_reads_the_live_log_then_the_stored_tail(stack: Stack, tmp_path: Path) -> None:
    # Given the API on the agent's machine and a running allocation that printed
    [a] = stack.control.allocations.spawn(NODE, [spec("speaker", "echo live line; sleep 600")])
    running = until(stack, a.id, lambda r: r.state is State.RUNNING, "speaker running")
    log_path = Path(str(running.extra["log_path"]))
    wait_for(lambda: log_path.exists() and log_path.read_bytes(), what="its output")
    query = """query($id: ID!) { allocation(id: $id) { pid logPath node { id }
               output(tailBytes: 5) { incarnation nodeId path text source live } } }"""
    app, admin = app_with_auth(stack.control, tmp_path, runs_dir=stack.data_dir / "runs")
    with client_with(app, admin) as client:
        # When a client asks for its output, Then it reads the log itself, live
        got = client.post("/graphql", json={"query": query, "variables": {"id": a.id}}).json()["data"]["allocation"]
        assert (got["pid"], got["logPath"], got["node"]["id"]) == (running.pid, str(log_path), NODE)
        assert got["output"] == {"incarnation": 1, "nodeId": NODE, "path": str(log_path), "text": "line\n", "source": "log",
                                 "live": True}
        # When it has ended and its log is gone from this machine, Then the answer is the tail the graph kept
        stack.control.allocations.stop(a.id)
        until(stack, a.id, lambda r: r.state is State.STOPPED, "speaker stopped")
        os.unlink(log_path)
        got = client.post("/graphql", json={"query": query, "variables": {"id": a.id}}).json()["data"]["allocation"]
        assert (got["output"]["source"], got["output"]["text"], got["output"]["live"]) == ("graph", "line\n", False)
        # And a bad size names its argument
        bad = client.post("/graphql", json={"query": query.replace("tailBytes: 5", "tailBytes: 0"),
                                            "variables": {"id": a.id}}).json()
        assert bad["errors"][0]["extensions"] == {"code": "INVALID_INPUT", "field": "tailBytes"}
