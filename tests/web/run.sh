#!/usr/bin/env bash
# End-to-end test of the Parley web UI in real headless Chromium: the one command.
#
#   tests/web/run.sh
#   tests/web/run.sh --tools-only    install what it needs, then stop
#
# It installs what it needs (Debian's chromium + chromium-driver, the npm
# packages pinned in package-lock.json), starts its own Parley node on a free
# 127.0.0.1 port in a temp dir, runs the tests (node --test), and always stops
# the node. It does not build Parley: build it first (`cargo build -p parley`).
#
# Environment:
#   PARLEY_BIN  the parley binary (default: $CARGO_TARGET_DIR or target, then
#               /debug/parley); a relative path is taken from the repo root
#   ARTIFACTS   where screenshots and the node's log go
#               (default: target/web-artifacts, from the repo root)
# Exit status: 0 when every test passed, non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

log() { printf '[web-e2e] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- 1. Chromium (Debian packages, declared in scripts/lib.sh TEST_DEBS) ---
# shellcheck source=../../scripts/lib.sh
. "$root/scripts/lib.sh"
need_apt chromium chromium-driver || die "could not install chromium chromium-driver"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium not found after install"

# ---- 2. npm packages (playwright-core, pinned) ------------------------------
command -v node >/dev/null 2>&1 || die "node is not installed (Node >= 20 needed)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node >= 20 needed for 'node --test', found $(node --version)"
want=$(node -p "require('$here/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('$here/node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [ "$want" != "$have" ]; then
  log "npm ci (playwright-core $want)"
  (cd "$here" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) || die "npm ci failed"
fi
if [ "${1:-}" = "--tools-only" ]; then
  log "tools present: $(/usr/bin/chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2), playwright-core $want"
  exit 0
fi

# ---- 3. The parley binary (built by the caller) ----------------------------
bin="${PARLEY_BIN:-${CARGO_TARGET_DIR:-target}/debug/parley}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || die "parley binary not found at $bin: build it first (cargo build -p parley) or set PARLEY_BIN"
export PARLEY_BIN="$bin"

artifacts="${ARTIFACTS:-target/web-artifacts}"
case "$artifacts" in /*) ;; *) artifacts="$root/$artifacts" ;; esac
mkdir -p "$artifacts"
rm -f "$artifacts"/[0-9][0-9]-*.png "$artifacts"/failure-*.png "$artifacts"/parley.log
export ARTIFACTS="$artifacts"

# ---- 4. Our own node, always stopped ----------------------------------------
E2E_DIR=$(mktemp -d "${TMPDIR:-/tmp}/parley-web-e2e.XXXXXX")
export E2E_DIR
cleanup() {
  local rc=$?
  bash "$here/node.sh" stop || true
  cp -f "$E2E_DIR/parley.log" "$artifacts/parley.log" 2>/dev/null || true
  if [ "$rc" -ne 0 ] && [ -f "$E2E_DIR/parley.log" ]; then
    log "last lines of the node's log (full log: $artifacts/parley.log):"
    tail -n 40 "$E2E_DIR/parley.log" >&2 || true
  fi
  rm -rf "$E2E_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

E2E_PORT=$(node -e '
  const s = require("net").createServer();
  s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
export E2E_PORT
log "starting $bin on 127.0.0.1:$E2E_PORT (data in $E2E_DIR)"
bash "$here/node.sh" start

# ---- 5. The tests -----------------------------------------------------------
log "running the tests; screenshots go to $artifacts"
cd "$here"
timeout --kill-after=10s 300s node --test --test-concurrency=1 e2e.test.mjs
