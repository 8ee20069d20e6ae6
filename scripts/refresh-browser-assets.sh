#!/usr/bin/env bash
# Refresh the JavaScript libraries of the graph browser and of the offline GraphiQL
# (controlplane/api/static/vendor/) from the npm registry, so nobody edits a minified
# file by hand. The versions are pinned exactly in scripts/browser-assets/package.json
# and, with every transitive dependency and its integrity hash, in package-lock.json.
#
#   scripts/refresh-browser-assets.sh            # reinstall exactly what the lock file says
#   scripts/refresh-browser-assets.sh --update   # after editing package.json: resolve again, rewrite the lock
#
# Needs node and npm; the product itself never does (the files ship inside the Python package).
# Fails if any installed package carries a licence outside the allowlist in vendor.mjs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/scripts/browser-assets"
OUT="$ROOT/controlplane/api/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$SPEC/package.json" "$work/"
cd "$work"
if [[ "${1:-}" == "--update" || ! -f "$SPEC/package-lock.json" ]]; then
    npm install --ignore-scripts --no-audit --no-fund --legacy-peer-deps
    cp package-lock.json "$SPEC/package-lock.json"
else
    cp "$SPEC/package-lock.json" .
    npm ci --ignore-scripts --no-audit --no-fund --legacy-peer-deps
fi
node "$SPEC/vendor.mjs" "$work/node_modules" "$OUT"
echo "vendored into ${OUT#"$ROOT"/}" >&2
