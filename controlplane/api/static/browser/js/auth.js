// Who the page speaks as. A token given once in the URL (?token=... or #token=...) is kept in
// sessionStorage (this tab only), removed from the address bar, and sent as
// `Authorization: Bearer <token>` on every HTTP request and in the graphql-transport-ws
// connection_init payload. Without a token nothing is sent.
const KEY = "controlplane.token";

export function captureToken() {
  const url = new URL(window.location.href);
  const hash = new URLSearchParams(url.hash.replace(/^#/, ""));
  const token = url.searchParams.get("token") ?? hash.get("token");
  if (token === null) return;
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
  url.searchParams.delete("token");
  hash.delete("token");
  url.hash = hash.toString();
  history.replaceState(null, "", url.toString());
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export function connectionParams() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

captureToken();
