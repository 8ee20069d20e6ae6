"""The job store on the Cypher engines (FalkorDB, Neo4j): the Job DAG's statements and their adapter.

Runs over the connection of the engine's CypherStore (its `read` and `write`),
so the same rules hold: one statement per change with its precondition inside,
values as parameters, vocabulary enums the only text composed into queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.domain.vocabulary import EdgeType, Label
from controlplane.jobs.model import JobRecord, JobState, TaskRecord, TaskState
from controlplane.jobs.ports import NewTask
from graph_schema.cypher.base import CypherStore, props_of

A = Label.ALLOCATION.value
JOB = Label.JOB.value
TASK = Label.TASK.value
HAS_TASK = EdgeType.HAS_TASK.value
DEPENDS_ON = EdgeType.DEPENDS_ON.value
EXECUTES = EdgeType.EXECUTES.value

# The Job DAG in one request: the Job, its Tasks (given parents and needs first, so each
# MERGE finds the tasks created before it), HAS_TASK and DEPENDS_ON. Idempotent by job id.
CREATE_JOB = f"""
OPTIONAL MATCH (old:{JOB} {{id: $id}})
WITH count(old) AS repeats WHERE repeats = 0
CREATE (j:{JOB} {{id: $id, name: $name, state: 'submitted', spec: $spec, submitted_at: $now, updated_at: $now,
                 submitted_by: $node, tasks_total: size($tasks), root_id: $root_id}})
WITH j
UNWIND $tasks AS t
CREATE (x:{TASK} {{id: t.id, job_id: $id, path: t.path, name: t.name, parent_path: t.parent_path, state: 'pending',
                  replicas: t.replicas, executor: t.executor, spec: t.spec, seq: t.seq}})
FOREACH (p IN CASE WHEN t.parent_id IS NULL THEN [j] ELSE [] END | CREATE (p)-[:{HAS_TASK}]->(x))
FOREACH (pid IN CASE WHEN t.parent_id IS NULL THEN [] ELSE [t.parent_id] END |
  MERGE (p:{TASK} {{id: pid}}) CREATE (p)-[:{HAS_TASK}]->(x))
FOREACH (nid IN t.needs | MERGE (n:{TASK} {{id: nid}}) CREATE (x)-[:{DEPENDS_ON}]->(n))
WITH j, count(x) AS tasks
RETURN properties(j) AS j
"""

GET_JOB = f"MATCH (j:{JOB} {{id: $id}}) RETURN properties(j) AS j"

LIST_JOBS = f"""
MATCH (j:{JOB})
WHERE ($after IS NULL OR j.id > $after) AND ($state IS NULL OR j.state = $state)
RETURN properties(j) AS j ORDER BY j.id LIMIT $limit
"""

# Every task of the job with the allocations that executed it (id, incarnation, state).
JOB_TASKS = f"""
MATCH (t:{TASK})
WHERE t.job_id = $id
OPTIONAL MATCH (a:{A})-[:{EXECUTES}]->(t)
RETURN properties(t) AS t, collect([a.id, a.incarnation, a.state, a.node_id, a.restart_at]) AS runs
ORDER BY t.seq
"""

SET_TASK_STATES = f"""
UNWIND $changes AS c
MATCH (t:{TASK} {{id: c.id}})
WHERE t.state IN c.expected
SET t.state = c.to, t.updated_at = $now
RETURN t.id
"""

SET_JOB_STATE = f"""
MATCH (j:{JOB} {{id: $id}})
WHERE j.state IN $expected
SET j.state = $to, j.updated_at = $now
SET j += $fields
RETURN properties(j) AS j
"""



class CypherJobStore:
    def __init__(self, store: CypherStore) -> None:
        self.store = store

    def create_job(
        self, *, job_id: str, name: str, spec_json: str, node_id: str, tasks: Sequence[NewTask], root_id: str, now: float
    ) -> JobRecord:
        rows = self.store.write(CREATE_JOB, {
            "id": job_id, "name": name, "spec": spec_json, "node": node_id, "now": now, "root_id": root_id,
            "tasks": [{"id": t.id, "path": t.path, "name": t.name, "parent_id": t.parent_id,
                       "parent_path": t.path.rsplit("/", 1)[0] if "/" in t.path else None,
                       "needs": list(t.needs), "replicas": t.replicas, "executor": t.executor,
                       "spec": t.spec_json, "seq": t.seq} for t in tasks],
        })
        if rows:
            return JobRecord.from_props(props_of(rows[0][0]))
        existing = self.get_job(job_id=job_id)
        if existing is None:
            raise RuntimeError(f"job {job_id} was neither created nor found")
        return existing

    def get_job(self, *, job_id: str) -> JobRecord | None:
        rows = self.store.read(GET_JOB, {"id": job_id})
        return JobRecord.from_props(props_of(rows[0][0])) if rows else None

    def list_jobs(self, *, after: str | None, limit: int, state: JobState | None = None) -> list[JobRecord]:
        rows = self.store.read(LIST_JOBS, {"after": after, "limit": int(limit), "state": state.value if state else None})
        return [JobRecord.from_props(props_of(r[0])) for r in rows]

    def job_tasks(self, *, job_id: str) -> list[TaskRecord]:
        return [TaskRecord.from_props(props_of(r[0]), r[1]) for r in self.store.read(JOB_TASKS, {"id": job_id})]

    def set_task_states(self, *, changes: Sequence[tuple[str, Sequence[TaskState], TaskState]], now: float) -> list[str]:
        if not changes:
            return []
        rows = self.store.write(SET_TASK_STATES, {
            "changes": [{"id": i, "expected": [e.value for e in expected], "to": to.value} for i, expected, to in changes],
            "now": now})
        return [r[0] for r in rows]

    def set_job_state(
        self, *, job_id: str, expected: Sequence[JobState], to: JobState, now: float, fields: dict[str, Any] | None = None
    ) -> JobRecord | None:
        rows = self.store.write(SET_JOB_STATE, {"id": job_id, "expected": [e.value for e in expected], "to": to.value,
                                                "now": now,
                                                "fields": {k: v for k, v in (fields or {}).items() if v is not None}})
        return JobRecord.from_props(props_of(rows[0][0])) if rows else None
