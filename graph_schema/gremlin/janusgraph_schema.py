"""What JanusGraph needs that TinkerGraph does not: a declared schema with locks, and lists kept as JSON text.

**Schema.** JanusGraph gives no isolation of its own over Cassandra: two transactions that
read a node's free cpu and both write it back both commit, unless the property key is
declared with `ConsistencyModifier.LOCK`. Then a commit that changes the key first takes
a lock on (vertex, key) in the storage backend and checks that the value it read is still
the stored one; if not, the commit fails and `janusgraph.JanusGraphRemote` reruns the
whole (idempotent) traversal, as it does for TinkerGraph's optimistic conflicts. So every
precondition the control plane's writes check is a LOCK key they also write:

- `cpu_free`, `memory_free` (Node): every create and restart rewrites them on every node
  it places on (zero demands included), so capacity is a compare-and-set, and so is the
  idempotency check of a repeated create (its second copy fails on the node it reserves on);
- `claimed_by` (Gpu): claiming writes it where it was absent, releasing drops it;
- `version` and `state` (Allocation, Job, Task), `incarnation`: every transition and
  restart bumps `version`, so two concurrent moves of one allocation never both apply;
- `status` (Node): declaring lost, draining and registering are compare-and-set;
- `id`: a unique composite index with LOCK, so two servers never create one id twice.

What is not protected (shown in tests/test_janusgraph_limits.py, said in docs/engines.md):
a check on a vertex a traversal only reads. Linking a child to its parent adds a
PARENT_OF edge without rewriting a locked key of the parent, so a spawn racing with the
parent's own stop can put a child under a parent that just began stopping (TinkerGraph
refuses that race, because an edge changes both of its vertices there); the stop then
waits for that child, and the scheduler's reconciler carries the stop on.

**Vertex ids.** JanusGraph refuses a custom string id holding `-` (its RelationIdentifier
delimiter), which node names such as `edge-eu-1` do. The vertex id (T.id) is therefore the
control plane's id with `%` and `-` percent-escaped (`vertex_id`), applied by `encode` to
every id a traversal names (`V(..)`, `hasId(..)`, `property(T.id, ..)`, mergeV maps; an id
computed in the traversal gets the same two `replace` steps). The property `id`, which every
filter and record reads, keeps the id as it is.

**Lists.** JanusGraph stores no java.util.List, and the String[] it does store cannot be
sent back over GraphBinary 1.0. The list-valued properties (`LIST_KEYS`: `labels`,
`node_labels`, `argv`, `gpu_ids`, `restart_log`, an Event's `children`) are therefore kept as JSON text: `encode` rewrites the bytecode
a traversal sends (list values of `property` steps and of mergeV maps become JSON; the
"list contains x" filter `values(k).unfold().is(x)` becomes `has(k, containing(json(x)))`),
and `decode` turns them back into lists in every answer. The traversals themselves stay
the ones every Gremlin engine runs (writes.py, jobs.py, ...).
"""

from __future__ import annotations

import json
from typing import Any

from gremlin_python.process.traversal import Bytecode, P, T, TextP

from controlplane.domain.vocabulary import EdgeType, Label

#: properties whose values are lists (`children` and `restarts` of a decision Event too)
LIST_KEYS = frozenset({"labels", "node_labels", "argv", "gpu_ids", "restart_log", "children"})
#: a list under a key JanusGraph types as a number (a decision Event's `restarts`, the ids it restarted,
#: where an Allocation's `restarts` counts them) is kept under the key with this suffix
LIST_SUFFIX = "__list"

#: keys whose writes are compare-and-set (ConsistencyModifier.LOCK)
LOCKED = frozenset({"cpu_free", "memory_free", "claimed_by", "version", "state", "status", "incarnation", "id"})

_STRING = (
    "id", "name", "status", "state", "executor", "env", "parent_id", "node_id", "gpu_model", "model", "claimed_by",
    "error", "output_tail", "restart_type", "supervision", "child_policy", "job_id", "task_id", "root_of", "agent",
    "spread_key", "kind", "allocation_id", "from", "to", "reason", "by", "spec", "submitted_by", "root_id", "path",
    "parent_path", "identity", *sorted(LIST_KEYS),
)
_LONG = (
    "cpu", "memory", "cpu_free", "memory_free", "version", "incarnation", "gpus", "exit_code", "pid", "seq",
    "backoff_level", "restarts", "tick", "tasks_total", "replicas",
)
_DOUBLE = (
    "heartbeat_at", "registered_at", "status_changed_at", "grace_period_s", "created_at", "updated_at", "orphaned_at",
    "restart_at", "started_at", "finished_at", "stop_requested_at", "at", "submitted_at", "rtt_ms", "bandwidth", "since",
)
_BOOLEAN = ("orphan", "process_exited")
_NUMERIC = frozenset((*_LONG, *_DOUBLE, *_BOOLEAN))

#: (property key, data type, locked); keys not named here are created by JanusGraph on first use
PROPERTY_KEYS: tuple[tuple[str, str, bool], ...] = tuple(
    (name, kind, name in LOCKED)
    for kind, names in (("String", _STRING), ("Long", _LONG), ("Double", _DOUBLE), ("Boolean", _BOOLEAN))
    for name in names
)

#: composite indexes: (index name, property key, unique); the lookups the store makes by equality
INDEXES: tuple[tuple[str, str, bool], ...] = (
    ("byId", "id", True),
    ("byStatus", "status", False),
    ("byState", "state", False),
    ("byNodeId", "node_id", False),
    ("byParentId", "parent_id", False),
    ("byAllocationId", "allocation_id", False),
    ("bySpreadKey", "spread_key", False),
    ("byJobId", "job_id", False),
)
VERTEX_LABELS = tuple(label.value for label in Label if label is not Label.ACTOR)
EDGE_LABELS = tuple(e.value for e in EdgeType)

#: Groovy run once by bootstrap() (JanusGraph's management API has no bytecode form); names and
#: types arrive as bindings, never in the text. Answers "created" or "present".
BOOTSTRAP_SCRIPT = """
import org.janusgraph.core.schema.ConsistencyModifier
import org.apache.tinkerpop.gremlin.structure.Vertex
def types = [String: String.class, Long: Long.class, Double: Double.class, Boolean: Boolean.class]
def m = graph.openManagement()
try {
    if (m.getGraphIndex(lastIndex) != null) { m.rollback(); return "present" }
    for (k in propertyKeys) {
        def key = m.getPropertyKey(k[0]) ?: m.makePropertyKey(k[0]).dataType(types[k[1]])
                .cardinality(org.janusgraph.core.Cardinality.SINGLE).make()
        if (k[2]) m.setConsistency(key, ConsistencyModifier.LOCK)
    }
    for (l in vertexLabels) { if (m.getVertexLabel(l) == null) m.makeVertexLabel(l).make() }
    for (l in edgeLabels) { if (m.getEdgeLabel(l) == null) m.makeEdgeLabel(l).make() }
    for (i in indexes) {
        if (m.getGraphIndex(i[0]) != null) continue
        def b = m.buildIndex(i[0], Vertex.class).addKey(m.getPropertyKey(i[1]))
        if (i[2]) b = b.unique()
        def index = b.buildCompositeIndex()
        if (i[2]) m.setConsistency(index, ConsistencyModifier.LOCK)
    }
    m.commit()
    return "created"
} catch (Throwable e) {
    if (m.isOpen()) m.rollback()
    throw e
}
"""


def bootstrap_bindings() -> dict[str, Any]:
    return {
        "propertyKeys": [list(k) for k in PROPERTY_KEYS],
        "vertexLabels": list(VERTEX_LABELS),
        "edgeLabels": list(EDGE_LABELS),
        "indexes": [list(i) for i in INDEXES],
        "lastIndex": INDEXES[-1][0],  # created last, in the same management transaction as the rest
    }


# --- lists as JSON --------------------------------------------------------------------------------


def vertex_id(v: Any) -> Any:
    """The T.id JanusGraph keeps for one of our ids: `%` and `-` percent-escaped (injective, printable ASCII)."""
    return v.replace("%", "%25").replace("-", "%2D") if isinstance(v, str) else v


_ESCAPE_STEPS = [["replace", "%", "%25"], ["replace", "-", "%2D"]]


def _ids(p: Any) -> Any:
    if isinstance(p, P):
        value = [vertex_id(x) for x in p.value] if isinstance(p.value, list) else vertex_id(p.value)
        return P(p.operator, value, p.other)
    if isinstance(p, list):
        return [vertex_id(x) for x in p]
    return vertex_id(p)


def _json(v: Any) -> str:
    return json.dumps(list(v), separators=(",", ":"))


def encode(bytecode: Bytecode) -> Bytecode:
    """A copy of `bytecode` whose list-valued properties travel as JSON text (see the module doc)."""
    out = Bytecode()
    out.bindings = dict(bytecode.bindings)
    out.source_instructions = [_instruction(i) for i in bytecode.source_instructions]
    steps = bytecode.step_instructions
    contains = _list_contains(steps)
    out.step_instructions = [contains] if contains is not None else [_instruction(i) for i in steps]
    return out


def _list_contains(steps: list[list[Any]]) -> list[Any] | None:
    """`values(k).unfold().is(x)` on a list key k, as `has(k, containing(json x))` (exact: JSON quotes each item)."""
    if len(steps) != 3 or [s[0] for s in steps] != ["values", "unfold", "is"] or len(steps[0]) != 2 or len(steps[2]) != 2:
        return None
    key, wanted = steps[0][1], steps[2][1]
    if key not in LIST_KEYS:
        return None
    if isinstance(wanted, P):
        if wanted.operator != "eq":
            return None
        wanted = wanted.value
    return ["has", key, TextP.containing(json.dumps(wanted))]


def _list_key(key: Any) -> Any:
    return f"{key}{LIST_SUFFIX}" if key in _NUMERIC else key


def _instruction(ins: list[Any]) -> list[Any]:
    name, args = ins[0], [_arg(a) for a in ins[1:]]
    if name in ("V", "hasId"):
        args = [_ids(a) for a in args]
    elif name == "property" and len(args) == 2 and args[0] == T.id:
        if isinstance(args[1], Bytecode):  # an id computed in the traversal (an event's `<allocation>:<version>`)
            args[1].step_instructions.extend([list(s) for s in _ESCAPE_STEPS])
        else:
            args[1] = vertex_id(args[1])
    elif name == "property" and args and isinstance(args[-1], (list, tuple)):
        args[-1] = _json(args[-1])
        args[-2] = _list_key(args[-2])
    return [name, *args]


def _arg(a: Any) -> Any:
    if isinstance(a, Bytecode):
        return encode(a)
    if isinstance(a, dict):
        if not (T.label in a or T.id in a):
            return {k: _arg(v) for k, v in a.items()}
        # a mergeV map: its list values are property values, its T.id a vertex id
        return {
            _list_key(k) if isinstance(v, (list, tuple)) else k:
            vertex_id(v) if k == T.id else _json(v) if isinstance(v, (list, tuple)) else _arg(v)
            for k, v in a.items()
        }
    if isinstance(a, list):
        return [_arg(x) for x in a]
    return a


def decode(v: Any) -> Any:
    """An answer with the JSON text of list-valued properties back as lists."""
    if isinstance(v, dict):
        out: dict[Any, Any] = {}
        for k, x in v.items():
            if isinstance(k, str) and k.endswith(LIST_SUFFIX) and isinstance(x, str):
                out[k[: -len(LIST_SUFFIX)]] = _loads(x)
            else:
                out[k] = _loads(x) if k in LIST_KEYS and isinstance(x, str) else decode(x)
        return out
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
