// What the page draws, from whatever the API answered: raw-query rows (vertices, edges and paths in
// the engines' common shape, see graph_schema/raw_elements.py), traversal vertices, GraphQL records.
// A vertex is keyed by the control plane's own `id` property, so the same allocation found by a
// query, a traversal and an event is one vertex; an edge by (source, type, target).
export const ELEMENT = "~element";

/** Every vertex and edge anywhere in the rows (inside lists, maps and paths), in order of appearance. */
export function collect(rows) {
  const vertices = [];
  const edges = [];
  const walk = (value) => {
    if (Array.isArray(value)) {
      value.forEach(walk);
    } else if (value && typeof value === "object") {
      const kind = value[ELEMENT];
      if (kind === "vertex") vertices.push(value);
      else if (kind === "edge") edges.push(value);
      else if (kind === "path") {
        value.vertices.forEach(walk);
        value.edges.forEach(walk);
      } else Object.values(value).forEach(walk);
    }
  };
  walk(rows);
  return { vertices, edges };
}

export function mainLabel(labels) {
  return labels.find((l) => l !== "Actor") ?? labels[0] ?? "?";
}

function caption(label, p, fallback) {
  switch (label) {
    case "Allocation": return `${p.name ?? p.id}\n${p.state ?? ""}`;
    case "Node": return `${p.id ?? fallback}\n${p.status ?? ""}`;
    case "Gpu": return `${p.model ?? "GPU"}\n${String(p.id ?? "").split("/").pop()}`;
    case "Job": return `job ${p.name ?? p.id}\n${p.state ?? ""}`;
    case "Task": return `${p.path ?? p.name ?? p.id}\n${p.state ?? ""}`;
    case "Event": return `${p.kind ?? "event"} ${p.to_state ?? ""}`;
    default: return String(p.name ?? p.id ?? fallback);
  }
}

/** Vertex data for the graph: `key` (our id, or "~" + the engine's), label, caption, state and all properties. */
export function vertexData(label, labels, properties, engineId = null) {
  const p = { ...properties };
  if (typeof p.state === "string") p.state = p.state.toLowerCase();
  const key = p.id !== undefined && p.id !== null ? String(p.id) : `~${engineId}`;
  return { id: key, label, labels, engineId, caption: caption(label, p, key), state: p.state ?? p.status ?? null, props: p };
}

export function fromRaw(vertex) {
  return vertexData(mainLabel(vertex.labels), vertex.labels, vertex.properties, vertex.id);
}

/** An allocation as the GraphQL API answers it (camelCase), as graph properties (snake_case). */
export function fromAllocation(a) {
  const props = {
    id: a.id, name: a.name, state: String(a.state).toLowerCase(), incarnation: a.incarnation,
    parent_id: a.parentId, node_id: a.nodeId, executor: a.executor,
  };
  return vertexData("Allocation", ["Actor", "Allocation"], props);
}

export function fromNode(n) {
  const props = { id: n.id, name: n.name, status: n.status, cpu_free: n.cpuFree, memory_free: n.memoryFree };
  return vertexData("Node", ["Actor", "Node"], props);
}

export function edgeData(source, type, target, properties = {}) {
  const text = type === "NEIGHBOR_OF" && properties.rtt_ms !== undefined ? `${properties.rtt_ms} ms` : "";
  return { id: `${source}|${type}|${target}`, source, target, type, text, props: { ...properties } };
}

/** A short text for a table cell. */
export function describe(value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const kind = value[ELEMENT];
    if (kind === "vertex") {
      const id = value.properties.id ?? value.id;
      return `(:${mainLabel(value.labels)} ${JSON.stringify(id)})`;
    }
    if (kind === "edge") return `[:${value.type}]`;
    if (kind === "path") return `path of ${value.vertices.length} vertices, ${value.edges.length} edges`;
  }
  const text = JSON.stringify(value);
  return text && text.length > 300 ? text.slice(0, 300) + "…" : text ?? "null";
}
