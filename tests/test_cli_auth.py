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

    def start(self) -> str:
        self.proc = subprocess.Popen([sys.executable, "-m", "controlplane", "up", "--port", str(self.port), "--no-worker"],
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

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **({"CONTROLPLANE_TOKEN": token} if token else {})}
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
