"""Jobs unwrapped into the allocation hierarchy, on every engine (native executors in-process, no broker).

Task processes are simulated with the node agent's own guarded transitions;
test_demo_job.py runs a job end to end with real processes.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.errors import InvalidInput, NotFound
from controlplane.domain.lifecycle import State
from controlplane.domain.records import Exit
from controlplane.ports.store import GraphStore
from controlplane.services import ControlPlane
from controlplane.services.reports import AgentReports
from controlplane.wiring import assemble


@pytest.fixture
def cp(store: GraphStore) -> ControlPlane:
    control = assemble(store)
    control.nodes.register({"name": "n1", "cpu_milli": 64_000, "memory_mib": 65_536, "labels": {"zone": "eu"},
                           "gpus": [{"model": "A100"}, {"model": "A100"}]})
    control.nodes.register({"name": "n2", "cpu_milli": 8_000, "memory_mib": 16_384, "labels": {"zone": "us"}})
    return control


def task(name: str, *needs: str, **kw: object) -> dict[str, Any]:
    return {"name": name, "argv": ["true"], "needs": list(needs), "resources": {"cpu_milli": 100, "memory_mib": 16}, **kw}


def finish(cp: ControlPlane, job_id: str, code: int = 0, only: set[str] | None = None, output: str = "") -> list[str]:
    """Run every placed allocation of the job's tasks to exit `code`, as node agents would."""
    done = []
    for t in cp.jobs.tasks(job_id):
        if only is not None and t.path not in only:
            continue
        for run in t.runs:
            a = cp.queries.allocation(run.allocation_id)
            if a.state is State.PLACED:
                agent = AgentReports(cp.store, node=a.node_id)
                agent.claim([(a.id, a.incarnation)])
                agent.running([((a.id, a.incarnation), 4242)])
                ended = agent.exited([Exit((a.id, a.incarnation), code, output)])
                cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])
                done.append(t.path)
    return done


def test_a_dag_is_unwrapped_level_by_level_and_the_job_succeeds(cp: ControlPlane) -> None:
    job = cp.jobs.submit({"name": "etl", "tasks": [
        task("extract"), task("clean", "extract"), task("features", "extract"),
        task("train", "clean", "features", replicas=3), task("report", "train"),
    ]}, node="n1")
    root = cp.jobs.root(job.id)
    assert root is not None and root.executor == "native" and root.state is State.RUNNING and root.parent_id == "n1"
    assert finish(cp, job.id) == ["extract"]
    assert sorted(finish(cp, job.id)) == ["clean", "features"]
    assert finish(cp, job.id) == ["train"] * 3
    assert finish(cp, job.id) == ["report"]
    assert cp.jobs.job(job.id).state == "succeeded"
    assert cp.queries.allocation(root.id).state is State.SUCCEEDED
    tasks = {t.path: t for t in cp.jobs.tasks(job.id)}
    assert {t.state for t in tasks.values()} == {"succeeded"}
    assert len(tasks["train"].runs) == 3 and all(r.incarnation == 1 for r in tasks["train"].runs)
    # every task allocation is a child of the root: the job DAG overlaid on the hierarchy
    assert {a.id for a in cp.queries.children(root.id)} == {r.allocation_id for t in tasks.values() for r in t.runs}


def test_nested_children_are_spawned_by_their_task_allocation(cp: ControlPlane) -> None:
    job = cp.jobs.submit({"name": "nest", "tasks": [
        {**task("trainer"), "argv": ["sleep", "100"], "children": [task("worker", replicas=2), task("eval", "worker")]},
    ]}, node="n1")
    [trainer] = cp.jobs.tasks(job.id)[0].runs
    tasks = {t.path: t for t in cp.jobs.tasks(job.id)}
    assert {cp.queries.allocation(r.allocation_id).parent_id for r in tasks["trainer/worker"].runs} == {trainer.allocation_id}
    assert tasks["trainer/eval"].runs == ()
    finish(cp, job.id, only={"trainer/worker"})
    [ev] = {t.path: t for t in cp.jobs.tasks(job.id)}["trainer/eval"].runs
    assert cp.queries.allocation(ev.allocation_id).parent_id == trainer.allocation_id


def test_a_failed_task_fails_the_job_saying_why_and_the_rest_end_with_it(cp: ControlPlane) -> None:
    # Given a job where a (never restarted) fails while b runs and c waits for a
    job = cp.jobs.submit({"name": "doomed", "tasks": [
        task("a", restart="temporary"), {**task("b"), "argv": ["sleep", "100"]}, task("c", "a"),
    ]}, node="n1")
    [a_run] = cp.jobs.tasks(job.id)[0].runs
    # When a exits with code 3 after printing a traceback
    finish(cp, job.id, code=3, only={"a"}, output="step 1\nTraceback (most recent call last):\nValueError: bad row 7\n")
    # Then the job failed, and its error names the task, the allocation, the exit code and the end of the output
    j = cp.jobs.job(job.id)
    assert j.state == "failed"
    assert j.error == (f"task a failed: allocation {a_run.allocation_id} (incarnation 1 on {a_run.node_id}) exited with code 3; "
                       "output ends: step 1\nTraceback (most recent call last):\nValueError: bad row 7")
    assert j.root_id is not None and cp.queries.allocation(j.root_id).state is State.FAILED
    assert (cp.queries.allocation(j.root_id).error or "").startswith("job doomed: task a failed")
    b = cp.jobs.tasks(job.id)[1].runs[0]
    assert cp.queries.allocation(b.allocation_id).state is State.STOPPED  # the root's end cascaded
    # And no task is left pending or running: b was cancelled, c (never started) skipped
    assert {t.path: t.state for t in cp.jobs.tasks(job.id)} == {"a": "failed", "b": "cancelled", "c": "skipped"}
    assert cp.jobs.tasks(job.id)[2].runs == ()


def test_a_task_killed_by_a_signal_says_which(cp: ControlPlane) -> None:
    job = cp.jobs.submit({"name": "killed", "tasks": [task("a", restart="temporary"), task("b", "a")]}, node="n1")
    finish(cp, job.id, code=-9, only={"a"})
    error = cp.jobs.job(job.id).error or ""
    assert "killed by signal 9 (SIGKILL); no output" in error and error.startswith("task a failed: allocation ")
    assert [t.state for t in cp.jobs.tasks(job.id)] == ["failed", "skipped"]


def test_a_failed_task_is_restarted_per_policy_before_the_job_gives_up(cp: ControlPlane) -> None:
    job = cp.jobs.submit({"name": "flaky", "tasks": [task("a")]}, node="n1")
    finish(cp, job.id, code=1)
    [t] = cp.jobs.tasks(job.id)
    assert t.state == "running" and t.runs[0].incarnation == 2
    finish(cp, job.id, code=0)
    assert cp.jobs.job(job.id).state == "succeeded"


def test_cancel_stops_the_whole_hierarchy_running_tasks_cancelled_the_rest_skipped(cp: ControlPlane) -> None:
    job = cp.jobs.submit({"name": "long", "tasks": [{**task("svc"), "argv": ["sleep", "1000"]}, task("after", "svc")]},
                         node="n1")
    cancelled = cp.jobs.cancel(job.id)
    assert cancelled.state == "cancelled"
    assert cancelled.root_id is not None
    root = cp.queries.allocation(cancelled.root_id)
    assert root.state is State.STOPPED
    assert all(cp.queries.allocation(r.allocation_id).state is State.STOPPED for t in cp.jobs.tasks(job.id) for r in t.runs)
    assert {t.path: t.state for t in cp.jobs.tasks(job.id)} == {"svc": "cancelled", "after": "skipped"}


def test_the_replicas_executor_keeps_its_copies(cp: ControlPlane) -> None:
    [rs] = cp.allocations.spawn("n1", [{"name": "web", "executor": "native", "native": "replicas",
                             "config": {"count": 3, "template": {"name": "web", "argv": ["sleep", "100"], "restart": "permanent",
                                                                  "resources": {"cpu_milli": 10, "memory_mib": 8}}}}])
    kids = cp.queries.children(rs.id)
    assert cp.queries.allocation(rs.id).state is State.RUNNING and len(kids) == 3
    a = kids[0]
    agent = AgentReports(cp.store, node=a.node_id)
    agent.claim([(a.id, 1)])
    ended = agent.exited([Exit((a.id, 1), 0, "")])
    cp.dispatcher.terminated(keys=[(e.id, e.incarnation) for e in ended])
    assert cp.queries.allocation(a.id).incarnation == 2  # permanent: brought back even after a normal exit


@pytest.mark.parametrize(
    ("job", "field", "words"),
    [
        ({"name": "c", "tasks": [task("a", "b"), task("b", "a")]}, "job.tasks", ["cycle", "a -> b -> a"]),
        ({"name": "m", "tasks": [task("a", "ghost")]}, "job.tasks", ["a -> ghost"]),
        ({"name": "big", "tasks": [task("huge", resources={"cpu_milli": 999_000}), task("ok")]}, "job.tasks", ["huge.resources.cpu_milli: no node offers cpu=999000m"]),
        ({"name": "gpu", "tasks": [task("h", resources={"gpus": 1, "gpu_model": "H100"})]}, "job.tasks", ["h.resources.gpu_model: no node has a GPU of model H100"]),
        ({"name": "x", "tasks": [task("t", resources={"gpus": 3})]}, "job.tasks", ["t.resources.gpus: no node has 3 GPUs (at most 2)"]),
        ({"name": "n", "tasks": [{"name": "t", "executor": "warp-drive"}]}, "job.tasks", ["warp-drive"]),
        ({"name": "l", "tasks": [task("t", placement={"node_labels": {"zone": "mars"}})]}, "job.tasks", ["t.placement.node_labels: no node has zone=mars"]),
        ({"name": "e", "tasks": []}, "job.tasks", []),
    ],
)
def test_bad_jobs_are_refused_naming_the_tasks_and_nothing_is_written(cp: ControlPlane, store: GraphStore, job: dict[str, Any], field: str, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        cp.jobs.submit(job, node="n1")
    assert err.value.field == field
    for w in words:
        assert w in err.value.message
    assert cp.jobs.jobs(limit=10) == []
    assert store.list_allocations(after=None, limit=10) == []


def test_unknown_submitting_node(cp: ControlPlane) -> None:
    with pytest.raises(NotFound) as err:
        cp.jobs.submit({"name": "j", "tasks": [task("a")]}, node="ghost")
    assert err.value.field == "node"


def test_submit_with_a_request_id_is_idempotent(cp: ControlPlane, store: GraphStore) -> None:
    spec = {"name": "once", "tasks": [task("a"), task("b", "a")]}
    first = cp.jobs.submit(spec, node="n1", request_id="r1")
    again = cp.jobs.submit(spec, node="n1", request_id="r1")
    assert first.id == again.id and first.root_id == again.root_id
    assert len(cp.jobs.jobs(limit=10)) == 1
    assert len([t for t in cp.jobs.tasks(first.id) if t.runs]) == 1


def test_affinity_places_near_the_parent_and_spread_uses_many_nodes(cp: ControlPlane) -> None:
    for name in ("near", "far", "s1", "s2", "s3"):
        cp.nodes.register({"name": name, "cpu_milli": 100_000, "memory_mib": 100_000})
    cp.nodes.connect("n2", "near", rtt_ms=2)
    cp.nodes.connect("n2", "far", rtt_ms=80)
    [parent] = cp.allocations.spawn("n2", [{"name": "p", "argv": ["sleep", "9"], "node": "n2", "resources": {"cpu_milli": 8000, "memory_mib": 16}}])
    # n2 is full now: the nearest neighbour within 10 ms wins over bigger, farther nodes
    kids = cp.allocations.spawn(parent.id, [{"name": f"k{i}", "argv": ["true"], "max_rtt_ms": 10, "resources": {"cpu_milli": 10, "memory_mib": 1}} for i in range(3)])
    assert {k.node_id for k in kids} == {"near"}
    spread = cp.allocations.spawn("n1", [{"name": f"s{i}", "argv": ["true"], "spread_key": "web", "resources": {"cpu_milli": 10, "memory_mib": 1}} for i in range(6)])
    assert len({a.node_id for a in spread}) == 6
    from controlplane.domain.errors import NoCapacity

    with pytest.raises(NoCapacity) as err:
        cp.allocations.spawn(parent.id, [{"name": "x", "argv": ["true"], "max_rtt_ms": 1, "resources": {"cpu_milli": 10, "memory_mib": 1}}])
    assert "within 1 ms" in err.value.message


def test_gpu_placement_through_gpu_owner(cp: ControlPlane) -> None:
    cp.nodes.register({"name": "t4box", "cpu_milli": 100_000, "memory_mib": 100_000, "gpus": [{"model": "T4"}] * 4})
    a100 = cp.allocations.spawn("n2", [{"name": "a", "argv": ["true"], "resources": {"cpu_milli": 10, "memory_mib": 1, "gpus": 2, "gpu_model": "A100"}}])
    t4 = cp.allocations.spawn("n2", [{"name": "t", "argv": ["true"], "resources": {"cpu_milli": 10, "memory_mib": 1, "gpus": 3, "gpu_model": "T4"}}])
    assert (a100[0].node_id, len(a100[0].gpu_ids)) == ("n1", 2)
    assert (t4[0].node_id, len(t4[0].gpu_ids)) == ("t4box", 3)


def test_stopping_a_jobs_root_directly_cancels_the_job(cp: ControlPlane) -> None:
    job = cp.jobs.submit({"name": "j", "tasks": [{**task("svc"), "argv": ["sleep", "100"]}]}, node="n1")
    assert job.root_id is not None
    cp.allocations.stop(job.root_id)
    assert cp.jobs.job(job.id).state == "cancelled"
    assert [t.state for t in cp.jobs.tasks(job.id)] == ["cancelled"]  # its allocation was stopped with the root
