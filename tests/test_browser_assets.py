"""The graph browser's and GraphiQL's pages load nothing from outside the API, and everything they load is served.

No browser needed: a machine without Chromium still checks that the package
ships every file the pages name (scripts, styles, ES module imports), that the
pinned libraries carry their licences, and that the static route serves only
files under static/.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.credentials import app_with_auth
from tests.credentials import client as client_with

VENDOR = Path(__file__).resolve().parent.parent / "controlplane" / "api" / "static" / "vendor"
ASSET = re.compile(r'''(?:src|href)="([^"#][^"]*)"''')
IMPORT = re.compile(r'''(?:^|\n)\s*import\s[^"']*["']([^"']+)["']''')


@pytest.fixture
def client(falkordb_server: FalkorDBServer, tmp_path: Path) -> Iterator[TestClient]:
    store = FalkorDBStore(falkordb_server.url, graph="browser-assets")
    app, admin = app_with_auth(assemble(store), tmp_path)
    with client_with(app, admin) as c:
        yield c
    store.close()


def loaded_by(client: TestClient, page: str, **headers: str) -> set[str]:
    """Every path a page loads: its scripts and styles, and the ES modules they import, transitively."""
    r = client.get(page, headers=headers)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    found = {u for u in ASSET.findall(r.text) if not u.startswith("data:")}
    todo = [u for u in found if u.endswith(".js")]
    while todo:
        script = todo.pop()
        body = client.get(script).text
        for target in IMPORT.findall(body):
            path = target if target.startswith("/") else script.rsplit("/", 1)[0] + "/" + target.removeprefix("./")
            if path not in found:
                found.add(path)
                todo.append(path)
    return found


@pytest.mark.parametrize(("page", "headers"), [("/browser", {}), ("/graphql", {"Accept": "text/html"})])
def test_a_page_loads_only_files_the_api_serves(client: TestClient, page: str, headers: dict[str, str]) -> None:
    assets = loaded_by(client, page, **headers)
    assert assets and all(a.startswith("/browser/static/") or a == "/graphql" for a in assets), assets
    for asset in assets - {"/graphql"}:
        r = client.get(asset)
        assert r.status_code == 200 and r.content, asset


def test_the_browser_page_imports_its_own_modules_and_the_pinned_libraries(client: TestClient) -> None:
    assets = loaded_by(client, "/browser")
    assert {"/browser/static/vendor/cytoscape/cytoscape.min.js", "/browser/static/vendor/cytoscape-dagre/cytoscape-dagre.min.js",
            "/browser/static/browser/js/app.js", "/browser/static/browser/js/live.js"} <= assets


def test_every_vendored_library_is_pinned_and_has_its_licence_beside_it() -> None:
    versions = json.loads((VENDOR / "VERSIONS.json").read_text())
    assert set(versions) == {"cytoscape", "cytoscape-dagre", "react", "react-dom", "graphiql", "@graphiql/plugin-explorer"}
    for name, entry in versions.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]) and entry["license"] == "MIT", (name, entry)
        for f in entry["files"]:
            assert (VENDOR / f).stat().st_size > 0 and "MIT" in (VENDOR / f).parent.joinpath("LICENSE").read_text()
    pinned = json.loads((VENDOR.parents[3] / "scripts" / "browser-assets" / "package.json").read_text())["dependencies"]
    assert {n: v["version"] for n, v in versions.items()} == {n: pinned[n] for n in versions}


def test_the_page_learns_the_engine_and_its_language(client: TestClient) -> None:
    got = client.get("/browser/config.json").json()
    assert (got["engine"], got["language"], got["rawQuery"]["maxLimit"]) == ("falkordb", "cypher", 10_000)


@pytest.mark.parametrize("path", ["/browser/static/../browser.py", "/browser/static/%2e%2e/browser.py",
                                  "/browser/static/vendor/nothing.js", "/browser/static/"])
def test_the_static_route_serves_nothing_outside_its_directory(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
