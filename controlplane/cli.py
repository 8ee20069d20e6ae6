"""The `controlplane` command: run the stack, a node agent, and ask or change the graph.

Typer for the commands (typed options, help for free), rich for trees and tables.
Every command builds one Settings from its flags and the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from controlplane.domain.errors import ControlPlaneError
from controlplane.settings import Settings, load_settings

if TYPE_CHECKING:
    from controlplane.embedded import Endpoints

app = typer.Typer(help="A graph-backed control plane for actor hierarchies.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where embedded state lives [env DATA_DIR]")]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ControlPlaneError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None


def _fail(exc: ControlPlaneError) -> typer.Exit:
    err.print(f"[red]{exc.code.value}[/red] {exc}")
    return typer.Exit(1)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="API listen address; 127.0.0.1 because allocations run commands here")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    data_dir: DataDir = None,
    node: Annotated[Optional[str], typer.Option(help="Name of the local node (default: host name)")] = None,
    worker: Annotated[bool, typer.Option(help="Start a local node agent")] = True,
    concurrency: Annotated[int, typer.Option(help="Node agent threads")] = 16,
    demo: Annotated[bool, typer.Option("--demo", help="Seed a small topology and run a sample job")] = False,
) -> None:
    """Start the whole stack on this machine: embedded FalkorDB, the API, one node agent."""
    from controlplane.embedded import run_stack
    from controlplane.store_secrets import redact, secrets_dir

    settings = _settings(api_host=host, api_port=port, data_dir=data_dir)

    def announce(ends: Endpoints, node_name: str | None, login: tuple[str, bool] | None) -> None:
        console.print(f"[bold green]control plane up[/bold green] ({settings.graph_backend})")
        console.print(f"  GraphQL   {ends.api_url}/graphql")
        console.print(f"  browser   {ends.api_url}/browser")
        if login is None:
            console.print("  [red]authentication is OFF[/red] (AUTH_DISABLED)")
        elif login[1]:  # made now: shown once, as Jupyter does
            console.print(f"  GraphiQL  {ends.api_url}/graphql?token={login[0]}", soft_wrap=True)
            console.print(f"  browser   {ends.api_url}/browser?token={login[0]}", soft_wrap=True)
            console.print(f"  token     written to {settings.data_dir / 'admin.token'} (0600); the CLI reads it from there")
        else:
            console.print(f"  token     {settings.data_dir / 'admin.token'}  (`controlplane token url` prints the GraphiQL login)")
        console.print(f"  health    {ends.api_url}/healthz")
        console.print(f"  graph     {redact(ends.graph_uri)}  (graph '{settings.graph_name}')")
        console.print(f"  broker    {redact(ends.broker_url)}")
        if ends.graph_secret or ends.broker_secret:
            console.print(f"  passwords {secrets_dir(settings.data_dir)} (0600; the CLI reads them from there)")
        if node_name:
            console.print(f"  node      {node_name}")
        console.print("Ctrl-C stops everything.")

    try:
        run_stack(settings, node=node, worker=worker, concurrency=concurrency, announce=announce, demo=demo)
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    console.print("stopped.")


@app.command()
def api(
    host: Annotated[Optional[str], typer.Option(help="Listen address [env API_HOST]")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [env API_PORT]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Serve the GraphQL API alone, against the graph and broker of GRAPH_URI and REDIS_URL."""
    from controlplane.embedded import run_api

    try:
        run_api(_settings(api_host=host, api_port=port, data_dir=data_dir))
    except ControlPlaneError as exc:
        raise _fail(exc) from None


@app.command("worker")
def worker_cmd(
    node: Annotated[str, typer.Option(help="This machine's node name (its id in the graph)")],
    concurrency: Annotated[int, typer.Option(help="Threads running work items")] = 16,
    label: Annotated[Optional[list[str]], typer.Option(help="Node label key=value (repeatable)")] = None,
    cpus: Annotated[Optional[float], typer.Option(help="Advertise this many cores instead of the machine's")] = None,
    memory_mib: Annotated[Optional[int], typer.Option(help="Advertise this much memory instead of the machine's")] = None,
    gpu: Annotated[Optional[list[str]], typer.Option(help="Advertise a GPU of this model (repeatable) instead of nvidia-smi's")] = None,
    api: Annotated[Optional[str], typer.Option(help="The API's address [env CONTROLPLANE_API_URL; default: the local stack]")] = None,
    credential: Annotated[Optional[Path], typer.Option(
        help="A file holding this node's credential [env CONTROLPLANE_NODE_TOKEN; default <state dir>/node.token]")] = None,
    join_token_file: Annotated[Optional[Path], typer.Option(
        help="A file holding a join credential, for the first start [env CONTROLPLANE_JOIN_TOKEN]")] = None,
    data_dir: DataDir = None,
    loglevel: Annotated[str, typer.Option(help="Log level")] = "WARNING",
) -> None:
    """Run a node agent: join (once), register this machine, heartbeat, run allocations placed on it.

    It talks to the API only, with its node credential: no graph or broker address or password."""
    import logging
    import os

    from controlplane.cli_tokens import api_url
    from workers.agent import machine_resources
    from workers.main import run_agent

    settings = _settings(data_dir=data_dir)
    bad = [l for l in (label or []) if "=" not in l]
    if bad:
        raise typer.BadParameter(f"labels are key=value, got {bad[0]!r}", param_hint="--label")
    labels = dict(l.split("=", 1) for l in (label or []))
    resources = None
    if cpus is not None or memory_mib is not None or gpu:
        resources = machine_resources()
        if cpus is not None:
            resources["cpu_milli"] = int(round(cpus * 1000))
        if memory_mib is not None:
            resources["memory_mib"] = memory_mib
        if gpu:
            resources["gpus"] = [{"model": m} for m in gpu]
    # secrets come from files or the environment, never the command line (anyone may read /proc/*/cmdline);
    # out of this process's environment once read
    node_token = os.environ.pop("CONTROLPLANE_NODE_TOKEN", None) or (credential.read_text().strip() if credential else None)
    join_token = os.environ.pop("CONTROLPLANE_JOIN_TOKEN", None) or (join_token_file.read_text().strip() if join_token_file else None)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = run_agent(settings, node=node, api_url=(api or api_url(settings)).rstrip("/"), concurrency=concurrency,
                         labels=labels, resources=resources, node_token=node_token, join_token=join_token)
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


@app.command()
def supervisor(
    concurrency: Annotated[int, typer.Option(help="Threads taking supervision tasks")] = 8,
    data_dir: DataDir = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "WARNING",
) -> None:
    """Run a supervisor: consumes the control queue (terminations, restarts)."""
    from controlplane.embedded import resolve_endpoints
    from workers.main import run_supervisor

    settings = _settings(data_dir=data_dir)
    try:
        ends = resolve_endpoints(settings)
        run_supervisor(settings, graph_uri=ends.graph_uri, broker_url=ends.broker_url, concurrency=concurrency, loglevel=loglevel)
    except ControlPlaneError as exc:
        raise _fail(exc) from None


@app.command()
def scheduler(data_dir: DataDir = None) -> None:
    """Run the periodic scheduler (node reaper, reconciler); only one leads at a time."""
    import signal as _signal
    import threading

    from controlplane.embedded import resolve_endpoints
    from workers.scheduler import run_scheduler

    settings = _settings(data_dir=data_dir)
    stop_event = threading.Event()
    _signal.signal(_signal.SIGTERM, lambda *_: stop_event.set())
    try:
        ends = resolve_endpoints(settings)
        run_scheduler(settings, graph_uri=ends.graph_uri, broker_url=ends.broker_url, stop=stop_event)
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as exc:
        raise _fail(exc) from None


@app.command()
def schema() -> None:
    """Print the JSON Schema of job specs."""
    import json as _json

    from controlplane.jobs.spec import job_json_schema

    print(_json.dumps(job_json_schema(), indent=2))


from controlplane.cli_nodes import node_app  # noqa: E402 - sub-commands, registered after the app
from controlplane.cli_ops import COMMANDS  # noqa: E402
from controlplane.cli_tokens import keys_app, token_app  # noqa: E402

for command in COMMANDS:  # the operator's commands: through the API with the caller's credential
    app.command()(command)
app.add_typer(token_app, name="token")
app.add_typer(node_app, name="node")
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":
    app()
