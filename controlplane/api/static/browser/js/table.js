// The raw answer as a table: the engine's columns, one row per result row, graph elements as short
// links that select the vertex in the graph. Very long answers show their first rows only.
import { ELEMENT, describe } from "./elements.js";
import { esc } from "./dom.js";

export const TABLE_MAX_ROWS = 2000;

export function renderTable(container, result, { onPick }) {
  const rows = result.rows.slice(0, TABLE_MAX_ROWS);
  const cell = (value) => {
    if (value && typeof value === "object" && value[ELEMENT] === "vertex") {
      const key = value.properties.id !== undefined ? String(value.properties.id) : `~${value.id}`;
      return `<span class="el" data-key="${esc(key)}">${esc(describe(value))}</span>`;
    }
    return esc(describe(value));
  };
  const head = `<tr><th>#</th>${result.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>`;
  const body = rows.map((r, i) => `<tr><td>${i + 1}</td>${r.map((v) => `<td>${cell(v)}</td>`).join("")}</tr>`).join("");
  const more = result.rows.length > rows.length
    ? `<p class="hint">The table shows the first ${rows.length} of ${result.rows.length} rows.</p>` : "";
  container.innerHTML = `<table><thead>${head}</thead><tbody>${body}</tbody></table>${more}`;
  container.querySelectorAll(".el").forEach((el) => el.addEventListener("click", () => onPick(el.dataset.key)));
}
