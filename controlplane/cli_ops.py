"""The operator's commands (`spawn`, `stop`, `tree`, `status`, `events`, `logs`, `submit`, `jobs`, `cancel`,
`cordon`, `uncordon`, `drain`, `deregister`): each is GraphQL operations against the API with the caller's
credential (controlplane.cli_api), never the graph itself; so they work from any machine that reaches the API,
and a viewer's token can look but not act. import-linter holds this module to the API: no wiring, services,
store adapters or broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from controlplane.cli_api import (
    ALLOCATION_FIELDS,
    EVENT_FIELDS,
    NODE_FIELDS,
    ApiClient,
    allocation,
    event,
    graphql_input,
    node,
    state,
)
from controlplane.domain.errors import ControlPlaneError, InvalidInput, NotFound
from controlplane.domain.records import AllocationRecord
from controlplane.settings import Settings, load_settings

console = Console()
err = Console(stderr=True)
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where embedded state lives [env DATA_DIR]")]
NodeArg = Annotated[str, typer.Argument(help="Node id")]
#: how often `--follow` asks again
FOLLOW_S = 0.5
JOB_FIELDS = "id name state tasksTotal submittedAt error root { id } submittedBy { id }"
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled")


@contextmanager
def failing() -> Iterator[None]:
    """A refusal or failure of the API as one line with its code (exit 1); Ctrl-C as a quiet end."""
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except ControlPlaneError as exc:
        err.print(f"[red]{exc.code.value}[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _settings(data_dir: Path | None) -> Settings:
    with failing():
        return load_settings(data_dir=data_dir)


def events(
    allocation_id: Annotated[Optional[str], typer.Argument(metavar="ALLOCATION", help="Allocation (or node) id; all events when omitted")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events")] = False,
    limit: Annotated[int, typer.Option(help="At most this many past events")] = 200,
    data_dir: DataDir = None,
) -> None:
    """Print the ordered history: transitions, supervision decisions, waits, Terminated (death watch)."""
    from controlplane.views import event_line

    with failing():
        api = ApiClient(_settings(data_dir))
        since: float | None = None
        while True:
            batch = api(f"query($a: ID, $s: Float, $n: Int!) {{ events(allocation: $a, since: $s, first: $n) {{ {EVENT_FIELDS} }} }}",
                        a=allocation_id, s=since, n=limit)["events"]
            for e in map(event, batch):
                console.print(event_line(e), highlight=False)
                since = e.at
            if not follow:
                return
            time.sleep(FOLLOW_S)


def spawn(
    parent: Annotated[str, typer.Argument(help="Id of the parent Node or Allocation")],
    argv: Annotated[list[str], typer.Argument(help="Command to run (after --)")],
    name: Annotated[str, typer.Option(help="Allocation name")] = "task",
    cpu: Annotated[float, typer.Option(help="CPU cores")] = 0.1,
    memory: Annotated[int, typer.Option(help="Memory in MiB")] = 64,
    gpus: Annotated[int, typer.Option(help="GPUs")] = 0,
    node_id: Annotated[Optional[str], typer.Option("--node", help="Place on this node")] = None,
    count: Annotated[int, typer.Option(help="How many identical children")] = 1,
    restart: Annotated[str, typer.Option(help="permanent | transient | temporary")] = "transient",
    strategy: Annotated[Optional[str], typer.Option(help="How it supervises its children: one_for_one | one_for_all | rest_for_one")] = None,
    max_restarts: Annotated[Optional[int], typer.Option(help="Restart intensity: at most this many restarts ...")] = None,
    window: Annotated[Optional[float], typer.Option(help="... within this many seconds")] = None,
    child_policy: Annotated[Optional[str], typer.Option(help="cascade | abandon")] = None,
    data_dir: DataDir = None,
) -> None:
    """Spawn allocations under a node or an allocation."""
    from controlplane.domain.specs import AllocationSpec

    spec: dict[str, Any] = {
        "name": name, "argv": argv, "node": node_id, "restart": restart,
        "resources": {"cpu_milli": int(round(cpu * 1000)), "memory_mib": memory, "gpus": gpus},
    }
    policy = {k: v for k, v in {"strategy": strategy, "max_restarts": max_restarts, "window_s": window,
                                "child_policy": child_policy}.items() if v is not None}
    if policy:
        spec["supervision"] = policy
    with failing():
        created = ApiClient(_settings(data_dir))(
            "mutation($p: ID!, $s: [AllocationSpecInput!]!) { spawnAllocations(parent: $p, specs: $s) { id state nodeId } }",
            p=parent, s=[graphql_input(AllocationSpec, {k: v for k, v in spec.items() if v is not None})] * count,
        )["spawnAllocations"]
    for a in created:
        console.print(f"{a['id']}  {state(a['state'])}  on {a['nodeId']}", highlight=False)


def stop(allocation_id: Annotated[str, typer.Argument(metavar="ALLOCATION", help="Allocation id")], data_dir: DataDir = None) -> None:
    """Stop an allocation (graceful, then killed after its grace period)."""
    with failing():
        a = ApiClient(_settings(data_dir))("mutation($i: ID!) { stopAllocation(id: $i) { id state } }", i=allocation_id)["stopAllocation"]
    console.print(f"{a['id']}  {state(a['state'])}", highlight=False)


def tree(root: Annotated[str, typer.Argument(help="Id of a Node or an Allocation")], data_dir: DataDir = None) -> None:
    """Print the hierarchy under a node or an allocation: state, incarnation, restarts, node, pid and log."""
    from controlplane.views import allocation_label

    with failing():
        api = ApiClient(_settings(data_dir))
        try:
            rows = api(f"query($i: ID!) {{ node(id: $i) {{ descendants {{ {ALLOCATION_FIELDS} }} }} }}", i=root)["node"]["descendants"]
            head = Tree(f"[bold]{root}[/bold] (node)")
        except NotFound:  # not a node: an allocation, or nothing (then said so)
            found = api(f"query($i: ID!) {{ allocation(id: $i) {{ {ALLOCATION_FIELDS} descendants {{ {ALLOCATION_FIELDS} }} }} }}",
                        i=root)["allocation"]
            head, rows = Tree(allocation_label(allocation(found))), found["descendants"]
    by_parent: dict[str, list[AllocationRecord]] = {}
    for a in map(allocation, rows):
        by_parent.setdefault(a.parent_id, []).append(a)

    def grow(branch: Tree, parent_id: str) -> None:
        for child in sorted(by_parent.get(parent_id, []), key=lambda a: (a.created_at, a.id)):
            grow(branch.add(allocation_label(child)), child.id)

    grow(head, root)
    console.print(head)


def status(data_dir: DataDir = None) -> None:
    """Nodes with their free capacity, and allocations by state."""
    with failing():
        api = ApiClient(_settings(data_dir))
        nodes = [node(n) for n in api.pages("nodes", NODE_FIELDS)]
        counts: dict[str, int] = {}
        for a in api.pages("allocations", "state"):
            counts[state(a["state"])] = counts.get(state(a["state"]), 0) + 1
    table = Table("node", "status", "cpu free/total", "memory free/total MiB", "heartbeat")
    now = time.time()
    for n in nodes:
        shown = f"{n.status}, cordoned" if n.extra.get("cordoned") and n.status == "ready" else n.status
        table.add_row(n.name, shown, f"{n.cpu_free / 1000:g}/{n.cpu / 1000:g}", f"{n.memory_free}/{n.memory}",
                      f"{now - n.heartbeat_at:.1f}s ago")
    console.print(table)
    console.print("allocations: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"))


def logs(
    allocation_id: Annotated[str, typer.Argument(metavar="ALLOCATION", help="Allocation id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the incarnation ends")] = False,
    incarnation: Annotated[Optional[int], typer.Option(help="Which incarnation (default: the current one)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print an allocation's output (stdout and stderr): its node agent's log when that is on this machine (followed
    while it runs), else the last of it as the API can read it (the log on the API's machine, or what the graph kept)."""
    from controlplane.domain.records import LogLocation
    from controlplane.views import print_log

    settings = _settings(data_dir)
    with failing():
        api = ApiClient(settings)
        answer = api("query($i: ID!, $n: Int) { allocation(id: $i) { executor output(incarnation: $n, tailBytes: 65536) "
                     "{ incarnation nodeId path text source live } } }", i=allocation_id, n=incarnation)["allocation"]
        out = answer["output"]
        if out is None:
            raise InvalidInput(f"allocation {allocation_id} is {answer['executor']}: it runs no process and writes no output",
                               field="id")
        loc = LogLocation(allocation_id, int(out["incarnation"]), str(out["nodeId"]), out["path"],
                          started=out["path"] is not None or out["source"] != "none", live=bool(out["live"]),
                          output_tail=out["text"])

        def ended() -> bool:
            a = api("query($i: ID!) { allocation(id: $i) { incarnation state } }", i=allocation_id)["allocation"]
            return a is None or int(a["incarnation"]) != loc.incarnation or allocation({"id": allocation_id, **a}).is_terminal

        code = print_log(loc, settings.data_dir.absolute() / "runs", follow=follow and loc.live, ended=ended, err=err)
    raise typer.Exit(code)


def _load_spec(path: Path) -> dict[str, Any]:
    import json

    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: a job spec is a mapping with `name` and `tasks`")
    return data


def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON (see `controlplane schema`)")],
    node_id: Annotated[Optional[str], typer.Option("--node", help="Submitting node: the job's root is created under it")] = None,
    request_id: Annotated[Optional[str], typer.Option(help="Idempotency key: submitting again returns the same job")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends")] = False,
    data_dir: DataDir = None,
) -> None:
    """Submit a job: its DAG goes into the graph and a native `job` root unwraps it."""
    from controlplane.jobs.spec import JobSpec

    data = _load_spec(spec)
    with failing():
        api = ApiClient(_settings(data_dir))
        job = api(f"mutation($s: JobSpecInput!, $n: ID, $r: String) {{ submitJob(spec: $s, node: $n, requestId: $r) {{ {JOB_FIELDS} }} }}",
                  s=graphql_input(JobSpec, data), n=node_id, r=request_id)["submitJob"]
        console.print(f"job {job['id']} ({job['name']}) {job['state']}: root {(job['root'] or {}).get('id')} on "
                      f"{job['submittedBy']['id']}", highlight=False)
        while wait:
            time.sleep(FOLLOW_S)
            job = api(f"query($i: ID!) {{ job(id: $i) {{ {JOB_FIELDS} tasks {{ state }} }} }}", i=job["id"])["job"]
            counts: dict[str, int] = {}
            for t in job["tasks"]:
                counts[t["state"]] = counts.get(t["state"], 0) + 1
            console.print(f"  {job['state']}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), highlight=False)
            if job["state"] in FINISHED_JOB_STATES:
                if job["error"]:
                    console.print(f"  [red]{job['error']}[/red]", highlight=False)
                raise typer.Exit(0 if job["state"] == "succeeded" else 1)


def jobs(
    job_id: Annotated[Optional[str], typer.Argument(help="A job id: its tasks and the allocations that ran them")] = None,
    data_dir: DataDir = None,
) -> None:
    """List jobs, or show one job's tasks."""
    with failing():
        api = ApiClient(_settings(data_dir))
        if job_id is None:
            table = Table("job", "name", "state", "tasks", "root", "submitted")
            for j in api.pages("jobs", JOB_FIELDS):
                table.add_row(j["id"], j["name"], j["state"], str(j["tasksTotal"]), (j["root"] or {}).get("id") or "-",
                              time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["submittedAt"])))
            console.print(table)
            return
        job = api(f"query($i: ID!) {{ job(id: $i) {{ {JOB_FIELDS} tasks {{ path state replicas runs {{ incarnation state "
                  f"allocation {{ id }} node {{ id }} }} }} }} }}", i=job_id)["job"]
    console.print(f"job {job['id']} ({job['name']}): {job['state']}" + (f" — {job['error']}" if job["error"] else ""),
                  highlight=False)
    table = Table("task", "state", "replicas", "allocations (incarnation, state, node)")
    for t in job["tasks"]:
        runs = ", ".join(f"{r['allocation']['id']} ({r['incarnation']}, {r['state']}, {(r['node'] or {}).get('id', '-')})"
                         for r in t["runs"]) or "-"
        table.add_row(t["path"], t["state"], str(t["replicas"]), runs)
    console.print(table)


def cancel(job_id: Annotated[str, typer.Argument(help="Job id")], data_dir: DataDir = None) -> None:
    """Cancel a job: its whole hierarchy is stopped, children first."""
    with failing():
        job = ApiClient(_settings(data_dir))("mutation($i: ID!) { cancelJob(id: $i) { id state } }", i=job_id)["cancelJob"]
    console.print(f"job {job['id']}: {job['state']}", highlight=False)


def _node_op(data_dir: Path | None, mutation: str, say: Callable[[dict[str, Any]], str], **variables: Any) -> None:
    """One node operation through the API, and what it did (or its error's code and reason)."""
    with failing():
        answer = ApiClient(_settings(data_dir))(mutation, **variables)
    console.print(say(next(iter(answer.values()))), highlight=False)


def cordon(node_id: Annotated[str, typer.Argument(metavar="NODE", help="Node id")], data_dir: DataDir = None) -> None:
    """Cordon a node: nothing new is placed on it; what runs there stays."""
    _node_op(data_dir, "mutation($i: ID!) { cordonNode(id: $i) { id status } }", lambda n: f"{n['id']}  {n['status']}, cordoned",
             i=node_id)


def uncordon(node_id: Annotated[str, typer.Argument(metavar="NODE", help="Node id")], data_dir: DataDir = None) -> None:
    """Allow placements on a cordoned or drained node again."""
    _node_op(data_dir, "mutation($i: ID!) { uncordonNode(id: $i) { id status } }", lambda n: f"{n['id']}  {n['status']}",
             i=node_id)


def drain(
    node_id: Annotated[str, typer.Argument(metavar="NODE", help="Node id")],
    deadline: Annotated[float, typer.Option(help="Seconds each allocation gets to stop before it is killed")] = 30.0,
    data_dir: DataDir = None,
) -> None:
    """Drain a node: cordon it and move its allocations elsewhere, each by its restart type."""
    _node_op(data_dir, "mutation($i: ID!, $d: Float!) { drainNode(id: $i, deadlineS: $d) { id status } }",
             lambda n: f"{n['id']}  {n['status']}: its allocations are moving off (each stopped within {deadline:g} s)",
             i=node_id, d=deadline)


def deregister(node_id: Annotated[str, typer.Argument(metavar="NODE", help="Node id")], data_dir: DataDir = None) -> None:
    """Remove a node with no live work from the graph (refused, with the count, while it has some)."""
    _node_op(data_dir, "mutation($i: ID!) { deregisterNode(id: $i) }", lambda _: f"{node_id}  deregistered", i=node_id)


#: in the order `controlplane --help` lists them
COMMANDS = (status, tree, events, logs, spawn, stop, submit, jobs, cancel, cordon, uncordon, drain, deregister)
