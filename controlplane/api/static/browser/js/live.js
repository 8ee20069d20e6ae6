// The live view: the `events` subscription (transitions, supervision decisions, Terminated) from a
// few minutes before the page opened, listed newest first beside the graph and handed to the page
// so that states change colour as they happen. After a dropped connection it resumes from the last
// event it saw; events it already has (same id) are not shown twice.
import { subscribe } from "./api.js";
import { esc, fmtTime } from "./dom.js";

const EVENTS = `subscription($since: Float) { events(since: $since) {
  id kind allocationId incarnation fromState toState at reason by data } }`;
const SHOWN = 300;
const BACKLOG_S = 300;
const RESUME_WINDOW_S = 1;
const SEEN_MAX = 20_000;

export class Live {
  constructor(list, badge, { serverTime, onEvent, onPick }) {
    this.list = list;
    this.badge = badge;
    this.onEvent = onEvent;
    this.onPick = onPick;
    this.seen = new Set();
    this.since = serverTime - BACKLOG_S;
    this.count = 0;
  }

  start() {
    this.stop = subscribe(EVENTS, () => ({ since: this.since }), {
      onNext: (data) => this.receive(data.events),
      onError: (e) => this.state(false, `${e.code ?? "error"}: ${e.message}`),
      onState: (up, why) => this.state(up, why),
    });
  }

  state(up, why = "") {
    this.badge.className = `badge ${up ? "live-on" : "live-off"}`;
    this.badge.textContent = up ? "events: live" : `events: ${why || "offline"}`;
    this.badge.dataset.live = up ? "on" : "off";
  }

  receive(e) {
    if (this.seen.has(e.id)) return;
    this.seen.add(e.id);
    if (this.seen.size > SEEN_MAX) this.seen = new Set([...this.seen].slice(-SEEN_MAX / 2)); // oldest first out
    this.since = Math.max(this.since, e.at - RESUME_WINDOW_S);
    this.count += 1;
    const move = e.fromState || e.toState ? `${e.fromState ?? "∅"} → ${e.toState ?? ""}` : "";
    const li = document.createElement("li");
    li.dataset.allocation = e.allocationId;
    li.dataset.kind = e.kind;
    li.dataset.to = e.toState ?? "";
    li.innerHTML = `<span class="at">${esc(fmtTime(e.at))}</span> <b>${esc(e.kind)}</b> ${esc(e.allocationId)} ` +
      `${e.incarnation ? `#${e.incarnation}` : ""} ${esc(move)} ${esc(e.reason ?? "")} <span class="who">by ${esc(e.by ?? "-")}</span>`;
    li.addEventListener("click", () => this.onPick(e.allocationId));
    this.list.prepend(li);
    while (this.list.children.length > SHOWN) this.list.lastElementChild.remove();
    this.onEvent(e);
  }
}
