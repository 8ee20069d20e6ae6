// The selected vertex: its properties; for an allocation its incarnations, restarts, exit code,
// error and output tail; for a node its capacity, GPUs and neighbours; for a job its tasks. The
// actions the API offers (stop an allocation, cancel a job) go through the same mutations as any
// client, and a refusal shows the API's own code, field and message.
import { graphql } from "./api.js";
import { EDGE_TYPES } from "./explore.js";
import { STATE_COLOURS } from "./graph.js";
import { $, errorHtml, esc, fmtTime } from "./dom.js";

const ALLOCATION = `query($id: ID!) { allocation(id: $id) { id name state incarnation restarts exitCode error outputTail pid
  executor native nodeId parentId restartType childPolicy orphan escalated restartAt jobId taskId argv cpu memory gpus gpuIds
  createdAt updatedAt events(first: 1000) { id kind incarnation fromState toState at reason by } } }`;
const NODE = `query($id: ID!) { node(id: $id) { id status labels cpu memory cpuFree memoryFree heartbeatAt
  gpus { id model claimedBy { id name } } neighbors { rttMs bandwidth node { id } } } }`;
const JOB = `query($id: ID!) { job(id: $id) { id name state error tasksTotal submittedAt root { id state }
  tasks { path state runs { incarnation state allocation { id } } } } }`;
const STOP = `mutation($id: ID!) { stopAllocation(id: $id) { id state } }`;
const CANCEL = `mutation($id: ID!) { cancelJob(id: $id) { id state } }`;

const TERMINAL = new Set(["succeeded", "failed", "stopped", "lost"]);
const chip = (state) => state
  ? `<span class="state" data-testid="state" style="background:${STATE_COLOURS[String(state).toLowerCase()] ?? "#e2e8f0"}">${esc(String(state).toLowerCase())}</span>` : "";
const dl = (pairs) => `<dl>${pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
  .map(([k, v]) => `<dt>${esc(k)}</dt><dd data-field="${esc(k)}">${esc(typeof v === "object" ? JSON.stringify(v) : v)}</dd>`).join("")}</dl>`;

function incarnations(events) {
  const by = new Map();
  for (const e of events) {
    if (e.kind !== "transition" || e.incarnation === null) continue;
    if (!by.has(e.incarnation)) by.set(e.incarnation, []);
    by.get(e.incarnation).push(e);
  }
  const rows = [...by.entries()].sort(([a], [b]) => b - a).map(([inc, es]) => {
    const ended = es.find((e) => TERMINAL.has(e.toState)) ?? es[es.length - 1];
    return `<tr data-incarnation="${inc}"><td>${inc}</td><td>${esc(fmtTime(es[0].at))}</td>` +
      `<td>${es.map((e) => esc(e.toState)).join(" → ")}</td><td>${esc(ended.reason ?? "")}</td></tr>`;
  });
  return rows.length ? `<table class="incarnations"><tr><th>inc</th><th>since</th><th>states</th><th>how it ended (or last reason)</th></tr>${rows.join("")}</table>` : "";
}

export class Panel {
  constructor(root, { view, onExpand, onHierarchy }) {
    this.root = root;
    this.view = view;
    this.onExpand = onExpand;
    this.onHierarchy = onHierarchy;
    this.key = null;
    this.timer = null;
    this.generation = 0;
  }

  clear() {
    this.key = null;
    this.root.innerHTML = `<p class="hint">Click a vertex to see its properties.</p>`;
  }

  /** Show `key` now and fetch its details; `refresh()` later re-fetches them (events). */
  show(key) {
    this.key = key;
    this.render(null, null);
    return this.refresh();
  }

  refreshSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 250);
  }

  async refresh() {
    const key = this.key;
    const v = key && this.view.vertex(key);
    if (!v) return;
    const generation = ++this.generation;
    let details = null;
    let error = null;
    try {
      if (v.label === "Allocation") details = (await graphql(ALLOCATION, { id: key })).allocation;
      else if (v.label === "Node") details = (await graphql(NODE, { id: key })).node;
      else if (v.label === "Job") details = (await graphql(JOB, { id: key })).job;
    } catch (e) {
      error = e;
    }
    if (generation !== this.generation || key !== this.key) return; // a newer selection or refresh won
    if (details && v.label === "Allocation") {
      this.view.update(key, { state: details.state, incarnation: details.incarnation, restarts: details.restarts }, { flash: false });
    }
    this.render(details, error);
  }

  render(details, error, actionError = null) {
    const v = this.view.vertex(this.key);
    if (!v) return this.clear();
    const p = v.props;
    const title = p.name ?? p.path ?? p.id ?? v.id;
    const actions = [];
    if (v.label === "Allocation") actions.push(`<button class="danger" data-action="stop">Stop allocation</button>`);
    if (v.label === "Job") actions.push(`<button class="danger" data-action="cancel">Cancel job</button>`);
    if (["Node", "Allocation", "Job"].includes(v.label)) actions.push(`<button data-action="hierarchy">Hierarchy</button>`);
    let body = "";
    if (details && v.label === "Allocation") {
      body = dl([["state", String(details.state).toLowerCase()], ["incarnation", details.incarnation], ["restarts", details.restarts],
        ["exit code", details.exitCode], ["error", details.error], ["pid", details.pid], ["node", details.nodeId],
        ["parent", details.parentId], ["executor", details.native ? `${details.executor} (${details.native})` : details.executor],
        ["restart type", details.restartType], ["child policy", details.childPolicy], ["orphan", details.orphan || null],
        ["escalated", details.escalated], ["restart at", details.restartAt && fmtTime(details.restartAt)],
        ["job", details.jobId], ["argv", details.argv?.length ? details.argv.join(" ") : null],
        ["cpu / memory", `${details.cpu} m / ${details.memory} MiB`], ["gpus", details.gpuIds?.length ? details.gpuIds.join(", ") : null]]) +
        `<h2>Incarnations</h2>${incarnations(details.events)}` +
        (details.outputTail ? `<h2>Output tail</h2><pre data-testid="output-tail">${esc(details.outputTail)}</pre>` : "");
    } else if (details && v.label === "Node") {
      body = dl([["status", details.status], ["labels", details.labels.join(", ")], ["cpu free", `${details.cpuFree} / ${details.cpu} m`],
        ["memory free", `${details.memoryFree} / ${details.memory} MiB`],
        ["heartbeat", `${Math.max(0, Date.now() / 1000 - details.heartbeatAt).toFixed(1)} s ago`],
        ["gpus", details.gpus.map((g) => `${g.model}${g.claimedBy ? ` (${g.claimedBy.name})` : ""}`).join(", ")],
        ["neighbours", details.neighbors.map((n) => `${n.node.id} ${n.rttMs} ms`).join(", ")]]);
    } else if (details && v.label === "Job") {
      body = dl([["state", details.state], ["error", details.error], ["tasks", details.tasksTotal], ["root", details.root?.id],
        ["submitted", fmtTime(details.submittedAt)]]) +
        `<table><tr><th>task</th><th>state</th><th>runs</th></tr>${details.tasks.map((t) =>
          `<tr><td>${esc(t.path)}</td><td>${esc(t.state)}</td><td>${t.runs.map((r) => esc(`${r.state}#${r.incarnation}`)).join(" ")}</td></tr>`).join("")}</table>`;
    }
    const options = EDGE_TYPES.map((t) => `<option>${t}</option>`).join("");
    this.root.innerHTML = `
      <h3 data-testid="title">${esc(title)} ${chip(details?.state ?? v.state)}</h3>
      <div class="label">${esc(v.labels.join(":") || v.label)} · ${esc(v.id)}</div>
      <div class="actions">${actions.join("")}</div>
      <div class="panel-error error" ${actionError || error ? "" : "hidden"}>${actionError || error ? errorHtml(actionError ?? error) : ""}</div>
      <div class="expand">expand <select data-role="type">${options}</select>
        <select data-role="direction"><option>OUT</option><option>IN</option><option>BOTH</option></select>
        <button data-action="expand">Expand</button></div>
      ${body}
      <h2>Properties</h2>${dl(Object.entries(p).sort(([a], [b]) => a.localeCompare(b)))}`;
    this.root.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => this.act(b.dataset.action, details)));
  }

  async act(action, details) {
    const key = this.key;
    const v = this.view.vertex(key);
    try {
      if (action === "expand") {
        await this.onExpand(key, $('[data-role="type"]', this.root).value, $('[data-role="direction"]', this.root).value);
        return;
      }
      if (action === "hierarchy") return await this.onHierarchy(key);
      if (action === "stop") {
        const a = (await graphql(STOP, { id: key })).stopAllocation;
        this.view.update(key, { state: a.state });
      } else if (action === "cancel") {
        const j = (await graphql(CANCEL, { id: key })).cancelJob;
        this.view.update(key, { state: j.state });
      }
      await this.refresh();
    } catch (e) {
      if (key === this.key && v) this.render(details, null, e);
    }
  }
}
