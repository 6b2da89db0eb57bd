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
# kubectl's discovery cache lives with the plane: a cache left by an earlier plane on the same port
# would hide this plane's resource types and categories.
export KUBECACHEDIR="${KUBECACHEDIR:-$MLC_RUN/kubectl-cache}"
# Ports: each MLC_PORT_* can be set; otherwise they are offsets from MLC_PORT_BASE, so a second
# plane needs only another base (and MLC_RUN).
MLC_PORT_BASE="${MLC_PORT_BASE:-20000}"
MLC_PORT_ETCD="${MLC_PORT_ETCD:-$((MLC_PORT_BASE + 379))}"
MLC_PORT_ETCD_PEER="${MLC_PORT_ETCD_PEER:-$((MLC_PORT_BASE + 380))}"
MLC_PORT_APISERVER="${MLC_PORT_APISERVER:-$((MLC_PORT_BASE + 443))}"
MLC_PORT_KCM="${MLC_PORT_KCM:-$((MLC_PORT_BASE + 257))}"
MLC_PORT_SCHED="${MLC_PORT_SCHED:-$((MLC_PORT_BASE + 259))}"
MLC_PORT_KWOK="${MLC_PORT_KWOK:-$((MLC_PORT_BASE + 247))}"
# Fake address ranges. Nothing in the project ever dials them: they are data in object status only.
# Service cluster IPs and pod IPs are disjoint.
MLC_SERVICE_CIDR="${MLC_SERVICE_CIDR:-10.96.0.0/16}"
MLC_POD_CIDR="${MLC_POD_CIDR:-10.244.0.0/16}"
# A plane that serves a real node (e2e/node/up sets it, inside the node's network namespace only):
# the API server also listens on that address, so Pods reach it through the `kubernetes` Service,
# and ServiceAccount tokens are mounted as on a real cluster. Empty: loopback only, KWOK nodes only.
MLC_APISERVER_NODE_ADDRESS="${MLC_APISERVER_NODE_ADDRESS:-}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-}"

_t0=$(date +%s)
step() { printf '[%4ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

kubectl_bin() { echo "$BIN_K8S/kubectl"; }

PIDS="$MLC_RUN/pids"
LOGDIR="$MLC_RUN/logs"
PKI="$MLC_RUN/pki"
KUBECONFIG_FILE="$MLC_RUN/admin.kubeconfig"
# Start order; stopped in reverse.
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"

# pid_of NAME: the saved PID of a component, if that process is still alive and is the binary we started.
pid_of() {
  local f="$PIDS/$1.pid" pid exe
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  # A reused PID belongs to some other program: never touch it.
  case "$exe" in "$MLC_CACHE"/*) echo "$pid" ;; *) return 1 ;; esac
}

# alive PID: whether the process runs (a zombie, reaped later by whoever adopted it, does not).
alive() {
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# stop_pids PID...: TERM to each, KILL to whatever has not exited after 5 s; returns once none is
# alive (SIGKILL is not instant: a large process takes a moment to exit and close its listeners),
# non-zero with the survivors on stderr if some outlive that too.
stop_pids() {
  local pid i left
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for i in $(seq 1 50); do
    left=""; for pid in "$@"; do alive "$pid" && left="$left $pid"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
  for i in $(seq 1 50); do
    left=""; for pid in "$@"; do alive "$pid" && left="$left $pid"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  printf 'warning: processes still alive after SIGKILL:%s\n' "$left" >&2
  return 1
}

# stop_all: stops exactly the processes recorded in $PIDS (newest first), so a new plane on the
# same ports starts cleanly.
stop_all() {
  local c pid rev="" pids=""
  for c in $COMPONENTS; do rev="$c $rev"; done
  for c in $rev; do
    pid=$(pid_of "$c") || { rm -f "$PIDS/$c.pid"; continue; }
    pids="$pids $pid"
  done
  # shellcheck disable=SC2086
  stop_pids $pids || true
  for c in $rev; do
    if [ -f "$PIDS/$c.pid" ]; then step "stopped $c (pid $(cat "$PIDS/$c.pid"))"; rm -f "$PIDS/$c.pid"; fi
  done
}

# run_step NAME LOG CMD...: runs CMD (a function too) with its output in LOG, under `set -e` (in a
# background subshell: bash ignores -e in a function run as a condition), and prints how long it
# took; on failure names the step, shows the log's tail and exits.
run_step() {
  local name=$1 log=$2 rc=0 s; shift 2
  s=$(date +%s)
  step "$name ..."
  ( set -e; "$@" ) >"$log" 2>&1 &
  wait $! || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '\nerror: step "%s" failed (exit %s); last lines of %s:\n' "$name" "$rc" "$log" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  step "$name done in $(( $(date +%s) - s ))s"
}

# have_all DIR BINARY...: whether every BINARY is an executable in DIR (a complete cached build).
have_all() { local d=$1; shift; for b in "$@"; do [ -x "$d/$b" ] || return 1; done; }

all_ports() {
  echo "$MLC_PORT_ETCD $MLC_PORT_ETCD_PEER $MLC_PORT_APISERVER $MLC_PORT_KCM $MLC_PORT_SCHED $MLC_PORT_KWOK"
}

port_busy() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }
