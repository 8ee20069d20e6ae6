"""Cypher text shared by every Cypher engine.

Values always travel as parameters. The only things composed into query text
are vocabulary enums and validated integers (depths). Locking: a statement
first "touches" (REMOVE of a property that never exists) every vertex whose
properties it checks, which takes Neo4j's write lock before the check reads
them; FalkorDB runs each query alone, so the touch is a no-op there. Lock
order is always Actor (parent or allocation) before Node, nodes by id.
"""

from __future__ import annotations

from graph_schema.vocabulary import EdgeType, Label

A = Label.ALLOCATION.value
N = Label.NODE.value
ACT = Label.ACTOR.value
G = Label.GPU.value
PARENT_OF = EdgeType.PARENT_OF.value
RUNS_ON = EdgeType.RUNS_ON.value
GPU_OWNER = EdgeType.GPU_OWNER.value
CLAIMS = EdgeType.CLAIMS.value
NEIGHBOR_OF = EdgeType.NEIGHBOR_OF.value

REGISTER_NODE = f"""
MERGE (n:{N}:{ACT} {{id: $id}})
ON CREATE SET n.registered_at = $now, n.version = 0
REMOVE n._lock
SET n.name = $name, n.labels = $labels, n.cpu = $cpu, n.memory = $memory,
    n.status = 'ready', n.heartbeat_at = $now, n.version = n.version + 1
FOREACH (gs IN $gpus |
  MERGE (g:{G} {{id: gs.id}})
  SET g.model = gs.model, g.memory = gs.memory, g.node_id = $id
  MERGE (g)-[:{GPU_OWNER}]->(n))
WITH n
OPTIONAL MATCH (a:{A})-[:{RUNS_ON}]->(n) WHERE a.state IN $holding
WITH n, sum(a.cpu) AS ucpu, sum(a.memory) AS umem
SET n.cpu_free = n.cpu - ucpu, n.memory_free = n.memory - umem
RETURN properties(n) AS n
"""

HEARTBEAT = f"""
MATCH (n:{N} {{id: $id}})
SET n.heartbeat_at = CASE WHEN n.heartbeat_at > $now THEN n.heartbeat_at ELSE $now END
RETURN n.id
"""

SET_NODE_STATUS = f"""
MATCH (n:{N} {{id: $id}})
REMOVE n._lock
WITH n WHERE n.status IN $expected
SET n.status = $status, n.version = n.version + 1, n.status_changed_at = $now
RETURN properties(n) AS n
"""

CONNECT_NEIGHBORS = f"""
MATCH (a:{N} {{id: $a}}), (b:{N} {{id: $b}})
MERGE (a)-[r:{NEIGHBOR_OF}]->(b)
SET r.rtt_ms = $rtt_ms, r.bandwidth = $bandwidth
MERGE (b)-[s:{NEIGHBOR_OF}]->(a)
SET s.rtt_ms = $rtt_ms, s.bandwidth = $bandwidth
RETURN a.id
"""

GET_NODE = f"MATCH (n:{N} {{id: $id}}) RETURN properties(n) AS n"

LIST_NODES = f"""
MATCH (n:{N})
WHERE ($after IS NULL OR n.id > $after) AND ($status IS NULL OR n.status = $status)
RETURN properties(n) AS n ORDER BY n.id LIMIT $limit
"""

NEIGHBORS = f"""
MATCH (:{N} {{id: $id}})-[r:{NEIGHBOR_OF}]->(m:{N})
RETURN m.id, r.rtt_ms, r.bandwidth ORDER BY r.rtt_ms, m.id
"""

GPUS = f"""
MATCH (g:{G})-[:{GPU_OWNER}]->(:{N} {{id: $id}})
RETURN properties(g) AS g ORDER BY g.id
"""

NODE_CAPACITIES = f"""
MATCH (n:{N})
WHERE n.status = 'ready' AND ($ids IS NULL OR n.id IN $ids)
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n) WHERE g.claimed_by IS NULL
RETURN n.id, n.status, n.labels, n.cpu_free, n.memory_free, collect(g.id), collect(g.model)
"""

# (FalkorDB 4.16 keeps rows for `OPTIONAL MATCH (x) WITH x WHERE x IS NULL` even when x
# matched, so existence checks here count instead.)
# One request: idempotency check, parent lock and liveness, per-node locks and
# capacity/GPU checks for the whole batch, reservation, creation, edges, claims.
CREATE_ALLOCATIONS = f"""
OPTIONAL MATCH (dup:{A} {{id: $first_id}})
WITH count(dup) AS repeats WHERE repeats = 0
MATCH (p:{ACT} {{id: $parent_id}})
REMOVE p._lock
WITH p WHERE p:{N} OR p.state IN $accepts
UNWIND $demands AS d
MATCH (n:{N} {{id: d.node_id}})
REMOVE n._lock
WITH p, d, n
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n) WHERE g.id IN d.gpu_ids AND g.claimed_by IS NULL
WITH p, d, n, count(g) AS free_gpus
WHERE n.status = 'ready' AND n.cpu_free >= d.cpu AND n.memory_free >= d.memory AND free_gpus = size(d.gpu_ids)
WITH p, collect(n) AS nodes, collect(d) AS ds
WHERE size(nodes) = size($demands)
UNWIND range(0, size(nodes) - 1) AS i
WITH p, nodes[i] AS n, ds[i] AS d
SET n.cpu_free = n.cpu_free - d.cpu, n.memory_free = n.memory_free - d.memory
WITH p, count(n) AS reserved
UNWIND $allocs AS props
MATCH (n:{N} {{id: props.node_id}})
CREATE (a:{A}:{ACT})
SET a = props
CREATE (p)-[:{PARENT_OF}]->(a), (a)-[:{RUNS_ON}]->(n)
WITH a
OPTIONAL MATCH (g:{G}) WHERE g.id IN a.gpu_ids
FOREACH (x IN CASE WHEN g IS NULL THEN [] ELSE [g] END |
  SET x.claimed_by = a.id
  CREATE (a)-[:{CLAIMS}]->(x))
WITH DISTINCT a
RETURN properties(a) AS a ORDER BY a.seq
"""

# Why a create was refused: read after the fact, only to name the reason.
DIAGNOSE_PARENT = f"""
OPTIONAL MATCH (p:{ACT} {{id: $parent_id}})
RETURN p IS NOT NULL, CASE WHEN p IS NULL THEN null ELSE p.state END, CASE WHEN p IS NULL THEN false ELSE p:{N} END
"""

# A batch of guarded transitions. Each change names its allowed moves {from: to};
# the current state picks the move, or refuses the change (no row back). Leaving
# the resource-holding states releases cpu, memory and GPUs in the same request.
_TRANSITION_HEAD = f"""
UNWIND $changes AS c
MATCH (a:{A} {{id: c.id}})
REMOVE a._lock
WITH a, c, a.state AS prev
WITH a, c, prev, c.moves[prev] AS to
WHERE to IS NOT NULL AND (c.incarnation IS NULL OR a.incarnation = c.incarnation)
SET a.state = to, a.version = a.version + 1, a.updated_at = $now
SET a += c.fields
SET a.error = CASE WHEN to = 'failed' AND c.failure IS NOT NULL THEN c.failure ELSE a.error END
"""
_RELEASE = f"""
WITH a, prev, (prev IN $holding AND NOT a.state IN $holding) AS release
OPTIONAL MATCH (a)-[:{RUNS_ON}]->(n:{N})
FOREACH (x IN CASE WHEN release AND n IS NOT NULL THEN [n] ELSE [] END |
  REMOVE x._lock
  SET x.cpu_free = x.cpu_free + a.cpu, x.memory_free = x.memory_free + a.memory)
WITH a, prev, release
OPTIONAL MATCH (a)-[cl:{CLAIMS}]->(g:{G})
FOREACH (x IN CASE WHEN release AND g IS NOT NULL THEN [g] ELSE [] END | SET x.claimed_by = null)
FOREACH (x IN CASE WHEN release AND cl IS NOT NULL THEN [cl] ELSE [] END | DELETE x)
WITH DISTINCT a, prev
"""
_TRANSITION_TAIL = "RETURN properties(a) AS a, prev\n"
#: when no change can leave the holding states (starting, running, ...): no release work
TRANSITION_KEEP = _TRANSITION_HEAD + _TRANSITION_TAIL
TRANSITION = _TRANSITION_HEAD + _RELEASE + _TRANSITION_TAIL

GET_ALLOCATION = f"MATCH (a:{A} {{id: $id}}) RETURN properties(a) AS a"

GET_ALLOCATIONS = f"UNWIND $ids AS id MATCH (a:{A} {{id: id}}) RETURN properties(a) AS a"

LIST_ALLOCATIONS = f"""
MATCH (a:{A})
WHERE ($after IS NULL OR a.id > $after) AND ($state IS NULL OR a.state = $state)
  AND ($node_id IS NULL OR a.node_id = $node_id)
RETURN properties(a) AS a ORDER BY a.id LIMIT $limit
"""

CHILDREN = f"""
MATCH (:{ACT} {{id: $id}})-[:{PARENT_OF}]->(a:{A})
WHERE $after IS NULL OR a.id > $after
RETURN properties(a) AS a ORDER BY a.id LIMIT $limit
"""


def descendants(max_depth: int) -> str:
    depth = int(max_depth)
    return f"""
MATCH (:{ACT} {{id: $id}})-[:{PARENT_OF}*1..{depth}]->(a:{A})
WITH DISTINCT a
RETURN properties(a) AS a ORDER BY a.id LIMIT $limit
"""


ANCESTORS = f"""
MATCH path = (a:{ACT} {{id: $id}})<-[:{PARENT_OF}*1..256]-(p)
RETURN labels(p), properties(p), length(path) AS depth ORDER BY depth
"""

ACTOR_LABEL = f"""
OPTIONAL MATCH (a:{ACT} {{id: $id}})
OPTIONAL MATCH (g:{G} {{id: $id}})
RETURN CASE WHEN a IS NOT NULL THEN labels(a) WHEN g IS NOT NULL THEN labels(g) ELSE null END
"""
