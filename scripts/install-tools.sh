#!/usr/bin/env bash
# Install the external tools the deploy tests run: promtool (rule checks) and helm
# (chart lint/render). Idempotent: a tool already on PATH or in the cache is left alone.
# Helm is built from the Go module proxy because only package registries are reachable;
# it lands in a cache dir outside the repo so the work tree stays clean.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.16.4}"
TOOLS_DIR="${PRIVACY_PIPELINE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/privacy-pipeline/tools}"
BIN_DIR="$TOOLS_DIR/bin"
mkdir -p "$BIN_DIR"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v promtool >/dev/null 2>&1; then
    echo "install-tools: installing promtool (Debian package prometheus)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus >/dev/null
fi

if ! command -v helm >/dev/null 2>&1 && [ ! -x "$BIN_DIR/helm" ]; then
    if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
        PATH="/usr/local/go/bin:$PATH"
    fi
    command -v go >/dev/null 2>&1 || { echo "install-tools: go is needed to build helm" >&2; exit 1; }
    echo "install-tools: building helm $HELM_VERSION from the Go module proxy" >&2
    # GOPATH/GOCACHE in the tools dir: the module and build caches survive between runs.
    GOBIN="$BIN_DIR" GOPATH="$TOOLS_DIR/gopath" GOCACHE="$TOOLS_DIR/gocache" \
        GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

echo "promtool: $(command -v promtool)"
echo "helm: $(command -v helm || echo "$BIN_DIR/helm")"
