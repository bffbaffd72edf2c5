#!/usr/bin/env bash
# Property-based test of the HTTP API against its OpenAPI document
# (crates/server/openapi.json, served at /api/openapi.json) with
# Schemathesis, on a live node: no request may get a 5xx, and no response
# may break the document's schema.
#
#   tests/openapi/run.sh
#   tests/openapi/run.sh --tools-only    install Schemathesis, then stop
#
# Schemathesis (pinned below) is installed from PyPI into a venv under
# target/. The script starts its own node (SQLite in a temp dir, a free
# 127.0.0.1 port, an API key), and always stops it. It does not build
# Parley: build it first (`cargo build -p parley`).
#
# Environment:
#   PARLEY_BIN        the parley binary (default: target/debug/parley)
#   OPENAPI_EXAMPLES  examples per operation (default: 25)
# Exit status: 0 when Schemathesis found nothing, non-zero otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

log() { printf '[openapi] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SCHEMATHESIS_VERSION=4.32.5

# ---- 1. Schemathesis in a venv under target/ --------------------------------
venv="${CARGO_TARGET_DIR:-$root/target}/openapi-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" || die "pip install schemathesis failed"
fi
if [ "${1:-}" = "--tools-only" ]; then
  log "tools present: $("$venv/bin/schemathesis" --version)"
  exit 0
fi

# ---- 2. Our own node, always stopped ----------------------------------------
bin="${PARLEY_BIN:-${CARGO_TARGET_DIR:-target}/debug/parley}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || die "parley binary not found at $bin: build it first (cargo build -p parley) or set PARLEY_BIN"

work=$(mktemp -d)
node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
secret="openapi-test-secret"
api_key="openapi-test-key"
# Only what this test sets: no PARLEY_* setting of whoever runs it.
env -u PARLEY_API_KEYS $(env | sed -n 's/^\(PARLEY_[A-Z_]*\)=.*/-u \1/p') \
  PARLEY_LISTEN="127.0.0.1:$port" \
  PARLEY_DATABASE_URL="sqlite://$work/parley.db" \
  PARLEY_JWT_SECRET="$secret" \
  PARLEY_API_KEYS="$api_key" \
  PARLEY_NODE_ID=openapi \
  PARLEY_SEND_RATE=100000 PARLEY_SEND_BURST=100000 \
  PARLEY_LOG=warn \
  "$bin" serve >"$work/parley.log" 2>&1 &
node_pid=$!
for _ in $(seq 100); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/parley.log" >&2; die "the node exited"; }
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || die "the node did not become ready"

# A user's token (for the user endpoints) and the API key (for /api/server):
# every request carries both; each endpoint reads the one it needs.
token=$("$bin" token --secret "$secret" --user alice --ttl 1h)
# A room to find: the document's example room, owned by alice with the
# document's example user bob as a member, so that the member, role, ban
# and topic endpoints get past "who may" to their answers.
curl -fsS -X POST "$base/api/rooms" -H "Authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"room":"general"}' >/dev/null \
  || die "could not create the room general"
curl -fsS -X POST "$base/api/rooms/general/members" -H "Authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"user":"bob"}' >/dev/null \
  || die "could not add bob to the room general"
# The document's example account, so that its login example succeeds.
curl -fsS -X POST "$base/api/server/users" -H "X-Parley-Api-Key: $api_key" \
  -H 'content-type: application/json' \
  -d '{"username":"alice","password":"correct horse"}' >/dev/null \
  || die "could not create the user alice"

# ---- 3. Schemathesis -------------------------------------------------------
# Left out: what ends the token every other request uses (logout, logout-all,
# a password change, a revocation of alice), and the WebSocket upgrade, which
# is not an HTTP API. crates/cli/tests (accounts.rs, server_api.rs) test them.
log "schemathesis ${OPENAPI_EXAMPLES:-25} examples per operation against $base"
status=0
# From the temp dir: Schemathesis leaves a .schemathesis/ where it runs.
(cd "$work" && "$venv/bin/schemathesis" run "$base/api/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $token" \
  -H "X-Parley-Api-Key: $api_key" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "${OPENAPI_EXAMPLES:-25}" \
  --generation-deterministic \
  --exclude-operation-id logout \
  --exclude-operation-id logoutAll \
  --exclude-operation-id changePassword \
  --exclude-operation-id serverRevoke \
  --exclude-operation-id websocket \
  --report junit --report-dir "$root/target/openapi-report") \
  || status=$?

if grep -q '"level":"ERROR"' "$work/parley.log"; then
  log "the node logged errors:"
  grep '"level":"ERROR"' "$work/parley.log" >&2
  status=1
fi
[ "$status" -eq 0 ] && log "no 5xx, every response matches the schema" || log "FAILED (status $status)"
exit "$status"
