"""What a person sees in the graph browser, for tests: Chromium, a real `controlplane up`, and the page's readings.

- `launch_chromium`: Debian's chromium driven by Playwright (Playwright's own browser
  download is not reachable here), with the flags that keep it off Google's servers.
- `UpStack`: `python -m controlplane up` as a child process on one engine, its API
  address, GraphQL over HTTP for the test's own actions, and a stop like Ctrl-C.
- Page readings: what is drawn (vertices, edges, their ends and positions), and the
  colour actually painted on the canvas where a vertex is, compared with the legend.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
NODE = "browser-node"
#: environment an `up` must not inherit from the test run
_OWN_ENV = ("GRAPH_BACKEND", "GRAPH_URI", "GRAPH_USER", "GRAPH_PASSWORD", "GRAPH_NAME", "REDIS_URL", "DATA_DIR")


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class UpStack:
    """`controlplane up` on one engine, with one local node agent named NODE."""

    def __init__(self, engine: str, data_dir: Path, env: dict[str, str]) -> None:
        self.engine = engine
        self.language = "gremlin" if engine == "gremlin" else "cypher"
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "up.log"
        base = {k: v for k, v in os.environ.items() if k not in _OWN_ENV}
        base.update({"DATA_DIR": str(data_dir), "HEARTBEAT_S": "0.5", "NODE_GRACE_S": "5", **env})
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "up", "--port", str(self.port), "--node", NODE, "--concurrency", "4"],
            env=base, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def token(self) -> str:
        """The admin token `controlplane up` wrote on its first start (what a person pastes from its output)."""
        return (self.data_dir / "admin.token").read_text().strip()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controlplane up exited ({self.proc.returncode}): {self.output()[-2000:]}")
            if "authorization" not in self.http.headers and (self.data_dir / "admin.token").exists():
                self.http.headers["Authorization"] = f"Bearer {self.token}"
            try:
                node = self.gql('query($id: ID!) { node(id: $id) { status } }', id=NODE)["node"]
                if node and node["status"] == "ready":
                    return
            except (httpx.HTTPError, AssertionError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"controlplane up not ready after {timeout}s: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = self.http.post("/graphql", json={"query": query, "variables": variables}).json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    def spawn(self, name: str, argv: list[str], parent: str = NODE, **spec: Any) -> str:
        created = self.gql(
            "mutation($parent: ID!, $spec: AllocationSpecInput!) { spawnAllocation(parent: $parent, spec: $spec) { id } }",
            parent=parent, spec={"name": name, "argv": argv, "resources": {"cpuMilli": 10, "memoryMib": 8},
                                 "gracePeriodS": 1.0, **spec},
        )
        return str(created["spawnAllocation"]["id"])

    def allocation(self, allocation_id: str) -> dict[str, Any]:
        got: dict[str, Any] = self.gql(
            "query($id: ID!) { allocation(id: $id) { id state incarnation restarts pid exitCode } }", id=allocation_id
        )["allocation"]
        return got

    def wait_allocation(self, allocation_id: str, state: str, incarnation: int = 1, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            a = self.allocation(allocation_id)
            if a["state"] == state.upper() and a["incarnation"] >= incarnation:
                return a
            time.sleep(0.2)
        raise AssertionError(f"{allocation_id} not {state} (incarnation >= {incarnation}) after {timeout}s: {a}")

    def stop(self) -> None:
        """Ctrl-C, as a person stops it: `up` stops its children, then exits."""
        self.http.close()
        children = _children(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in children:  # never leave a node agent or a redis-server behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


# --- readings of the page ------------------------------------------------------------------
DRAWN = """() => {
  const cy = window.controlplaneBrowser.cy;
  return {
    vertices: Object.fromEntries(cy.nodes().map((n) => [n.id(), {label: n.data('label'), state: n.data('state'),
      x: n.position('x'), y: n.position('y'), stub: n.hasClass('stub')}])),
    edges: cy.edges().map((e) => [e.data('source'), e.data('type'), e.data('target')]),
  };
}"""

# The colours painted inside a vertex's box on the canvas layers, most frequent first.
PAINTED = """(key) => {
  const cy = window.controlplaneBrowser.cy;
  const n = cy.getElementById(key);
  if (n.empty()) return [];
  const bb = n.renderedBoundingBox({includeLabels: false, includeOverlays: false});
  const counts = new Map();
  for (const canvas of document.querySelectorAll('#graph canvas')) {
    const ctx = canvas.getContext('2d');
    const scale = canvas.width / canvas.clientWidth;
    for (let i = 1; i < 8; i++) for (let j = 1; j < 6; j++) {
      const x = Math.round((bb.x1 + (bb.x2 - bb.x1) * i / 8) * scale);
      const y = Math.round((bb.y1 + (bb.y2 - bb.y1) * j / 6) * scale);
      const [r, g, b, a] = ctx.getImageData(x, y, 1, 1).data;
      if (a < 250) continue;
      const c = `rgb(${r},${g},${b})`;
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([c]) => c);
}"""

LEGEND = """(state) => getComputedStyle(document.querySelector(`#legend [data-state="${state}"] .swatch`)).backgroundColor"""


def compact(colour: str) -> str:
    return re.sub(r"\s+", "", colour)


def legend_colour(page: Any, state: str) -> str:
    return compact(page.evaluate(LEGEND, state))


def painted_as(page: Any, key: str, state: str, timeout: float = 30) -> None:
    """Wait until the vertex `key` is painted in the legend's colour for `state` (the dominant colour in its box)."""
    want = legend_colour(page, state)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = page.evaluate(PAINTED, key)
        if seen[:2] and want in seen[:2]:
            return
        time.sleep(0.2)
    raise AssertionError(f"{key} is not painted {state} ({want}) after {timeout}s; painted: {seen[:4]}")


def drawn(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(DRAWN)
    return result


def click_vertex(page: Any, key: str) -> None:
    """A real mouse click where the vertex is drawn on the canvas."""
    pos = page.evaluate("""(k) => {
      const n = window.controlplaneBrowser.cy.getElementById(k);
      const p = n.renderedPosition();
      const r = document.getElementById('graph').getBoundingClientRect();
      return {x: r.left + p.x, y: r.top + p.y};
    }""", key)
    page.mouse.click(pos["x"], pos["y"])


def open_page(page: Any, up: UpStack) -> None:
    page.goto(f"{up.url}/browser?token={up.token}")  # the browser address `controlplane up` printed
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    page.wait_for_selector("#live[data-live=on]", timeout=30_000)


def run_query(page: Any, text: str, *, limit: int | None = None) -> None:
    """Type the query, run it, and wait until the page has the answer (drawn) or the error (shown)."""
    page.evaluate("() => { document.getElementById('status').textContent = ''; }")
    page.fill("#query", text)
    if limit is not None:
        page.select_option("#limit", str(limit))
    page.click("#run")
    page.wait_for_function(
        "() => !document.getElementById('run').disabled && (document.getElementById('status').textContent.includes('rows')"
        " || !document.getElementById('error').hidden)",
        timeout=60_000,
    )


def shot(page: Any, engine: str, name: str) -> Path:
    path = ARTIFACTS / engine / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path
