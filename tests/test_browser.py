"""The graph browser in a real Chromium against a real `controlplane up`, on every engine.

Given `controlplane up` (embedded FalkorDB; or Neo4j / Gremlin Server as GRAPH_URI, with
the session's FalkorDB as the broker) and its local node agent, when a person uses
/browser, then they see what the graph holds: a query in the engine's own language
drawn and tabled, a vertex's properties and neighbours on a click, an allocation
appearing and changing colour as its events arrive, a restart after its process is
killed, the engine's error for a malformed query, GraphiQL with no internet. Colours
are read off the canvas where the vertex is painted and compared with the legend.
Screenshots of each step go to test-artifacts/browser/<engine>/.

Chromium missing (a laptop) skips; in CI (CI=true) it fails.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.browser_page import (
    CHROMIUM,
    NODE,
    UpStack,
    click_vertex,
    drawn,
    launch_chromium,
    open_page,
    painted_as,
    run_query,
    shot,
)
from tests.conftest import ENGINES, _unavailable

pytestmark = pytest.mark.slow

CYPHER = {
    "node": f"MATCH (n:Node {{id: '{NODE}'}}) RETURN n",
    "children": f"MATCH (n:Node {{id: '{NODE}'}}) OPTIONAL MATCH (n)-[r:PARENT_OF]->(a:Allocation) RETURN n, r, a",
    "malformed": "MATC (n) RETURN n",
    "write": "CREATE (:X {id: 'x'})",
    "many": "UNWIND range(1, 256) AS i RETURN i",
    "bulk": "MATCH (b:Bulk) OPTIONAL MATCH (b)-[r:LINK]->(c:Bulk) RETURN b, r",
}
GREMLIN = {
    "node": f"g.V('{NODE}')",
    "children": f"g.V('{NODE}').union(identity(), outE('PARENT_OF'), out('PARENT_OF'))",
    "malformed": "g.V(.hasLabel('Node')",
    "write": "g.addV('X').property('id', 'x')",
    "many": "g.inject(1).repeat(union(identity(), identity())).times(8)",
    "bulk": "g.V().hasLabel('Bulk').union(identity(), outE('LINK'))",
}
BULK = 3000
T = TypeVar("T")


@pytest.fixture(scope="module", params=ENGINES)
def up(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    engine = request.param
    env: dict[str, str] = {}
    if engine != "falkordb":  # FalkorDB: the embedded default, as `controlplane up` runs it
        broker = request.getfixturevalue("falkordb_server")
        broker.client(db=6).flushdb()
        uri = request.getfixturevalue("neo4j_uri" if engine == "neo4j" else "gremlin_url")
        env = {"GRAPH_BACKEND": engine, "GRAPH_URI": uri, "REDIS_URL": broker.redis_url(6)}
        off_the_main_thread(_clear, engine, uri)
    stack = UpStack(engine, tmp_path_factory.mktemp(f"browser-{engine}"), env)
    try:
        stack.wait_ready()
    except Exception as exc:  # noqa: BLE001
        stack.stop()
        _unavailable(f"controlplane up on {engine}", exc)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def chromium(up: UpStack) -> Iterator[Any]:
    """Chromium for one engine's tests, started after its stack (see off_the_main_thread)."""
    if not Path(CHROMIUM).exists():
        _unavailable("Chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium; scripts/ensure-system-deps.sh)"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable("Playwright", exc)
    pw = sync_playwright().start()
    try:
        browser = launch_chromium(pw)
    except Exception as exc:  # noqa: BLE001
        pw.stop()
        _unavailable("Chromium", exc)
    yield browser
    browser.close()
    pw.stop()
    # Collect Playwright's greenlets now: finalized later, in the middle of compiling a module,
    # they trip CPython 3.11's AST recursion check ("AST constructor recursion depth mismatch").
    gc.collect()


def off_the_main_thread(fn: Callable[..., T], *args: Any) -> T:
    """gremlinpython runs its own asyncio loop, which cannot start in a thread where Playwright's sync API runs one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def _clear(engine: str, uri: str) -> None:
    if engine == "neo4j":
        from graph_schema.cypher.neo4j_store import Neo4jStore

        store: Any = Neo4jStore(uri)
    else:
        from graph_schema.gremlin.store import GremlinStore

        store = GremlinStore(uri)
    store.clear()
    store.close()


@pytest.fixture
def page(chromium: Any, up: UpStack) -> Iterator[Any]:
    """A fresh tab (its own storage) on /browser; uncaught script errors fail the test."""
    context = chromium.new_context(viewport={"width": 1400, "height": 860})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    open_page(tab, up)
    yield tab
    context.close()
    assert not errors, errors


def q(up: UpStack, which: str) -> str:
    return (GREMLIN if up.engine == "gremlin" else CYPHER)[which]


def test_up_prints_the_browser_url_beside_graphql(up: UpStack) -> None:
    out = up.output()
    assert f"GraphQL   {up.url}/graphql" in out and f"browser   {up.url}/browser" in out


def test_a_query_is_drawn_as_a_graph_and_filled_into_the_table(up: UpStack, page: Any) -> None:
    # Given an allocation running under the node
    sup = up.spawn("sup", ["sleep", "600"])
    up.wait_allocation(sup, "running")
    # When the person runs a query in the engine's language for the node and its children
    assert page.inner_text("#engine") == f"{up.engine} · {up.language}"
    run_query(page, q(up, "children"))
    # Then both vertices and the PARENT_OF edge between them are drawn, in their state's colour
    seen = drawn(page)
    assert {NODE, sup} <= set(seen["vertices"]) and seen["vertices"][NODE]["label"] == "Node"
    assert [NODE, "PARENT_OF", sup] in seen["edges"]
    assert not any(v["stub"] for v in seen["vertices"].values())
    painted_as(page, sup, "running")
    assert page.is_visible('#legend [data-edge="PARENT_OF"]') and page.is_visible('#legend [data-label="Allocation"]')
    shot(page, up.engine, "01-query-graph")
    # And the table holds the rows, the vertices as links
    page.click("#tab-table")
    table = page.inner_text("#table")
    assert f'(:Node "{NODE}")' in table and "[:PARENT_OF]" in table and f'(:Allocation "{sup}")' in table
    shot(page, up.engine, "02-query-table")
    # And the query is in the history
    assert q(up, "children").split()[0] in page.inner_text("#history")


def test_clicking_a_vertex_shows_it_and_expands_its_neighbours_and_its_hierarchy(up: UpStack, page: Any) -> None:
    # Given a supervisor with two workers under the node, and only the node drawn
    sup = up.spawn("tree-sup", ["sleep", "600"])
    workers = [up.spawn(f"tree-worker-{i}", ["sleep", "600"], parent=sup) for i in range(2)]
    for w in workers:
        up.wait_allocation(w, "running")
    run_query(page, q(up, "node"))
    assert set(drawn(page)["vertices"]) == {NODE}
    # When the person clicks the node
    click_vertex(page, NODE)
    # Then its panel shows it, with its capacity from the API
    page.wait_for_selector('#panel [data-field="cpu free"]')
    assert page.inner_text('#panel [data-testid="title"]').startswith(NODE)
    assert page.inner_text('#panel [data-field="status"]') == "ready"
    # When they expand it over PARENT_OF, outwards
    page.select_option('#panel [data-role="type"]', "PARENT_OF")
    page.select_option('#panel [data-role="direction"]', "OUT")
    page.click('#panel [data-action="expand"]')
    page.wait_for_function(f"() => window.controlplaneBrowser.cy.getElementById('{sup}').nonempty()")
    # Then its children are drawn with the edges from it
    seen = drawn(page)
    assert [NODE, "PARENT_OF", sup] in seen["edges"] and not set(workers) & set(seen["vertices"])
    shot(page, up.engine, "03-expanded")
    # When they ask for the node's hierarchy
    click_vertex(page, NODE)
    page.wait_for_selector('#panel [data-action="hierarchy"]')
    page.click('#panel [data-action="hierarchy"]')
    page.wait_for_function(f"() => window.controlplaneBrowser.cy.getElementById('{workers[1]}').nonempty()")
    # Then the whole tree is laid out top-down: each child below its parent
    seen = drawn(page)
    for parent, child in [(NODE, sup), (sup, workers[0]), (sup, workers[1])]:
        assert [parent, "PARENT_OF", child] in seen["edges"]
        assert seen["vertices"][child]["y"] > seen["vertices"][parent]["y"]
    # And RUNS_ON on request draws each allocation's placement
    page.check('[data-overlay="RUNS_ON"]')
    page.wait_for_function("() => window.controlplaneBrowser.cy.edges('[type = \"RUNS_ON\"]').length >= 3")
    assert [workers[0], "RUNS_ON", NODE] in drawn(page)["edges"]
    # And clicking a worker shows an allocation's panel
    click_vertex(page, workers[0])
    page.wait_for_selector('#panel [data-field="incarnation"]')
    assert page.inner_text('#panel [data-field="parent"]') == sup
    shot(page, up.engine, "04-hierarchy")


def test_a_spawned_allocation_appears_turns_running_and_restarts_when_killed(up: UpStack, page: Any) -> None:
    # Given the node drawn and the events stream live
    run_query(page, q(up, "node"))
    # When an allocation is spawned through the API
    live = up.spawn("live", ["sh", "-c", "echo hello from the browser test; sleep 600"])
    # Then it appears under the node without a reload, and turns running
    page.wait_for_function(f"() => window.controlplaneBrowser.cy.getElementById('{live}').nonempty()", timeout=30_000)
    assert [NODE, "PARENT_OF", live] in drawn(page)["edges"]
    painted_as(page, live, "running")
    page.wait_for_selector(f'#events li[data-allocation="{live}"][data-to="running"]')
    click_vertex(page, live)
    page.wait_for_selector('#panel [data-field="incarnation"]')
    assert page.inner_text('#panel [data-field="incarnation"]') == "1"
    shot(page, up.engine, "05-spawned-running")
    # When its process is killed
    pid = up.wait_allocation(live, "running")["pid"]
    os.kill(pid, signal.SIGKILL)
    # Then the failure and the restart arrive as events, and the panel shows the second incarnation
    page.wait_for_selector(f'#events li[data-allocation="{live}"][data-to="failed"]', timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('#panel [data-field=\"incarnation\"]')?.textContent === '2'"
        " && document.querySelector('#panel [data-field=\"state\"]')?.textContent === 'running'", timeout=60_000)
    painted_as(page, live, "running")
    assert page.inner_text('#panel [data-field="restarts"]') == "1"
    first = page.inner_text('#panel tr[data-incarnation="1"]')
    assert "running → failed" in first and "killed by signal 9" in first
    shot(page, up.engine, "06-restarted")
    # When the person stops it from its panel
    page.click('#panel [data-action="stop"]')
    # Then it ends stopped, in the stopped colour, with its exit code and the tail of its output
    page.wait_for_selector(f'#events li[data-allocation="{live}"][data-to="stopped"]', timeout=30_000)
    painted_as(page, live, "stopped")
    page.wait_for_selector('#panel [data-testid="output-tail"]', timeout=30_000)
    assert "hello from the browser test" in page.inner_text('#panel [data-testid="output-tail"]')
    assert page.inner_text('#panel [data-field="exit code"]') == str(up.allocation(live)["exitCode"])
    assert up.allocation(live)["state"] == "STOPPED"
    shot(page, up.engine, "07-stopped")


def test_a_malformed_query_shows_the_engines_error_naming_the_field(up: UpStack, page: Any) -> None:
    run_query(page, q(up, "malformed"))
    error = page.inner_text("#error")
    assert page.is_visible("#error") and error.startswith("INVALID_INPUT") and "field query:" in error
    shot(page, up.engine, "08-malformed-query")
    run_query(page, q(up, "write"))
    assert "read-only" in page.inner_text("#error")


def test_every_saved_query_runs_on_the_engine(up: UpStack, page: Any) -> None:
    # Given an allocation under the node, and the node drawn and selected (its id stands for $id)
    child = up.spawn("saved-queries", ["sleep", "600"])
    run_query(page, q(up, "node"))
    click_vertex(page, NODE)
    page.wait_for_selector('#panel [data-field="status"]')
    saved = page.locator("#saved li")
    assert saved.count() == 8
    for i in range(saved.count()):
        # When the person picks a saved query and runs it
        name = saved.nth(i).inner_text()
        saved.nth(i).click()
        page.evaluate("() => { document.getElementById('status').textContent = ''; }")
        page.click("#run")
        page.wait_for_function("() => !document.getElementById('run').disabled && (document.getElementById('status')"
                               ".textContent.includes('rows') || !document.getElementById('error').hidden)")
        # Then the engine answers it
        assert page.is_hidden("#error"), f"{name}: {page.inner_text('#error')}"
        if name == "Nodes":
            assert NODE in drawn(page)["vertices"]
        if name == "Descendants of $id":
            assert [NODE, "PARENT_OF", child] in drawn(page)["edges"]


def test_an_answer_past_the_limit_says_it_is_truncated(up: UpStack, page: Any) -> None:
    run_query(page, q(up, "many"), limit=100)
    assert "More rows matched than the limit of 100: only the first 100 are here" in page.inner_text("#notice")
    assert page.is_visible("#table-view")  # no vertices in it: the table is shown
    assert page.locator("#table tbody tr").count() == 100


def test_thousands_of_vertices_are_drawn_and_stay_interactive(up: UpStack, page: Any) -> None:
    # Given a few thousand vertices linked in a chain
    off_the_main_thread(_seed_bulk, up, BULK)
    # When the person queries all of them
    started = time.monotonic()
    run_query(page, q(up, "bulk"), limit=10000)
    drawn_in = time.monotonic() - started
    seen = drawn(page)
    assert sum(1 for k in seen["vertices"] if k.startswith("bulk-")) == BULK and len(seen["edges"]) == BULK - 1
    # Then drawing took seconds, not minutes, and a click is answered at once
    assert drawn_in < 30, f"{BULK} vertices took {drawn_in:.1f}s"
    page.evaluate("() => window.controlplaneBrowser.cy.zoom({level: 1, position: window.controlplaneBrowser.cy.getElementById('bulk-1500').position()})")
    started = time.monotonic()
    click_vertex(page, "bulk-1500")
    page.wait_for_function("() => document.querySelector('#panel [data-testid=\"title\"]')?.textContent.startsWith('bulk-1500')")
    answered_in = time.monotonic() - started
    assert answered_in < 3, f"a click took {answered_in:.1f}s with {BULK} vertices drawn"
    shot(page, up.engine, "09-thousands")
    # And a hierarchy this big is laid out top-down as well (our layered tree: dagre would take seconds)
    laid = page.evaluate("""() => {
      const {view, cy} = window.controlplaneBrowser;
      cy.edges().forEach((e) => { e.data('type', 'PARENT_OF'); });  // the chain read as a hierarchy
      const started = performance.now();
      const name = view.layout();
      const below = cy.edges().every((e) => e.target().position('y') > e.source().position('y'));
      return {name, below, ms: performance.now() - started};
    }""")
    assert laid["name"] == "tree" and laid["below"] and laid["ms"] < 5000, laid
    # And a refused action shows the API's error in the panel: these vertices are outside the vocabulary
    page.click('#panel [data-action="expand"]')
    page.wait_for_selector("#panel .panel-error:not([hidden])")
    assert page.inner_text("#panel .panel-error") == "NOT_FOUND field from: no vertex with id 'bulk-1500'"


def test_a_token_in_the_url_is_kept_for_the_tab_and_sent_as_a_bearer_token(up: UpStack, chromium: Any) -> None:
    context = chromium.new_context()
    tab = context.new_page()
    headers: list[str | None] = []
    init: list[str] = []
    tab.on("request", lambda r: headers.append(r.headers.get("authorization")) if r.url.endswith("/graphql") else None)
    tab.on("websocket", lambda ws: ws.on("framesent", lambda payload: init.append(str(payload)) if "connection_init" in str(payload) else None))
    try:
        tab.goto(f"{up.url}/browser?token={up.token}")
        tab.wait_for_selector("#live[data-live=on]", timeout=30_000)
        run_query(tab, q(up, "node"))
        # the token leaves the address bar, stays in this tab, and goes with every request
        assert "token" not in tab.url and tab.inner_text("#auth") == "token: set"
        assert headers and set(headers) == {f"Bearer {up.token}"}
        assert len(init) == 1 and f'"Authorization":"Bearer {up.token}"' in init[0]
        # GraphiQL in the same tab sends it too
        tab.goto(f"{up.url}/graphql")
        tab.wait_for_selector(".graphiql-container .graphiql-query-editor", timeout=30_000)
        headers.clear()
        tab.click(".graphiql-execute-button")
        tab.wait_for_function(f"() => document.querySelector('.graphiql-response')?.innerText.includes('{NODE}')")
        assert f"Bearer {up.token}" in headers
    finally:
        context.close()


def test_graphiql_loads_and_answers_with_no_internet(up: UpStack, chromium: Any) -> None:
    context = chromium.new_context(viewport={"width": 1400, "height": 860})
    tab = context.new_page()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(up.url) or route.request.url.startswith(up.url.replace("http", "ws")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    tab.route("**/*", only_local)
    try:
        tab.goto(f"{up.url}/graphql?token={up.token}")  # the GraphiQL address `controlplane up` printed
        tab.wait_for_selector(".graphiql-container .graphiql-query-editor", timeout=30_000)
        tab.click(".graphiql-execute-button")
        tab.wait_for_function(
            f"() => document.querySelector('.graphiql-response')?.innerText.includes('{NODE}')", timeout=30_000)
        shot(tab, up.engine, "10-graphiql-offline")
        assert outside == []
    finally:
        context.close()


def _seed_bulk(up: UpStack, n: int) -> None:
    """n vertices labelled Bulk with ids bulk-1..n, and LINK edges bulk-i -> bulk-i+1, written with the engine's client."""
    if up.engine == "gremlin":
        from gremlin_python.driver.client import Client

        client = Client(_uri(up), "g")
        try:
            for start in range(1, n + 1, 100):
                ids = range(start, min(n, start + 99) + 1)
                client.submit("g" + "".join(f".addV('Bulk').property(T.id, 'bulk-{i}').property('id', 'bulk-{i}')" for i in ids),
                              request_options={"language": "gremlin-lang"}).all().result()
            for start in range(1, n, 100):
                ids = range(start, min(n - 1, start + 99) + 1)
                client.submit("g" + "".join(f".V('bulk-{i}').addE('LINK').to(__.V('bulk-{i + 1}'))" for i in ids),
                              request_options={"language": "gremlin-lang"}).all().result()
        finally:
            client.close()
        return
    cypher = ("UNWIND range(1, $n) AS i CREATE (:Bulk {id: 'bulk-' + toString(i), n: i})",
              "UNWIND range(1, $n - 1) AS i MATCH (a:Bulk {n: i}), (b:Bulk {n: i + 1}) CREATE (a)-[:LINK]->(b)")
    if up.engine == "falkordb":
        from falkordb import FalkorDB

        graph = FalkorDB.from_url(_uri(up)).select_graph("controlplane")
        graph.query("CREATE INDEX FOR (b:Bulk) ON (b.n)")
        for statement in cypher:
            graph.query(statement, {"n": n})
    else:
        from neo4j import GraphDatabase

        with GraphDatabase.driver(_uri(up)) as driver:
            driver.execute_query("CREATE INDEX bulk_n IF NOT EXISTS FOR (b:Bulk) ON (b.n)")
            driver.execute_query("CALL db.awaitIndexes(60)")
            for statement in cypher:
                driver.execute_query(statement, {"n": n})


def _uri(up: UpStack) -> str:
    """The graph's address as the stack wrote it, with the password its secret holds (as the CLI reads it)."""
    from controlplane.embedded import read_endpoints
    from controlplane.settings import load_settings

    ends = read_endpoints(load_settings(data_dir=up.data_dir))
    assert ends is not None, f"no stack.json in {up.data_dir}"
    return ends.graph_uri
