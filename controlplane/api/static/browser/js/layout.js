// Layouts for graphs too big for dagre or the force-directed layout: dagre takes seconds from a
// few hundred vertices on, and the grid layout's overlap check measures every label. These
// compute positions directly, in one pass, for cytoscape's `preset` layout.
const X_STEP = 96;
const Y_STEP = 90;

/**
 * A layered tree, top-down: each vertex one level below its parent (over `types` edges), leaves
 * side by side in depth-first order, a parent centred over its children. A vertex with two
 * parents is placed under the first; vertices off every tree sit in rows at the top.
 */
export function treePositions(cy, types) {
  const children = new Map();
  const hasParent = new Set();
  cy.edges().forEach((e) => {
    if (!types.has(e.data("type"))) return;
    const s = e.data("source");
    const t = e.data("target");
    if (s === t) return;
    if (!children.has(s)) children.set(s, []);
    children.get(s).push(t);
    hasParent.add(t);
  });
  const positions = {};
  let leaf = 0;
  const roots = cy.nodes().map((n) => n.id()).filter((id) => !hasParent.has(id));
  const placeTree = (root) => {
    // iterative post-order walk: a chain thousands deep must not overflow the stack
    const stack = [[root, 0, 0]];
    positions[root] = null;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [id, depth, next] = top;
      const kids = children.get(id) ?? [];
      if (next < kids.length) {
        top[2] += 1;
        const kid = kids[next];
        if (!(kid in positions)) {
          positions[kid] = null;
          stack.push([kid, depth + 1, 0]);
        }
        continue;
      }
      stack.pop();
      const placed = kids.map((k) => positions[k]).filter((p) => p && p.depth === depth + 1);
      const x = placed.length ? (placed[0].x + placed[placed.length - 1].x) / 2 : leaf++ * X_STEP;
      positions[id] = { x, y: depth * Y_STEP, depth };
    }
  };
  const lonely = roots.filter((r) => !children.has(r));
  roots.filter((r) => children.has(r)).forEach(placeTree);
  // vertices in no tree (and any cycle left unplaced): rows above the trees
  const rest = [...lonely, ...cy.nodes().map((n) => n.id()).filter((id) => !positions[id] && !lonely.includes(id))];
  const width = Math.max(leaf, Math.ceil(Math.sqrt(rest.length)));
  rest.forEach((id, i) => {
    positions[id] = { x: (i % width) * X_STEP, y: -Y_STEP * (1 + Math.floor(i / width)), depth: -1 };
  });
  return Object.fromEntries(Object.entries(positions).map(([id, p]) => [id, { x: p.x, y: p.y }]));
}

/** Rows and columns, roughly as wide as the canvas is. */
export function gridPositions(cy, aspect = 1.6) {
  const ids = cy.nodes().map((n) => n.id());
  const columns = Math.max(1, Math.ceil(Math.sqrt(ids.length * aspect)));
  return Object.fromEntries(ids.map((id, i) => [id, { x: (i % columns) * X_STEP, y: Math.floor(i / columns) * (Y_STEP / 2) }]));
}
