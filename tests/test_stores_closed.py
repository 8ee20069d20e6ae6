"""The embedded stores are closed: a password and a user per role on each server, LOAD CSV confined, memory bounded.

Real redis-servers with the FalkorDB module, real clients (redis-py, the `falkordb` client, the control
plane's own store): what a client without the password, or with the wrong role, can do is nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from controlplane.domain.errors import InvalidInput
from controlplane.wiring import assemble
from graph_schema.cypher.falkordb_store import FalkorDBStore
from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
from graph_schema.redis_acl import broker_user, graph_user

GRAPH = "cp"
#: what the server answers a command the user may not run (DEBUG and MODULE are also off on the server itself)
REFUSED = r"(?i)no permissions|command not allowed"


def no_retry(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalkorDBServer]:
    """One graph server as `controlplane up` runs it: an administrator, the graph user (graph `cp` only), a broker user."""
    users = (graph_user("controlplane", secrets.token_urlsafe(16), graphs=(GRAPH,)),
             broker_user("broker", secrets.token_urlsafe(16)))
    srv = FalkorDBServer(FalkorDBServerConfig(data_dir=tmp_path_factory.mktemp("closed"), password=secrets.token_urlsafe(16),
                                              users=users, query_mem_mib=16)).start()
    yield srv
    srv.stop()


def test_a_client_without_the_password_or_with_a_wrong_one_is_refused(server: FalkorDBServer) -> None:
    # Given a graph on the server, and its address but not its passwords
    store = FalkorDBStore(server.user_url("controlplane"), graph=GRAPH)
    store.bootstrap()
    anonymous = redis.Redis(host=server.host, port=server.port, retry=Retry(NoBackoff(), 0))
    # When a client sends a command without logging in, or logs in with a wrong password or an unknown user
    # Then it is refused before anything runs
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        anonymous.execute_command("GRAPH.QUERY", GRAPH, "CREATE (:Intruder)")
    right = server.user_url("controlplane")
    with pytest.raises(redis.AuthenticationError):
        no_retry(right.replace(right.split(":")[2].split("@")[0], "wrong-password")).ping()
    with pytest.raises(redis.AuthenticationError):
        no_retry(right.replace("controlplane:", "nobody:")).ping()
    # and with the password it works (the checks above could fail)
    assert no_retry(right).ping()
    assert no_retry(server.url).ping()
    # and nothing was written by the refused client
    assert store.raw_query(text="MATCH (n:Intruder) RETURN count(n)", timeout_s=5, limit=1).rows == ((0,),)
    store.close()


def test_no_password_is_on_a_command_line_or_in_the_servers_user_list(server: FalkorDBServer) -> None:
    passwords = [u.password for u in server.config.users] + [server.config.password or ""]
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    acl = " ".join(str(rule) for rule in no_retry(server.url).acl_list())
    for password in passwords:
        assert password.encode() not in cmdline
        assert password not in acl
    assert "controlplane" in acl and "#" in acl  # the users are there, with hashed passwords


def test_the_graph_user_runs_the_control_plane_and_nothing_else(server: FalkorDBServer) -> None:
    # Given the control plane on the graph user
    store = FalkorDBStore(server.user_url("controlplane"), graph=GRAPH)
    store.bootstrap()
    store.clear()
    control = assemble(store)
    control.nodes.register({"name": "n1", "cpu_milli": 1000, "memory_mib": 1024})
    (spawned,) = control.allocations.spawn("n1", [{"name": "a", "argv": ["true"]}])
    assert store.get_allocation(allocation_id=spawned.id) is not None
    # When the same user tries what the control plane never needs
    client = no_retry(server.user_url("controlplane"))
    attempts = [
        ("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "*"), ("GRAPH.CONFIG", "SET", "TIMEOUT_MAX", "0"),
        ("GRAPH.CONFIG", "GET", "*"), ("GRAPH.UDF", "LIST"), ("GRAPH.DEBUG", "AUX", "START"), ("MODULE", "LIST"),
        ("FLUSHALL",), ("KEYS", "*"), ("SELECT", "1"), ("SET", "x", "1"), ("GET", GRAPH), ("DEL", GRAPH),
        ("GRAPH.QUERY", "other", "CREATE (:X)"), ("GRAPH.DELETE", "other"), ("SHUTDOWN", "NOSAVE"), ("DEBUG", "SLEEP", "0"),
        ("ACL", "SETUSER", "controlplane", "+@all"), ("INFO", "keyspace"), ("PUBLISH", "controlplane:events", "1"),
    ]
    # Then each is refused by the server, and the graph is untouched
    for command in attempts:
        with pytest.raises(redis.exceptions.ResponseError, match=REFUSED):
            client.execute_command(*command)
    assert no_retry(server.url).ping()
    assert store.get_allocation(allocation_id=spawned.id) is not None
    assert not no_retry(server.url).exists("x")
    store.close()


def test_the_broker_user_has_data_commands_but_no_administration_and_no_graph(server: FalkorDBServer) -> None:
    broker = no_retry(server.user_url("broker", 3))
    # Given what Celery, the leases and the doorbell do
    broker.lpush("node.n1", "message")
    assert broker.rpop("node.n1") == b"message"
    broker.publish("controlplane:events", "1")
    # When the broker user tries to administer the server, Then it is refused
    for command in [("CONFIG", "SET", "dir", "/tmp"), ("SHUTDOWN", "NOSAVE"), ("FLUSHALL",), ("KEYS", "*"),
                    ("MODULE", "LOAD", "/tmp/x.so"), ("ACL", "SETUSER", "broker", "+@all"), ("DEBUG", "SLEEP", "0"),
                    ("REPLICAOF", "127.0.0.1", "1"), ("GRAPH.QUERY", GRAPH, "CREATE (:X)"),
                    ("GRAPH.RO_QUERY", GRAPH, "MATCH (n) RETURN n"), ("GRAPH.DELETE", GRAPH)]:
        with pytest.raises(redis.exceptions.ResponseError, match=REFUSED):
            broker.execute_command(*command)
    assert no_retry(server.url).ping()


def test_load_csv_reads_nothing_outside_the_empty_import_folder(server: FalkorDBServer) -> None:
    # Given a CSV file beside the server's data, and the import folder the server was given (empty)
    secret_file = server.data_dir / "secret.csv"
    secret_file.write_text("password,hunter2\n")
    assert list(server.import_dir.iterdir()) == []
    client = no_retry(server.user_url("controlplane"))
    # When the graph user asks the server itself to read it, by absolute path or out of the import folder
    for url in [f"file://{secret_file}", "file://../secret.csv", "file:///../secret.csv", "file:///etc/passwd"]:
        # Then the server refuses to open it
        with pytest.raises(redis.exceptions.ResponseError, match="Error opening CSV"):
            client.execute_command("GRAPH.RO_QUERY", GRAPH, f"LOAD CSV FROM '{url}' AS row RETURN row")
    # while a file put into the import folder is what LOAD CSV reads (the confinement is that folder)
    (server.import_dir / "inside.csv").write_text("a,b\n")
    rows = client.execute_command("GRAPH.RO_QUERY", GRAPH, "LOAD CSV FROM 'file://inside.csv' AS row RETURN row")[1]
    assert rows == [[b"[a, b]"]]
    # and raw queries, the operators' own, never load CSV at all, whatever the spelling or the source
    store = FalkorDBStore(server.user_url("controlplane"), graph=GRAPH)
    for text in ["LOAD CSV FROM 'file://inside.csv' AS row RETURN row",
                 "load csv with headers from 'file://inside.csv' as row return row",
                 "MATCH (n) WITH count(n) AS c LOAD CSV FROM 'https://127.0.0.1:1/x.csv' AS row RETURN row, c"]:
        with pytest.raises(InvalidInput, match="LOAD CSV is not allowed"):
            store.raw_query(text=text, timeout_s=5, limit=10)
    assert store.raw_query(text="RETURN 1", timeout_s=5, limit=1).rows == ((1,),)
    (server.import_dir / "inside.csv").unlink()
    store.close()


def test_one_query_may_not_take_more_memory_than_the_limit(server: FalkorDBServer) -> None:
    # Given a server whose queries may take 16 MiB each (QUERY_MEM_CAPACITY)
    store = FalkorDBStore(server.user_url("controlplane"), graph=GRAPH)
    # When a raw query builds a list far larger than that, Then it is stopped and refused with a clear error
    with pytest.raises(InvalidInput, match="(?i)mem"):
        store.raw_query(text="UNWIND range(1, 5000000) AS x WITH collect(toString(x)) AS xs RETURN size(xs)",
                        timeout_s=30, limit=1)
    # while a small one runs, and the server answers the next query
    assert store.raw_query(text="UNWIND range(1, 1000) AS x RETURN count(x)", timeout_s=5, limit=1).rows == ((1000,),)
    store.close()


def test_the_embedded_servers_limits_are_settings(tmp_path: Path) -> None:
    from controlplane.embedded import embedded_server
    from controlplane.settings import load_settings

    # Given settings with a small query memory and a short longest query
    settings = load_settings(data_dir=tmp_path, falkordb_query_mem_mib=16, falkordb_query_timeout_max_s=7)
    # When `up` starts its graph server, Then FalkorDB runs with those limits
    with embedded_server(settings, "falkordb") as graph:
        admin = no_retry(graph.url)
        config = dict(admin.execute_command("GRAPH.CONFIG", "GET", "*"))
        assert int(config[b"QUERY_MEM_CAPACITY"]) == 16 * 1024 * 1024
        assert int(config[b"TIMEOUT_MAX"]) == 7000
        admin.close()


@pytest.mark.parametrize(("field", "value"), [("falkordb_query_mem_mib", 0), ("falkordb_query_timeout_max_s", "soon")])
def test_a_bad_limit_is_refused_naming_the_setting(field: str, value: object) -> None:
    from controlplane.settings import load_settings

    with pytest.raises(InvalidInput) as refused:
        load_settings(**{field: value})
    assert refused.value.field == field.upper()
