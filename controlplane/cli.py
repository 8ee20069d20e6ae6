"""The `controlplane` command: run the stack, a node agent, and ask or change the graph.

Typer for the commands (typed options, help for free), rich for trees and tables.
Every command builds one Settings from its flags and the environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.records import AllocationRecord
from controlplane.settings import Settings, load_settings

if TYPE_CHECKING:
    from controlplane.embedded import Endpoints
    from controlplane.services import ControlPlane

app = typer.Typer(help="A graph-backed control plane for actor hierarchies.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

T = TypeVar("T")
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where embedded state lives [env DATA_DIR]")]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ControlPlaneError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None


def _control(settings: Settings) -> ControlPlane:
    from controlplane.embedded import resolve_endpoints
    from controlplane.wiring import control_plane

    ends = resolve_endpoints(settings)
    return control_plane(settings, graph_uri=ends.graph_uri, broker_url=ends.broker_url, bootstrap=False)


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
def events(
    allocation: Annotated[Optional[str], typer.Argument(help="Allocation (or node) id; all events when omitted")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events")] = False,
    limit: Annotated[int, typer.Option(help="At most this many past events")] = 200,
    data_dir: DataDir = None,
) -> None:
    """Print the ordered history: transitions, supervision decisions, waits, Terminated (death watch)."""
    from controlplane.views import event_line

    try:
        control = _control(_settings(data_dir=data_dir))
        since: float | None = None
        while True:
            batch = control.queries.events(allocation, since=since, limit=limit)
            for e in batch:
                console.print(event_line(e), highlight=False)
                since = e.at
            if not follow:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as exc:
        raise _fail(exc) from None


@app.command()
def spawn(
    parent: Annotated[str, typer.Argument(help="Id of the parent Node or Allocation")],
    argv: Annotated[list[str], typer.Argument(help="Command to run (after --)")],
    name: Annotated[str, typer.Option(help="Allocation name")] = "task",
    cpu: Annotated[float, typer.Option(help="CPU cores")] = 0.1,
    memory: Annotated[int, typer.Option(help="Memory in MiB")] = 64,
    gpus: Annotated[int, typer.Option(help="GPUs")] = 0,
    node: Annotated[Optional[str], typer.Option(help="Place on this node")] = None,
    count: Annotated[int, typer.Option(help="How many identical children")] = 1,
    restart: Annotated[str, typer.Option(help="permanent | transient | temporary")] = "transient",
    strategy: Annotated[Optional[str], typer.Option(help="How it supervises its children: one_for_one | one_for_all | rest_for_one")] = None,
    max_restarts: Annotated[Optional[int], typer.Option(help="Restart intensity: at most this many restarts ...")] = None,
    window: Annotated[Optional[float], typer.Option(help="... within this many seconds")] = None,
    child_policy: Annotated[Optional[str], typer.Option(help="cascade | abandon")] = None,
    data_dir: DataDir = None,
) -> None:
    """Spawn allocations under a node or an allocation."""
    settings = _settings(data_dir=data_dir)
    spec: dict[str, object] = {
        "name": name, "argv": argv, "node": node, "restart": restart,
        "resources": {"cpu_milli": int(round(cpu * 1000)), "memory_mib": memory, "gpus": gpus},
    }
    policy = {k: v for k, v in {"strategy": strategy, "max_restarts": max_restarts, "window_s": window, "child_policy": child_policy}.items() if v is not None}
    if policy:
        spec["supervision"] = policy
    try:
        created = _control(settings).allocations.spawn(parent, [spec] * count, field="spec" if count == 1 else "specs")
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    for a in created:
        console.print(f"{a.id}  {a.state.value}  on {a.node_id}")


def _load_spec(path: Path) -> dict[str, Any]:
    import json as _json

    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    try:
        data = _json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: a job spec is a mapping with `name` and `tasks`")
    return data


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON (see `controlplane schema`)")],
    node: Annotated[Optional[str], typer.Option(help="Submitting node: the job's root is created under it")] = None,
    request_id: Annotated[Optional[str], typer.Option(help="Idempotency key: submitting again returns the same job")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends")] = False,
    data_dir: DataDir = None,
) -> None:
    """Submit a job: its DAG goes into the graph and a native `job` root unwraps it."""
    from controlplane.jobs.model import JOB_FINISHED, JobState

    try:
        control = _control(_settings(data_dir=data_dir))
        job = control.jobs.submit(_load_spec(spec), node=node, request_id=request_id)
        console.print(f"job {job.id} ({job.name}) {job.state}: root {job.root_id} on {job.submitted_by}")
        while wait:
            time.sleep(0.5)
            job = control.jobs.job(job.id)
            tasks = control.jobs.tasks(job.id)
            counts: dict[str, int] = {}
            for t in tasks:
                counts[t.state] = counts.get(t.state, 0) + 1
            console.print(f"  {job.state}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            if job.state in JOB_FINISHED:
                if job.error:
                    console.print(f"  [red]{job.error}[/red]")
                raise typer.Exit(0 if job.state is JobState.SUCCEEDED else 1)
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as exc:
        raise _fail(exc) from None


@app.command()
def jobs(
    job_id: Annotated[Optional[str], typer.Argument(help="A job id: its tasks and the allocations that ran them")] = None,
    data_dir: DataDir = None,
) -> None:
    """List jobs, or show one job's tasks."""
    try:
        control = _control(_settings(data_dir=data_dir))
        if job_id is None:
            table = Table("job", "name", "state", "tasks", "root", "submitted")
            for j in control.jobs.jobs(limit=1000):
                table.add_row(j.id, j.name, j.state, str(j.tasks_total), j.root_id or "-",
                              time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.submitted_at)))
            console.print(table)
            return
        job = control.jobs.job(job_id)
        console.print(f"job {job.id} ({job.name}): {job.state}" + (f" — {job.error}" if job.error else ""))
        table = Table("task", "state", "replicas", "allocations (incarnation, state, node)")
        for t in control.jobs.tasks(job_id):
            runs = ", ".join(f"{r.allocation_id} ({r.incarnation}, {r.state}, {r.node_id})" for r in t.runs) or "-"
            table.add_row(t.path, t.state, str(t.replicas), runs)
        console.print(table)
    except ControlPlaneError as exc:
        raise _fail(exc) from None


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="Job id")], data_dir: DataDir = None) -> None:
    """Cancel a job: its whole hierarchy is stopped, children first."""
    try:
        job = _control(_settings(data_dir=data_dir)).jobs.cancel(job_id)
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    console.print(f"job {job.id}: {job.state}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of job specs."""
    import json as _json

    from controlplane.jobs.spec import job_json_schema

    print(_json.dumps(job_json_schema(), indent=2))


@app.command()
def logs(
    allocation: Annotated[str, typer.Argument(help="Allocation id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the incarnation ends")] = False,
    incarnation: Annotated[Optional[int], typer.Option(help="Which incarnation (default: the current one)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print an allocation's output (stdout and stderr), read from its node agent's log on this machine;
    elsewhere, say which node and file hold it and show what the graph kept."""
    from controlplane.views import print_log

    settings = _settings(data_dir=data_dir)
    try:
        control = _control(settings)
        loc = control.queries.log_of(allocation, incarnation)

        def ended() -> bool:
            a = control.queries.allocation(allocation)
            return a.incarnation != loc.incarnation or a.is_terminal

        status = print_log(loc, settings.data_dir.absolute() / "runs", follow=follow and loc.live, ended=ended,
                           err=err)
    except KeyboardInterrupt:
        return
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    raise typer.Exit(status)


@app.command()
def stop(allocation: Annotated[str, typer.Argument(help="Allocation id")], data_dir: DataDir = None) -> None:
    """Stop an allocation (graceful, then killed after its grace period)."""
    try:
        a = _control(_settings(data_dir=data_dir)).allocations.stop(allocation)
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    console.print(f"{a.id}  {a.state.value}")


def _node_op(data_dir: Path | None, act: Callable[[ControlPlane], T], say: Callable[[T], str]) -> None:
    """Run one node operation against the control plane and print what it did (or its error's code and reason)."""
    try:
        done = act(_control(_settings(data_dir=data_dir)))
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    console.print(say(done))


NodeArg = Annotated[str, typer.Argument(help="Node id")]


@app.command()
def cordon(node: NodeArg, data_dir: DataDir = None) -> None:
    """Cordon a node: nothing new is placed on it; what runs there stays."""
    _node_op(data_dir, lambda c: c.nodes.cordon(node), lambda n: f"{n.id}  {n.status}, cordoned")


@app.command()
def uncordon(node: NodeArg, data_dir: DataDir = None) -> None:
    """Allow placements on a cordoned or drained node again."""
    _node_op(data_dir, lambda c: c.nodes.uncordon(node), lambda n: f"{n.id}  {n.status}")


@app.command()
def drain(
    node: NodeArg,
    deadline: Annotated[float, typer.Option(help="Seconds each allocation gets to stop before it is killed")] = 30.0,
    data_dir: DataDir = None,
) -> None:
    """Drain a node: cordon it and move its allocations elsewhere, each by its restart type."""
    _node_op(data_dir, lambda c: c.nodes.drain(node, deadline_s=deadline),
             lambda n: f"{n.id}  {n.status}: its allocations are moving off (each stopped within {deadline:g} s)")


@app.command()
def deregister(node: NodeArg, data_dir: DataDir = None) -> None:
    """Remove a node with no live work from the graph (refused, with the count, while it has some)."""
    _node_op(data_dir, lambda c: c.nodes.deregister(node), lambda _: f"{node}  deregistered")


@app.command()
def tree(root: Annotated[str, typer.Argument(help="Id of a Node or an Allocation")], data_dir: DataDir = None) -> None:
    """Print the hierarchy under a node or an allocation: state, incarnation, restarts, node, pid and log."""
    from controlplane.views import allocation_label as _label

    try:
        control = _control(_settings(data_dir=data_dir))
        if control.store.actor_label(actor_id=root) == "Allocation":
            top = control.queries.allocation(root)
            head = Tree(_label(top))
        else:
            control.queries.node(root)
            head = Tree(f"[bold]{root}[/bold] (node)")
        rows = control.queries.descendants(root, max_depth=64, limit=100_000)
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    by_parent: dict[str, list[AllocationRecord]] = {}
    for a in rows:
        by_parent.setdefault(a.parent_id, []).append(a)

    def grow(branch: Tree, parent_id: str) -> None:
        for child in sorted(by_parent.get(parent_id, []), key=lambda a: (a.created_at, a.id)):
            grow(branch.add(_label(child)), child.id)

    grow(head, root)
    console.print(head)


@app.command()
def status(data_dir: DataDir = None) -> None:
    """Nodes with their free capacity, and allocations by state."""
    try:
        control = _control(_settings(data_dir=data_dir))
        nodes = control.queries.nodes(limit=1000)
        counts: dict[str, int] = {}
        after = None
        while True:
            page = control.queries.allocations(after=after, limit=1000)
            for a in page:
                counts[a.state.value] = counts.get(a.state.value, 0) + 1
            if len(page) < 1000:
                break
            after = page[-1].id
    except ControlPlaneError as exc:
        raise _fail(exc) from None
    table = Table("node", "status", "cpu free/total", "memory free/total MiB", "heartbeat")
    now = time.time()
    for n in nodes:
        table.add_row(n.name, n.status, f"{n.cpu_free / 1000:g}/{n.cpu / 1000:g}", f"{n.memory_free}/{n.memory}", f"{now - n.heartbeat_at:.1f}s ago")
    console.print(table)
    console.print("allocations: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"))


from controlplane.cli_nodes import node_app  # noqa: E402 - sub-commands, registered after the app
from controlplane.cli_tokens import keys_app, token_app  # noqa: E402

app.add_typer(token_app, name="token")
app.add_typer(node_app, name="node")
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":
    app()
