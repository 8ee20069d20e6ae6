"""Newcomers keep one command: `controlplane up` makes the admin token on first start, prints it once as a
GraphiQL login address, writes it 0600; the CLI uses it to create and revoke narrower tokens."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from graph_schema.falkordb_server import find_free_port


class Up:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.env = {**os.environ, "DATA_DIR": str(data_dir)}
        self.env.pop("CONTROLPLANE_TOKEN", None)
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self, *args: str) -> str:
        """`controlplane up` (with no node agent unless `args` say otherwise), until it has printed its addresses."""
        self.proc = subprocess.Popen([sys.executable, "-m", "controlplane", "up", "--port", str(self.port), *(args or ["--no-worker"])],
                                     env={**self.env, "COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        for line in self.proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        self.output = "".join(lines)
        while time.monotonic() < deadline:  # the address is printed just before the API listens
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        return self.output

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def cli(self, *args: str, token: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**(env or self.env), **({"CONTROLPLANE_TOKEN": token} if token else {}), "COLUMNS": "300"}
        return subprocess.run([sys.executable, "-m", "controlplane", *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    u = Up(tmp_path / "data", find_free_port())
    yield u
    u.stop()


@pytest.mark.timeout(240)
def test_up_prints_the_admin_token_once_and_the_cli_delegates_and_revokes_with_it(up: Up) -> None:
    # Given a first start
    first = up.start()
    token_file = up.data_dir / "admin.token"
    admin = token_file.read_text().strip()
    # Then it printed a GraphiQL address carrying the token it wrote, 0600, beside 0600 keys
    assert f"/graphql?token={admin}" in first.replace("\n", "")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((up.data_dir / "keys" / "signing.pem").stat().st_mode) == 0o600
    api = f"http://127.0.0.1:{up.port}"
    assert httpx.post(f"{api}/graphql", json={"query": "{ whoami { principal } }"}).status_code == 401
    # When the CLI (reading the token from the data dir) creates a read-only token for 60 s
    created = up.cli("token", "create", "--verbs", "read", "--ttl", "60")
    assert created.returncode == 0, created.stderr
    reader = created.stdout.strip()
    # Then that token reads and is what it says, and cannot spawn
    who = up.cli("token", "whoami", token=reader)
    assert who.returncode == 0 and "admin:admin/" in who.stdout and "read on *" in who.stdout
    wider = up.cli("token", "create", "--verbs", "read,spawn", token=reader)
    assert wider.returncode == 1 and "FORBIDDEN" in wider.stderr
    # When it is revoked, Then it no longer works
    assert up.cli("token", "revoke", reader).returncode == 0
    gone = up.cli("token", "whoami", token=reader)
    assert gone.returncode == 1 and "UNAUTHENTICATED" in gone.stderr and "revoked" in gone.stderr
    # When the stack starts again, Then the same token works and is not printed again
    up.stop()
    again = up.start()
    assert admin not in again.replace("\n", "") and "admin.token" in again
    assert up.cli("token", "whoami").returncode == 0


@pytest.mark.timeout(300)
def test_the_operator_cli_works_from_another_machine_through_the_api_and_acts_only_as_its_token_may(up: Up, tmp_path: Path) -> None:
    # Given a stack with a node agent, and an operator's and a viewer's token made by the admin
    up.start("--node", "cli-node")
    api = f"http://127.0.0.1:{up.port}"
    operator = up.cli("token", "create", "--role", "operator", "--ttl", "600").stdout.strip()
    viewer = up.cli("token", "create", "--role", "viewer", "--ttl", "600").stdout.strip()
    assert operator and viewer
    # and a machine that has the API's address and a token, and no data directory of the stack (no store secret)
    elsewhere = tmp_path / "laptop"
    laptop = {**{k: v for k, v in os.environ.items() if k != "CONTROLPLANE_TOKEN"}, "DATA_DIR": str(elsewhere),
              "CONTROLPLANE_API_URL": api}

    def cli(*args: str, token: str = operator) -> subprocess.CompletedProcess[str]:
        return up.cli(*args, token=token, env=laptop)

    deadline = time.monotonic() + 60
    while "cli-node" not in (shown := cli("status").stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "cli-node" in shown and "ready" in shown, shown
    # When the operator spawns from there, Then it runs on the node, and tree, events and logs show it
    spawned = cli("spawn", "cli-node", "--name", "greeter", "--memory", "32", "--", "sh", "-c", "echo hello-from-cli; sleep 600")
    assert spawned.returncode == 0, spawned.stderr
    allocation_id = spawned.stdout.split()[0]
    while "running" not in (tree := cli("tree", "cli-node").stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "greeter" in tree and allocation_id in tree and "running" in tree, tree
    events = cli("events", allocation_id)
    assert events.returncode == 0 and "placed -> starting" in events.stdout and "starting -> running" in events.stdout, events.stdout
    while "hello-from-cli" not in (logs := cli("logs", allocation_id)).stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    assert logs.returncode == 0 and "hello-from-cli" in logs.stdout, (logs.stdout, logs.stderr)  # its file: one machine here
    # When the viewer tries to act, Then it is refused with the API's reason and nothing changes; it may look
    for act in (["stop", allocation_id], ["cordon", "cli-node"], ["spawn", "cli-node", "--", "true"]):
        refused = cli(*act, token=viewer)
        assert refused.returncode == 1 and "FORBIDDEN" in refused.stderr, (act, refused.stdout, refused.stderr)
    assert "running" in cli("tree", allocation_id, token=viewer).stdout
    assert "cordoned" not in cli("status", token=viewer).stdout
    # When the operator stops it, Then it ends; a job submitted from there runs to success and is listed
    assert cli("stop", allocation_id).returncode == 0
    while "stopped" not in (tree := cli("tree", allocation_id).stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "stopped" in tree, tree
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: from-laptop\ntasks:\n  - name: hello\n    argv: [\"true\"]\n    resources: {cpu_milli: 10, memory_mib: 16}\n")
    submitted = cli("submit", str(job_file), "--node", "cli-node", "--wait")
    assert submitted.returncode == 0 and "succeeded" in submitted.stdout, (submitted.stdout, submitted.stderr)
    job_id = submitted.stdout.split()[1]
    assert job_id in cli("jobs").stdout and "hello" in cli("jobs", job_id).stdout
    # and an unknown allocation is NOT_FOUND, a bad spec INVALID_INPUT naming its field
    missing = cli("tree", "no-such-thing")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr, missing.stderr
    bad = cli("spawn", "cli-node", "--cpu", "-1", "--", "true")
    assert bad.returncode == 1 and "INVALID_INPUT" in bad.stderr and "cpuMilli" in bad.stderr, bad.stderr
    # and the laptop's data directory holds no secret of the stack's stores
    assert not (elsewhere / "secrets").exists() and not (elsewhere / "stack.json").exists()
