// The drawing: a cytoscape canvas styled by label (shape), state (colour) and edge type (colour and
// line), a legend that says which is which, and the layouts: dagre top-down for the PARENT_OF
// hierarchy, force-directed for small graphs, a grid when a graph is too big for either.
// Elements merge by key (elements.js), so a state change recolours the vertex in place.
import { esc } from "./dom.js";
import { gridPositions, treePositions } from "./layout.js";

export const STATE_COLOURS = {
  pending: "#e2e8f0", placed: "#bfdbfe", starting: "#fde68a", running: "#4ade80", stopping: "#fdba74",
  succeeded: "#60a5fa", failed: "#f87171", stopped: "#9ca3af", lost: "#c084fc",
};
export const NODE_COLOURS = { ready: "#bbf7d0", draining: "#fde68a", lost: "#e9d5ff", down: "#fecaca" };
const JOB_COLOURS = { submitted: "#e2e8f0", running: "#4ade80", succeeded: "#60a5fa", failed: "#f87171", cancelled: "#9ca3af" };
const SHAPES = {
  Node: "round-rectangle", Allocation: "ellipse", Gpu: "diamond", Job: "hexagon", Task: "tag", Event: "vee",
};
export const EDGE_STYLES = {
  PARENT_OF: ["#334155", "solid"], RUNS_ON: ["#94a3b8", "dashed"], NEIGHBOR_OF: ["#0284c7", "dotted"],
  GPU_OWNER: ["#7c3aed", "solid"], CLAIMS: ["#ea580c", "dashed"], WATCHES: ["#dc2626", "dashed"],
  HAS_TASK: ["#0d9488", "solid"], DEPENDS_ON: ["#0d9488", "dashed"], EXECUTES: ["#a16207", "dotted"],
};
const HIERARCHY_EDGES = new Set(["PARENT_OF", "HAS_TASK", "EXECUTES", "DEPENDS_ON"]);
// beyond these sizes a layout would freeze the page: dagre, then the force-directed one
const DAGRE_MAX = 600;
const COSE_MAX = 300;
// drawings with more vertices than this pan and zoom as a snapshot
const BIG = 1500;
// a small graph is not blown up to fill the canvas
const FIT_MAX_ZOOM = 1.3;

export function vertexColour(label, state) {
  if (label === "Node") return NODE_COLOURS[state] ?? "#f1f5f9";
  if (label === "Allocation") return STATE_COLOURS[state] ?? "#f8fafc";
  if (label === "Job" || label === "Task") return JOB_COLOURS[state] ?? "#ccfbf1";
  if (label === "Gpu") return "#ddd6fe";
  return "#f1f5f9";
}

const STYLE = [
  { selector: "node", style: {
    label: "data(caption)", "text-wrap": "wrap", "text-valign": "center", "font-size": 9, "min-zoomed-font-size": 7,
    "background-color": "data(colour)", "border-width": 1, "border-color": "#475569", shape: "data(shape)",
    width: 80, height: 32, color: "#0f172a", "text-max-width": 96,
  } },
  { selector: 'node[label = "Node"]', style: { width: 96, height: 36, "border-width": 2, "font-weight": "bold" } },
  { selector: 'node[label = "Job"]', style: { width: 96, height: 40 } },
  { selector: 'node[label = "Gpu"]', style: { width: 44, height: 44, "font-size": 8 } },
  { selector: 'node[label = "Event"]', style: { width: 20, height: 20, "font-size": 7 } },
  { selector: "node.stub", style: { "border-style": "dashed", "background-color": "#fff" } },
  { selector: "node:selected", style: { "border-width": 4, "border-color": "#2563eb" } },
  { selector: "node.flash", style: { "border-width": 4, "border-color": "#f59e0b" } },
  { selector: "edge", style: {
    width: 1.5, "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
    "line-color": "data(colour)", "target-arrow-color": "data(colour)", "line-style": "data(line)",
    label: "data(text)", "font-size": 8, "text-background-color": "#fff", "text-background-opacity": 0.8,
    "min-zoomed-font-size": 7,
  } },
  { selector: 'edge[type = "PARENT_OF"]', style: { width: 2 } },
  { selector: "edge:selected", style: { width: 4 } },
];

export class GraphView {
  constructor(container, legend, { onSelect, onUnselect }) {
    cytoscape.use(cytoscapeDagre);
    this.legend = legend;
    this.engineKeys = new Map(); // engine element id -> vertex key, for edges of later raw results
    this.cy = cytoscape({
      container, style: STYLE, pixelRatio: 1, motionBlur: false,
      boxSelectionEnabled: false, minZoom: 0.02, maxZoom: 4,
    });
    this.cy.on("tap", "node", (e) => onSelect(e.target.id()));
    this.cy.on("tap", (e) => { if (e.target === this.cy) onUnselect(); });
    this.renderLegend();
  }

  clear() {
    this.cy.elements().remove();
    this.engineKeys.clear();
    this.lastLayout = null;
    this.renderLegend();
  }

  has(key) { return this.cy.getElementById(key).nonempty(); }
  vertex(key) { const n = this.cy.getElementById(key); return n.nonempty() && n.isNode() ? n.data() : null; }
  vertices(label = null) { return this.cy.nodes().filter((n) => !label || n.data("label") === label).map((n) => n.data()); }

  /** Add or update vertices and edges; answers the keys of vertices that were not drawn before. */
  merge(vertices, edges, { near = null, classes = "" } = {}) {
    const added = [];
    this.cy.batch(() => {
      for (const v of vertices) {
        if (v.engineId !== null && v.engineId !== undefined) this.engineKeys.set(String(v.engineId), v.id);
        const data = { ...v, colour: vertexColour(v.label, v.state), shape: SHAPES[v.label] ?? "ellipse" };
        const existing = this.cy.getElementById(v.id);
        if (existing.nonempty()) {
          existing.data({ ...data, props: { ...existing.data("props"), ...v.props } });
          existing.removeClass("stub");
        } else {
          const position = near ? this.placeNear(near, added.length) : undefined;
          this.cy.add({ group: "nodes", data, position, classes });
          added.push(v.id);
        }
      }
      for (const e of edges) {
        if (this.cy.getElementById(e.id).nonempty()) continue;
        for (const end of [e.source, e.target]) {
          if (this.cy.getElementById(end).empty()) {
            this.cy.add({ group: "nodes", classes: "stub", data: {
              id: end, label: "?", labels: [], caption: end.replace(/^~/, "#"), colour: "#fff", shape: "ellipse", props: {},
            } });
            added.push(end);
          }
        }
        const [colour, line] = EDGE_STYLES[e.type] ?? ["#64748b", "solid"];
        this.cy.add({ group: "edges", data: { ...e, colour, line }, classes });
      }
    });
    this.renderLegend();
    return added;
  }

  /** Raw edges name their ends by engine ids: the keys of the vertices drawn for them. */
  resolveEnd(engineId) { return this.engineKeys.get(String(engineId)) ?? `~${engineId}`; }

  placeNear(key, index) {
    const anchor = this.cy.getElementById(key);
    if (anchor.empty()) return undefined;
    const p = anchor.position();
    const k = anchor.outgoers("node").length + index; // 0, +1, -1, +2, -2, ... columns under the anchor
    const column = (k % 7 === 0 ? 0 : (k % 7 + 1) >> 1) * ((k % 7) % 2 ? 1 : -1);
    return { x: p.x + column * 95, y: p.y + 90 + Math.floor(k / 7) * 50 };
  }

  /** A new state: the vertex's colour (and caption) change in place. */
  update(key, props, { flash = true } = {}) {
    const n = this.cy.getElementById(key);
    if (n.empty()) return false;
    const merged = { ...n.data("props"), ...props };
    if (typeof merged.state === "string") merged.state = merged.state.toLowerCase();
    const v = { label: n.data("label"), state: merged.state ?? merged.status ?? null };
    const caption = n.data("caption").split("\n")[0] + (v.state ? `\n${v.state}` : "");
    n.data({ props: merged, state: v.state, colour: vertexColour(v.label, v.state), caption });
    if (flash) n.flashClass("flash", 600);
    return true;
  }

  removeClass(cls) {
    const gone = this.cy.elements(`.${cls}`);
    // a vertex stays when something else still leads to it
    const keep = gone.nodes().filter((n) => n.connectedEdges().not(gone).nonempty());
    gone.not(keep).remove();
    keep.removeClass(cls);
    this.renderLegend();
  }

  select(key) {
    const n = this.cy.getElementById(key);
    this.cy.elements().unselect();
    if (n.nonempty()) n.select();
  }

  /**
   * Lay the view out again: dagre top-down for a hierarchy (a layered tree of our own past
   * DAGRE_MAX), force-directed for small graphs, rows and columns for big ones.
   */
  layout({ hierarchy = null, fit = true } = {}) {
    const n = this.cy.nodes().length;
    if (n === 0) return "none";
    const tree = hierarchy ?? this.cy.edges().some((e) => HIERARCHY_EDGES.has(e.data("type")));
    let options;
    let name;
    if (tree && n <= DAGRE_MAX) {
      name = "dagre";
      options = { name, rankDir: "TB", nodeSep: 12, rankSep: 60, edgeSep: 6, nodeDimensionsIncludeLabels: true };
    } else if (tree) {
      name = "tree";
      options = { name: "preset", positions: treePositions(this.cy, HIERARCHY_EDGES) };
    } else if (n <= COSE_MAX && this.cy.edges().length) {
      name = "cose";
      options = { name, nodeRepulsion: 8000, idealEdgeLength: 80, numIter: 600 };
    } else {
      name = "grid";
      options = { name: "preset", positions: gridPositions(this.cy) };
    }
    // Past BIG, panning and zooming move a snapshot of the drawing, without edges, until they stop
    // (cytoscape's textureOnViewport / hideEdgesOnViewport, switched on its renderer as the size changes).
    const renderer = this.cy.renderer();
    renderer.textureOnViewport = n > BIG;
    renderer.hideEdgesOnViewport = n > BIG;
    const layout = this.cy.layout({ ...options, animate: false, fit });
    layout.one("layoutstop", () => {
      if (fit && this.cy.zoom() > FIT_MAX_ZOOM) { this.cy.zoom(FIT_MAX_ZOOM); this.cy.center(); }
    });
    layout.run();
    this.lastLayout = name;
    return name;
  }

  renderLegend() {
    const labels = new Set(this.cy.nodes().map((n) => n.data("label")).filter((l) => l !== "?"));
    const types = new Set(this.cy.edges().map((e) => e.data("type")));
    const nodeStates = new Set(this.cy.nodes('[label = "Node"]').map((n) => n.data("state")));
    const item = (attrs, swatch, text) => `<span class="item" ${attrs}>${swatch}${text}</span>`;
    const parts = [];
    if (labels.size) {
      parts.push(`<div class="group"><b>vertices</b>${[...labels].sort().map((l) =>
        item(`data-label="${esc(l)}"`, `<span class="swatch" style="background:${vertexColour(l, null)};border-radius:${SHAPES[l] === "ellipse" ? "50%" : "2px"}"></span>`,
          `${esc(l)} (${SHAPES[l] ?? "ellipse"})`)).join("")}</div>`);
    }
    parts.push(`<div class="group"><b>allocation state</b>${Object.entries(STATE_COLOURS).map(([s, c]) =>
      item(`data-state="${s}"`, `<span class="swatch" style="background:${c}"></span>`, s)).join("")}</div>`);
    if (nodeStates.size) {
      parts.push(`<div class="group"><b>node status</b>${Object.entries(NODE_COLOURS).map(([s, c]) =>
        item(`data-status="${s}"`, `<span class="swatch" style="background:${c}"></span>`, s)).join("")}</div>`);
    }
    if (types.size) {
      parts.push(`<div class="group"><b>edges</b>${[...types].sort().map((t) => {
        const [c, line] = EDGE_STYLES[t] ?? ["#64748b", "solid"];
        return item(`data-edge="${esc(t)}"`, `<span class="line" style="border-top:2px ${line} ${c}"></span>`, esc(t));
      }).join("")}</div>`);
    }
    this.legend.innerHTML = parts.join("");
  }
}
