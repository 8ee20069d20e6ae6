// Exploring by clicking, through the API's own fields (never query text): expand a vertex's
// neighbours over one edge type and direction (the generic `traverse`), draw the supervision
// hierarchy of a Node, an Allocation or a Job top-down (PARENT_OF), and lay RUNS_ON, GPU_OWNER
// (with CLAIMS), NEIGHBOR_OF (with rtt) and WATCHES over the view on request.
import { batched, graphql } from "./api.js";
import { edgeData, fromAllocation, fromNode, vertexData } from "./elements.js";

export const EDGE_TYPES = ["PARENT_OF", "RUNS_ON", "NEIGHBOR_OF", "GPU_OWNER", "CLAIMS", "WATCHES", "HAS_TASK", "DEPENDS_ON", "EXECUTES"];
const PAGE = 1000; // the API's largest traverse page
export const HIERARCHY_MAX = 5000;
const HIERARCHY_DEPTH = 10; // the API's deepest traversal

const TRAVERSE = `query($from: ID!, $types: [EdgeType!]!, $dir: Direction!, $depth: Int!, $first: Int!, $after: String) {
  traverse(from: $from, edgeTypes: $types, direction: $dir, maxDepth: $depth, first: $first, after: $after) { id label properties } }`;
const NEIGHBORS = `query($id: ID!) { node(id: $id) { neighbors { rttMs bandwidth node { id name status cpuFree memoryFree } } } }`;
const ALLOCATION = "id name state incarnation parentId nodeId executor";
const NODE = "id name status cpuFree memoryFree";

const traversed = (v) => vertexData(v.label, [v.label], v.properties);

/** The vertices one step away over `type` in `direction` (OUT, IN or BOTH), drawn next to `key`. */
export async function expand(view, key, type, direction) {
  const vertex = view.vertex(key);
  if (type === "NEIGHBOR_OF" && vertex?.label === "Node") {
    const data = await graphql(NEIGHBORS, { id: key });
    const links = data.node?.neighbors ?? [];
    const added = view.merge(links.map((l) => fromNode(l.node)),
      links.map((l) => edgeData(key, type, l.node.id, { rtt_ms: l.rttMs, bandwidth: l.bandwidth })), { near: key });
    return { found: links.length, added: added.length, capped: false };
  }
  let found = 0;
  let capped = false;
  let added = 0;
  for (const dir of direction === "BOTH" ? ["OUT", "IN"] : [direction]) {
    const data = await graphql(TRAVERSE, { from: key, types: [type], dir, depth: 1, first: PAGE, after: null });
    const vertices = data.traverse.map(traversed);
    const edges = vertices.map((v) => (dir === "OUT" ? edgeData(key, type, v.id) : edgeData(v.id, type, key)));
    added += view.merge(vertices, edges, { near: key }).length;
    found += vertices.length;
    capped ||= vertices.length === PAGE;
  }
  return { found, added, capped };
}

async function rootOf(view, key) {
  const v = view.vertex(key);
  if (v?.label !== "Job") return { root: key, job: null };
  const data = await graphql(`query($id: ID!) { job(id: $id) { id name state root { ${ALLOCATION} } } }`, { id: key });
  if (!data.job?.root) throw new Error(`job ${key} has no root allocation yet`);
  return { root: data.job.root.id, job: data.job, rootVertex: fromAllocation(data.job.root) };
}

/** Replace the view by the PARENT_OF tree under a Node, an Allocation or a Job's root, laid out top-down. */
export async function hierarchy(view, key) {
  const start = view.vertex(key);
  const { root, job, rootVertex } = await rootOf(view, key);
  const below = [];
  let after = null;
  while (below.length < HIERARCHY_MAX) {
    const data = await graphql(TRAVERSE, { from: root, types: ["PARENT_OF"], dir: "OUT", depth: HIERARCHY_DEPTH, first: PAGE, after });
    below.push(...data.traverse.map(traversed));
    if (data.traverse.length < PAGE) break;
    after = data.traverse[data.traverse.length - 1].id;
  }
  const capped = below.length >= HIERARCHY_MAX;
  const top = rootVertex ?? (start && start.label !== "Job" ? start : null);
  view.clear();
  const vertices = [...(top ? [top] : []), ...below.slice(0, HIERARCHY_MAX)];
  const edges = below.slice(0, HIERARCHY_MAX).filter((v) => v.props.parent_id).map((v) => edgeData(String(v.props.parent_id), "PARENT_OF", v.id));
  if (job) {
    vertices.push(start);
    edges.push(edgeData(root, "EXECUTES", key));
  }
  view.merge(vertices, edges);
  view.layout({ hierarchy: true });
  return { root, count: below.length, capped };
}

/** Draw (on) or take away (off) one kind of overlay edge over what the view shows. */
export async function overlay(view, type, on) {
  const cls = `ov-${type}`;
  if (!on) {
    view.removeClass(cls);
    return 0;
  }
  const vertices = [];
  const edges = [];
  if (type === "RUNS_ON") {
    const allocations = view.vertices("Allocation").filter((a) => a.props.node_id);
    const missing = [...new Set(allocations.map((a) => String(a.props.node_id)).filter((n) => !view.has(n)))];
    for (const n of (await batched(missing, (v) => `node(id: ${v}) { ${NODE} }`)).values()) if (n) vertices.push(fromNode(n));
    for (const a of allocations) edges.push(edgeData(a.id, "RUNS_ON", String(a.props.node_id)));
  } else if (type === "NEIGHBOR_OF") {
    const nodes = view.vertices("Node").map((n) => n.id);
    const found = await batched(nodes, (v) => `node(id: ${v}) { neighbors { rttMs bandwidth node { ${NODE} } } }`);
    for (const [id, n] of found) {
      for (const l of n?.neighbors ?? []) {
        vertices.push(fromNode(l.node));
        edges.push(edgeData(id, "NEIGHBOR_OF", l.node.id, { rtt_ms: l.rttMs, bandwidth: l.bandwidth }));
      }
    }
  } else if (type === "GPU_OWNER") {
    const nodes = view.vertices("Node").map((n) => n.id);
    const found = await batched(nodes, (v) => `node(id: ${v}) { gpus { id model memory claimedBy { id } } }`);
    for (const [id, n] of found) {
      for (const g of n?.gpus ?? []) {
        vertices.push(vertexData("Gpu", ["Gpu"], { id: g.id, model: g.model, memory: g.memory, node_id: id, claimed_by: g.claimedBy?.id ?? null }));
        edges.push(edgeData(g.id, "GPU_OWNER", id));
        if (g.claimedBy && view.has(g.claimedBy.id)) edges.push(edgeData(g.claimedBy.id, "CLAIMS", g.id));
      }
    }
  } else if (type === "WATCHES") {
    const allocations = view.vertices("Allocation").map((a) => a.id);
    const found = await batched(allocations, (v) => `allocation(id: ${v}) { watching { ${ALLOCATION} } }`);
    for (const [id, a] of found) {
      for (const w of a?.watching ?? []) {
        vertices.push(fromAllocation(w));
        edges.push(edgeData(id, "WATCHES", w.id));
      }
    }
  }
  // vertices already drawn keep their classes: only what the overlay brought goes away with it
  const fresh = vertices.filter((v) => !view.has(v.id));
  const added = view.merge(fresh, [], { classes: cls });
  view.merge([], edges, { classes: cls });
  if (added.length) view.layout(); // new vertices (nodes, GPUs, neighbours) get a place in the drawing
  return edges.length;
}

/** Allocations just created under drawn parents: drawn under them (if the parent is still drawn). */
export async function adopt(view, ids) {
  const found = await batched(ids, (v) => `allocation(id: ${v}) { ${ALLOCATION} }`);
  const drawn = [];
  for (const a of found.values()) {
    if (!a || !view.has(a.parentId) || view.has(a.id)) continue;
    view.merge([fromAllocation(a)], [edgeData(a.parentId, "PARENT_OF", a.id)], { near: a.parentId });
    drawn.push(a.id);
  }
  return drawn;
}
