#!/usr/bin/env bash
# End-to-end test of the Parley web UI in real headless Chromium: the one command.
#
#   tests/web/run.sh
#   tests/web/run.sh --tools-only    install what it needs, then stop
#
# It installs what it needs (Debian's chromium + chromium-driver, and
# postgresql, redis-server, nginx-light for the fleet; the npm packages pinned
# in package-lock.json), then runs two suites (node --test):
#   1. e2e.test.mjs against its own Parley node on a free 127.0.0.1 port with
#      a temp SQLite database (node.sh);
#   2. fleet.test.mjs against a fleet: parley-fleet starts PostgreSQL, Redis,
#      two nodes sharing them and nginx, all on free 127.0.0.1 ports; alice's
#      browser talks to node 0, bob's to node 1 (FLEET_NODE_A/FLEET_NODE_B).
# Whatever it started is always stopped (the node by node.sh, the fleet by
# SIGINT to the launcher, which stops its nodes, nginx, Redis, PostgreSQL).
# It does not build Parley: build both binaries first
# (`cargo build -p parley -p parley-testkit`; scripts/test builds them with
# `cargo build --workspace --all-targets`).
#
# Environment:
#   PARLEY_BIN        the parley binary (default: $CARGO_TARGET_DIR or target,
#                     then /debug/parley); a relative path is taken from the
#                     repo root
#   PARLEY_FLEET_BIN  the fleet launcher (default: parley-fleet next to the
#                     default parley binary)
#   WEB_E2E_ONLY      `single` or `fleet`: run only that suite (default: both)
#   ARTIFACTS         where screenshots and the logs go
#                     (default: target/web-artifacts, from the repo root)
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
# The fleet's services (crates/testkit/src/services.rs runs Debian's).
need_apt postgresql redis-server nginx-light || die "could not install postgresql redis-server nginx-light"
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

# ---- 3. The binaries (built by the caller) ---------------------------------
only="${WEB_E2E_ONLY:-}"
case "$only" in ""|single|fleet) ;; *) die "WEB_E2E_ONLY must be single or fleet, not $only" ;; esac
bin="${PARLEY_BIN:-${CARGO_TARGET_DIR:-target}/debug/parley}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || die "parley binary not found at $bin: build it first (cargo build -p parley) or set PARLEY_BIN"
export PARLEY_BIN="$bin"
fleet_bin="${PARLEY_FLEET_BIN:-${CARGO_TARGET_DIR:-target}/debug/parley-fleet}"
case "$fleet_bin" in /*) ;; *) fleet_bin="$root/$fleet_bin" ;; esac
if [ "$only" != single ] && [ ! -x "$fleet_bin" ]; then
  die "fleet launcher not found at $fleet_bin: build it first (cargo build -p parley-testkit --bin parley-fleet) or set PARLEY_FLEET_BIN"
fi

artifacts="${ARTIFACTS:-target/web-artifacts}"
case "$artifacts" in /*) ;; *) artifacts="$root/$artifacts" ;; esac
mkdir -p "$artifacts"
rm -f "$artifacts"/[0-9][0-9]-*.png "$artifacts"/fleet-*.png "$artifacts"/failure-*.png \
  "$artifacts"/parley.log "$artifacts"/fleet-*.log
export ARTIFACTS="$artifacts"

# ---- 4. What we start, always stopped ----------------------------------------
E2E_DIR=$(mktemp -d "${TMPDIR:-/tmp}/parley-web-e2e.XXXXXX")
export E2E_DIR
# The single node's store (node.sh), also for `parley admin` in e2e.test.mjs.
export E2E_DATABASE_URL="sqlite://$E2E_DIR/parley.db"
fleet_pid=""

# SIGINT to the launcher: it stops nginx, its nodes (SIGTERM, drain), Redis
# and PostgreSQL, then exits. (It stops cleanly on SIGINT only.)
stop_fleet() {
  [ -n "$fleet_pid" ] || return 0
  if kill -0 "$fleet_pid" 2>/dev/null; then
    kill -INT "$fleet_pid" 2>/dev/null || true
    for _ in $(seq 1 900); do # 90 s
      kill -0 "$fleet_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$fleet_pid" 2>/dev/null; then
      log "the fleet launcher (pid $fleet_pid) did not stop within 90 s; killing it (its services may be left)"
      kill -KILL "$fleet_pid" 2>/dev/null || true
    fi
  fi
  wait "$fleet_pid" 2>/dev/null || true
  fleet_pid=""
}

cleanup() {
  local rc=$?
  set +e
  [ -z "${E2E_PORT:-}" ] || bash "$here/node.sh" stop
  stop_fleet
  cp -f "$E2E_DIR/parley.log" "$artifacts/parley.log" 2>/dev/null || true
  cp -f "$E2E_DIR/fleet.out" "$artifacts/fleet-launcher.log" 2>/dev/null || true
  cat "$E2E_DIR/fleet.err" >>"$artifacts/fleet-launcher.log" 2>/dev/null || true
  for f in "$E2E_DIR"/fleet-logs/node-*.log; do
    [ -f "$f" ] && cp -f "$f" "$artifacts/fleet-$(basename "$f")"
  done
  if [ "$rc" -ne 0 ]; then
    for f in "$E2E_DIR/parley.log" "$E2E_DIR"/fleet-logs/node-*.log; do
      [ -s "$f" ] || continue
      log "last lines of $(basename "$f") (all logs: $artifacts):"
      tail -n 40 "$f" >&2 || true
    done
  fi
  rm -rf "$E2E_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 5. One node: e2e.test.mjs ----------------------------------------------
if [ "$only" != fleet ]; then
  E2E_PORT=$(node -e '
    const s = require("net").createServer();
    s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
  export E2E_PORT
  log "starting $bin on 127.0.0.1:$E2E_PORT (data in $E2E_DIR)"
  bash "$here/node.sh" start

  log "running the single-node tests; screenshots go to $artifacts"
  (cd "$here" && timeout --kill-after=10s 300s node --test --test-concurrency=1 e2e.test.mjs)
  bash "$here/node.sh" stop
fi

# ---- 6. A fleet of two nodes: fleet.test.mjs -----------------------------------
if [ "$only" != single ]; then
  log "starting a fleet ($fleet_bin --nodes 2): PostgreSQL, Redis, 2 nodes, nginx"
  mkdir -p "$E2E_DIR/fleet-logs"
  PARLEY_NODE_LOGS="$E2E_DIR/fleet-logs" \
    "$fleet_bin" --nodes 2 --parley "$bin" >"$E2E_DIR/fleet.out" 2>"$E2E_DIR/fleet.err" </dev/null &
  fleet_pid=$!
  for _ in $(seq 1 1200); do # 120 s
    grep -q '^Ctrl-C (or SIGTERM) stops everything' "$E2E_DIR/fleet.out" 2>/dev/null && break
    if ! kill -0 "$fleet_pid" 2>/dev/null; then
      cat "$E2E_DIR/fleet.out" "$E2E_DIR/fleet.err" >&2 || true
      die "the fleet launcher exited during start-up"
    fi
    sleep 0.1
  done
  grep -q '^Ctrl-C (or SIGTERM) stops everything' "$E2E_DIR/fleet.out" || {
    cat "$E2E_DIR/fleet.out" "$E2E_DIR/fleet.err" >&2 || true
    die "the fleet was not up after 120 s"
  }
  node_url() { sed -n "s|^  node $1: *\(http://[0-9.:]*\)\$|\1|p" "$E2E_DIR/fleet.out"; }
  FLEET_NODE_A=$(node_url 0)
  FLEET_NODE_B=$(node_url 1)
  [ -n "$FLEET_NODE_A" ] && [ -n "$FLEET_NODE_B" ] || {
    cat "$E2E_DIR/fleet.out" >&2
    die "could not read the nodes' URLs from the launcher's output"
  }
  export FLEET_NODE_A FLEET_NODE_B
  log "fleet up: node A $FLEET_NODE_A, node B $FLEET_NODE_B"

  log "running the fleet tests; screenshots go to $artifacts"
  (cd "$here" && timeout --kill-after=10s 300s node --test --test-concurrency=1 fleet.test.mjs)
fi
log "all passed"
