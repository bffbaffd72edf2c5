#!/usr/bin/env bash
# Start, crash or stop the one Parley node that the web e2e test talks to.
#
#   node.sh start   start it (same port, same database file every time) and
#                   wait until /readyz answers 200
#   node.sh kill    SIGKILL it (a crash: no drain) and wait until it is gone
#   node.sh stop    SIGTERM it, SIGKILL after 10 s; does nothing if not running
#
# Environment (set by run.sh): PARLEY_BIN (absolute path of the binary),
# E2E_DIR (temp dir: database, log, pid file), E2E_PORT (127.0.0.1 port),
# E2E_DATABASE_URL (the store; default sqlite://$E2E_DIR/parley.db).
set -euo pipefail

: "${PARLEY_BIN:?PARLEY_BIN must be set (run tests/web/run.sh)}"
: "${E2E_DIR:?E2E_DIR must be set (run tests/web/run.sh)}"
: "${E2E_PORT:?E2E_PORT must be set (run tests/web/run.sh)}"

pidfile="$E2E_DIR/parley.pid"
log="$E2E_DIR/parley.log"
url="http://127.0.0.1:$E2E_PORT"

# Alive = exists and is not a zombie (an orphan may wait a while to be reaped;
# a zombie holds no socket and no file any more).
alive() {
  local pid=$1 st
  [ -n "$pid" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

current_pid() { cat "$pidfile" 2>/dev/null || true; }

wait_gone() { # pid, tenths of a second
  local pid=$1 n=$2
  while alive "$pid"; do
    n=$((n - 1))
    [ "$n" -gt 0 ] || return 1
    sleep 0.1
  done
}

case "${1:-}" in
  start)
    pid=$(current_pid)
    if alive "$pid"; then echo "node.sh: parley already running (pid $pid)" >&2; exit 1; fi
    echo "=== node.sh start $(date -u +%FT%TZ) ===" >>"$log"
    PARLEY_LISTEN="127.0.0.1:$E2E_PORT" \
    PARLEY_DATABASE_URL="${E2E_DATABASE_URL:-sqlite://$E2E_DIR/parley.db}" \
    PARLEY_JWT_SECRET="parley-web-e2e-secret" \
    PARLEY_NODE_ID="web-e2e" \
    PARLEY_LOG_FORMAT=text \
    PARLEY_DRAIN_GRACE=0s PARLEY_DRAIN_SPREAD=0s \
      "$PARLEY_BIN" serve >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 200); do # 20 s
      if ! alive "$pid"; then
        echo "node.sh: parley exited during start-up; last log lines:" >&2
        tail -n 30 "$log" >&2
        exit 1
      fi
      if curl -fsS -o /dev/null --max-time 1 "$url/readyz" 2>/dev/null; then
        exit 0
      fi
      sleep 0.1
    done
    echo "node.sh: parley not ready at $url/readyz after 20 s; last log lines:" >&2
    tail -n 30 "$log" >&2
    exit 1
    ;;
  kill)
    pid=$(current_pid)
    alive "$pid" || { echo "node.sh: parley is not running" >&2; exit 1; }
    echo "=== node.sh kill -9 $pid $(date -u +%FT%TZ) ===" >>"$log"
    kill -KILL "$pid"
    wait_gone "$pid" 100 || { echo "node.sh: pid $pid survived SIGKILL" >&2; exit 1; }
    ;;
  stop)
    pid=$(current_pid)
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      if ! wait_gone "$pid" 100; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 50 || true
      fi
    fi
    rm -f "$pidfile"
    ;;
  *)
    echo "usage: $0 start|kill|stop" >&2
    exit 2
    ;;
esac
