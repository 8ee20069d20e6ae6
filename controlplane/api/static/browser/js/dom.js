// Small DOM helpers: text from the graph is data, never markup, so everything shown goes through esc().
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

/** An API refusal as the user sees it: its code, the field it names, and its message. */
export function errorHtml(err) {
  const code = err.code ? `<span class="code">${esc(err.code)}</span> ` : "";
  const field = err.field ? `field <span class="field">${esc(err.field)}</span>: ` : "";
  // the API's messages start with their field ("query: ..."): said once is enough
  const message = err.field && err.message.startsWith(`${err.field}: `) ? err.message.slice(err.field.length + 2) : err.message;
  return `${code}${field}${esc(message)}`;
}
