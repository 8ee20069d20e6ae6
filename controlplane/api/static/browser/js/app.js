// The graph browser page: wires the query box (raw read-only queries in the engine's language via
// the `rawQuery` field), the graph and table views, the panel, exploring, overlays and the live
// events together. `window.controlplaneBrowser` exposes the view for tests and for the console.
import { ApiError, config, graphql } from "./api.js";
import { token } from "./auth.js";
import { $, errorHtml, esc } from "./dom.js";
import { collect, edgeData, fromRaw } from "./elements.js";
import { adopt, expand, hierarchy, HIERARCHY_MAX, overlay } from "./explore.js";
import { GraphView } from "./graph.js";
import { Live } from "./live.js";
import { Panel } from "./panel.js";
import { fill, Queries } from "./queries.js";
import { renderTable } from "./table.js";

const RAW = `query($q: String!, $limit: Int!, $t: Float!) {
  rawQuery(query: $q, limit: $limit, timeoutS: $t) { engine language columns rows truncated elapsedMs } }`;
// more vertices than this are not drawn (the table still has every row)
const DRAW_MAX = 5000;
// a hierarchy this small is laid out again when allocations appear in it
const RELAYOUT_MAX = 500;

const cfg = await config();
const queries = new Queries(cfg.language);
const box = $("#query");
const notices = [];
let lastResult = null;

const view = new GraphView($("#graph"), $("#legend"), {
  onSelect: (key) => select(key),
  onUnselect: () => { panel.clear(); },
});
const panel = new Panel($("#panel"), {
  view,
  onExpand: async (key, type, direction) => {
    const r = await expand(view, key, type, direction);
    status(`${key}: ${r.found} over ${type} (${direction}), ${r.added} new` + (r.capped ? " — only the first page (1000) is drawn" : ""));
  },
  onHierarchy: async (key) => {
    const r = await hierarchy(view, key);
    notice(r.capped ? `The hierarchy under ${r.root} has more than ${HIERARCHY_MAX} allocations: the first ${HIERARCHY_MAX} are drawn.` : "");
    status(`hierarchy of ${key}: ${r.count} allocations under ${r.root}`);
    await reapplyOverlays();
    select(key);
  },
});

function status(text) { $("#status").textContent = text; }
function notice(...lines) {
  notices.splice(0, notices.length, ...lines.filter(Boolean));
  $("#notice").hidden = notices.length === 0;
  $("#notice").innerHTML = notices.map(esc).join("<br>");
}
function showError(err) {
  $("#error").hidden = !err;
  $("#error").innerHTML = err ? errorHtml(err) : "";
}

function select(key) {
  view.select(key);
  if (view.has(key)) panel.show(key);
}

async function run(text) {
  let q;
  try {
    q = fill(text, panel.key);
  } catch (e) {
    return showError(new ApiError(e.message, { field: "query" }));
  }
  const limit = Number($("#limit").value);
  $("#run").disabled = true;
  status("running…");
  try {
    const result = (await graphql(RAW, { q, limit, t: cfg.rawQuery.timeoutS })).rawQuery;
    showError(null);
    show(result);
    queries.remember(text, `${result.rows.length} rows`);
  } catch (e) {
    showError(e);
    status("");
    queries.remember(text, e.code ?? "error");
  } finally {
    $("#run").disabled = false;
    renderLists();
  }
}

function show(result) {
  lastResult = result;
  const { vertices, edges } = collect(result.rows);
  const drawn = vertices.slice(0, DRAW_MAX);
  if ($("#replace").checked) view.clear();
  view.merge(drawn.map(fromRaw), []);
  const keys = new Set(drawn.map((v) => String(v.properties.id ?? `~${v.id}`)));
  const edgeList = edges
    .map((e) => edgeData(view.resolveEnd(e.source), e.type, view.resolveEnd(e.target), e.properties))
    .filter((e) => vertices.length <= DRAW_MAX || (keys.has(e.source) && keys.has(e.target)));
  view.merge([], edgeList);
  const layout = view.layout();
  renderTable($("#table"), result, { onPick: (key) => { showTab("graph"); select(key); } });
  notice(
    result.truncated ? `More rows matched than the limit of ${$("#limit").value}: only the first ${result.rows.length} are here. Narrow the query or raise the limit.` : "",
    vertices.length > DRAW_MAX ? `The answer holds ${vertices.length} vertices: the first ${DRAW_MAX} are drawn; the table has every row.` : "",
  );
  status(`${result.rows.length} rows · ${view.cy.nodes().length} vertices, ${view.cy.edges().length} edges drawn (${layout}) · ` +
    `${result.elapsedMs.toFixed(1)} ms on ${result.engine}`);
  if (!vertices.length && result.rows.length) showTab("table");
  reapplyOverlays();
}

async function reapplyOverlays() {
  for (const box of document.querySelectorAll("[data-overlay]")) {
    if (box.checked) await overlay(view, box.dataset.overlay, true).catch(showError);
  }
}

function showTab(which) {
  $("#graph-view").hidden = which !== "graph";
  $("#table-view").hidden = which !== "table";
  $("#tab-graph").classList.toggle("active", which === "graph");
  $("#tab-table").classList.toggle("active", which === "table");
  if (which === "graph") view.cy.resize();
}

function renderLists() {
  const item = (title, q, extra = "") => `<li title="${esc(q)}" data-q="${esc(q)}">${title}${extra}</li>`;
  const saved = queries.saved().map((s) => item(`<b>${esc(s.name)}</b> `, s.q, ` <span data-forget="${esc(s.name)}">✕</span>`));
  $("#saved").innerHTML = saved.join("") + queries.builtIn().map(([name, q]) => item(`<b>${esc(name)}</b>`, q)).join("");
  $("#history").innerHTML = queries.history().map((h) => item(`${esc(h.q.replace(/\s+/g, " "))} <span class="hint">${esc(h.outcome ?? "")}</span>`, h.q)).join("");
  for (const li of document.querySelectorAll("#saved li, #history li")) {
    li.addEventListener("click", (ev) => {
      if (ev.target.dataset.forget) {
        queries.forget(ev.target.dataset.forget);
        return renderLists();
      }
      box.value = li.dataset.q;
      box.focus();
    });
  }
}

// --- live: states change as events arrive; allocations created under a drawn parent appear ---
// The creation event (incarnation 1, pending -> placed) is by its parent: if that parent is drawn
// (or about to be: created a moment before) when the event arrives, and the event is not replayed
// from before the page opened, the new allocation is drawn under it. Batches run one after the
// other, so a parent is drawn before its children.
const born = [];
const expected = new Set();
let adopting = Promise.resolve();
let adoptTimer = null;
function adoptSoon() {
  if (adoptTimer) return;
  adoptTimer = setTimeout(() => {
    adoptTimer = null;
    const ids = born.splice(0);
    adopting = adopting.then(async () => {
      const drawn = await adopt(view, ids).catch(() => []);
      ids.forEach((id) => expected.delete(id));
      if (!drawn.length) return;
      status(`appeared: ${drawn.join(", ")}`);
      if (view.lastLayout === "dagre" && view.cy.nodes().length <= RELAYOUT_MAX) view.layout({ hierarchy: true });
    });
  }, 150);
}
const live = new Live($("#events"), $("#live"), {
  serverTime: cfg.serverTime,
  onPick: (key) => { if (view.has(key)) select(key); },
  onEvent: (e) => {
    if (e.kind === "transition" && e.toState) {
      const props = { state: e.toState };
      if (e.incarnation) props.incarnation = e.incarnation;
      const drawn = view.update(e.allocationId, props);
      const creation = e.fromState === "pending" && e.incarnation === 1 && e.at >= cfg.serverTime;
      // who created it: the parent named on its creation event (`by` is the principal who asked)
      const parent = e.data?.parent ?? e.by;
      if (!drawn && creation && parent && (view.has(parent) || expected.has(parent)) && !expected.has(e.allocationId)) {
        born.push(e.allocationId);
        expected.add(e.allocationId);
        adoptSoon();
      }
      const job = drawn && view.vertex(e.allocationId).props.root_of;
      if (job && view.has(String(job))) refreshJob(String(job));
    }
    if (panel.key === e.allocationId) panel.refreshSoon();
  },
});

// A job's state follows its root allocation's: re-read it when the root moves.
const jobTimers = new Map();
function refreshJob(id) {
  clearTimeout(jobTimers.get(id));
  jobTimers.set(id, setTimeout(async () => {
    jobTimers.delete(id);
    const data = await graphql("query($id: ID!) { job(id: $id) { state } }", { id }).catch(() => null);
    if (data?.job) view.update(id, { state: data.job.state });
  }, 400));
}

// --- wiring ----------------------------------------------------------------------------------
$("#engine").textContent = `${cfg.engine} · ${cfg.language}`;
$("#language").textContent = `(${cfg.language}, read-only)`;
$("#auth").textContent = token() ? "token: set" : "";
box.value = queries.history()[0]?.q ?? queries.defaultQuery();
$("#query-form").addEventListener("submit", (ev) => { ev.preventDefault(); run(box.value); });
box.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(box.value); }
});
$("#save").addEventListener("click", () => {
  const name = $("#save-name").value.trim() || box.value.trim().slice(0, 40);
  if (box.value.trim()) queries.save(name, box.value);
  $("#save-name").value = "";
  renderLists();
});
$("#tab-graph").addEventListener("click", () => showTab("graph"));
$("#tab-table").addEventListener("click", () => showTab("table"));
$("#relayout").addEventListener("click", () => view.layout());
$("#clear").addEventListener("click", () => { view.clear(); panel.clear(); notice(); status(""); });
for (const cb of document.querySelectorAll("[data-overlay]")) {
  cb.addEventListener("change", async () => {
    try {
      const n = await overlay(view, cb.dataset.overlay, cb.checked);
      status(cb.checked ? `${cb.dataset.overlay}: ${n} edges` : "");
    } catch (e) {
      showError(e);
    }
  });
}
renderLists();
live.start();
window.controlplaneBrowser = { cy: view.cy, view, panel, run, config: cfg, result: () => lastResult };
document.body.dataset.ready = "true";
