#!/usr/bin/env bash
# deploy/test.sh: checks Parley's deployment assets (deploy/) on this machine,
# with no cluster and no registry. One command, idempotent, exits non-zero on
# any failure; ends with a line "N passed, M failed".
#
#   1. kubectl kustomize renders base, both overlays and the addons (and
#      prod with the cloudnativepg and hpa-connections components);
#   2. kubernetes-validate (strict) validates every rendered object against
#      pinned Kubernetes versions (CRDs skipped, with the reason: their
#      schemas are not in kubernetes-validate, and the operators' CRDs are
#      not on a registry reachable here; `crd-refs`/`cnpg` check what they
#      point at);
#   3. checkov finds nothing beyond deploy/checkov-skips.yaml (each skip has
#      a reason);
#  3b. the Helm chart (deploy/helm/parley), rendered and linted by Helm's own
#      engine (helm-python-sdk: Helm v4's Go SDK, offline) with its defaults
#      and the value sets in deploy/helm/test-values/; every rendering
#      validated (kubernetes-validate, checkov) and held against the binary
#      like the kustomize output; parity with the prod and dev overlays and
#      the monitoring addon; values.schema.json complete, bad values refused;
#      the values reference in docs/deployment.md current; the `helm test`
#      pod's script run against a real node;
#   4. the manifests agree with the binary: PARLEY_* names, ports, probe
#      paths answering 200 on a running node, drain timings vs. grace period,
#      metric names in the dashboard, Dockerfiles, compose + nginx;
#   5. builds the test image with podman from the musl binary, checks its
#      size, runs the dev overlay's Deployment + ConfigMap + Secret with
#      `podman kube play`, waits for /readyz on 127.0.0.1, registers a user,
#      chats over WebSocket, checks the drain on stop, tears it all down.
#
# Installs what is missing: Debian packages (apt-get), the musl Rust target
# (rustup), the PyPI tools pinned in deploy/requirements.txt (into a venv
# under target/deploy-tools/). kubectl must be on PATH.
#
# Environment:
#   PARLEY_BIN=path   the binary to hold the manifests and the chart against
#                     (steps 3b, 4, 5's token); scripts/test passes its debug
#                     build. The image
#                     needs a static binary: when PARLEY_BIN is not one, the
#                     musl binary is built (cargo) for the image as well.
#   KUBE_VERSIONS     Kubernetes versions to validate against
#                     (default "1.30.0 1.33.0": oldest supported, pinned current)
#   KEEP=1            leave the podman pod running at the end
#
# `deploy/test.sh --tools-only` installs the tools (step 0) and stops:
# scripts/test calls it before the first test, so that a missing tool fails
# the run at once instead of half an hour in.
#
# `deploy/test.sh --only helm` runs step 0, the kustomize rendering of step 1
# (the parity checks compare with it) and step 3b only: no musl build, no
# podman (with PARLEY_BIN set, no cargo at all):
#   PARLEY_BIN=target/debug/parley deploy/test.sh --only helm

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT/deploy
WORK=$ROOT/target/deploy-tools
RENDERED=$WORK/rendered
LOGS=$WORK/logs
VENV=$WORK/venv
PY=$VENV/bin/python
LIB=$DEPLOY/lib/deploytest.py
MUSL_TARGET=x86_64-unknown-linux-musl
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.30.0 1.33.0"}
IMAGE=localhost/parley:deploy-test
MAX_IMAGE_BYTES=25000000 # < 25 MB
PLAIN_CTR=parley-deploy-test-plain
PLAY_DIR=$WORK/podman-play
HELM_CHART=$DEPLOY/helm/parley
HELM_VALUES=$DEPLOY/helm/test-values
HELM_RENDERED=$WORK/helm-rendered
SYSROOT=$WORK/sysroot
PROMTOOL=promtool
NGINX=nginx

# podman on this machine may not raise RLIMIT_NOFILE/NPROC: use a config with
# default_ulimits = [] for our invocations only (the system's is not touched).
export CONTAINERS_CONF=$WORK/containers.conf
PODMAN=(podman --runtime runc)

# shellcheck source=../scripts/lib.sh
. "$ROOT/scripts/lib.sh"

PASSED=0
FAILED=0
FAILED_NAMES=()

MODE=all
case "${1:-}" in
"") ;;
--tools-only) MODE=tools ;;
--only)
    [ "${2:-}" = helm ] || { echo "usage: deploy/test.sh [--tools-only | --only helm]" >&2; exit 2; }
    MODE=helm
    ;;
*) echo "usage: deploy/test.sh [--tools-only | --only helm]" >&2; exit 2 ;;
esac

mkdir -p "$WORK" "$RENDERED" "$LOGS"
cd "$ROOT" || exit 2

step() { printf '\n== %s ==\n' "$*"; }

# check NAME COMMAND...: runs COMMAND, prints PASS/FAIL NAME, then its output
# (indented; the tail only on failure).
check() {
    local name=$1
    shift
    local log
    log=$LOGS/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-80).log
    if "$@" >"$log" 2>&1; then
        PASSED=$((PASSED + 1))
        printf 'PASS  %s\n' "$name"
        sed -e 's/^/      /' "$log" | head -n 40
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed -e 's/^/      /' "$log" | tail -n 60
    fi
}

summary() {
    echo
    if [ "$FAILED" -gt 0 ]; then
        printf 'failed: %s\n' "${FAILED_NAMES[@]}"
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# A step that later steps need; stop here when it fails.
require() {
    local before=$FAILED
    check "$@"
    if [ "$FAILED" -gt "$before" ]; then
        echo "(cannot go on without: $1)"
        summary
        exit 1
    fi
}

# ------------------------------------------------------------------ setup

extract_deb() { # PACKAGE: unpack a Debian package's files under $SYSROOT
    mkdir -p "$WORK/debs" "$SYSROOT"
    rm -f "$WORK/debs/$1"_*.deb
    (cd "$WORK/debs" && { apt-get download "$1" 2>/dev/null || { apt-get update -qq && apt-get download "$1"; }; }) || return 1
    dpkg-deb -x "$WORK/debs/$1"_*.deb "$SYSROOT" && echo "unpacked Debian package $1 into $SYSROOT"
}

install_tools() {
    # The Debian packages of this script are declared with the rest of the
    # suite's in scripts/lib.sh (TEST_DEBS), recommends made explicit.
    need_apt podman runc conmon catatonit containernetworking-plugins \
        musl-tools binutils curl ca-certificates python3-venv || return 1
    echo "Debian packages: present (podman $(dpkg-query -W -f='${Version}' podman), catatonit $(dpkg-query -W -f='${Version}' catatonit))"
    # promtool and nginx are only needed to check files: take their binaries
    # out of the Debian packages into target/ instead of installing daemons
    # that a package would start as services.
    PROMTOOL=$(command -v promtool || echo "$SYSROOT/usr/bin/promtool")
    NGINX=$(command -v nginx || echo "$SYSROOT/usr/sbin/nginx")
    [ -x "$PROMTOOL" ] || extract_deb prometheus || return 1
    [ -x "$NGINX" ] || extract_deb nginx || return 1
    if ! "$NGINX" -v >/dev/null 2>&1; then
        echo "nginx needs its libraries: apt-get install libssl3 libpcre2-8-0 zlib1g libcrypt1"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl3 libpcre2-8-0 zlib1g libcrypt1 || return 1
    fi
    echo "promtool: $PROMTOOL; nginx: $NGINX"
    command -v kubectl >/dev/null || {
        echo "kubectl is not on PATH (it is not a Debian package): install it from your distribution of Kubernetes"
        return 1
    }
    echo "kubectl: $(kubectl version --client 2>/dev/null | head -1)"
    # The image always needs the static musl binary (the host build is not).
    command -v cargo >/dev/null || { echo "cargo missing (rustup)"; return 1; }
    if ! rustup target list --installed 2>/dev/null | grep -x "$MUSL_TARGET" >/dev/null; then
        echo "rustup target add $MUSL_TARGET"
        rustup target add "$MUSL_TARGET" || return 1
    fi
    # PyPI tools, pinned, in a venv; reinstalled only when the pins change.
    local want have
    want=$(sha256sum "$DEPLOY/requirements.txt" | cut -d' ' -f1)
    have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
    if [ ! -x "$PY" ] || [ "$want" != "$have" ]; then
        echo "creating $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV" &&
            "$VENV/bin/pip" install -q --disable-pip-version-check -r "$DEPLOY/requirements.txt" &&
            echo "$want" >"$VENV/.requirements.sha256" || return 1
    fi
    "$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | grep -iE '^(kubernetes-validate|checkov|websockets|pyyaml|helm-python-sdk)==' | tr '\n' ' '
    echo
    # Helm's engine is a shared library inside the wheel: prove it loads.
    "$PY" -c 'import helm_python as h; print(f"Helm SDK {h.helm_sdk_version()} (libhelm_c {h.helm_c_version()}) loads")' || return 1
    printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
    "${PODMAN[@]}" --version
}

is_static() { ldd "$1" 2>&1 | grep -E 'not a dynamic|statically linked' >/dev/null; }

# HOST_BIN: the binary the manifests are held against (PARLEY_BIN, else the
# musl one). IMAGE_BIN: the static musl binary that goes into the image.
HOST_BIN=""
IMAGE_BIN=""
build_binary() {
    if [ -n "${PARLEY_BIN:-}" ]; then
        [ -x "$PARLEY_BIN" ] || { echo "no binary at PARLEY_BIN=$PARLEY_BIN"; return 1; }
        echo "manifests are checked against PARLEY_BIN=$PARLEY_BIN"
        HOST_BIN=$PARLEY_BIN
        is_static "$PARLEY_BIN" && IMAGE_BIN=$PARLEY_BIN
    fi
    if [ "$MODE" = helm ] && [ -n "$HOST_BIN" ]; then
        # --only helm: the chart is held against PARLEY_BIN; no image is built.
        "$HOST_BIN" --version
        "$HOST_BIN" serve --help >"$WORK/serve-help.txt" || return 1
        echo "$(grep -c 'PARLEY_' "$WORK/serve-help.txt") PARLEY_* settings in \`parley serve --help\`"
        return 0
    fi
    if [ -z "$IMAGE_BIN" ]; then
        # Always ask cargo: a no-op when the binary is current, a rebuild
        # when the sources changed (never put a stale binary in the image).
        echo "cargo build --release --target $MUSL_TARGET -p parley"
        cargo build --release --target "$MUSL_TARGET" -p parley 2>&1 | grep -vE '^\s+(Compiling|Blocking)' | tail -n 20
        [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
        IMAGE_BIN=$ROOT/target/$MUSL_TARGET/release/parley
    fi
    HOST_BIN=${HOST_BIN:-$IMAGE_BIN}
    is_static "$IMAGE_BIN" ||
        { echo "$IMAGE_BIN is not statically linked (a scratch image needs a static binary)"; return 1; }
    echo "image binary: $IMAGE_BIN (static)"
    "$HOST_BIN" --version
    "$HOST_BIN" serve --help >"$WORK/serve-help.txt" || return 1
    "$IMAGE_BIN" serve --help >"$WORK/serve-help-image.txt" || return 1
    if ! diff <(grep -o 'PARLEY_[A-Z0-9_]*' "$WORK/serve-help.txt" | sort -u) \
        <(grep -o 'PARLEY_[A-Z0-9_]*' "$WORK/serve-help-image.txt" | sort -u); then
        echo "the image binary's settings differ from PARLEY_BIN's (built from different sources?)"
        return 1
    fi
    echo "$(grep -c 'PARLEY_' "$WORK/serve-help.txt") PARLEY_* settings in \`parley serve --help\`"
}

step "0. tools and binary"
require "tools installed (apt-get/rustup/pip only if missing)" install_tools
if [ "$MODE" = tools ]; then
    echo "deploy tools present"
    exit 0
fi
if [ "$MODE" = helm ] && [ -n "${PARLEY_BIN:-}" ]; then
    require "binary to check the chart against (PARLEY_BIN; --only helm builds no image)" build_binary
else
    require "binaries: the one to check, and a static musl one for the image" build_binary
fi

# ----------------------------------------------------------- 1. rendering

# Rendered from a scratch copy of deploy/k8s: overlays/prod refuses to render
# without an (uncommitted) secrets.env, so the copy gets throwaway values;
# and a test-only composition adds the hpa-connections component to prod.
COPY=$WORK/k8s
rm -rf "$COPY" "$RENDERED"
mkdir -p "$RENDERED"
cp -r "$DEPLOY/k8s" "$COPY"
{
    echo "jwt-secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "database-password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "redis-password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
} >"$COPY/overlays/prod/secrets.env"
mkdir -p "$COPY/test/prod-connections"
cat >"$COPY/test/prod-connections/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../overlays/prod
components:
  - ../../addons/monitoring/hpa-connections
EOF
mkdir -p "$COPY/test/prod-cloudnativepg"
cat >"$COPY/test/prod-cloudnativepg/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../overlays/prod
components:
  - ../../addons/cloudnativepg/nodes
EOF

render() {
    local dir=$1 out=$2
    kubectl kustomize "$COPY/$dir" >"$RENDERED/$out.yaml" || return 1
    "$PY" - "$RENDERED/$out.yaml" <<'EOF'
import sys, yaml, collections
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = collections.Counter(d["kind"] for d in docs)
print(f"{len(docs)} objects: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
sys.exit(0 if docs else 1)
EOF
}

step "1. kubectl kustomize"
for t in base:base overlays/dev:dev overlays/prod:prod addons/logging:logging addons/monitoring:monitoring \
    addons/cloudnativepg:cloudnativepg test/prod-connections:prod-connections \
    test/prod-cloudnativepg:prod-cloudnativepg; do
    check "render ${t%%:*}" render "${t%%:*}" "${t##*:}"
done

# --------------------------------------------------------- 2. validation

if [ "$MODE" = all ]; then
    step "2. kubernetes-validate (strict)"
    for v in $KUBE_VERSIONS; do
        check "kubernetes-validate against Kubernetes $v" "$PY" "$LIB" validate --version "$v" "$RENDERED"/*.yaml
    done
fi

# ------------------------------------------------------------ 3. checkov

run_checkov() {
    # --skip-download: no call to any service; checks run offline.
    "$VENV/bin/checkov" -d "$RENDERED" --framework kubernetes --skip-download -o json \
        >"$WORK/checkov.json" 2>"$LOGS/checkov-stderr.log"
    # checkov exits 1 when anything failed; the gate decides. Unused skips are
    # reported by step 3b, which sees the chart's findings as well.
    "$PY" "$LIB" checkov-gate --no-stale "$DEPLOY/checkov-skips.yaml" "$WORK/checkov.json"
}

if [ "$MODE" = all ]; then
    step "3. checkov"
    check "checkov: no failed check outside deploy/checkov-skips.yaml" run_checkov
fi

# ------------------------------------------------------------ 3b. Helm chart

# Value sets: NAME=FILE (empty FILE: the chart's defaults). All are rendered
# as release "parley" (object names then equal the kustomize ones) in
# namespace parley, except dev, in parley-dev as the dev overlay.
HELM_SETS=(default= external-dbs="$HELM_VALUES/external-dbs.yaml" external-urls="$HELM_VALUES/external-urls.yaml"
    no-ingress="$HELM_VALUES/no-ingress.yaml" monitoring="$HELM_VALUES/monitoring.yaml")
HELM_DEV_SET=dev="$HELM_VALUES/dev.yaml"

helm_render() {
    rm -rf "$HELM_RENDERED" && mkdir -p "$HELM_RENDERED" || return 1
    "$PY" "$LIB" helm-render --chart "$HELM_CHART" --release parley --namespace parley --out "$HELM_RENDERED" "${HELM_SETS[@]}" &&
        "$PY" "$LIB" helm-render --chart "$HELM_CHART" --release parley --namespace parley-dev --out "$HELM_RENDERED" "$HELM_DEV_SET" &&
        echo "rendered into $HELM_RENDERED (NAME.yaml, NAME.NOTES.txt)"
}

helm_checkov() {
    "$VENV/bin/checkov" -d "$HELM_RENDERED" --framework kubernetes --skip-download -o json \
        >"$WORK/checkov-helm.json" 2>"$LOGS/checkov-helm-stderr.log"
    # The skips are shared with step 3; unused ones are reported here, with
    # step 3's findings counted (not gated twice). --only helm has no step 3.
    if [ "$MODE" = all ]; then
        "$PY" "$LIB" checkov-gate --usage-from "$WORK/checkov.json" "$DEPLOY/checkov-skips.yaml" "$WORK/checkov-helm.json"
    else
        "$PY" "$LIB" checkov-gate --no-stale "$DEPLOY/checkov-skips.yaml" "$WORK/checkov-helm.json"
    fi
}

if [ "$MODE" = all ] || [ "$MODE" = helm ]; then
    step "3b. Helm chart (Helm's engine: helm-python-sdk)"
    require "helm template: the chart's defaults and every value set in deploy/helm/test-values/" helm_render
    HELM_FILES=("$HELM_RENDERED"/*.yaml)
    check "helm lint --strict (Kubernetes ${KUBE_VERSIONS// /, }) with every value set; appVersion = crate version" \
        "$PY" "$LIB" helm-lint --chart "$HELM_CHART" --cargo "$ROOT/Cargo.toml" --kube-version $KUBE_VERSIONS -- \
        "${HELM_SETS[@]}" "$HELM_DEV_SET"
    check "values.schema.json: every value typed and described, settings known to the binary, bad values refused" \
        "$PY" "$LIB" helm-values --chart "$HELM_CHART" --help-file "$WORK/serve-help.txt"
    check "docs/deployment.md: the values reference matches values.schema.json" \
        "$PY" "$LIB" helm-values-doc --chart "$HELM_CHART" --doc "$ROOT/docs/deployment.md"
    for v in $KUBE_VERSIONS; do
        check "chart renderings: kubernetes-validate against Kubernetes $v" "$PY" "$LIB" validate --version "$v" "${HELM_FILES[@]}"
    done
    check "chart renderings: checkov, nothing outside deploy/checkov-skips.yaml" helm_checkov
    check "chart renderings: every PARLEY_* variable is in \`parley serve --help\`" \
        "$PY" "$LIB" config-vars --help-file "$WORK/serve-help.txt" "${HELM_FILES[@]}"
    check "chart renderings: container port = PARLEY_LISTEN port; probes, Services, Ingress, PDB, HPA point at it" \
        "$PY" "$LIB" ports "${HELM_FILES[@]}"
    check "chart renderings: terminationGracePeriodSeconds covers preStop + PARLEY_DRAIN_TIMEOUT" \
        "$PY" "$LIB" drain "${HELM_FILES[@]}"
    check "chart renderings: HPA maxReplicas x PARLEY_DATABASE_POOL fits PostgreSQL max_connections" \
        "$PY" "$LIB" db-capacity "${HELM_FILES[@]}"
    check "parity: chart defaults = kustomize prod overlay" \
        "$PY" "$LIB" helm-parity --kustomize "$RENDERED/prod.yaml" --chart "$HELM_RENDERED/default.yaml"
    check "parity: chart monitoring values = prod + hpa-connections + addons/monitoring" \
        "$PY" "$LIB" helm-parity --kustomize "$RENDERED/prod-connections.yaml" "$RENDERED/monitoring.yaml" \
        --chart "$HELM_RENDERED/monitoring.yaml"
    check "parity: chart dev values = kustomize dev overlay" \
        "$PY" "$LIB" helm-parity --kustomize "$RENDERED/dev.yaml" --chart "$HELM_RENDERED/dev.yaml"
    check "chart monitoring: ServiceMonitor and custom-metric HPA reference what exists" \
        "$PY" "$LIB" crd-refs --base "$HELM_RENDERED/monitoring.yaml" --monitoring "$HELM_RENDERED/monitoring.yaml" \
        --hpa "$HELM_RENDERED/monitoring.yaml"
    check "chart monitoring: metric names in dashboard, alerts and adapter exist in the binary" \
        "$PY" "$LIB" metric-names --binary "$HOST_BIN" \
        --require parley_connections parley_store_append_seconds parley_draining \
        -- "$HELM_CHART/dashboards/parley.json" "$HELM_RENDERED/monitoring.yaml"
    check "chart monitoring: PromQL of dashboard and alerts parses (promtool)" \
        "$PY" "$LIB" promql --promtool "$PROMTOOL" "$HELM_CHART/dashboards/parley.json" "$HELM_RENDERED/monitoring.yaml"
    check "chart defaults: probe and metrics paths answer 200 on a node with the chart's ConfigMap; SIGTERM drains" \
        "$PY" "$LIB" probe-node --binary "$HOST_BIN" --extra-path / "$HELM_RENDERED/default.yaml"
    check "helm test pod: its script passes against a ready node, fails against a draining one" \
        "$PY" "$LIB" helm-test-pod --binary "$HOST_BIN" "$HELM_RENDERED/default.yaml"
fi
if [ "$MODE" = helm ]; then
    summary
    exit $?
fi

# ------------------------------------------------- 4. manifests vs. binary

step "4. manifests vs. the binary"
K8S_RENDERED=("$RENDERED/base.yaml" "$RENDERED/dev.yaml" "$RENDERED/prod.yaml" "$RENDERED/prod-connections.yaml"
    "$RENDERED/prod-cloudnativepg.yaml")
check "every PARLEY_* variable in the ConfigMap/Deployment is in \`parley serve --help\`" \
    "$PY" "$LIB" config-vars --help-file "$WORK/serve-help.txt" "${K8S_RENDERED[@]}"
check "container port = PARLEY_LISTEN port; probes, Services, Ingress, PDB, HPA point at it" \
    "$PY" "$LIB" ports "${K8S_RENDERED[@]}"
check "terminationGracePeriodSeconds covers preStop + PARLEY_DRAIN_TIMEOUT" \
    "$PY" "$LIB" drain "${K8S_RENDERED[@]}"
check "HPA maxReplicas x PARLEY_DATABASE_POOL fits PostgreSQL max_connections" \
    "$PY" "$LIB" db-capacity "${K8S_RENDERED[@]}"
check "probe and metrics paths answer 200 on a running node; SIGTERM drains" \
    "$PY" "$LIB" probe-node --binary "$HOST_BIN" --extra-path / "$RENDERED/dev.yaml"
check "ServiceMonitor and custom-metric HPA reference what exists" \
    "$PY" "$LIB" crd-refs --base "$RENDERED/base.yaml" --monitoring "$RENDERED/monitoring.yaml" \
    --hpa "$RENDERED/prod-connections.yaml"
check "CloudNativePG: 3 instances, synchronous replication required; the nodes use its -rw Service" \
    "$PY" "$LIB" cnpg --cluster "$RENDERED/cloudnativepg.yaml" --nodes "$RENDERED/prod-cloudnativepg.yaml"
check "metric names in dashboard, alerts and adapter exist in the binary" \
    "$PY" "$LIB" metric-names --binary "$HOST_BIN" \
    --require parley_connections parley_messages_received_total parley_messages_delivered_total \
    parley_store_append_seconds parley_frames_rejected_total parley_queue_overflows_total \
    parley_draining parley_sessions_closed_total \
    -- "$DEPLOY/k8s/addons/monitoring/dashboards/parley.json" "$DEPLOY/k8s/addons/monitoring/prometheusrule.yaml" \
    "$DEPLOY/k8s/addons/monitoring/prometheus-adapter-rules.yaml"
check "PromQL of dashboard and alerts parses (promtool)" \
    "$PY" "$LIB" promql --promtool "$PROMTOOL" "$DEPLOY/k8s/addons/monitoring/dashboards/parley.json" "$RENDERED/monitoring.yaml"
check "Dockerfile and Dockerfile.local share the final stage" \
    "$PY" "$LIB" dockerfiles "$DEPLOY/docker/Dockerfile" "$DEPLOY/docker/Dockerfile.local"
check "compose.yaml: nginx + 3 nodes + redis + postgres, settings known to the binary" \
    "$PY" "$LIB" compose --help-file "$WORK/serve-help.txt" "$DEPLOY/docker/compose.yaml" "$DEPLOY/docker/nginx.conf"

nginx_syntax() {
    # Compose's service names do not resolve here: point them at 127.0.0.1.
    local d=$WORK/nginx
    rm -rf "$d" && mkdir -p "$d"
    sed -E 's/server parley-[0-9]+:8080/server 127.0.0.1:8080/' "$DEPLOY/docker/nginx.conf" >"$d/nginx.conf"
    "$NGINX" -t -e stderr -p "$d" -c "$d/nginx.conf"
}
check "nginx.conf passes nginx -t" nginx_syntax

# ------------------------------------------------------------- 5. podman

cleanup_podman() {
    [ -n "${KEEP:-}" ] && return 0
    "${PODMAN[@]}" rm -f -t 0 "$PLAIN_CTR" >/dev/null 2>&1
    if [ -f "$PLAY_DIR/play.yaml" ]; then
        "${PODMAN[@]}" kube down "$PLAY_DIR/play.yaml" >/dev/null 2>&1
    fi
    "${PODMAN[@]}" pod rm -f parley-pod-0 >/dev/null 2>&1
    if [ -f "$PLAY_DIR/secrets.txt" ]; then
        while read -r s; do [ -n "$s" ] && "${PODMAN[@]}" secret rm "$s" >/dev/null 2>&1; done <"$PLAY_DIR/secrets.txt"
    fi
    return 0
}
trap cleanup_podman EXIT
cleanup_podman # leftovers of an interrupted run

build_image() {
    local ctx=$WORK/image
    rm -rf "$ctx" && mkdir -p "$ctx" || return 1
    # What the multi-stage Dockerfile's build stage produces: a stripped
    # binary (CARGO_PROFILE_RELEASE_STRIP=symbols there) and the rootfs
    # skeleton with its owners (a tar: ADD keeps owners, COPY would not).
    cp "$IMAGE_BIN" "$ctx/parley" && strip "$ctx/parley" || return 1
    "$PY" "$LIB" rootfs-tar "$ctx/rootfs.tar" || return 1
    "${PODMAN[@]}" build -q -f "$DEPLOY/docker/Dockerfile.local" \
        --build-arg REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        -t "$IMAGE" "$ctx" || return 1
    "${PODMAN[@]}" image inspect "$IMAGE" --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} volumes={{.Config.Volumes}} labels={{len .Labels}}'
}

image_size() {
    local size
    size=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}') || return 1
    echo "image $IMAGE: $size bytes ($((size / 1000000)) MB); limit $MAX_IMAGE_BYTES"
    [ "$size" -lt "$MAX_IMAGE_BYTES" ]
}

wait_http() { # URL [seconds]: until it answers 200
    local url=$1 t=${2:-60} i code
    for ((i = 0; i < t * 5; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
        [ "$code" = 200 ] && { echo "GET $url -> 200 after $((i / 5)) s"; return 0; }
        sleep 0.2
    done
    echo "GET $url -> ${code:-no answer} after ${t}s"
    return 1
}

plain_run() {
    # The image's defaults alone: read-only root, SQLite on the /data volume.
    local port
    port=$("$PY" "$LIB" free-port)
    "${PODMAN[@]}" run --pull=never -d --name "$PLAIN_CTR" --read-only --cap-drop ALL \
        --security-opt no-new-privileges -p "127.0.0.1:$port:8080" "$IMAGE" >/dev/null || return 1
    if ! wait_http "http://127.0.0.1:$port/readyz" 30; then
        "${PODMAN[@]}" logs "$PLAIN_CTR" 2>&1 | tail -n 20
        return 1
    fi
    "${PODMAN[@]}" inspect "$PLAIN_CTR" --format 'user={{.Config.User}} readonly-rootfs={{.HostConfig.ReadonlyRootfs}}'
    "${PODMAN[@]}" rm -f -t 20 "$PLAIN_CTR" >/dev/null
}

PLAY_PORT=""
kube_play() {
    cleanup_podman
    rm -rf "$PLAY_DIR"
    PLAY_PORT=$("$PY" "$LIB" free-port)
    "$PY" "$LIB" podman-transform --image "$IMAGE" --host-port "$PLAY_PORT" --out "$PLAY_DIR" "$RENDERED/dev.yaml" ||
        return 1
    local s
    while read -r s; do
        [ -n "$s" ] || continue
        "${PODMAN[@]}" secret rm "$s" >/dev/null 2>&1
        "${PODMAN[@]}" secret create "$s" "$PLAY_DIR/$s.json" >/dev/null || return 1
        echo "podman secret $s created from the rendered Secret"
    done <"$PLAY_DIR/secrets.txt"
    "${PODMAN[@]}" kube play "$PLAY_DIR/play.yaml" >"$PLAY_DIR/play.log" 2>&1 || { cat "$PLAY_DIR/play.log"; return 1; }
    "${PODMAN[@]}" pod ps --format '{{.Name}} {{.Status}}' | grep "$(cat "$PLAY_DIR/pod-name")"
}

ctr() { echo "$(cat "$PLAY_DIR/pod-name")-parley"; }

play_ready() {
    if ! wait_http "http://127.0.0.1:$PLAY_PORT/readyz" 60; then
        "${PODMAN[@]}" logs "$(ctr)" 2>&1 | tail -n 20
        return 1
    fi
    curl -sS "http://127.0.0.1:$PLAY_PORT/readyz"
    echo
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PLAY_PORT/healthz")
    echo "GET /healthz -> $code"
    [ "$code" = 200 ] || return 1
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PLAY_PORT/")
    echo "GET / (web UI) -> $code"
    [ "$code" = 200 ]
}

play_hardening() {
    local c
    c=$(ctr)
    "${PODMAN[@]}" inspect "$c" --format 'user={{.Config.User}} readonly-rootfs={{.HostConfig.ReadonlyRootfs}} caps={{.EffectiveCaps}} security-opt={{.HostConfig.SecurityOpt}}' |
        tee "$PLAY_DIR/inspect.txt"
    grep -q 'user=10001' "$PLAY_DIR/inspect.txt" &&
        grep -q 'readonly-rootfs=true' "$PLAY_DIR/inspect.txt" &&
        grep -q 'caps=\[\]' "$PLAY_DIR/inspect.txt" &&
        grep -q 'no-new-privileges' "$PLAY_DIR/inspect.txt" || return 1
    # The settings arrived: ConfigMap (envFrom), Secret (secretKeyRef), fieldRef.
    "${PODMAN[@]}" inspect "$c" --format '{{range .Config.Env}}{{println .}}{{end}}' |
        grep -E '^PARLEY_(LOG=|DRAIN_TIMEOUT=|NODE_ID=|LISTEN=)' | tee "$PLAY_DIR/env.txt"
    grep -q "^PARLEY_NODE_ID=$(cat "$PLAY_DIR/pod-name")$" "$PLAY_DIR/env.txt" || return 1
    "${PODMAN[@]}" inspect "$c" --format '{{range .Config.Env}}{{println .}}{{end}}' | grep '^PARLEY_JWT_SECRET=.' >/dev/null ||
        { echo "PARLEY_JWT_SECRET not set from the Secret"; return 1; }
    echo "PARLEY_JWT_SECRET set from the Secret"
}

play_register() {
    local body
    body=$(curl -sS -f -X POST -H 'content-type: application/json' \
        -d '{"username":"alice","password":"correct-horse-battery"}' \
        "http://127.0.0.1:$PLAY_PORT/api/auth/register") || { echo "$body"; return 1; }
    echo "POST /api/auth/register -> $(printf '%s' "$body" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(201, "user", d["user"]["name"], "token", d["token"][:12] + "…")')"
    printf '%s' "$body" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])' >"$PLAY_DIR/alice.token" || return 1
    # bob signs in the way an operator's backend does: a token minted with
    # the Secret's JWT secret (proves the node uses that Secret).
    "$HOST_BIN" token --secret "$(cat "$PLAY_DIR/jwt-secret")" --user bob >"$PLAY_DIR/bob.token" || return 1
    echo "bob's token minted with \`parley token\` and the Secret's jwt-secret"
}

play_chat() {
    "$PY" "$LIB" ws-chat --url "ws://127.0.0.1:$PLAY_PORT/ws" \
        --alice-token-file "$PLAY_DIR/alice.token" --bob-token-file "$PLAY_DIR/bob.token"
}

play_metrics() {
    local m
    m=$(curl -sS "http://127.0.0.1:$PLAY_PORT/metrics") || return 1
    printf '%s\n' "$m" | grep -E '^parley_(messages_received_total|messages_delivered_total|connections|store_append_seconds_count)' | head -n 8
    printf '%s\n' "$m" | grep '^parley_messages_received_total' >/dev/null || return 1
}

play_stop() {
    # What Kubernetes does on delete (minus the preStop sleep): SIGTERM,
    # then SIGKILL after terminationGracePeriodSeconds. A session held open
    # meanwhile must be closed with 1001 by the drain.
    local c tgps code holder i
    c=$(ctr)
    tgps=$("$PY" -c 'import sys,yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment": print(d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))' "$RENDERED/dev.yaml")
    rm -f "$PLAY_DIR/hold.ready"
    "$PY" "$LIB" ws-hold --url "ws://127.0.0.1:$PLAY_PORT/ws" --token-file "$PLAY_DIR/bob.token" \
        --ready-file "$PLAY_DIR/hold.ready" --timeout "$tgps" >"$PLAY_DIR/hold.log" 2>&1 &
    holder=$!
    for ((i = 0; i < 50; i++)); do [ -f "$PLAY_DIR/hold.ready" ] && break; sleep 0.2; done
    [ -f "$PLAY_DIR/hold.ready" ] || { echo "could not open a session to hold"; cat "$PLAY_DIR/hold.log"; kill "$holder"; return 1; }
    # Stop the Parley container, not the pod: stopping the pod would also
    # stop its infra container and tear the network down under the drain,
    # which a Kubernetes pod sandbox never does.
    echo "holding one WebSocket session open; podman stop -t $tgps $c"
    "${PODMAN[@]}" stop -t "$tgps" "$c" >/dev/null || { kill "$holder"; return 1; }
    wait "$holder"
    local held=$?
    cat "$PLAY_DIR/hold.log"
    code=$("${PODMAN[@]}" inspect "$c" --format '{{.State.ExitCode}}')
    "${PODMAN[@]}" logs "$c" 2>&1 | grep -E 'drain|stopp' | tail -n 4
    echo "exit code $code (terminationGracePeriodSeconds $tgps)"
    [ "$held" = 0 ] && [ "$code" = 0 ] && "${PODMAN[@]}" logs "$c" 2>&1 | grep 'draining' >/dev/null
}

play_down() {
    "${PODMAN[@]}" kube down "$PLAY_DIR/play.yaml" >/dev/null || return 1
    local s
    while read -r s; do [ -n "$s" ] && "${PODMAN[@]}" secret rm "$s" >/dev/null; done <"$PLAY_DIR/secrets.txt"
    if "${PODMAN[@]}" pod exists "$(cat "$PLAY_DIR/pod-name")"; then
        echo "pod still exists"
        return 1
    fi
    echo "pod, containers and secrets removed"
}

step "5. podman: image and the dev overlay with podman kube play"
require "build $IMAGE from Dockerfile.local and the musl binary" build_image
check "image size < 25 MB" image_size
check "image defaults: read-only root filesystem, non-root, SQLite on /data" plain_run
require "podman kube play: dev overlay's Deployment + ConfigMap + Secret" kube_play
check "/readyz answers 200 through 127.0.0.1:<published port>" play_ready
check "pod securityContext is in force (UID 10001, read-only root, no capabilities)" play_hardening
check "register a user over REST (curl); mint a token with the Secret's JWT secret" play_register
check "chat over WebSocket: hello, join, send, ack, delivery, history" play_chat
check "/metrics counts the traffic" play_metrics
check "stop: SIGTERM drains (open session closed with 1001), node exits 0 within the grace period" play_stop
if [ -z "${KEEP:-}" ]; then
    check "podman kube down: everything removed" play_down
fi

summary
