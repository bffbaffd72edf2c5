# Shared shell helpers for Parley's scripts. Source it; do not run it.
#
# The test suite's dependencies are declared here once: every Debian package
# whose programs a test step executes (TEST_DEBS), and every program the
# steps are about to run (preflight). Packages are installed with
# --no-install-recommends so that what a step needs is written down rather
# than pulled in by accident: a Recommends that a tool needs at run time must
# be named here. (podman only *recommends* catatonit, the pause binary behind
# `podman kube play`; a machine where it had been installed by hand passed,
# a fresh one failed mid-run.)

# TEST_DEBS: the Debian packages of the whole test suite.
TEST_DEBS=(
  # cargo build: -sys crates find their C libraries through pkg-config
  pkg-config
  # fleet and store tests (crates/testkit/src/services.rs): real servers
  redis-server postgresql nginx-light
  # the terminal client's TUI test drives it in tmux; scripts fetch with curl
  tmux curl
  # deploy/test.sh step 5: the image and `podman kube play`. podman's
  # Depends pick one of crun|runc and one network stack; we name ours, and
  # catatonit (a Recommends) for the pod's pause container.
  podman runc conmon catatonit containernetworking-plugins
  # deploy/test.sh: the static musl binary for the scratch image, strip,
  # TLS roots for pip, a venv for the pinned PyPI tools
  musl-tools binutils ca-certificates python3-venv
  # tests/web: headless Chromium driven by playwright-core
  chromium chromium-driver
  # fleet_clocks.rs: nodes with skewed wall clocks (LD_PRELOAD libfaketime)
  libfaketime
  # tls.rs: the CA and server certificates of the TLS PostgreSQL and Redis
  openssl
)

# TEST_DISK_GB: what a clean run of scripts/test writes, with margin: a
# fresh clone peaked at 4.9 GB (target/, fuzz/target/, the container image,
# temp dirs; `du -sm` every 30 s, 2026-12-01; README).
TEST_DISK_GB=8

# need_apt PKG... — installs the Debian packages that are missing (idempotent).
need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The fuzz targets (fuzz/, scripts/fuzz) are built and run by cargo-fuzz, at
# this version. It drives libFuzzer, which needs nightly compiler flags; on
# the stable toolchain RUSTC_BOOTSTRAP=1 allows them (see docs/fuzzing.md).
CARGO_FUZZ_VERSION=0.13.1

# cargo_fuzz_bin — where cargo-fuzz is (on PATH, else ~/.cargo/bin).
cargo_fuzz_bin() {
  command -v cargo-fuzz 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz"
}

# need_cargo_fuzz — installs cargo-fuzz $CARGO_FUZZ_VERSION unless that
# version is already installed (idempotent).
need_cargo_fuzz() {
  local bin have
  bin=$(cargo_fuzz_bin)
  have=$("$bin" --version 2>/dev/null | awk '{print $2}' || true)
  [ "$have" = "$CARGO_FUZZ_VERSION" ] && return 0
  echo "cargo-fuzz ${have:-missing}: cargo install --locked cargo-fuzz --version $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
}

# pg_bin — the newest PostgreSQL server binaries directory, as the testkit
# picks it (crates/testkit/src/services.rs).
pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && echo "$d"
}

# preflight — lists every program the test steps will execute, with where it
# was found; fails with one clear message naming all that are missing, before
# the first test runs rather than in the middle of the run.
preflight() {
  local missing=() pg
  pg=$(pg_bin || true)
  _found() { printf '  %-16s %s\n' "$1" "$2"; }
  _tool() { # NAME [PATH]: found on PATH (or at PATH)
    local p=${2:-$(command -v "$1" 2>/dev/null || true)}
    if [ -n "$p" ] && [ -x "$p" ]; then _found "$1" "$p"; else missing+=("$1"); _found "$1" MISSING; fi
  }
  _file() { # NAME PATH: a file that must exist (a library: not executable)
    if [ -f "$2" ]; then _found "$1" "$2"; else missing+=("$1"); _found "$1" MISSING; fi
  }
  echo "programs the tests execute:"
  _tool cargo
  _tool cargo-nextest "$(command -v cargo-nextest 2>/dev/null || echo "$HOME/.cargo/bin/cargo-nextest")"
  _tool cargo-fuzz "$(cargo_fuzz_bin)"
  if [ -x "$(cargo_fuzz_bin)" ] && [ "$("$(cargo_fuzz_bin)" --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
    missing+=("cargo-fuzz $CARGO_FUZZ_VERSION (need_cargo_fuzz installs it)")
  fi
  _tool redis-server
  _tool openssl
  for b in initdb pg_ctl postgres pg_basebackup psql; do _tool "$b" "${pg:+$pg/$b}"; done
  _tool nginx
  _tool tmux
  _tool curl
  _tool podman
  _tool runc
  _tool conmon "$(command -v conmon 2>/dev/null || ls /usr/bin/conmon /usr/libexec/podman/conmon 2>/dev/null | head -n 1)"
  _tool catatonit "$(command -v catatonit 2>/dev/null || ls /usr/libexec/podman/catatonit 2>/dev/null | head -n 1)"
  _tool cni-bridge /usr/lib/cni/bridge
  _tool musl-gcc
  _tool strip
  _tool python3
  _tool kubectl
  _file libfaketime /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
  _tool chromium /usr/bin/chromium
  _tool chromedriver
  _tool node
  _tool npm
  if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    missing+=("rust target x86_64-unknown-linux-musl")
  fi
  # Disk: a run that runs out of space fails late and cryptically (the linker
  # died with "Bus error" 9 minutes in), so the space is checked up front.
  local dir=${CARGO_TARGET_DIR:-.} free_gb
  [ -d "$dir" ] || dir=.
  free_gb=$(df -P -BG "$dir" | awk 'NR == 2 { sub(/G$/, "", $4); print $4 }')
  _found "disk" "${free_gb} GB free under $dir (a clean run writes about ${TEST_DISK_GB} GB)"
  if [ "${free_gb:-0}" -lt "$TEST_DISK_GB" ]; then
    missing+=("${TEST_DISK_GB} GB of free disk (have ${free_gb} GB)")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "preflight: missing ${missing[*]}"
    echo "  Debian packages: scripts/lib.sh TEST_DEBS; kubectl, node and the Rust toolchain come with the machine."
    return 1
  fi
  echo "preflight: all present"
}

# section NAME — prints a visible header.
section() { printf '\n== %s\n' "$*"; }
