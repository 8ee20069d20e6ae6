// The page's only way to the control plane: GraphQL over HTTP, and the `events` subscription over
// graphql-transport-ws (a small client of that protocol, so no library is needed). Every request
// carries the tab's bearer token when there is one (auth.js). A refusal becomes an ApiError with
// the API's own code, field and message.
import { authHeaders, connectionParams } from "./auth.js";

export class ApiError extends Error {
  constructor(message, { code = null, field = null } = {}) {
    super(message);
    this.code = code;
    this.field = field;
  }
}

const HTTP = new URL("/graphql", window.location.href).toString();
const WS = HTTP.replace(/^http/, "ws");

function toApiError(e) {
  const ext = e.extensions ?? {};
  return new ApiError(e.message ?? String(e), { code: ext.code ?? null, field: ext.field ?? null });
}

export async function graphql(query, variables = {}) {
  let response;
  try {
    response = await fetch(HTTP, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", ...authHeaders() },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new ApiError(`the API did not answer: ${e.message}`, { code: "UNAVAILABLE" });
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`HTTP ${response.status} ${response.statusText}`, { code: `HTTP_${response.status}` });
  }
  if (body.errors?.length) throw toApiError(body.errors[0]);
  if (!response.ok) throw new ApiError(`HTTP ${response.status}`, { code: `HTTP_${response.status}` });
  return body.data;
}

export async function config() {
  const response = await fetch("/browser/config.json", { headers: authHeaders() });
  if (!response.ok) throw new ApiError(`HTTP ${response.status} from /browser/config.json`);
  return response.json();
}

/**
 * Follow a subscription for ever: reconnects after a drop, asking `variables()` again so the
 * caller can resume from its own cursor. onState(connected: boolean, why?: string).
 */
export function subscribe(query, variables, { onNext, onError, onState }) {
  let ws = null;
  let stopped = false;
  let retry = 500;
  const open = () => {
    if (stopped) return;
    ws = new WebSocket(WS, "graphql-transport-ws");
    ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: connectionParams() }));
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "connection_ack") {
        retry = 500;
        ws.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables: variables() } }));
        onState(true);
      } else if (msg.type === "next") {
        if (msg.payload.errors?.length) onError(toApiError(msg.payload.errors[0]));
        else onNext(msg.payload.data);
      } else if (msg.type === "error") {
        onError(toApiError(msg.payload?.[0] ?? { message: "subscription refused" }));
      } else if (msg.type === "ping") {
        ws.send(JSON.stringify({ type: "pong" }));
      }
    };
    ws.onclose = (ev) => {
      onState(false, ev.reason || `closed (${ev.code})`);
      if (!stopped) setTimeout(open, (retry = Math.min(retry * 2, 10_000)));
    };
  };
  open();
  return () => {
    stopped = true;
    ws?.close();
  };
}

/** Run `build("$v<i>")` -> a GraphQL field for each id, aliased, a few per request (the API limits aliases). */
export async function batched(ids, build, { per = 25 } = {}) {
  const out = new Map();
  for (let i = 0; i < ids.length; i += per) {
    const chunk = ids.slice(i, i + per);
    const declared = chunk.map((_, j) => `$v${j}: ID!`).join(", ");
    const fields = chunk.map((_, j) => `a${j}: ${build(`$v${j}`)}`).join("\n");
    const variables = Object.fromEntries(chunk.map((id, j) => [`v${j}`, id]));
    const data = await graphql(`query(${declared}) { ${fields} }`, variables);
    chunk.forEach((id, j) => out.set(id, data[`a${j}`]));
  }
  return out;
}
