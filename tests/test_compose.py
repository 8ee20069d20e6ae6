"""The deployment files: docker-compose.yml validates, and runs what the CLI really has.

- `docker-compose config` accepts the file, by default and with each profile (skipped on a
  machine without docker-compose, a failure in CI, where scripts/ensure-system-deps.sh installs it);
- every service built from this repository runs a `controlplane` command that exists, with options
  that command parses, and sets only environment variables that Settings reads (or NODE_NAME);
- every stack (the default on Neo4j, the falkordb, gremlin and janusgraph profiles) has its API, node agents,
  supervisors and exactly one scheduler, and its own broker database;
- the servers and the APIs have health checks, published ports bind to BIND_ADDRESS (127.0.0.1 by
  default), and the Dockerfile runs `controlplane` as a non-root user with setpriv installed;
- no data store has a default secret: `docker-compose config` refuses to run without each of the passwords,
  naming it, no password variable has a default, and the Redis users per role are redis_acl's, proven on a
  real redis-server started by each compose Redis service's own entrypoint (no password on its command line).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import pytest
import typer.main
import yaml

from controlplane.cli import app
from controlplane.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

PROFILES: dict[str | None, set[str]] = {
    None: {"neo4j", "redis", "api", "agent", "supervisor", "scheduler"},
    "falkordb": {"falkordb", "api-falkordb", "agent-falkordb", "supervisor-falkordb", "scheduler-falkordb"},
    "gremlin": {"gremlin-server", "api-gremlin", "agent-gremlin", "supervisor-gremlin", "scheduler-gremlin"},
    "janusgraph": {"cassandra", "janusgraph", "redis-ha", "redis-ha-replica", "redis-sentinel",
                   "api-janusgraph", "agent-janusgraph", "supervisor-janusgraph", "scheduler-janusgraph"},
}
#: the servers (images of their own, not built from this repository)
SERVERS = {"neo4j", "redis", "falkordb", "gremlin-server", "cassandra", "janusgraph", "redis-ha", "redis-ha-replica", "redis-sentinel"}
#: what a shell expansion in an entrypoint stands for when its argv is parsed here
SHELL_WORD = "node-from-shell"
#: read by the agent's entrypoint or by `controlplane worker` itself, not by Settings
EXTRA_ENV = {"NODE_NAME", "CONTROLPLANE_API_URL", "CONTROLPLANE_JOIN_TOKEN"}
#: what a node agent must not be given: it talks to the API only (docs/deployment.md, "Node agents")
NOT_FOR_AGENTS = {"GRAPH_URI", "GRAPH_USER", "GRAPH_PASSWORD", "REDIS_URL"}
#: the passwords the file requires (`${VAR:?message}`), and test values for them (8+ characters: Neo4j 5's minimum)
SECRETS = {"NEO4J_PASSWORD": "neo4j-test-pw", "REDIS_ADMIN_PASSWORD": "redis-admin-test-pw",
           "REDIS_PASSWORD": "redis-broker-test-pw", "FALKORDB_PASSWORD": "falkordb-test-pw",
           "GREMLIN_PASSWORD": "gremlin-test-pw"}

#: the CLI's command objects (Typer's own Click: it may vendor it, so only its interface is used)
CLI: Any = typer.main.get_command(app)


# --- reading the file ---------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?([-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable substitution: ${VAR:-default}, ${VAR:?message} (required), ${VAR}, $VAR, and $$ for a
    literal $. The required passwords take their test values (SECRETS) unless `env` says otherwise."""
    values = SECRETS | (env or {})

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if m.group(2) == "?":
            assert values.get(name), f"{name} is required: {m.group(3)}"
            return values[name]
        return values.get(name) or m.group(3) or ""

    return _INTERPOLATION.sub(sub, value)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The services as written (YAML anchors and merge keys resolved, variables not substituted)."""
    return cast(dict[str, dict[str, Any]], yaml.safe_load(COMPOSE.read_text())["services"])


def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from this repository running `controlplane` (not the servers, some built here too)."""
    return {name: s for name, s in services.items() if "build" in s and name not in SERVERS}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def cli_argv(service: dict[str, Any]) -> list[str]:
    """The arguments `controlplane` gets in this service: CMD alone, or through a shell entrypoint."""
    command = [interpolate(str(w)) for w in service.get("command") or []]
    entrypoint = service.get("entrypoint")
    if entrypoint is None:  # the image's ENTRYPOINT ["controlplane"]
        return command
    words = [interpolate(str(w)) for w in entrypoint]
    assert words[:2] == ["sh", "-c"], f"an entrypoint other than the image's must be `sh -c`: {words}"
    script = shlex.split(words[2])
    assert "controlplane" in script, f"the shell entrypoint must exec controlplane: {words[2]!r}"
    argv: list[str] = []
    for word in script[script.index("controlplane") + 1 :]:
        if word == "$@":
            argv += command  # `sh -c SCRIPT NAME ARGS...`: the service's command words
        elif "$" in word:
            argv.append(SHELL_WORD)
        else:
            argv.append(word)
    return argv


def parse_cli(argv: list[str]) -> Any:
    """Parse argv as the real CLI would (types, required options), without running anything."""
    assert argv, "no controlplane command"
    name, *rest = argv
    assert name in CLI.commands, f"`controlplane {name}` is not a command; the CLI has {sorted(CLI.commands)}"
    try:
        return CLI.commands[name].make_context(name, list(rest))
    except Exception as exc:  # Click's UsageError / BadParameter, from whichever Click Typer uses
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"`controlplane {' '.join(argv)}` does not parse: {message}")


def stacks(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Our services grouped by the graph they use: service name -> CLI command, per GRAPH_URI."""
    grouped: dict[str, dict[str, str]] = {}
    for name, service in ours(services).items():
        grouped.setdefault(graph_of(services, service), {})[name] = cli_argv(service)[0]
    return grouped


def is_agent(service: dict[str, Any]) -> bool:
    return cli_argv(service)[0] == "worker"


def graph_of(services: dict[str, dict[str, Any]], service: dict[str, Any]) -> str:
    """The graph a service works on: its GRAPH_URI, or for a node agent its API's."""
    if is_agent(service):
        host = environment(service)["CONTROLPLANE_API_URL"].split("//", 1)[1].split(":", 1)[0]
        return environment(services[host])["GRAPH_URI"]
    return environment(service)["GRAPH_URI"]


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


# --- (a) docker-compose accepts the file ------------------------------------------------------------


def _compose_command() -> list[str] | None:
    if path := shutil.which("docker-compose"):
        return [path]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.fixture(scope="module")
def compose_command() -> list[str]:
    command = _compose_command()
    if command is None:
        if IN_CI:
            pytest.fail("docker-compose is not installed in CI (scripts/ensure-system-deps.sh installs it)", pytrace=False)
        pytest.skip("docker-compose is not installed: `apt-get install docker-compose` to validate docker-compose.yml")
    return command


@pytest.mark.parametrize("profile", list(PROFILES), ids=lambda p: p or "default")
def test_docker_compose_config_validates(compose_command: list[str], profile: str | None, tmp_path: Path) -> None:
    # only what compose itself needs: no stray NEO4J_PASSWORD or BIND_ADDRESS from this shell
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ} | {"HOME": str(tmp_path)} | SECRETS
    argv = [*compose_command, "-f", str(COMPOSE), *(["--profile", profile] if profile else []), "config"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr}"
    resolved = yaml.safe_load(result.stdout)["services"]
    assert PROFILES[None] | PROFILES[profile] <= set(resolved), f"missing services: {PROFILES[profile] - set(resolved)}"
    for name in PROFILES[None] | PROFILES[profile]:
        if "build" in resolved[name] and name.startswith("agent"):
            assert resolved[name]["environment"]["CONTROLPLANE_API_URL"], name
            assert not NOT_FOR_AGENTS & set(resolved[name]["environment"]), f"{name}: an agent talks to the API only"
        elif "build" in resolved[name] and name not in SERVERS:
            assert resolved[name]["environment"]["GRAPH_URI"], name  # substituted, and not empty


# --- (b) the commands exist in the CLI --------------------------------------------------------------


def test_every_service_of_ours_runs_a_cli_command_that_parses(services: dict[str, dict[str, Any]]) -> None:
    found = ours(services)
    assert set(found) == {n for names in PROFILES.values() for n in names} - SERVERS
    for name, service in found.items():
        ctx = parse_cli(cli_argv(service))
        if ctx.info_name == "api":
            assert ctx.params["host"] == "0.0.0.0", f"{name}: the API must listen beyond the container's loopback"
        if ctx.info_name == "worker":
            assert ctx.params["node"] == SHELL_WORD, f"{name}: each agent replica needs its own node name"


def test_agents_are_named_by_node_name_or_host_name(services: dict[str, dict[str, Any]]) -> None:
    for name, service in ours(services).items():
        if cli_argv(service)[0] != "worker":
            continue
        script = interpolate(service["entrypoint"][2])
        assert '--node "${NODE_NAME:-$(hostname)}"' in script, f"{name}: {script!r}"
        assert script.startswith("exec "), f"{name}: the agent must replace the shell to get signals"
        assert "NODE_NAME" not in environment(service), f"{name}: one NODE_NAME for all replicas would clash"


def test_scalable_services_have_no_fixed_names(services: dict[str, dict[str, Any]]) -> None:
    for name, service in ours(services).items():
        assert "container_name" not in service and "hostname" not in service, f"{name} could not be scaled"


def test_dockerfile_runs_the_cli_as_a_non_root_user_with_setpriv() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]

    def last(instruction: str) -> str:
        found = [line.split(None, 1)[1] for line in lines if line.split(None, 1)[:1] == [instruction]]
        assert found, f"no {instruction} in the Dockerfile"
        return found[-1]

    assert json.loads(last("ENTRYPOINT")) == ["controlplane"]
    parse_cli(json.loads(last("CMD")))
    assert last("USER") not in {"root", "0"}
    assert last("FROM").startswith(("python:${PYTHON_VERSION}-slim", "python:3.11-slim", "python:3.12-slim"))
    assert re.search(r"apt-get install[^\n]*util-linux", text) and "setpriv" in text
    assert "rm -rf /var/lib/apt/lists/*" in text and "PIP_NO_CACHE_DIR=1" in text


# --- (c) only settings the code reads ---------------------------------------------------------------


def test_environment_variables_are_settings(services: dict[str, dict[str, Any]]) -> None:
    known = {field.upper() for field in Settings.model_fields} | EXTRA_ENV
    for name, service in ours(services).items():
        unknown = {key for key in environment(service) if key.upper() not in known}
        assert not unknown, f"{name} sets {sorted(unknown)}, which controlplane.settings.Settings does not read"


def test_environment_values_are_valid_settings(services: dict[str, dict[str, Any]]) -> None:
    for name, service in ours(services).items():
        env = {k.lower(): v for k, v in environment(service).items() if k not in EXTRA_ENV}
        settings = Settings.model_validate(env)  # raises, naming the field, on a bad value
        if is_agent(service):
            assert not NOT_FOR_AGENTS & set(environment(service)), f"{name}: an agent talks to the API only"
            assert environment(service)["CONTROLPLANE_API_URL"].startswith("http://api"), name
        else:
            assert settings.graph_uri and settings.redis_url, f"{name} must not fall back to the embedded server"


# --- (d) one scheduler per stack, health checks -------------------------------------------------------


def test_each_stack_is_complete_with_exactly_one_scheduler(services: dict[str, dict[str, Any]]) -> None:
    by_graph = stacks(services)
    assert len(by_graph) == len(PROFILES)
    for graph, members in by_graph.items():
        roles = sorted(members.values())
        assert roles == ["api", "scheduler", "supervisor", "worker"], f"stack on {graph}: {members}"
        (scheduler,) = [n for n, role in members.items() if role == "scheduler"]
        assert replicas(services[scheduler]) == 1, f"{scheduler} must run exactly one replica"
    assert [n for n, s in ours(services).items() if cli_argv(s)[0] == "scheduler"] == ["scheduler", "scheduler-falkordb", "scheduler-gremlin",
                                                                                           "scheduler-janusgraph"]
    assert "profiles" not in services["scheduler"]


def test_each_stack_has_its_own_broker(services: dict[str, dict[str, Any]]) -> None:
    # queue names and the scheduler's lease key are the same in every stack: sharing a broker
    # database would let one stack take the other's tasks and lease
    brokers: dict[str, set[str]] = {}
    for service in ours(services).values():
        if is_agent(service):
            continue  # no broker at all
        env = environment(service)
        brokers.setdefault(env["GRAPH_URI"], set()).add(env["REDIS_URL"])
    assert all(len(urls) == 1 for urls in brokers.values()), brokers
    urls = [next(iter(u)) for u in brokers.values()]
    assert len(set(urls)) == len(urls), brokers


def test_servers_and_apis_have_health_checks_and_are_waited_for(services: dict[str, dict[str, Any]]) -> None:
    for name in ("neo4j", "redis", "api", "falkordb", "api-falkordb", "gremlin-server", "api-gremlin", "cassandra",
                 "janusgraph", "redis-ha", "redis-ha-replica", "redis-sentinel", "api-janusgraph"):
        test = (services[name].get("healthcheck") or {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no health check"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "redis-cli --user admin ping" in services["redis"]["healthcheck"]["test"][-1]
    assert 'exec redis-server - --appendonly yes "$$@"' in services["redis"]["entrypoint"][2]
    for name, service in ours(services).items():
        depends = service.get("depends_on") or {}
        assert depends, f"{name} waits for nothing"
        for dependency, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert services[dependency].get("healthcheck"), f"{name} waits on {dependency}, which has no health check"
            assert set(services[dependency].get("profiles") or []) <= set(service.get("profiles") or []), (
                f"{name} depends on {dependency}, which its profile does not start"
            )


def test_published_ports_bind_to_bind_address(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"
    apis = ("api", "api-falkordb", "api-gremlin", "api-janusgraph")
    api_ports = [interpolate(str(p)).split(":")[1] for n in apis for p in services[n]["ports"]]
    assert len(set(api_ports)) == len(apis), "the stacks' APIs need their own host ports"


def test_neo4j_is_the_lts_with_its_browser_and_persistent_volumes(services: dict[str, dict[str, Any]]) -> None:
    neo4j = services["neo4j"]
    assert neo4j["image"] == "neo4j:5.26"
    assert {interpolate(p).split(":", 1)[1] for p in neo4j["ports"]} == {"7474:7474", "7687:7687"}
    assert {v.split(":")[1] for v in neo4j["volumes"]} == {"/data", "/logs"}
    password = environment(services["api"])["GRAPH_PASSWORD"]
    assert interpolate(neo4j["environment"]["NEO4J_AUTH"]) == f"neo4j/{password}"
    check = neo4j["healthcheck"]["test"][1]
    assert "cypher-shell 'RETURN 1'" in check and " -p " not in check, "the password must not be on cypher-shell's command line"
    assert len(password) >= 8, "Neo4j 5 refuses passwords shorter than 8 characters"


# --- (e) no default secret ----------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_AUTH\b|_PASS\b", re.IGNORECASE)


def test_no_secret_variable_has_a_default_and_every_one_is_required() -> None:
    text = COMPOSE.read_text()
    used = {m.group(1): m.group(2) for m in re.finditer(r"(?<!\$)\$\{(\w+)(:?[-?]|)", text) if SECRET_NAME.search(m.group(1))}
    # the agents' join credential is made by the running API (so it cannot be required before the first `up`); an
    # agent without it, and without a node credential of its own, refuses to start
    assert used.pop("AGENT_JOIN_TOKEN", None) == ":-"
    assert set(used) == set(SECRETS), f"the secrets the file uses: {sorted(used)}"
    for name in SECRETS:
        forms = set(re.findall(r"(?<!\$)\$\{" + name + r"(:?[-?]?)", text))
        assert forms == {":?"}, f"{name} must always be ${{{name}:?message}}, never with a default or optional: {forms}"
    # and no literal password next to a user: NEO4J_AUTH, redis:// URLs, Redis users (`>password`)
    assert not re.search(r"NEO4J_AUTH:\s*neo4j/[^$]", text)
    assert not re.search(r"redis://[\w.-]*:[^$@/]+@", text), "a redis:// URL with a literal password"
    literal = re.search(r"(?<=[\s\"])>(?![$/&\s\"]|-\n)\S*", text)  # `>password`, not `>/dev/null` or `>${VAR:?..}`
    assert literal is None, f"a Redis user with a literal password: {literal.group(0) if literal else ''}"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_docker_compose_refuses_to_run_without_each_password(compose_command: list[str], missing: str, tmp_path: Path) -> None:
    # Given every password but one
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ} | {"HOME": str(tmp_path)}
    env |= {k: v for k, v in SECRETS.items() if k != missing}
    # When compose reads the file (the default stack: every secret is required by every profile), Then it refuses,
    # naming the variable, and nothing is started with an empty password
    result = subprocess.run([*compose_command, "-f", str(COMPOSE), "config"], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=120)
    assert result.returncode != 0
    assert f"{missing} is not set; the data stores have no default password" in result.stderr


def redis_users(args: list[str]) -> dict[str, list[str]]:
    """The `--user NAME ...` directives of a redis-server command line: each user's words after its name."""
    users: dict[str, list[str]] = {}
    for i, word in enumerate(args):
        if word == "--user":
            words = list(itertools.takewhile(lambda w: not w.startswith("--"), args[i + 1 :]))
            users[words[0]] = words[1:]
    return users


def stdin_config(service: dict[str, Any]) -> list[str]:
    """The configuration a Redis service's entrypoint gives its server on standard input, as the shell expands it
    in the container (the service's environment)."""
    env = environment(service)
    script = interpolate(service["entrypoint"][2])
    body = script.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0]
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line).strip() for line in body.splitlines()]


def config_users(lines: list[str]) -> dict[str, list[str]]:
    return {line.split()[1]: line.split()[2:] for line in lines if line.startswith("user ")}


REDIS_SERVERS = ("redis", "redis-ha", "redis-ha-replica")


def test_the_redis_users_are_redis_acl_roles(services: dict[str, dict[str, Any]]) -> None:
    from graph_schema.redis_acl import broker_user, graph_user

    broker = list(broker_user("controlplane", "x").rules)
    graph = list(graph_user("graph", "x", graphs=("controlplane",)).rules)
    admin = ["~*", "&*", "+@all"]
    redis = config_users(stdin_config(services["redis"]))
    assert redis == {"default": ["reset", "off"], "admin": ["reset", "on", f">{SECRETS['REDIS_ADMIN_PASSWORD']}", *admin],
                     "controlplane": ["reset", "on", f">{SECRETS['REDIS_PASSWORD']}", *broker]}
    falkordb = redis_users(interpolate(services["falkordb"]["environment"]["REDIS_ARGS"]).split())
    assert falkordb == redis | {"graph": ["reset", "on", f">{SECRETS['FALKORDB_PASSWORD']}", *graph]}
    for name in ("redis-ha", "redis-ha-replica"):  # the Sentinel URL names no user: `default` is the broker's
        lines = stdin_config(services[name])
        assert config_users(lines) == {"admin": redis["admin"],
                                       "default": ["reset", "on", f">{SECRETS['REDIS_PASSWORD']}", *broker]}
        assert {"masteruser admin", f"masterauth {SECRETS['REDIS_ADMIN_PASSWORD']}"} <= set(lines)
    # and the control plane logs in as those users
    assert environment(services["api"])["REDIS_URL"].startswith(f"redis://controlplane:{SECRETS['REDIS_PASSWORD']}@redis:")
    env = environment(services["api-falkordb"])
    assert env["GRAPH_URI"] == f"redis://graph:{SECRETS['FALKORDB_PASSWORD']}@falkordb:6379"
    assert env["REDIS_URL"] == f"redis://controlplane:{SECRETS['REDIS_PASSWORD']}@falkordb:6379/1"
    assert environment(services["api-janusgraph"])["REDIS_URL"].startswith(f"sentinel://:{SECRETS['REDIS_PASSWORD']}@")
    assert environment(services["api-gremlin"])["GRAPH_PASSWORD"] == SECRETS["GREMLIN_PASSWORD"]
    assert environment(services["gremlin-server"])["GREMLIN_PASSWORD"] == SECRETS["GREMLIN_PASSWORD"]


def test_no_redis_password_is_on_a_command_line(services: dict[str, dict[str, Any]]) -> None:
    # compose substitutes ${VAR} before the container starts, so a password there would be in the process list
    for name in REDIS_SERVERS:
        words = [interpolate(str(w)) for w in [*(services[name].get("entrypoint") or []), *(services[name].get("command") or [])]]
        leaked = [secret for secret in SECRETS.values() if any(secret in w for w in words)]
        assert not leaked, f"{name} puts a password on its command line"


@pytest.mark.parametrize("name", REDIS_SERVERS)
def test_the_compose_redis_entrypoint_really_closes_a_redis_server(services: dict[str, dict[str, Any]], name: str,
                                                                   tmp_path: Path) -> None:
    import redis as redis_py

    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("no redis-server in CI", pytrace=False)
        pytest.skip("no redis-server")
    from graph_schema.falkordb_server import find_free_port

    port = find_free_port()
    service = services[name]
    script = interpolate(service["entrypoint"][2])
    # Given a real redis-server started by the compose service's own entrypoint and environment (port and files
    # here, and no replication: the primary is not there)
    argv = ["sh", "-c", script, "redis", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = subprocess.Popen(argv, env={"PATH": os.environ["PATH"], **environment(service)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def client(user: str | None = None, password: str | None = None) -> redis_py.Redis:
            return redis_py.Redis(port=port, username=user, password=password, socket_timeout=5)

        admin = client("admin", SECRETS["REDIS_ADMIN_PASSWORD"])
        for _ in range(100):
            try:
                admin.ping()
                break
            except redis_py.exceptions.ConnectionError:
                time.sleep(0.05)
        broker_name = "controlplane" if name == "redis" else "default"
        # Then no password, a wrong one, and an unknown user are refused
        for user, password in ((None, None), (broker_name, "wrong"), ("mallory", SECRETS["REDIS_PASSWORD"])):
            with pytest.raises(redis_py.exceptions.AuthenticationError):
                client(user, password).ping()
        # and the broker user has data commands and no administration
        broker = client(broker_name, SECRETS["REDIS_PASSWORD"])
        assert broker.lpush("celery", "task") == 1
        for command in [("CONFIG", "SET", "dir", "/tmp"), ("FLUSHALL",), ("ACL", "LIST"), ("SHUTDOWN", "NOSAVE"),
                        ("REPLICAOF", "127.0.0.1", "1")]:
            with pytest.raises(redis_py.exceptions.NoPermissionError):
                broker.execute_command(*command)  # type: ignore[no-untyped-call]
        # and the server's command line carries no password, its user list only hashes
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert not [secret for secret in SECRETS.values() if secret in cmdline], cmdline
        listed = " ".join(str(u) for u in admin.execute_command("ACL", "LIST"))  # type: ignore[no-untyped-call]
        assert not [secret for secret in SECRETS.values() if secret in listed]
        admin.close()
        broker.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_the_gremlin_server_image_carries_every_class_its_configuration_names(services: dict[str, dict[str, Any]]) -> None:
    deploy = ROOT / "deploy" / "gremlin-server"
    build = services["gremlin-server"]["build"]
    assert (build["context"], build["dockerfile"]) == (".", "deploy/gremlin-server/Dockerfile")
    config = yaml.safe_load((deploy / "gremlin-server.yaml").read_text())
    # no Groovy engine configured, logins and the authorizer that refuses every script language but gremlin-lang
    assert set(config["scriptEngines"]) == {"gremlin-lang"}
    assert config["authentication"]["authenticator"].endswith("SimpleAuthenticator")
    named = {config["graphManager"], config["authorization"]["authorizer"]}
    assert named == {"harness.ControlPlaneGraphManager", "harness.ControlPlaneAuthorizer"}
    dockerfile = (deploy / "Dockerfile").read_text()
    allowed = (deploy / "Dockerfile.dockerignore").read_text()
    for cls in named | {"harness.ReadOnlyTraversalSource", "harness.CredentialsFile"}:
        source = f"tests/gremlin_harness/src/main/java/{cls.replace('.', '/')}.java"
        assert (ROOT / source).is_file(), source
        assert source in dockerfile and f"!{source}" in allowed, f"{source} is not copied into the image"
    entrypoint = (deploy / "entrypoint.sh").read_text()
    assert ': "${GREMLIN_PASSWORD:?' in entrypoint, "the server must refuse to start without a password"
