"""The compose Gremlin Server is closed: logins only, no script engine (no Groovy by name, by default or in a lambda),
Gremlin text on the read-only `g_ro` only, which no query can lift, TLS.

The server runs deploy/gremlin-server/gremlin-server.yaml, the compose profile's own configuration (host, port
and graph file given by the harness), with an `ssl:` block added for wss:// (a key store signed by a CA made for
the test), and a credentials graph written by harness.CredentialsFile, exactly as the image's entrypoint does.
The control plane reaches it through its settings: GRAPH_USER, GRAPH_PASSWORD, GRAPH_TLS_CA_FILE.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.strategies import ReadOnlyStrategy

from controlplane.domain.errors import ControlPlaneError
from controlplane.settings import Settings, load_settings
from controlplane.wiring import assemble, open_store
from graph_schema.gremlin.remote import Access
from tests.jvm_harness.process import find_java
from tests.tls_certs import Pki, make_pki

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_CONFIG = ROOT / "deploy" / "gremlin-server" / "gremlin-server.yaml"
CREDENTIALS = ROOT / "deploy" / "gremlin-server" / "credentials.properties"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
USER = "controlplane"


@dataclass(frozen=True)
class ClosedGremlin:
    url: str
    password: str
    pki: Pki

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {"graph_backend": "gremlin", "graph_uri": self.url, "graph_user": USER,
                                     "graph_password": self.password, "graph_tls_ca_file": self.pki.ca}
        return load_settings(**(values | overrides))


def write_credentials(work: Path, password: str) -> Path:
    """The credentials graph, as the image's entrypoint writes it: harness.CredentialsFile, the password from the env."""
    from tests.gremlin_harness.launcher import HARNESS

    HARNESS.ensure_built()
    props = work / "credentials.properties"
    props.write_text(CREDENTIALS.read_text().replace("/tmp/controlplane-credentials.json", str(work / "credentials.json")))
    subprocess.run([find_java("GREMLIN_HARNESS_JAVA"), "-cp", HARNESS.classpath(), "harness.CredentialsFile", str(props), USER],
                   env={**os.environ, "GREMLIN_PASSWORD": password}, check=True, capture_output=True, timeout=120)
    return props


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClosedGremlin]:
    if shutil.which("java") is None:
        if IN_CI:
            pytest.fail("no java on PATH in CI", pytrace=False)
        pytest.skip("no java on PATH")
    from tests.gremlin_harness.launcher import start_gremlin

    work = tmp_path_factory.mktemp("gremlin-closed")
    pki = make_pki(work / "pki")
    password, store_password = secrets.token_urlsafe(16), secrets.token_urlsafe(12)
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    config["ssl"] = {"enabled": True, "keyStore": str(pki.server_pkcs12(work / "server.p12", store_password)),
                     "keyStorePassword": store_password, "keyStoreType": "PKCS12"}
    (work / "gremlin-server.yaml").write_text(yaml.safe_dump(config))
    server = start_gremlin(work, config=work / "gremlin-server.yaml", credentials=write_credentials(work, password),
                           access=Access(user=USER, password=password, tls_ca_file=pki.ca))
    try:
        yield ClosedGremlin(server.url, password, pki)
    finally:
        server.stop()


def test_the_control_plane_works_logged_in_over_tls(closed: ClosedGremlin) -> None:
    # Given the settings of a process of the control plane: user, password, the CA of the server's certificate
    assert closed.url.startswith("wss://")
    store = open_store(closed.settings())
    store.clear()
    control = assemble(store)
    # When it registers a node and spawns under it, and an operator asks a raw query
    control.nodes.register({"name": "n1", "cpu_milli": 1000, "memory_mib": 1024})
    (spawned,) = control.allocations.spawn("n1", [{"name": "a", "argv": ["true"]}])
    # Then the graph holds them
    assert store.get_allocation(allocation_id=spawned.id) is not None
    assert control.queries.raw_query("g.V().hasLabel('Node').count()").rows == ((1,),)
    store.close()


@pytest.mark.parametrize("wrong", ["no password", "wrong password", "unknown user"])
def test_a_client_that_does_not_log_in_is_refused(closed: ClosedGremlin, wrong: str) -> None:
    user, password = {"no password": ("", ""), "wrong password": (USER, "wrong"), "unknown user": ("mallory", closed.password)}[wrong]
    options = Access(user=user or None, password=password, tls_ca_file=closed.pki.ca).options(closed.url)
    conn = DriverRemoteConnection(closed.url, "g", **options)
    try:
        # When it sends a traversal, Then the server refuses it (401), writing nothing
        with pytest.raises(Exception, match="(?i)401|auth|username and/or password"):
            traversal().with_(conn).add_v("Intruder").iterate()
    finally:
        conn.close()
    store = open_store(closed.settings())
    assert store.raw_query(text="g.V().hasLabel('Intruder').count()", timeout_s=5, limit=1).rows == ((0,),)
    store.close()


def test_a_server_certificate_of_no_trusted_ca_is_refused(closed: ClosedGremlin, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", name="someone else's CA")
    for ca in (None, other.ca):  # the system's CAs, another CA
        with pytest.raises(ControlPlaneError, match="(?i)certificate verify failed"):
            open_store(closed.settings(graph_tls_ca_file=ca)).ping()


def test_no_script_engine_runs_code_and_g_ro_cannot_write(closed: ClosedGremlin) -> None:
    options = Access(user=USER, password=closed.password, tls_ca_file=closed.pki.ca).options(closed.url)
    # Given logged-in clients of the server's raw-query source and of its writable source
    read_only, writable = (Client(closed.url, source, pool_size=1, **options) for source in ("g_ro", "g"))
    try:
        # When they ask for Groovy (code the server would run: Groovy is on its classpath), by name or by default,
        # Then the server refuses before evaluating anything
        for client in (read_only, writable):
            for language in ("gremlin-groovy", "groovy", None):
                with pytest.raises(GremlinServerError, match="(?i)401.*script language.*not allowed"):
                    client.submit("java.lang.System.getProperty('user.home')",
                                  request_options={"language": language} if language else None).all().result()
        # and Gremlin text runs on the read-only source only
        with pytest.raises(GremlinServerError, match="(?i)401.*read-only source only"):
            writable.submit("g.addV('X')", request_options={"language": "gremlin-lang"}).all().result()
        # and the read-only source refuses every write and every way to lift its guard
        for text in ["g.addV('X')", "g.withoutStrategies(ReadOnlyStrategy).addV('X')", "g.V().drop()",
                     "g.io('/etc/hostname').read()"]:  # (gremlin-lang has no withComputer: bytecode below)
            with pytest.raises(GremlinServerError, match="(?i)read.?only|not allowed"):
                read_only.submit(text, request_options={"language": "gremlin-lang"}).all().result()
        # while a read is answered (the refusals above are the server's rules, not a broken connection)
        assert read_only.submit("g.inject(1)", request_options={"language": "gremlin-lang"}).all().result() == [1]
    finally:
        read_only.close()
        writable.close()
    store = open_store(closed.settings())
    assert store.raw_query(text="g.V().hasLabel('X').count()", timeout_s=5, limit=1).rows == ((0,),)
    store.close()


def test_a_traversal_with_a_lambda_or_lifting_the_guard_is_refused(closed: ClosedGremlin) -> None:
    options = Access(user=USER, password=closed.password, tls_ca_file=closed.pki.ca).options(closed.url)
    conn = DriverRemoteConnection(closed.url, "g", **options)
    try:
        g = traversal().with_(conn)
        assert g.inject(1).to_list() == [1]
        # When a bytecode traversal carries a Groovy lambda (which a script engine would run), Then it is refused
        with pytest.raises(GremlinServerError, match="(?i)401.*lambdas.*not allowed"):
            g.inject(1).map(lambda: "it.get() + java.lang.System.getProperty('user.home')").to_list()
    finally:
        conn.close()
    # and bytecode on the read-only source cannot lift its guard either
    conn = DriverRemoteConnection(closed.url, "g_ro", **options)
    try:
        g_ro = traversal().with_(conn)
        attempts: list[Callable[[], object]] = [lambda: g_ro.without_strategies(ReadOnlyStrategy).add_v("X").iterate(),
                                                lambda: g_ro.with_computer().V().property("x", 1).iterate(),
                                                lambda: g_ro.add_v("X").iterate()]
        for attempt in attempts:
            with pytest.raises(GremlinServerError, match="(?i)read.?only"):
                attempt()
    finally:
        conn.close()
    assert isinstance(options["transport_factory"].keywords["ssl_options"], ssl.SSLContext)
