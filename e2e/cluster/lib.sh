# Shared settings for the local control plane scripts. Sourced, not run.
# Everything here can be overridden from the environment so that two planes do not collide.
set -euo pipefail
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
# shellcheck source=versions.env
. "$CLUSTER_DIR/versions.env"

# The build cache lives outside the repository and survives clones.
MLC_CACHE="${MLC_CACHE:-$HOME/.cache/mlcompute}"
BIN_K8S="$MLC_CACHE/k8s-v$K8S_VERSION"
BIN_ETCD="$MLC_CACHE/etcd-v$ETCD_VERSION"
BIN_KWOK="$MLC_CACHE/kwok-v$KWOK_VERSION"
BIN_HELM="$MLC_CACHE/helm-v$HELM_VERSION"
GO_WORK="$MLC_CACHE/gobuild"

# One run directory holds every piece of state of one plane: PKI, etcd data, logs, PIDs, kubeconfig.
MLC_RUN="${MLC_RUN:-${TMPDIR:-/tmp}/mlcompute-plane}"
MLC_PORT_ETCD="${MLC_PORT_ETCD:-23790}"
MLC_PORT_ETCD_PEER="${MLC_PORT_ETCD_PEER:-23800}"
MLC_PORT_APISERVER="${MLC_PORT_APISERVER:-26443}"
MLC_PORT_KCM="${MLC_PORT_KCM:-20257}"
MLC_PORT_SCHED="${MLC_PORT_SCHED:-20259}"
MLC_PORT_KWOK="${MLC_PORT_KWOK:-20247}"
MLC_PORT_KWOK_METRICS="${MLC_PORT_KWOK_METRICS:-20248}"
# Fake address ranges. Nothing in the project ever dials them: they are data in object status only.
# Service cluster IPs and pod IPs are disjoint.
MLC_SERVICE_CIDR="${MLC_SERVICE_CIDR:-10.96.0.0/16}"
MLC_POD_CIDR="${MLC_POD_CIDR:-10.244.0.0/16}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-}"

_t0=$(date +%s)
step() { printf '[%4ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

kubectl_bin() { echo "$BIN_K8S/kubectl"; }
