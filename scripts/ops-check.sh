#!/usr/bin/env bash
# Static checks of the deployment files with the real tools (no Docker engine or cluster needed):
#   docker-compose config      compose file (CPU, and with the GPU and the TLS overrides)
#   promtool check/test        Prometheus config, rules, rule unit tests
#   kubectl kustomize          every overlay builds (cpu, gpu and their -secure variants) ...
#   kubernetes-validate        ... and validate (strict) against the Kubernetes API schemas
#   scripts/ops_consistency.py what no tool sees: metric names against service/metrics.py, every alert
#                              tested firing and quiet with a runbook, compose scrape port and Grafana
#                              data source, Dockerfile COPY against .dockerignore, ServiceMonitors, and
#                              k8s/monitoring against the compose rules and dashboard
#   checkov                    k8s/ (rendered by kustomize) and the Dockerfile
# Missing tools are installed: Debian packages with apt-get when running as root, Python tools into
# .venv-ops. Exits non-zero when any check fails.
#
#   scripts/ops-check.sh                 # K8S_VERSIONS="1.27.0 1.30.0" by default
#   K8S_VERSIONS=1.31.0 scripts/ops-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=${K8S_VERSIONS:-"1.27.0 1.30.0"}
OPS_VENV=${OPS_VENV:-.venv-ops}
PY_TOOLS=(kubernetes-validate checkov pyyaml requests)
failed=()

say() { printf '\n== %s\n' "$*"; }
run() {  # run NAME CMD...: record a failure instead of stopping, so one run reports everything;
         # returns the command's status, so a later step can depend on it
    local name=$1 status=0; shift
    "$@" || status=$?
    if [ "$status" -eq 0 ]; then echo "ok: $name"; else echo "FAILED: $name (exit $status)"; failed+=("$name"); fi
    return "$status"
}

install_debian() {  # install_debian PACKAGE... when a command is missing
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing $*: install them (apt-get install -y $*) or run as root" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

say "tools"
need=()
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)
# Debian's kubernetes-client is kubectl 1.20, whose kustomize is too old for these files; it is only
# a last resort (any kubectl >= 1.27 will do, e.g. the one most CI images and cloud SDKs ship).
command -v kubectl >/dev/null || need+=(kubernetes-client)
if [ ${#need[@]} -gt 0 ]; then install_debian "${need[@]}" || exit 1; fi
if [ ! -x "$OPS_VENV/bin/checkov" ] || [ ! -x "$OPS_VENV/bin/kubernetes-validate" ]; then
    python3 -m venv "$OPS_VENV" && "$OPS_VENV/bin/pip" install --quiet "${PY_TOOLS[@]}" || exit 1
fi
docker-compose version --short
promtool --version 2>&1 | head -1
kubectl version --client 2>&1 | head -2
"$OPS_VENV/bin/kubernetes-validate" --version
"$OPS_VENV/bin/checkov" --version

say "docker-compose config"
run "compose" docker-compose -f docker-compose.yml config --quiet
run "compose + gpu override" docker-compose -f docker-compose.yml -f deploy/docker-compose.gpu.yml config --quiet
run "compose + tls override" docker-compose -f docker-compose.yml -f deploy/docker-compose.tls.yml config --quiet

say "promtool"
run "prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
run "rules" promtool check rules deploy/prometheus/rules/*.yml
run "rule unit tests" promtool test rules deploy/prometheus/tests/*.yml

say "kustomize + kubernetes-validate (strict; Kubernetes ${K8S_VERSIONS})"
built=$(mktemp -d)
trap 'rm -rf "$built"' EXIT
# Every overlay in k8s/overlays, and cpu and gpu with every component of k8s/components on (mtls and
# cert-manager are opt-in, so no committed overlay lists them; a throwaway one does).
overlays=(k8s/overlays/*/ k8s/monitoring/)
for variant in cpu gpu; do
    all="$built/$variant-all-components"
    mkdir -p "$all"
    k8s=$(python3 -c 'import os, sys; print(os.path.relpath(*sys.argv[1:]))' "$PWD/k8s" "$all")
    {
        echo "resources: [$k8s/overlays/$variant]"
        echo "components:"
        echo "  - $k8s/components/tls-auth"  # first: the others add to it
        for component in k8s/components/*/; do
            component=$(basename "$component")
            [ "$component" = tls-auth ] || echo "  - $k8s/components/$component"
        done
    } > "$all/kustomization.yaml"
    overlays+=("$all/")
done
for overlay in "${overlays[@]}"; do
    name=$(basename "$overlay")
    if run "kustomize $name" kubectl kustomize "$overlay" -o "$built/$name.yaml"; then
        for version in $K8S_VERSIONS; do
            # The ServiceMonitor and PrometheusRule (Prometheus Operator) and cert-manager's Certificate
            # and Issuer are CRDs with no schema in the Kubernetes API: they are reported as warnings and
            # checked by scripts/ops_consistency.py, tests/ops/test_manifests.py and
            # tests/ops/test_tls_components.py instead.
            run "validate $name @ $version" "$OPS_VENV/bin/kubernetes-validate" --strict --quiet \
                -k "$version" "$built/$name.yaml"
        done
    fi
done

say "consistency (scripts/ops_consistency.py)"
run "consistency" "$OPS_VENV/bin/python" scripts/ops_consistency.py

say "checkov"
# --skip-download: no network calls; findings are the built-in checks. Skips are annotated in the files.
run "checkov k8s (kustomize)" "$OPS_VENV/bin/checkov" --directory k8s --framework kustomize \
    --compact --quiet --skip-download
for variant in cpu gpu; do
    run "checkov $variant-all-components (rendered)" "$OPS_VENV/bin/checkov" \
        --file "$built/$variant-all-components.yaml" --framework kubernetes --compact --quiet --skip-download
done
run "checkov Dockerfile" "$OPS_VENV/bin/checkov" --file Dockerfile --framework dockerfile \
    --compact --quiet --skip-download

say "summary"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all ops checks passed"
